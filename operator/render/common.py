"""What every child manifest shares: the owning model, metadata, owner references."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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
    """The Pod Security Standards 'restricted' profile for one container, with a read-only
    root filesystem: whatever a container writes goes to a size-limited emptyDir."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
    }


def empty_dir(name: str, size_limit: str, medium: str | None = None) -> dict[str, Any]:
    """A pod volume that cannot fill the node's disk (or memory, for medium Memory)."""
    source: dict[str, Any] = {"sizeLimit": size_limit}
    if medium is not None:
        source["medium"] = medium
    return {"name": name, "emptyDir": source}


def pod_identity(service_account: str | None, automount_token: bool) -> dict[str, Any]:
    """The pod's ServiceAccount and whether a Kubernetes API token is mounted into it."""
    identity: dict[str, Any] = {"automountServiceAccountToken": automount_token}
    if service_account:
        identity["serviceAccountName"] = service_account
    return identity


def container_resources(resources: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A container's requests and limits from the settings (a copy: renderers may add GPUs)."""
    return {section: dict(values) for section, values in resources.items()}


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
