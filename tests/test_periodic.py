"""The periodic loop that replaces Kopf timers: its schedule, the peering rule, the loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from optimodel.operator.peering import PeeringGate, acting_peer
from optimodel.operator.periodic import PeriodicLoop, PeriodicSchedule
from optimodel.operator.reconcile import Reconciler
from optimodel.operator.settings import OperatorSettings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_schedule_runs_each_work_one_interval_after_the_last() -> None:
    schedule = PeriodicSchedule({"resync": 10.0, "budget": 3.0})
    schedule.track(("ml", "a"), now=100.0, replicas=2)
    schedule.track(("ml", "a"), now=101.0, replicas=3)  # seen again: same due times
    assert schedule.next_due() == 103.0 and schedule.replicas(("ml", "a")) == 3
    assert schedule.take_due(102.9) == []
    assert schedule.take_due(103.0) == [(("ml", "a"), "budget")]
    # Late by two intervals: one tick, not three (it accounts the whole time since the last).
    assert schedule.take_due(110.5) == [(("ml", "a"), "resync"), (("ml", "a"), "budget")]
    assert schedule.next_due() == 113.5
    schedule.track(("ml", "b"), now=111.0)
    assert schedule.models == [("ml", "a"), ("ml", "b")]
    schedule.forget(("ml", "a"))
    assert schedule.models == [("ml", "b")] and schedule.replicas(("ml", "a")) == 0
    assert schedule.next_due() == 114.0


def peer(priority: int, seen: timedelta = timedelta(0), lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - seen).isoformat()}


@pytest.mark.parametrize(
    ("status", "acts"),
    [
        pytest.param({"me": peer(10)}, True, id="alone"),
        pytest.param({"me": peer(10), "other": peer(5)}, True, id="highest"),
        pytest.param({"me": peer(10), "other": peer(20)}, False, id="outranked"),
        pytest.param({"me": peer(10), "other": peer(10)}, False, id="same-priority"),
        pytest.param(
            {"me": peer(10), "other": peer(20, timedelta(seconds=61))}, True, id="other-dead"
        ),
        pytest.param({"other": peer(5)}, False, id="not-registered"),
        pytest.param({"me": peer(10, timedelta(seconds=90))}, False, id="own-entry-expired"),
        pytest.param(None, False, id="no-status"),
        pytest.param({"me": {"priority": 10, "lastseen": "yesterday"}}, False, id="garbage"),
    ],
)
def test_acting_peer_is_kopfs_rule(status: dict[str, Any] | None, acts: bool) -> None:
    assert acting_peer(status, "me", 10, NOW) is acts


@dataclass
class FakeReconciler:
    """Records reconciles; models in `gone` do not exist."""

    settings: OperatorSettings = field(default_factory=OperatorSettings)
    gone: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, str, bool]] = field(default_factory=list)
    forgotten: list[tuple[str, str]] = field(default_factory=list)

    async def reconcile(self, namespace: str, name: str, **options: Any) -> bool:
        self.calls.append((namespace, name, options.get("tick") is not None))
        return (namespace, name) not in self.gone

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))


@dataclass
class FakeGate:
    open: bool = False
    asked: int = 0

    async def acting(self) -> bool:
        self.asked += 1
        return self.open


def test_the_loop_acts_only_while_the_gate_is_open_and_forgets_deleted_models() -> None:
    async def scenario() -> tuple[FakeReconciler, FakeGate, PeriodicSchedule]:
        reconciler, gate = FakeReconciler(gone={("ml", "gone")}), FakeGate()
        schedule = PeriodicSchedule({"resync": 0.05, "budget": 0.05})
        now = asyncio.get_running_loop().time()
        schedule.track(("ml", "a"), now)
        schedule.track(("ml", "gone"), now)
        loop = PeriodicLoop(
            cast(Reconciler, reconciler),
            schedule,
            cast(PeeringGate, gate),
            clock=asyncio.get_running_loop().time,
            max_sleep=0.02,
        )
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.3)
        assert gate.asked > 0 and reconciler.calls == []  # a standby does nothing
        gate.open = True
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return reconciler, gate, schedule

    reconciler, _, schedule = asyncio.run(scenario())
    assert ("ml", "a", True) in reconciler.calls  # budget ticks
    assert ("ml", "a", False) in reconciler.calls  # resyncs
    assert reconciler.forgotten[0] == ("ml", "gone")
    assert schedule.models == [("ml", "a")]
