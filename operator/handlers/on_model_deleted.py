"""An OptimizedModel is gone: forget its per-model state.

Its children go with it through their owner references (Kubernetes garbage collection), so
the operator needs no finalizer and a model can be deleted while the operator is down."""

from __future__ import annotations

from typing import Any

import kopf

from optimodel.operator.handlers.common import MODEL_RESOURCE, reconciler_of


async def model_event(type: str, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if type == "DELETED" and namespace is not None:
        reconciler_of(memo).forget(namespace, name)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.event(*MODEL_RESOURCE, id="model-deleted", registry=registry)(model_event)
