"""Prices, budgets, caps and spend accounting: the pure cost core, table by table."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from optimodel.model_builder.spec import Gpu, Serving
from optimodel.operator import api
from optimodel.operator.cost import (
    DEFAULT_GPU_PRICES_USD_PER_HOUR,
    HOUR,
    Budget,
    BudgetAssessment,
    CostError,
    CounterSample,
    InvalidAmountError,
    PriceCatalog,
    SpendState,
    UnknownGpuTypeError,
    accrue_spend,
    assess_budget,
    autoscaler_ceiling,
    cap_replicas,
    crossed_alerts,
    hours_left_in_month,
    inferences_per_second,
    month_key,
    next_month_start,
    parse_budget,
    parse_price_override,
    projected_month_usd,
    replica_cost_per_hour,
    usd_per_million_inferences,
)
from optimodel.operator.cost_metrics import CostMetrics
from optimodel.operator.status import ModelEvent

JUNE = datetime(2025, 6, 1, tzinfo=UTC)  # 30 days: 720 hours
MID_JUNE = datetime(2025, 6, 16, tzinfo=UTC)  # 360 hours left


def serving(gpu_type: str = "nvidia-l4", count: int = 1) -> Serving:
    return Serving(gpu=Gpu(type=gpu_type, count=count))


# --- prices -----------------------------------------------------------------------------------


def test_default_catalog_prices_every_common_type() -> None:
    expected = {
        "nvidia-t4",
        "nvidia-l4",
        "nvidia-l40s",
        "nvidia-a10g",
        "nvidia-a100",
        "nvidia-a100-80gb",
        "nvidia-h100",
        "nvidia-h200",
    }
    assert set(DEFAULT_GPU_PRICES_USD_PER_HOUR) == expected
    # Ordered as the hardware is: a bigger GPU never lists cheaper than a smaller one.
    order = ["nvidia-t4", "nvidia-l4", "nvidia-a10g", "nvidia-l40s", "nvidia-a100"]
    order += ["nvidia-a100-80gb", "nvidia-h100"]
    prices = [DEFAULT_GPU_PRICES_USD_PER_HOUR[name] for name in order]
    assert prices == sorted(prices)
    assert all(price > 0 for price in prices)


@pytest.mark.parametrize(
    ("gpu_type", "count", "settings", "override", "expected"),
    [
        ("nvidia-l4", 1, None, None, 0.70),
        ("nvidia-l4", 2, None, None, 1.40),
        ("nvidia-h100", 8, None, None, 88.0),
        ("nvidia-l4", 2, {"nvidia-l4": "0.5"}, None, 1.0),  # Helm values override
        ("nvidia-b200", 1, {"nvidia-b200": 9.5}, None, 9.5),  # a type added in settings
        ("nvidia-l4", 2, {"nvidia-l4": "0.5"}, 0.25, 0.5),  # the annotation wins
        ("nvidia-unknown", 4, None, 1.5, 6.0),  # an annotation prices an unknown type
        ("nvidia-l4", 0, None, None, 0.10),  # CPU-only replica
        ("nvidia-l4", 0, None, 0.2, 0.2),  # the annotation prices a CPU replica-hour
    ],
)
def test_replica_cost_per_hour(
    gpu_type: str,
    count: int,
    settings: dict[str, object] | None,
    override: float | None,
    expected: float,
) -> None:
    catalog = PriceCatalog.from_settings(settings)
    assert replica_cost_per_hour(serving(gpu_type, count), catalog, override) == pytest.approx(
        expected
    )


def test_settings_never_change_the_defaults() -> None:
    PriceCatalog.from_settings({"nvidia-l4": 9.0})
    assert DEFAULT_GPU_PRICES_USD_PER_HOUR["nvidia-l4"] == 0.70
    assert PriceCatalog().gpu_price("nvidia-l4") == 0.70


def test_cpu_replica_price_setting() -> None:
    catalog = PriceCatalog.from_settings(cpu_replica_usd_per_hour="0.05")
    assert replica_cost_per_hour(serving(count=0), catalog) == 0.05


def test_unknown_gpu_type_names_the_field_and_the_fixes() -> None:
    with pytest.raises(UnknownGpuTypeError) as raised:
        replica_cost_per_hour(serving("nvidia-b300"), PriceCatalog())
    message = str(raised.value)
    assert "spec.serving.gpu.type" in message
    assert "'nvidia-b300'" in message
    assert "nvidia-l4" in message  # the known types
    assert "gpuPrices" in message
    assert api.PRICE_USD_PER_GPU_HOUR in message
    assert raised.value.reason == "UnknownGpuPrice"


@pytest.mark.parametrize("bad", ["-1", "0", "free", "nan", "inf", "", True, None, [1]])
def test_bad_price_settings_name_the_setting(bad: object) -> None:
    with pytest.raises(InvalidAmountError, match=r"gpuPrices\[nvidia-l4\]"):
        PriceCatalog.from_settings({"nvidia-l4": bad})


# --- budgets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (None, Budget()),
        ({}, Budget()),
        ({"unrelated": "x"}, Budget()),
        ({api.BUDGET_USD_PER_HOUR: "6"}, Budget(usd_per_hour=6.0)),
        ({api.BUDGET_USD_PER_MONTH: "3000"}, Budget(usd_per_month=3000.0)),
        (
            {api.BUDGET_USD_PER_HOUR: "2.5", api.BUDGET_USD_PER_MONTH: "1e3"},
            Budget(usd_per_hour=2.5, usd_per_month=1000.0),
        ),
    ],
)
def test_parse_budget(annotations: dict[str, str] | None, expected: Budget) -> None:
    assert parse_budget(annotations) == expected
    assert expected.unlimited == (expected.usd_per_hour is None and expected.usd_per_month is None)


@pytest.mark.parametrize("key", [api.BUDGET_USD_PER_HOUR, api.BUDGET_USD_PER_MONTH])
@pytest.mark.parametrize("value", ["six", "-6", "0", "nan", "inf", " "])
def test_bad_budget_annotation_names_the_annotation(key: str, value: str) -> None:
    with pytest.raises(InvalidAmountError) as raised:
        parse_budget({key: value})
    assert f"metadata.annotations[{key}]" in str(raised.value)
    assert "fix:" in str(raised.value)
    assert isinstance(raised.value, CostError)
    assert raised.value.reason == "InvalidBudgetAnnotation"


def test_price_override_annotation() -> None:
    assert parse_price_override({api.PRICE_USD_PER_GPU_HOUR: "1.25"}) == 1.25
    assert parse_price_override({}) is None
    with pytest.raises(InvalidAmountError):
        parse_price_override({api.PRICE_USD_PER_GPU_HOUR: "-1"})


# --- months -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "key", "next_start", "hours_left"),
    [
        (JUNE, "2025-06", datetime(2025, 7, 1, tzinfo=UTC), 720.0),
        (datetime(2025, 12, 31, 23, tzinfo=UTC), "2025-12", datetime(2026, 1, 1, tzinfo=UTC), 1),
        (datetime(2024, 2, 1, tzinfo=UTC), "2024-02", datetime(2024, 3, 1, tzinfo=UTC), 696.0),
        (datetime(2025, 2, 1, tzinfo=UTC), "2025-02", datetime(2025, 3, 1, tzinfo=UTC), 672.0),
        # 23:30 on 30 June in UTC-2 is already July in UTC.
        (
            datetime(2025, 6, 30, 23, 30, tzinfo=UTC) + timedelta(hours=2),
            "2025-07",
            datetime(2025, 8, 1, tzinfo=UTC),
            744 - 1.5,
        ),
    ],
)
def test_months_are_utc(
    moment: datetime, key: str, next_start: datetime, hours_left: float
) -> None:
    assert month_key(moment) == key
    assert next_month_start(moment) == next_start
    assert hours_left_in_month(moment) == pytest.approx(hours_left)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        month_key(datetime(2025, 6, 1))


# --- spend accounting -------------------------------------------------------------------------


def state(
    spent: float, at: datetime, rate: float = 0.0, alerts: tuple[int, ...] = ()
) -> SpendState:
    return SpendState(month_key(at), spent, at, rate, 1.0, None, alerts)


@pytest.mark.parametrize(
    ("previous", "replicas", "now", "month", "spent"),
    [
        # First observation: accounting starts now.
        (None, 3, JUNE, "2025-06", 0.0),
        # 2 h at 3 replicas x $1, same rate before and after.
        (state(10.0, JUNE, rate=3.0), 3, JUNE + 2 * HOUR, "2025-06", 16.0),
        # Scaled 3 -> 5 at some point in the hour: charged at the larger count.
        (state(0.0, JUNE, rate=3.0), 5, JUNE + HOUR, "2025-06", 5.0),
        (state(0.0, JUNE, rate=5.0), 3, JUNE + HOUR, "2025-06", 5.0),
        # Across midnight into July: only July's half hour counts in July.
        (
            state(700.0, datetime(2025, 6, 30, 23, 30, tzinfo=UTC), rate=2.0),
            2,
            datetime(2025, 7, 1, 0, 30, tzinfo=UTC),
            "2025-07",
            1.0,
        ),
        # The operator was down for a whole month: the new month from its start.
        (
            state(5.0, datetime(2025, 5, 20, tzinfo=UTC), rate=1.0),
            1,
            datetime(2025, 7, 2, tzinfo=UTC),
            "2025-07",
            24.0,
        ),
        # A clock step backwards never un-charges.
        (state(10.0, JUNE + HOUR, rate=1.0), 4, JUNE, "2025-06", 10.0),
    ],
)
def test_accrue_spend(
    previous: SpendState | None, replicas: int, now: datetime, month: str, spent: float
) -> None:
    after = accrue_spend(previous, replicas, 1.0, now)
    assert after.month == month
    assert after.month_to_date_usd == pytest.approx(spent)
    assert after.usd_per_hour == replicas * 1.0
    assert after.accounted_at == max(now, previous.accounted_at if previous else now)


def test_new_month_rearms_alerts() -> None:
    june = state(900.0, datetime(2025, 6, 30, 23, tzinfo=UTC), 1.0, alerts=(80,))
    july = accrue_spend(june, 1, 1.0, datetime(2025, 7, 1, 1, tzinfo=UTC))
    assert july.alerted_percents == ()
    assert accrue_spend(june, 1, 1.0, june.accounted_at + HOUR).alerted_percents == ()
    same_month = accrue_spend(june, 1, 1.0, june.accounted_at + HOUR / 2)
    assert same_month.alerted_percents == (80,)


def test_accrue_spend_integrates_exactly_over_many_ticks() -> None:
    spend = accrue_spend(None, 2, 0.7, JUNE)
    for minute in range(1, 24 * 60 + 1):
        spend = accrue_spend(spend, 2, 0.7, JUNE + timedelta(minutes=minute))
    assert spend.month_to_date_usd == pytest.approx(2 * 0.7 * 24, rel=1e-12)


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        accrue_spend(None, -1, 1.0, JUNE)


def test_projection_adds_the_current_rate_to_the_month_end() -> None:
    assert projected_month_usd(state(100.0, MID_JUNE, rate=2.0)) == pytest.approx(100 + 2 * 360)


def test_status_round_trip_survives_a_restart() -> None:
    spend = SpendState("2025-06", 123.456789, MID_JUNE, 3.5, 0.7, 6, (80,))
    stored = json.loads(json.dumps(spend.to_status(usd_per_million_inferences=1.25)))
    api.CostStatus.model_validate(stored)  # the CRD's model accepts it
    assert stored["monthToDateUSD"] == 123.456789
    assert stored["usdPerMillionInferences"] == 1.25
    assert stored["monthlyBudgetAlerts"] == [80]
    assert SpendState.from_status(stored) == spend
    assert SpendState.from_status(None) is None
    assert SpendState.from_status({"replicaUSDPerHour": 1, "currentUSDPerHour": 0}) is None


# --- alerts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spent", "already", "monthly", "reached", "new"),
    [
        (10.0, (), 100.0, (), ()),
        (80.0, (), 100.0, (80,), (80,)),
        (85.0, (80,), 100.0, (80,), ()),  # once
        (100.0, (80,), 100.0, (80, 100), (100,)),
        (120.0, (), 100.0, (80, 100), (80, 100)),  # jumped both at once
        (120.0, (80, 100), 100.0, (80, 100), ()),
        (120.0, (80, 100), 200.0, (), ()),  # budget raised: re-armed
        (120.0, (80, 100), None, (), ()),  # no monthly budget
    ],
)
def test_crossed_alerts_fire_once_each(
    spent: float,
    already: tuple[int, ...],
    monthly: float | None,
    reached: tuple[int, ...],
    new: tuple[int, ...],
) -> None:
    spend = state(spent, MID_JUNE, alerts=already)
    assert crossed_alerts(spend, Budget(usd_per_month=monthly)) == (reached, new)


# --- the cap ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "cost", "spent", "min_r", "max_r", "cap", "affordable", "reason"),
    [
        (Budget(), 1.0, 0.0, 1, 8, 8, None, "NoBudget"),
        (Budget(usd_per_hour=100.0), 0.0, 0.0, 1, 8, 8, None, "NoBudget"),
        (Budget(usd_per_hour=100.0), 1.0, 0.0, 1, 8, 8, 100, "BudgetAllowsMaximum"),
        # $6/h at $1.20 is exactly 5 replicas, despite 6 / 1.2 == 4.999... in floats.
        (Budget(usd_per_hour=6.0), 1.2, 0.0, 1, 8, 5, 5, "CappedByHourlyBudget"),
        (Budget(usd_per_hour=6.0), 1.21, 0.0, 1, 8, 4, 4, "CappedByHourlyBudget"),
        (Budget(usd_per_hour=1.0), 1.2, 0.0, 1, 8, 1, 0, "BudgetBelowMinimum"),
        (Budget(usd_per_hour=2.0), 1.0, 0.0, 3, 8, 3, 2, "BudgetBelowMinimum"),
        # Mid-June, 360 h left at $1/replica-hour: $1000 keeps 1 replica ($360) with $640
        # surplus; over the 10-minute lookahead that buys thousands of extra replicas.
        (Budget(usd_per_month=1000.0), 1.0, 0.0, 1, 8, 8, 3841, "BudgetAllowsMaximum"),
        # Surplus $1 = 6 extra replica-lookaheads (10 min at $1/h): min 1 + 6.
        (Budget(usd_per_month=1000.0), 1.0, 639.0, 1, 8, 7, 7, "CappedByMonthlyBudget"),
        # Nothing beyond the reserve: pinned at the minimum but within budget.
        (Budget(usd_per_month=1000.0), 1.0, 640.0, 1, 8, 1, 1, "CappedByMonthlyBudget"),
        # Less than the reserve: below minimum.
        (Budget(usd_per_month=1000.0), 1.0, 641.0, 1, 8, 1, 0, "BudgetBelowMinimum"),
        (Budget(usd_per_month=300.0), 1.0, 0.0, 1, 8, 1, 0, "BudgetBelowMinimum"),
        (Budget(usd_per_month=700.0), 1.0, 0.0, 2, 8, 2, 1, "BudgetBelowMinimum"),
        # KEDA with minReplicas 0: an exhausted budget caps at zero, and that is within budget.
        (Budget(usd_per_month=100.0), 1.0, 100.0, 0, 8, 0, 0, "CappedByMonthlyBudget"),
        (Budget(usd_per_month=100.0), 1.0, 150.0, 0, 8, 0, 0, "CappedByMonthlyBudget"),
        # The tighter of the two budgets wins.
        (
            Budget(usd_per_hour=3.0, usd_per_month=1000.0),
            1.0,
            639.0,
            1,
            8,
            3,
            3,
            "CappedByHourlyBudget",
        ),
    ],
)
def test_cap_replicas(
    budget: Budget,
    cost: float,
    spent: float,
    min_r: int,
    max_r: int,
    cap: int,
    affordable: int | None,
    reason: str,
) -> None:
    spend = state(spent, MID_JUNE, rate=cost * min_r)
    result = cap_replicas(
        min_replicas=min_r,
        max_replicas=max_r,
        replica_usd_per_hour=cost,
        budget=budget,
        spend=spend,
        now=MID_JUNE,
    )
    assert (result.max_replicas, result.max_affordable_replicas, result.reason) == (
        cap,
        affordable,
        reason,
    )
    assert result.within_budget == (reason != "BudgetBelowMinimum")
    assert min_r <= result.max_replicas <= max(min_r, max_r)
    if reason == "BudgetBelowMinimum":
        assert "raise the" in result.message
        assert "minReplicas" in result.message


def test_last_months_spend_does_not_count() -> None:
    may = SpendState("2025-05", 5000.0, datetime(2025, 5, 31, 23, tzinfo=UTC), 1.0, 1.0)
    result = cap_replicas(
        min_replicas=1,
        max_replicas=8,
        replica_usd_per_hour=1.0,
        budget=Budget(usd_per_month=1000.0),
        spend=may,
        now=JUNE,
    )
    assert result.max_replicas == 8


def test_cap_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="negative"):
        cap_replicas(
            min_replicas=-1,
            max_replicas=1,
            replica_usd_per_hour=1.0,
            budget=Budget(),
            spend=None,
            now=JUNE,
        )
    with pytest.raises(ValueError, match="lookahead"):
        cap_replicas(
            min_replicas=1,
            max_replicas=1,
            replica_usd_per_hour=1.0,
            budget=Budget(),
            spend=None,
            now=JUNE,
            lookahead=timedelta(0),
        )


@pytest.mark.parametrize(
    ("min_r", "max_r", "affordable", "ceiling"),
    [(1, 8, None, 8), (1, 8, 20, 8), (1, 8, 3, 3), (2, 8, 0, 2), (0, 8, 0, 0)],
)
def test_autoscaler_ceiling(min_r: int, max_r: int, affordable: int | None, ceiling: int) -> None:
    assert autoscaler_ceiling(min_r, max_r, affordable) == ceiling


def run_month(
    rng: random.Random, lookahead_steps: int, lag_steps: int, step: timedelta
) -> tuple[Budget, float, int, list[float], list[float]]:
    """Random demand over June's last 10 days under the cap; charges and true spend per step."""
    cost = rng.choice([0.35, 0.7, 1.85, 3.7, 11.0])
    min_r = rng.randint(1, 3)
    max_r = rng.randint(min_r, 16)
    start = datetime(2025, 6, 20, tzinfo=UTC)  # the last 10 days of June
    hours = hours_left_in_month(start)
    hourly = rng.choice([None, cost * rng.uniform(min_r, max_r + 2)])
    monthly = cost * hours * rng.uniform(min_r, (min_r + max_r) / 2 + 1)
    budget = Budget(usd_per_hour=hourly, usd_per_month=monthly)
    steps = round(hours * HOUR / step) - 1  # the last tick stays in June
    spend = accrue_spend(None, 0, cost, start)
    initial = cap_replicas(
        min_replicas=min_r,
        max_replicas=max_r,
        replica_usd_per_hour=cost,
        budget=budget,
        spend=spend,
        now=start,
        lookahead=lookahead_steps * step,
    )
    caps = [initial.max_replicas] * (lag_steps + 1)  # the autoscaler is created capped
    replicas = min_r
    charged: list[float] = []
    true: list[float] = []
    for index in range(steps):
        wanted = max(min_r, min(max_r, replicas + rng.choice([-2, -1, 0, 0, 1, 2, 4])))
        if rng.random() < 0.01:
            wanted = max_r  # a spike
        replicas = max(min_r, min(wanted, caps[index]))
        true.append(replicas * cost * (step / HOUR))
        before = spend.month_to_date_usd
        spend = accrue_spend(spend, replicas, cost, start + (index + 1) * step)
        charged.append(spend.month_to_date_usd - before)
        result = cap_replicas(
            min_replicas=min_r,
            max_replicas=max_r,
            replica_usd_per_hour=cost,
            budget=budget,
            spend=spend,
            now=start + (index + 1) * step,
            lookahead=lookahead_steps * step,
        )
        caps.append(result.max_replicas)  # reaches the replicas lag_steps later
    return budget, cost, min_r, charged, true


