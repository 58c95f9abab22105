"""A serving child (Deployment, Service, ConfigMap, NetworkPolicy, PodDisruptionBudget,
autoscaler) changed or vanished: reconcile its model.

This is how a hand edit or deletion is repaired within a second, and how Deployment status
(rollout progress, replicas) reaches the model's status. Autoscalers are different: their
controller rewrites their status every sync (current metrics), which the operator does not
read, so only a change of what the operator rendered (spec, labels, annotations) or a
deletion wakes the model; PodDisruptionBudgets are watched the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from optimodel.operator import naming
from optimodel.operator.autoscaling import HPA, SCALED_OBJECT
from optimodel.operator.handlers.common import reconcile_labelled_model, reconciler_of

SERVING_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("networking.k8s.io", "v1", "networkpolicies"),
)
AutoscalerHandler = Callable[..., Awaitable[None]]
AUTOSCALER_RESOURCES = (
    (HPA.group, HPA.version, HPA.plural),
    (SCALED_OBJECT.group, SCALED_OBJECT.version, SCALED_OBJECT.plural),
)
# Like an autoscaler, the disruption controller rewrites its status as pods come and go.
DISRUPTION_BUDGETS = ("policy", "v1", "poddisruptionbudgets")


def _fingerprint(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    essence = {
        "spec": body.get("spec"),
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "uid": meta.get("uid"),
    }
    return hashlib.sha256(json.dumps(essence, sort_keys=True).encode()).hexdigest()


def autoscaler_watch() -> AutoscalerHandler:
    """A handler reconciling on autoscaler events whose spec or metadata changed, or on
    deletion; status-only updates by the autoscaler's controller are passed over."""
    seen: dict[tuple[str, str, str], str] = {}

    async def autoscaler_event(
        type: str | None,
        body: Mapping[str, Any],
        namespace: str | None,
        name: str,
        labels: Mapping[str, str],
        memo: Any,
        **_: Any,
    ) -> None:
        model = labels.get(naming.MODEL)
        if namespace is None or not model:
            return
        key = (str(body.get("kind")), namespace, name)
        if type == "DELETED":
            seen.pop(key, None)
        else:
            fingerprint = _fingerprint(body)
            if seen.get(key) == fingerprint:
                return
            seen[key] = fingerprint
        await reconciler_of(memo).reconcile(namespace, model, coalesce=True)

    return autoscaler_event


def register(registry: kopf.OperatorRegistry) -> None:
    for group, version, plural in SERVING_RESOURCES:
        kopf.on.event(
            group,
            version,
            plural,
            id=f"serving-{plural}",
            labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.SERVER},
            registry=registry,
        )(reconcile_labelled_model)
    watch = autoscaler_watch()
    for group, version, plural in AUTOSCALER_RESOURCES:
        kopf.on.event(
            group,
            version,
            plural,
            id=f"serving-{plural}",
            labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.AUTOSCALER},
            registry=registry,
        )(watch)
    kopf.on.event(
        *DISRUPTION_BUDGETS,
        id="serving-poddisruptionbudgets",
        labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.SERVER},
        registry=registry,
    )(autoscaler_watch())
