"""The capacity simulation on a short trace: spot preemptions with on-demand fallback, GPU
choice, budgets; the results file holds every figure the README quotes."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from benchmarks.capacity_simulation import (
    HOURLY_BUDGET,
    preemption_trace,
    run,
    save_plot,
    write_results,
)


def test_a_short_month_of_spot_and_choice(tmp_path: Path) -> None:
    result = run(step=timedelta(minutes=5), days=4, seed=3)
    scenarios = result.scenarios
    assert set(scenarios) == {"on-demand", "spot-with-fallback", "fixed-expensive", "auto"}
    on_demand, spot = scenarios["on-demand"], scenarios["spot-with-fallback"]
    assert spot.gpu_types == on_demand.gpu_types
    assert spot.spend_usd < on_demand.spend_usd and on_demand.spot_spend_usd == 0
    assert spot.spot_spend_usd > 0
    # Preemptions happened and cost replica-minutes: lost, then replaced on on-demand.
    assert result.preemptions > 0
    assert spot.preempted_replica_minutes > 0 and spot.fallback_replica_minutes > 0
    assert on_demand.preempted_replica_minutes == 0
    for outcome in (*scenarios.values(), *result.hindsight.values()):
        assert outcome.max_hour_spend_usd <= HOURLY_BUDGET
        assert abs(outcome.on_demand_spend_usd + outcome.spot_spend_usd - outcome.spend_usd) < 0.05
        assert 0 < outcome.served_within_latency_fraction <= outcome.demand_served_fraction <= 1
    # auto chose on estimates; the hindsight sweep ran every type on the same trace.
    assert scenarios["auto"].gpu_types[0] in result.hindsight
    assert result.checks["budgets_never_exceeded"] is True
    assert set(result.saving_by_min_replicas) == {1, 2, 4}
    assert result.saving_by_min_replicas[1] > result.saving_by_min_replicas[4]

    path = write_results(result, tmp_path / "capacity.json")
    document = json.loads(path.read_text())
    for row in document["scenarios"].values():
        assert {"spend_usd", "demand_served_fraction", "p99_violation_minutes", "gpu_types"} <= set(
            row
        )
    assert save_plot(result, tmp_path / "capacity.png").read_bytes()[:4] == b"\x89PNG"


def test_the_preemption_trace_is_seeded() -> None:
    step = timedelta(minutes=1)
    first = preemption_trace(10_000, step, 5)
    assert first == preemption_trace(10_000, step, 5) != preemption_trace(10_000, step, 6)
    assert all(0.2 <= event.share <= 0.6 and event.steps >= 5 for event in first)