def violations(
    budget: Budget, charged: list[float], true: list[float], step: timedelta
) -> list[str]:
    problems = []
    assert budget.usd_per_month is not None
    if sum(charged) > budget.usd_per_month * (1 + 1e-9):
        problems.append(f"accounted {sum(charged):.4f} > monthly {budget.usd_per_month:.4f}")
    if sum(true) > sum(charged) * (1 + 1e-9):
        problems.append("accounting under-counted")
    if budget.usd_per_hour is not None:
        per_hour = round(HOUR / step)
        windows = [sum(true[i : i + per_hour]) for i in range(len(true) - per_hour + 1)]
        worst = max(windows)
        if worst > budget.usd_per_hour * (1 + 1e-9):
            problems.append(f"an hour cost {worst:.4f} > {budget.usd_per_hour:.4f}")
    return problems


def test_property_the_cap_never_lets_spend_exceed_the_budget() -> None:
    # Random prices, bounds, budgets (each affording at least minReplicas all month) and
    # demand; the new cap reaches the replicas 0-2 steps late. Lookahead >= 3 x the delay.
    step = timedelta(minutes=10)
    rng = random.Random(20250601)
    for trial in range(36):
        lag = trial % 3
        budget, _, _, charged, true = run_month(rng, 3 * (lag + 2), lag, step)
        assert violations(budget, charged, true, step) == [], f"trial {trial}"
        assert budget.usd_per_month is not None
        assert sum(charged) > 0.5 * budget.usd_per_month or budget.usd_per_hour is not None


