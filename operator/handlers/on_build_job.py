"""A builder Job changed (started, retried, succeeded, failed): reconcile its model."""

from __future__ import annotations

import kopf

from optimodel.operator import naming
from optimodel.operator.handlers.common import reconcile_labelled_model


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        id="build-job",
        labels={naming.MANAGED_BY: naming.MANAGER, naming.COMPONENT: naming.BUILDER},
        registry=registry,
    )(reconcile_labelled_model)
