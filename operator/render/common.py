"""What every child manifest shares: the owning model, metadata, owner references."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from optimodel.operator import api, naming

Manifest = dict[str, Any]


@dataclass(frozen=True)
class ModelRef:
    """The OptimizedModel that owns a child."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        """Controller reference: garbage collection deletes the child with its model."""
        return {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(
    model: ModelRef,
    name: str,
    component: str,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": model.namespace,
        "labels": {**naming.labels(model.name, component), **(extra_labels or {})},
        "ownerReferences": [model.owner_reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def restricted_container_security() -> dict[str, Any]:
    """The Pod Security Standards 'restricted' profile for one container."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }


# The builder, Triton (user triton-server) and aws-cli all run as this UID.
RUN_AS_UID = 1000


def restricted_pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "fsGroup": RUN_AS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
