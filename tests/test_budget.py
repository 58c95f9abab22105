"""The budget side of a reconcile (operator/budget.py): when spend is accounted, what is
written, which Events fire, and what cap the autoscaler gets when the input is unusable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optimodel.operator import api
from optimodel.operator.budget import (
    IDLE_REFRESH,
    BudgetOutcome,
    SpendTick,
    assess_model_budget,
    lookahead_for,
    replica_bounds,
)
from optimodel.operator.cost import DEFAULT_LOOKAHEAD, PriceCatalog
from optimodel.operator.status import set_condition

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
L4 = 0.70  # nvidia-l4 in the built-in catalog
HOURLY = api.BUDGET_USD_PER_HOUR
MONTHLY = api.BUDGET_USD_PER_MONTH
PRICE = api.PRICE_USD_PER_GPU_HOUR


def spec(**overrides: Any) -> api.OptimizedModelSpec:
    document: dict[str, Any] = {
        "source": {
            "uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
            "task": "feature-extraction",
        },
        "serving": {"gpu": {"type": "nvidia-l4", "count": 1}},
        **overrides,
    }
    return api.OptimizedModelSpec.model_validate(document)


def assess(
    previous: api.OptimizedModelStatus | None = None,
    *,
    annotations: dict[str, str] | None = None,
    replicas: int = 1,
    now: datetime = T0,
    tick: SpendTick | None = None,
    idle_since: datetime | None = None,
    model: api.OptimizedModelSpec | None = None,
) -> BudgetOutcome:
    return assess_model_budget(
        spec=model or spec(),
        annotations=annotations or {},
        previous=previous or api.OptimizedModelStatus(),
        replicas=replicas,
        catalog=PriceCatalog(),
        now=now,
        tick=tick,
        idle_since=idle_since,
    )


def stored(outcome: BudgetOutcome, now: datetime = T0) -> api.OptimizedModelStatus:
    """The status a reconcile writes from an outcome (what the next one reads back)."""
    conditions = set_condition([], outcome.condition, 1, now)
    return api.OptimizedModelStatus(cost=outcome.cost_status, conditions=conditions)


def cost_of(outcome: BudgetOutcome) -> api.CostStatus:
    assert outcome.cost_status is not None
    return outcome.cost_status


# --- when spend is accounted ----------------------------------------------------------------


def test_first_assessment_starts_the_month_at_now() -> None:
    outcome = assess(annotations={HOURLY: "6"})
    cost = cost_of(outcome)
    assert cost.accounted_at == T0 and cost.month == "2026-03"
    assert cost.month_to_date_usd == 0 and cost.current_usd_per_hour == pytest.approx(L4)
    assert cost.max_affordable_replicas == 8  # floor(6 / 0.7)
    assert outcome.max_replicas == 8  # the spec's maximum (default 8) is lower or equal
    assert (outcome.condition.status, outcome.condition.reason) == ("True", "BudgetAllowsMaximum")
    assert outcome.events == ()


@pytest.mark.parametrize("minutes", [1, 30, 59])
def test_between_ticks_nothing_changes_so_nothing_is_written(minutes: int) -> None:
    """A resync or child event with the same replicas: the status stays byte for byte."""
    before = stored(assess(annotations={HOURLY: "6", MONTHLY: "3000"}))
    later = assess(
        before, annotations={HOURLY: "6", MONTHLY: "3000"}, now=T0 + timedelta(minutes=minutes)
    )
    assert later.cost_status == before.cost
    assert set_condition(before.conditions, later.condition, 1, T0) == before.conditions
    assert later.events == () and later.idle_since is None


def test_a_tick_accounts_up_to_now() -> None:
    before = stored(assess(replicas=2))
    after = cost_of(assess(before, replicas=2, now=T0 + timedelta(minutes=30), tick=SpendTick()))
    assert after.accounted_at == T0 + timedelta(minutes=30)
    assert after.month_to_date_usd == pytest.approx(2 * L4 * 0.5)


def test_a_replica_change_is_accounted_at_once_at_the_larger_rate() -> None:
    before = stored(assess(replicas=1))
    after = cost_of(assess(before, replicas=3, now=T0 + timedelta(minutes=10)))
    assert after.accounted_at == T0 + timedelta(minutes=10)
    assert after.current_usd_per_hour == pytest.approx(3 * L4)
    assert after.month_to_date_usd == pytest.approx(3 * L4 / 6)  # never under-counts


def test_an_idle_tick_writes_nothing_but_is_remembered() -> None:
    before = stored(assess(replicas=0))
    idle = assess(before, replicas=0, now=T0 + timedelta(minutes=5), tick=SpendTick())
    assert idle.cost_status == before.cost
    assert idle.idle_since == T0 + timedelta(minutes=5)
    # An hour on, the accounting is refreshed once (bounding what a restart can over-charge).
    refreshed = assess(before, replicas=0, now=T0 + IDLE_REFRESH, tick=SpendTick())
    assert cost_of(refreshed).accounted_at == T0 + IDLE_REFRESH
    assert refreshed.idle_since is None


def test_replicas_after_an_idle_stretch_are_charged_from_the_last_idle_tick() -> None:
    before = stored(assess(replicas=0))
    woke = assess(
        before,
        replicas=1,
        now=T0 + timedelta(minutes=51),
        idle_since=T0 + timedelta(minutes=50),
    )
    assert cost_of(woke).month_to_date_usd == pytest.approx(L4 / 60)  # 1 minute, not 51
    unknown = assess(before, replicas=1, now=T0 + timedelta(minutes=51))
    assert cost_of(unknown).month_to_date_usd == pytest.approx(L4 * 51 / 60)


def test_a_new_month_starts_from_zero_and_re_arms_the_alerts() -> None:
    budget = {MONTHLY: "100"}
    end_of_feb = datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    spent = stored(assess(annotations=budget, now=end_of_feb))
    assert spent.cost is not None
    spent.cost.month_to_date_usd = 85
    alerted = assess(spent, annotations=budget, now=end_of_feb, tick=SpendTick())
    assert cost_of(alerted).monthly_budget_alerts == [80]
    assert [e.reason for e in alerted.events] == ["MonthlyBudgetAlert"]
    march = assess(stored(alerted), annotations=budget, now=datetime(2026, 3, 1, 0, 30, tzinfo=UTC))
    cost = cost_of(march)
    assert cost.month == "2026-03" and cost.monthly_budget_alerts == []
    assert cost.month_to_date_usd == pytest.approx(L4 / 2)  # only March's half hour


# --- caps and Events ------------------------------------------------------------------------


def test_an_annotation_change_re_caps_without_new_spend() -> None:
    before = stored(assess(annotations={HOURLY: "6"}))
    lowered = assess(before, annotations={HOURLY: "2.1"}, now=T0 + timedelta(minutes=20))
    cost = cost_of(lowered)
    assert lowered.max_replicas == 3 and cost.max_affordable_replicas == 3
    assert cost.month_to_date_usd == 0 and cost.accounted_at == T0  # nothing accounted
    assert [e.reason for e in lowered.events] == ["BudgetCapChanged"]
    assert "maxReplicas 8 -> 3" in lowered.events[0].message
    assert lowered.condition.reason == "CappedByHourlyBudget"


def test_budget_below_minimum_keeps_the_minimum_and_warns_once() -> None:
    model = spec(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    outcome = assess(annotations={HOURLY: "1"}, model=model)
    assert outcome.max_replicas == 2
    assert (outcome.condition.status, outcome.condition.reason) == ("False", "BudgetBelowMinimum")
    assert (
        "raise the hourly budget or lower spec.autoscaling.minReplicas" in outcome.condition.message
    )
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "BudgetBelowMinimum")]
    again = assess(stored(outcome), annotations={HOURLY: "1"}, model=model, tick=SpendTick())
    assert again.events == ()


def test_fixed_replicas_are_only_reported_against_the_budget() -> None:
    model = spec(autoscaling={"enabled": False}, replicas=3)
    assert replica_bounds(model) == (3, 3)
    outcome = assess(annotations={HOURLY: "1"}, model=model, replicas=3)
    assert outcome.max_replicas == 3 and outcome.condition.reason == "BudgetBelowMinimum"
    assert replica_bounds(spec(autoscaling={"minReplicas": 2, "maxReplicas": 5})) == (2, 5)


# --- unusable input: the condition says what to fix, the last cap holds ---------------------

BAD_INPUT = [
    pytest.param(
        {HOURLY: "six"},
        spec(),
        "InvalidBudgetAnnotation",
        ["metadata.annotations[optimodel.io/budget-usd-per-hour]", "fix: write a positive"],
        id="not-a-number",
    ),
    pytest.param(
        {"optimodel.io/budget-usd-per-hours": "6"},
        spec(),
        "InvalidBudgetAnnotation",
        ["unknown annotation", "did you mean 'optimodel.io/budget-usd-per-hour'"],
        id="typo",
    ),
    pytest.param(
        {MONTHLY: "-5"},
        spec(),
        "InvalidBudgetAnnotation",
        ["is not a positive amount"],
        id="negative",
    ),
    pytest.param(
        {HOURLY: "6"},
        spec(serving={"gpu": {"type": "acme-x1", "count": 1}}),
        "UnknownGpuPrice",
        ["spec.serving.gpu.type: 'acme-x1'", "gpuPrices", PRICE],
        id="unpriced-gpu",
    ),
]


@pytest.mark.parametrize(("annotations", "model", "reason", "fragments"), BAD_INPUT)
def test_unusable_budget_input_is_a_condition_with_the_fix(
    annotations: dict[str, str], model: api.OptimizedModelSpec, reason: str, fragments: list[str]
) -> None:
    outcome = assess(annotations=annotations, model=model)
    assert (outcome.condition.status, outcome.condition.reason) == ("False", reason)
    for fragment in fragments:
        assert fragment in outcome.condition.message
    assert outcome.cost_status is None and outcome.budget is None
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", reason)]
    # The next reconcile, same input: no second Event (no storm), nothing else changes.
    again = assess(stored(outcome), annotations=annotations, model=model, tick=SpendTick())
    assert again.events == () and again.condition == outcome.condition


@pytest.mark.parametrize(
    ("previous_affordable", "annotations", "cap"),
    [
        (3, {HOURLY: "six"}, 3),  # the last cap holds
        (None, {HOURLY: "six"}, 1),  # a budget was asked for: minReplicas until it is fixed
        (None, {"optimodel.io/budget-usd-per-hours": "6"}, 1),
        (None, {}, 8),  # no budget at all (unpriced GPU): the spec's maximum
    ],
)
def test_unusable_input_keeps_a_safe_cap(
    previous_affordable: int | None, annotations: dict[str, str], cap: int
) -> None:
    previous = api.OptimizedModelStatus()
    if previous_affordable is not None:
        previous = stored(assess(annotations={HOURLY: str(previous_affordable * L4)}))
        assert previous.cost is not None and previous.cost.max_affordable_replicas == 3
    model = spec() if annotations else spec(serving={"gpu": {"type": "acme-x1", "count": 1}})
    outcome = assess(previous, annotations=annotations, model=model)
    assert outcome.max_replicas == cap
    assert f"keeps maxReplicas {cap} until this is fixed" in outcome.condition.message


def test_a_fixed_annotation_recovers() -> None:
    broken = assess(annotations={HOURLY: "six"})
    fixed = assess(stored(broken), annotations={HOURLY: "6"}, now=T0 + timedelta(minutes=1))
    assert (fixed.condition.status, fixed.condition.reason) == ("True", "BudgetAllowsMaximum")
    assert fixed.cost_status is not None


# --- cost per million inferences ------------------------------------------------------------


def test_cost_per_million_inferences_from_the_tick_and_carried_between_ticks() -> None:
    before = stored(assess())
    ticked = assess(before, now=T0 + timedelta(minutes=1), tick=SpendTick(10.0))
    # $0.70 per hour over 36,000 inferences per hour.
    assert cost_of(ticked).usd_per_million_inferences == pytest.approx(0.7 / 36_000 * 1e6)
    carried = assess(stored(ticked), now=T0 + timedelta(minutes=2))
    assert carried.cost_status == ticked.cost_status  # exactly: no write between ticks
    doubled = assess(stored(ticked), replicas=2, now=T0 + timedelta(minutes=2))
    assert cost_of(doubled).usd_per_million_inferences == pytest.approx(1.4 / 36_000 * 1e6)
    unknown = assess(stored(ticked), now=T0 + timedelta(minutes=3), tick=SpendTick(None))
    assert cost_of(unknown).usd_per_million_inferences is None


def test_lookahead_grows_with_the_timer_period() -> None:
    assert lookahead_for(timedelta(seconds=60)) == DEFAULT_LOOKAHEAD
    assert lookahead_for(timedelta(minutes=10)) == timedelta(minutes=31, seconds=30)