def test_property_check_catches_a_lookahead_shorter_than_the_delay() -> None:
    # The same harness with a 1-step lookahead and a 4-step delay must find overspending,
    # or the property test above could not fail.
    step = timedelta(minutes=10)
    rng = random.Random(7)
    found = 0
    for _ in range(20):
        budget, _, _, charged, true = run_month(rng, 1, 4, step)
        found += bool(violations(budget, charged, true, step))
    assert found > 0


# --- inferences -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "current", "rate"),
    [
        (None, CounterSample(100, JUNE), None),
        (CounterSample(100, JUNE), CounterSample(700, JUNE + timedelta(minutes=1)), 10.0),
        (CounterSample(700, JUNE), CounterSample(100, JUNE + timedelta(minutes=1)), None),
        (CounterSample(100, JUNE), CounterSample(100, JUNE), None),
        (CounterSample(100, JUNE), CounterSample(100, JUNE + timedelta(minutes=1)), 0.0),
    ],
)
def test_inferences_per_second(
    previous: CounterSample | None, current: CounterSample, rate: float | None
) -> None:
    assert inferences_per_second(previous, current) == rate


@pytest.mark.parametrize(
    ("usd_per_hour", "per_second", "expected"),
    [
        (3.6, 1000.0, 1.0),  # 3.6M inferences an hour for $3.60
        (0.7, 100.0, 0.7 / 0.36),
        (1.0, 0.0, None),
        (1.0, None, None),
        (0.0, 10.0, 0.0),
    ],
)
def test_usd_per_million_inferences(
    usd_per_hour: float, per_second: float | None, expected: float | None
) -> None:
    result = usd_per_million_inferences(usd_per_hour, per_second)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


