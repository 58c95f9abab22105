"""Budget timer: every budgetIntervalSeconds, account each model's spend and re-cap it.

The inference rate is asked of Prometheus here, outside the model's lock (a slow Prometheus
delays only this tick); the accounting itself is a reconcile like any other, so the timer
and the event handlers never write the status at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from optimodel.operator import naming
from optimodel.operator.budget import SpendTick
from optimodel.operator.handlers.common import MODEL_RESOURCE, reconcile_for_kopf, reconciler_of
from optimodel.operator.prometheus import PrometheusError, inference_rate

logger = logging.getLogger("optimodel.operator")


async def budget_tick(
    namespace: str | None, name: str, status: Mapping[str, Any], memo: Any, **_: Any
) -> None:
    if namespace is None:
        return
    prometheus = reconciler_of(memo).settings.prometheus
    rate = None
    if prometheus.url is not None and status.get("replicas"):  # no pods, no inferences
        try:
            rate = await inference_rate(
                prometheus.url,
                prometheus.source(),
                namespace,
                naming.deployment_name(name),
                prometheus.timeout_seconds,
            )
        except PrometheusError as error:
            logger.warning("%s/%s: no inference rate from Prometheus: %s", namespace, name, error)
    await reconcile_for_kopf(memo, namespace, name, tick=SpendTick(rate))


def register(registry: kopf.OperatorRegistry, interval: float) -> None:
    kopf.timer(
        *MODEL_RESOURCE,
        id="budget",
        interval=interval,
        initial_delay=interval,
        registry=registry,
    )(budget_tick)
