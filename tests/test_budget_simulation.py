"""A simulated month under the budget: spend stays inside it, replicas follow demand otherwise."""

from __future__ import annotations

import json
import statistics
from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.budget_simulation import (
    MONTH_START,
    Outcome,
    demand_curve,
    run,
    summary_table,
    write_results,
)

TOLERANCE = 1e-9


def check_month(outcomes: list[Outcome], step: timedelta) -> None:
    by_name = {o.scenario: o for o in outcomes}
    assert set(by_name) == {"ample", "hourly-cap", "monthly-cap", "below-minimum"}
    steps = round(timedelta(days=30) / step)

    for o in outcomes:
        assert len(o.replicas) == steps
        # Accounting never under-counts what really ran.
        assert o.accounted_usd >= o.accounted_true_usd * (1 - TOLERANCE), o.scenario
        # Every replica the budget withheld is explained by a cap below demand.
        assert o.unexplained_deficit_steps == 0, o.scenario
        assert all(r <= cap for r, cap in zip(o.replicas, o.caps, strict=True)), o.scenario
        if o.scenario == "below-minimum":
            continue
        if o.budget_usd_per_hour is not None:
            assert o.max_hour_spend_usd <= o.budget_usd_per_hour * (1 + TOLERANCE), o.scenario
        if o.budget_usd_per_month is not None:
            assert o.spend_usd <= o.budget_usd_per_month, o.scenario
            assert o.accounted_usd <= o.budget_usd_per_month, o.scenario
        assert o.within_budget_false_steps == 0, o.scenario

    ample = by_name["ample"]
    assert ample.replicas == ample.twin_replicas  # never capped: exactly what demand asked
    assert ample.hours_capped == 0
    assert ample.events == {}
    assert ample.demand_served_pct > 99

    hourly = by_name["hourly-cap"]
    assert hourly.hours_capped > 0  # the scenario does bind, on peaks and spikes
    assert hourly.max_replicas_seen == 7
    assert hourly.demand_served_pct > 95

    monthly = by_name["monthly-cap"]
    assert monthly.budget_usd_per_month is not None
    assert monthly.budget_usd_per_month < monthly.unbudgeted_spend_usd  # it does bind
    # The cap falls only when the budget is nearly spent: the budget is used, not hoarded.
    assert monthly.spend_usd >= 0.97 * monthly.budget_usd_per_month
    assert monthly.surplus_spent_on_day is not None and monthly.surplus_spent_on_day > 10
    assert monthly.events.get("MonthlyBudgetAlert") == 1
    assert "MonthlyBudgetReached" not in monthly.events
    assert min(monthly.replicas) >= 1  # minReplicas kept running to the end

    below = by_name["below-minimum"]
    assert set(below.replicas) == {2}  # minReplicas kept, never more
    assert below.within_budget_false_steps == steps
    assert below.events == {
        "BudgetBelowMinimum": 1,
        "MonthlyBudgetAlert": 1,
        "MonthlyBudgetReached": 1,
    }


def test_demand_has_daily_cycles_weekends_and_spikes() -> None:
    step = timedelta(minutes=5)
    demand = demand_curve(30, step, seed=7)
    per_day = round(timedelta(days=1) / step)
    days = [demand[i : i + per_day] for i in range(0, len(demand), per_day)]
    weekdays = [d for i, d in enumerate(days) if (MONTH_START + timedelta(days=i)).weekday() < 5]
    weekends = [d for i, d in enumerate(days) if (MONTH_START + timedelta(days=i)).weekday() >= 5]
    assert statistics.mean(map(statistics.mean, weekends)) < 0.6 * statistics.mean(
        map(statistics.mean, weekdays)
    )
    nights = statistics.mean(d[3 * per_day // 24] for d in weekdays)  # 03:00
    afternoons = statistics.mean(d[14 * per_day // 24] for d in weekdays)  # 14:00
    assert afternoons > 3 * nights
    assert max(demand) > 1.5 * statistics.quantiles(demand, n=100)[95]  # spikes


def test_month_at_five_minute_steps(tmp_path: Path) -> None:
    step = timedelta(minutes=5)
    outcomes = run(step)
    check_month(outcomes, step)
    table = summary_table(outcomes)
    assert "monthly-cap" in table
    written = json.loads(write_results(outcomes, step, tmp_path / "r.json").read_text())
    assert written["month"] == "2025-06"
    assert {row["scenario"] for row in written["scenarios"]} == {o.scenario for o in outcomes}
    assert "replicas" not in written["scenarios"][0]


@pytest.mark.slow
def test_month_at_one_minute_steps() -> None:
    # The configuration of `python -m benchmarks.budget_simulation` (the reported numbers).
    step = timedelta(minutes=1)
    check_month(run(step), step)