# --- one call per tick ------------------------------------------------------------------------


def tick(
    previous: dict[str, Any] | None,
    annotations: dict[str, str],
    replicas: int,
    now: datetime,
    reason: str | None = None,
    min_replicas: int = 1,
    inferences: float | None = None,
) -> tuple[dict[str, Any], BudgetAssessment]:
    assessment = assess_budget(
        previous_cost=previous,
        annotations=annotations,
        serving=serving("nvidia-l4"),  # $0.70/h
        catalog=PriceCatalog(),
        min_replicas=min_replicas,
        max_replicas=8,
        replicas=replicas,
        now=now,
        inferences_per_second=inferences,
        previous_reason=reason,
    )
    return json.loads(json.dumps(assessment.cost_status)), assessment


def test_assess_budget_writes_status_and_events_once() -> None:
    annotations = {api.BUDGET_USD_PER_HOUR: "6", api.BUDGET_USD_PER_MONTH: "2000"}
    status, first = tick(None, annotations, 0, JUNE)
    assert first.cap.max_replicas == 8
    assert first.condition.status == "True"
    assert first.events == ()
    assert status["maxAffordableReplicas"] == 8  # floor($6 / $0.70)
    # 8 replicas for 9 days: $1209.60 of $2000 - no alert yet.
    status, _ = tick(status, annotations, 8, JUNE + timedelta(days=1))
    status, later = tick(status, annotations, 8, JUNE + timedelta(days=9))
    assert later.events == ()
    assert status["monthToDateUSD"] == pytest.approx(8 * 0.7 * 24 * 9)
    # Day 12 passes 80%: one Event, recorded in status so the next tick stays quiet.
    status, alert = tick(status, annotations, 8, JUNE + timedelta(days=12))
    assert [e.reason for e in alert.events] == ["MonthlyBudgetAlert"]
    assert "80%" in alert.events[0].message
    assert status["monthlyBudgetAlerts"] == [80]
    status, quiet = tick(status, annotations, 8, JUNE + timedelta(days=12, minutes=1))
    assert quiet.events == ()
    assert status["monthlyBudgetAlerts"] == [80]


