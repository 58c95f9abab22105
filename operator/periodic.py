"""Periodic work (resync, budget ticks) in one operator-level loop, not per-object Kopf timers.

Kopf 1.45 adds its finalizer to every object that a timer or daemon is registered for
(`requires_finalizer=True` in kopf/on.py: it must stop the object's timer tasks before the
object goes). With per-model timers, a model could not be deleted while the operator was down.
So the operator registers no timer: the model watch (handlers/on_model_event.py) tells the
`PeriodicSchedule` which models exist, and one `PeriodicLoop` task, started beside Kopf,
resyncs each model every `resyncSeconds` and accounts its spend every
`budgetIntervalSeconds`. Nothing then needs a finalizer, and Kopf removes the one older
operators left on existing models.

Only the acting peer ticks: Kopf pauses a standby replica's watches, and the loop asks
`peering.PeeringGate` before each round (the same rule over the same peering object).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optimodel.operator.budget import SpendTick
from optimodel.operator.capacity import serving_deployments_pattern
from optimodel.operator.peering import PeeringGate
from optimodel.operator.prometheus import PrometheusError, inference_rate
from optimodel.operator.reconcile import Reconciler

ModelKey = tuple[str, str]
Work = Literal["resync", "budget"]

logger = logging.getLogger("optimodel.operator")


@dataclass
class PeriodicSchedule:
    """When each known model is next due for each kind of periodic work. Pure: the caller
    passes the time (monotonic seconds)."""

    intervals: Mapping[Work, float]
    _due: dict[ModelKey, dict[Work, float]] = field(default_factory=dict)
    _replicas: dict[ModelKey, int] = field(default_factory=dict)
    _contexts: dict[ModelKey, contextvars.Context] = field(default_factory=dict)

    def track(
        self,
        key: ModelKey,
        now: float,
        replicas: int = 0,
        context: contextvars.Context | None = None,
    ) -> None:
        """A model exists (seen by the watch): its first work is due one interval from now.

        `context` is the watch handler's: Kopf keeps its Event queue in context variables,
        so the model's periodic work runs in a copy of it, as a Kopf timer's would."""
        self._due.setdefault(key, {work: now + every for work, every in self.intervals.items()})
        self._replicas[key] = replicas
        if context is not None:
            self._contexts[key] = context

    def forget(self, key: ModelKey) -> None:
        self._due.pop(key, None)
        self._replicas.pop(key, None)
        self._contexts.pop(key, None)

    def context(self, key: ModelKey) -> contextvars.Context | None:
        found = self._contexts.get(key)
        return None if found is None else found.copy()

    def replicas(self, key: ModelKey) -> int:
        """status.replicas as last seen: a model without replicas has no inference rate."""
        return self._replicas.get(key, 0)

    @property
    def models(self) -> list[ModelKey]:
        return sorted(self._due)

    def next_due(self) -> float | None:
        return min((due for works in self._due.values() for due in works.values()), default=None)

    def take_due(self, now: float) -> list[tuple[ModelKey, Work]]:
        """The work due by `now`, each rescheduled one interval later (missed rounds are not
        made up: one tick accounts the whole time since the last)."""
        taken: list[tuple[ModelKey, Work]] = []
        for key, works in sorted(self._due.items()):
            for work, due in works.items():
                if due <= now:
                    taken.append((key, work))
                    works[work] = now + self.intervals[work]
        return taken


@dataclass
class PeriodicLoop:
    """Runs the schedule's due work while this operator is the acting peer."""

    reconciler: Reconciler
    schedule: PeriodicSchedule
    gate: PeeringGate
    clock: Callable[[], float] = time.monotonic
    # A round sleeps at most this long, so a model tracked meanwhile waits no longer.
    max_sleep: float = 1.0
    _running: dict[tuple[ModelKey, Work], asyncio.Task[None]] = field(default_factory=dict)

    async def run(self) -> None:
        """Until cancelled (the operator stops)."""
        try:
            while True:
                due = self.schedule.next_due()
                delay = self.max_sleep if due is None else due - self.clock()
                await asyncio.sleep(min(max(delay, 0.0), self.max_sleep))
                work = self.schedule.take_due(self.clock())
                if work and await self.gate.acting():
                    for item in work:
                        self._start(*item)
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def _start(self, key: ModelKey, work: Work) -> None:
        if (key, work) in self._running:
            return  # still busy with the last one (a slow Prometheus): skip this round
        task = asyncio.create_task(
            self._do(key, work),
            name=f"{work} {key[0]}/{key[1]}",
            context=self.schedule.context(key),
        )
        self._running[(key, work)] = task
        task.add_done_callback(lambda _: self._running.pop((key, work), None))

    async def _do(self, key: ModelKey, work: Work) -> None:
        namespace, name = key
        try:
            if work == "budget":
                tick = SpendTick(await self._inference_rate(key))
                exists = await self.reconciler.reconcile(namespace, name, tick=tick)
            else:
                exists = await self.reconciler.reconcile(namespace, name, coalesce=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the next round tries again
            logger.warning("%s/%s: periodic %s failed: %s", namespace, name, work, error)
            return
        if not exists:  # deleted while this operator was paused or down
            self.schedule.forget(key)
            self.reconciler.forget(namespace, name)

    async def _inference_rate(self, key: ModelKey) -> float | None:
        """Triton's inference rate from Prometheus, outside the model's lock (a slow
        Prometheus delays only this tick); None without a URL, replicas or series."""
        prometheus = self.reconciler.settings.prometheus
        if prometheus.url is None or not self.schedule.replicas(key):
            return None
        namespace, name = key
        deployments = serving_deployments_pattern(name)  # both capacity tiers
        try:
            return await inference_rate(
                prometheus.url,
                prometheus.source(),
                namespace,
                deployments,
                prometheus.timeout_seconds,
            )
        except PrometheusError as error:
            logger.warning("%s/%s: no inference rate from Prometheus: %s", namespace, name, error)
            return None


def replicas_of(status: Mapping[str, Any] | None) -> int:
    value = (status or {}).get("replicas")
    return value if isinstance(value, int) else 0
