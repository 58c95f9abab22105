"""Periodic resync: every model is reconciled now and then even if no event arrived."""

from __future__ import annotations

from typing import Any

import kopf

from optimodel.operator.handlers.common import MODEL_RESOURCE, reconciler_of


async def resync(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    if namespace is not None:
        await reconciler_of(memo).reconcile(namespace, name, coalesce=True)


def register(registry: kopf.OperatorRegistry, interval: float) -> None:
    kopf.timer(
        *MODEL_RESOURCE,
        id="resync",
        interval=interval,
        initial_delay=interval,
        registry=registry,
    )(resync)