def test_assess_budget_lowers_the_cap_before_the_month_is_overspent() -> None:
    # Demand wants 8 replicas all the time; the replicas follow the cap one tick late.
    annotations = {api.BUDGET_USD_PER_MONTH: "600"}  # $504 keeps 1 replica all June
    status, first = tick(None, annotations, 0, JUNE)
    caps = [first.cap.max_replicas]
    events: list[ModelEvent] = []
    now = JUNE
    while caps[-1] > 1 or len(caps) < 100:
        now += timedelta(minutes=1)
        status, assessment = tick(status, annotations, caps[-1], now)
        assert assessment.condition.status == "True"
        caps.append(assessment.cap.max_replicas)
        events.extend(assessment.events)
    assert caps[0] == 8
    assert caps == sorted(caps, reverse=True)  # the cap only falls within a month
    assert len(set(caps)) == 8  # stepping down 8, 7, ..., 1 rather than falling off a cliff
    changed = [e.message for e in events if e.reason == "BudgetCapChanged"]
    assert len(changed) == 7
    assert changed[0].startswith("maxReplicas 8 -> 7")
    # What is left still pays for the minimum to the end of June.
    left = 600 - float(status["monthToDateUSD"])
    assert left >= 0.7 * hours_left_in_month(now)


def test_budget_below_minimum_policy() -> None:
    annotations = {api.BUDGET_USD_PER_HOUR: "1"}  # below 2 x $0.70
    status, first = tick(None, annotations, 0, JUNE, min_replicas=2)
    assert first.cap.max_replicas == 2  # min keeps running
    assert first.condition.status == "False"
    assert first.condition.reason == "BudgetBelowMinimum"
    assert [e.type for e in first.events] == ["Warning"]
    _, again = tick(status, annotations, 2, JUNE + HOUR, "BudgetBelowMinimum", min_replicas=2)
    assert again.events == ()  # no Event spam


