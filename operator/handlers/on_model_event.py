"""Every watch event of an OptimizedModel: keep the periodic schedule's list of models.

The model watch (the listing at startup and after a peering pause included) tells the
periodic loop which models exist; a deleted model is dropped from it and from the
reconciler's memory. Its children go with it through their owner references (Kubernetes
garbage collection), so the operator needs no finalizer and a model can be deleted while the
operator is down (periodic.py says why there are no Kopf timers)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping
from typing import Any

import kopf

from optimodel.operator.handlers.common import MODEL_RESOURCE, reconciler_of
from optimodel.operator.periodic import PeriodicSchedule, replicas_of


def schedule_of(memo: Any) -> PeriodicSchedule:
    schedule = getattr(memo, "periodic", None)
    if not isinstance(schedule, PeriodicSchedule):
        raise kopf.PermanentError("the operator was started without a PeriodicSchedule in its memo")
    return schedule


async def model_event(
    type: str | None,
    namespace: str | None,
    name: str,
    status: Mapping[str, Any],
    memo: Any,
    **_: Any,
) -> None:
    if namespace is None:
        return
    if type == "DELETED":
        schedule_of(memo).forget((namespace, name))
        reconciler_of(memo).forget(namespace, name)
    else:
        schedule_of(memo).track(
            (namespace, name), time.monotonic(), replicas_of(status), contextvars.copy_context()
        )


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(*MODEL_RESOURCE, id="model-event", registry=registry)(model_event)
