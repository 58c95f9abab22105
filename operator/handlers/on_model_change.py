"""An OptimizedModel was created, changed (spec, labels, annotations), or found at startup."""

from __future__ import annotations

from typing import Any

import kopf

from optimodel.operator.handlers.common import MODEL_RESOURCE, reconcile_for_kopf


async def model_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if namespace is not None:
        await reconcile_for_kopf(memo, namespace, name)


def register(registry: kopf.OperatorRegistry) -> None:
    kopf.on.create(*MODEL_RESOURCE, id="model-created", registry=registry)(model_changed)
    kopf.on.update(*MODEL_RESOURCE, id="model-updated", registry=registry)(model_changed)
    # After an operator restart: pick up every model where it stands (Jobs are found by
    # label, so a build that was running is adopted, not started again).
    kopf.on.resume(*MODEL_RESOURCE, id="model-resumed", registry=registry)(model_changed)