def test_assess_budget_reports_cost_per_million() -> None:
    status, assessment = tick(None, {}, 2, JUNE, inferences=100.0)
    assert status["usdPerMillionInferences"] == pytest.approx(1.4 / 0.36)
    assert assessment.condition.reason == "NoBudget"


def test_assess_budget_raises_typed_errors_for_the_edge_to_report() -> None:
    with pytest.raises(CostError) as raised:
        tick(None, {api.BUDGET_USD_PER_HOUR: "lots"}, 1, JUNE)
    assert raised.value.reason == "InvalidBudgetAnnotation"


# --- metrics ----------------------------------------------------------------------------------


def test_cost_metrics_follow_the_status() -> None:
    registry = CollectorRegistry()
    metrics = CostMetrics(registry)
    spend = SpendState("2025-06", 42.0, MID_JUNE, 2.8, 0.7, 4)
    labels = {"namespace": "ml", "name": "minilm"}
    metrics.observe("ml", "minilm", spend.to_status(), Budget(usd_per_hour=2.8), True)

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("optimodel_cost_usd_per_hour") == 2.8
    assert value("optimodel_budget_usd_per_hour") == 2.8
    assert value("optimodel_budget_usd_per_month") is None  # unset: absent, not 0
    assert value("optimodel_month_to_date_spend_usd") == 42.0
    assert value("optimodel_max_affordable_replicas") == 4
    assert value("optimodel_within_budget") == 1.0
    assert value("optimodel_projected_month_spend_usd") == pytest.approx(42 + 2.8 * 360)
    assert value("optimodel_usd_per_million_inferences") is None

    metrics.observe("ml", "minilm", spend.to_status(), Budget(), False)
    assert value("optimodel_budget_usd_per_hour") is None  # annotation removed
    assert value("optimodel_within_budget") == 0.0
    metrics.forget("ml", "minilm")
    assert value("optimodel_cost_usd_per_hour") is None
    assert not math.isnan(registry.get_sample_value("optimodel_cost_usd_per_hour") or 0.0)


def test_a_new_month_lifts_the_cap_with_an_event() -> None:
    annotations = {api.BUDGET_USD_PER_MONTH: "600"}
    june_end = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
    spent = SpendState("2025-06", 599.9, june_end, 0.7, 0.7, 1, (80,))
    status, july = tick(spent.to_status(), annotations, 1, datetime(2025, 7, 1, tzinfo=UTC))
    assert july.cap.max_replicas == 8
    assert status["month"] == "2025-07"
    assert status["monthlyBudgetAlerts"] == []
    assert [e.message.split(":")[0] for e in july.events] == ["maxReplicas 1 -> 8"]
