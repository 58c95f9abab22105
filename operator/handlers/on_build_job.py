"""A builder Job changed (started, retried, succeeded, failed): reconcile its model."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from optimodel.operator import naming
from optimodel.operator.handlers.common import reconciler_of

logger = logging.getLogger("optimodel.operator")


async def build_job_event(
    namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    model = labels.get(naming.MODEL)
    if namespace is None or not model:
        return
    await reconciler_of(memo).reconcile(namespace, model, coalesce=True)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        id="build-job",
        labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.BUILDER},
        registry=registry,
    )(build_job_event)
