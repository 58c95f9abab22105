"""A serving child (Deployment, Service, ConfigMap) changed or vanished: reconcile its model.

This is how a hand edit or deletion is repaired within a second, and how Deployment status
(rollout progress, replicas) reaches the model's status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from optimodel.operator import naming
from optimodel.operator.handlers.common import reconciler_of

SERVING_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
)


async def serving_child_event(
    namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    model = labels.get(naming.MODEL)
    if namespace is None or not model:
        return
    await reconciler_of(memo).reconcile(namespace, model, coalesce=True)


def register(registry: kopf.OperatorRegistry) -> None:
    for group, version, plural in SERVING_RESOURCES:
        kopf.on.event(
            group,
            version,
            plural,
            id=f"serving-{plural}",
            labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.SERVER},
            registry=registry,
        )(serving_child_event)
