"""Serving cost inside a budget: prices, caps, spend accounting. Pure: no Kubernetes I/O.

The operator calls these from its handlers and timer (see `assess_budget`); everything here is
a function of typed inputs and `now`, so it is table-tested and driven for a simulated month
by `benchmarks/budget_simulation.py`.

How the cap works (AUTOSCALING.md has the long form):
- hourly budget: at most floor(budget / replica cost) replicas ever run, so the spend rate,
  and hence the spend of any hour, never exceeds the hourly budget;
- monthly budget: minReplicas stay paid for until the month ends (the reserve); the rest of
  the monthly budget (the surplus) buys replicas above the minimum, and the cap lets at most
  surplus / (replica cost x lookahead) of them run. The cap falls only as the surplus runs
  out, so replicas follow demand until the budget really is nearly spent, and the lookahead
  (>= 3 x the time a new cap needs to reach the pods) keeps spend inside the budget even
  though the autoscaler applies a lowered cap late.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from optimodel.model_builder.spec import Serving
from optimodel.operator import api, hardware
from optimodel.operator.hardware import CAPACITY_TYPES, CapacityType
from optimodel.operator.status import ModelEvent

# The prices live in the hardware catalog (hardware.py), the one source of truth; these are
# its on-demand views, kept here for the budget code and its callers. Override them in the
# operator's hardware / gpuPrices settings (Helm values) or per resource with the
# optimodel.io/price-usd-per-gpu-hour annotation.
DEFAULT_GPU_PRICES_USD_PER_HOUR = hardware.DEFAULT_GPU_PRICES_USD_PER_HOUR
# One replica with serving.gpu.count 0 (a few vCPUs and memory for Triton on CPU).
DEFAULT_CPU_REPLICA_USD_PER_HOUR = hardware.DEFAULT_CPU_REPLICA_USD_PER_HOUR

# Percentages of the monthly budget announced by an Event, each once per month.
BUDGET_ALERT_PERCENTS: tuple[int, ...] = (80, 100)
# How long the monthly cap must stay safe: >= 3 x (timer period + the autoscaler's reaction),
# see `cap_replicas`. The default fits a 60 s timer and the HPA's 15 s sync with headroom.
DEFAULT_LOOKAHEAD = timedelta(minutes=10)

HOUR = timedelta(hours=1)
# Tolerance of float division when a budget is an exact multiple of the replica cost
# (6 / 1.2 is 4.999...): cents never matter, a lost replica does.
_EPSILON = 1e-9

BudgetLimit = Literal["spec", "hourly", "monthly"]


class CostError(ValueError):
    """A price or budget input is unusable; `reason` is the WithinBudget condition reason."""

    reason = "InvalidBudget"


class UnknownGpuTypeError(CostError):
    """spec.serving.gpu.type has no price in the catalog."""

    reason = "UnknownGpuPrice"

    def __init__(self, gpu_type: str, known: list[str]) -> None:
        self.gpu_type = gpu_type
        super().__init__(
            f"spec.serving.gpu.type: {gpu_type!r} has no price in the operator's GPU price "
            f"catalog (known: {', '.join(known)}); fix: use a known type, add it to the "
            f"operator's gpuPrices setting, or set the annotation "
            f'{api.PRICE_USD_PER_GPU_HOUR}: "<USD per GPU-hour>"'
        )


class InvalidAmountError(CostError):
    """An annotation or setting is not a positive amount of US dollars."""

    reason = "InvalidBudgetAnnotation"

    def __init__(self, where: str, value: object) -> None:
        self.where = where
        self.value = value
        super().__init__(
            f"{where}: {value!r} is not a positive amount; "
            f'fix: write a positive number of US dollars as a string, e.g. "6" or "2.5"'
        )


def parse_amount(where: str, value: object) -> float:
    """A positive, finite dollar amount from an annotation or setting value."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidAmountError(where, value)
    try:
        amount = float(value)
    except ValueError:
        raise InvalidAmountError(where, value) from None
    if not math.isfinite(amount) or amount <= 0:
        raise InvalidAmountError(where, value)
    return amount


@dataclass(frozen=True)
class PriceCatalog:
    """USD per GPU-hour by GPU type (on-demand and spot), and the CPU replica-hour's price."""

    gpu_usd_per_hour: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_GPU_PRICES_USD_PER_HOUR
    )
    cpu_replica_usd_per_hour: float = DEFAULT_CPU_REPLICA_USD_PER_HOUR
    # Spot prices; a type without one is charged its on-demand price on spot nodes too.
    gpu_spot_usd_per_hour: Mapping[str, float] = field(
        default_factory=lambda: hardware.DEFAULT_GPU_SPOT_PRICES_USD_PER_HOUR
    )
    cpu_replica_spot_usd_per_hour: float | None = hardware.DEFAULT_CPU_REPLICA_SPOT_USD_PER_HOUR

    @classmethod
    def from_hardware(cls, catalog: hardware.HardwareCatalog) -> PriceCatalog:
        """The prices of a hardware catalog (the operator's settings build it)."""
        gpus = catalog.gpus.values()
        return cls(
            MappingProxyType({gpu.name: gpu.on_demand_usd_per_hour for gpu in gpus}),
            catalog.cpu_replica.on_demand_usd_per_hour,
            MappingProxyType(
                {
                    gpu.name: gpu.spot_usd_per_hour
                    for gpu in gpus
                    if gpu.spot_usd_per_hour is not None
                }
            ),
            catalog.cpu_replica.spot_usd_per_hour,
        )

    @classmethod
    def from_settings(
        cls,
        gpu_prices: Mapping[str, object] | None = None,
        cpu_replica_usd_per_hour: object | None = None,
    ) -> PriceCatalog:
        """The defaults merged with the operator's settings (Helm values gpuPrices, ...)."""
        prices = {
            gpu_type: parse_amount(f"gpuPrices[{gpu_type}]", price)
            for gpu_type, price in (gpu_prices or {}).items()
        }
        cpu = (
            None
            if cpu_replica_usd_per_hour is None
            else parse_amount("cpuReplicaPrice", cpu_replica_usd_per_hour)
        )
        return cls.from_hardware(
            hardware.HardwareCatalog.with_overrides(
                on_demand_prices=prices, cpu_replica_usd_per_hour=cpu
            )
        )

    def gpu_price(self, gpu_type: str, capacity: CapacityType = "on-demand") -> float:
        """USD per hour of one GPU of this type; UnknownGpuTypeError names the fix."""
        try:
            on_demand = self.gpu_usd_per_hour[gpu_type]
        except KeyError:
            raise UnknownGpuTypeError(gpu_type, sorted(self.gpu_usd_per_hour)) from None
        if capacity == "spot":
            # Clouds never charge more for spot than on-demand (an on-prem price of 0 stays 0).
            return min(on_demand, self.gpu_spot_usd_per_hour.get(gpu_type, on_demand))
        return on_demand

    def cpu_replica_price(self, capacity: CapacityType = "on-demand") -> float:
        """USD per hour of one CPU-only replica on this capacity type."""
        if capacity == "spot" and self.cpu_replica_spot_usd_per_hour is not None:
            return min(self.cpu_replica_usd_per_hour, self.cpu_replica_spot_usd_per_hour)
        return self.cpu_replica_usd_per_hour


def replica_cost_per_hour(
    serving: Serving, catalog: PriceCatalog, annotation_override: float | None = None
) -> float:
    """USD per hour of one serving replica: GPUs x price per GPU-hour.

    The annotation override is a price per GPU-hour; for a CPU-only replica (gpu.count 0) it
    is the price of the whole replica-hour.
    """
    count = serving.gpu.count
    if annotation_override is not None:
        return annotation_override * max(count, 1)
    if count == 0:
        return catalog.cpu_replica_usd_per_hour
    return count * catalog.gpu_price(serving.gpu.type)


@dataclass(frozen=True)
class Budget:
    """The budget annotations of one OptimizedModel; None means no limit of that kind."""

    usd_per_hour: float | None = None
    usd_per_month: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.usd_per_hour is None and self.usd_per_month is None


def _annotation(annotations: Mapping[str, str] | None, key: str) -> float | None:
    value = (annotations or {}).get(key)
    if value is None:
        return None
    return parse_amount(f"metadata.annotations[{key}]", value)


def parse_budget(annotations: Mapping[str, str] | None) -> Budget:
    """The Budget from the budget-usd-per-hour/-per-month annotations; InvalidAmountError."""
    return Budget(
        usd_per_hour=_annotation(annotations, api.BUDGET_USD_PER_HOUR),
        usd_per_month=_annotation(annotations, api.BUDGET_USD_PER_MONTH),
    )


def parse_price_override(annotations: Mapping[str, str] | None) -> float | None:
    """The per-resource price optimodel.io/price-usd-per-gpu-hour, if set."""
    return _annotation(annotations, api.PRICE_USD_PER_GPU_HOUR)


# --- months (UTC) ---------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


def month_key(moment: datetime) -> str:
    """The accounting month (UTC) of a moment, as YYYY-MM."""
    moment = _utc(moment)
    return f"{moment.year:04d}-{moment.month:02d}"


def month_start(moment: datetime) -> datetime:
    """The first instant of the moment's month (UTC)."""
    moment = _utc(moment)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def next_month_start(moment: datetime) -> datetime:
    """The first instant of the month after the moment's month (UTC)."""
    moment = _utc(moment)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def hours_left_in_month(moment: datetime) -> float:
    """Hours from the moment to the end of its month (UTC)."""
    return (next_month_start(moment) - _utc(moment)) / HOUR


# --- spend accounting -----------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityShare:
    """The serving pods on one capacity type: how many, their rate, their month-to-date."""

    replicas: int = 0
    usd_per_hour: float = 0.0
    month_to_date_usd: float = 0.0


# The current pods by capacity type: (replicas, USD per hour of them all).
CapacityRates = Mapping[CapacityType, tuple[int, float]]


@dataclass(frozen=True)
class SpendState:
    """Month-to-date serving spend; persisted in status.cost so it survives restarts."""

    month: str
    month_to_date_usd: float
    accounted_at: datetime
    usd_per_hour: float = 0.0
    replica_usd_per_hour: float = 0.0
    max_affordable_replicas: int | None = None
    alerted_percents: tuple[int, ...] = ()
    # The split by capacity type (on-demand, spot); its month-to-dates sum to the total.
    shares: Mapping[CapacityType, CapacityShare] = field(default_factory=dict)

    @classmethod
    def from_status(cls, cost: Mapping[str, Any] | None) -> SpendState | None:
        """The state kept in status.cost, or None when nothing was accounted yet."""
        if not cost:
            return None
        status = api.CostStatus.model_validate(cost)
        if status.accounted_at is None or status.month is None:
            return None
        return cls(
            month=status.month,
            month_to_date_usd=status.month_to_date_usd,
            accounted_at=_utc(status.accounted_at),
            usd_per_hour=status.current_usd_per_hour,
            replica_usd_per_hour=status.replica_usd_per_hour,
            max_affordable_replicas=status.max_affordable_replicas,
            alerted_percents=tuple(status.monthly_budget_alerts),
            shares=_shares_of(status),
        )

    def to_status(self, usd_per_million_inferences: float | None = None) -> dict[str, Any]:
        """status.cost as the API writes it (camelCase, JSON types)."""
        status = api.CostStatus(
            replica_usd_per_hour=self.replica_usd_per_hour,
            current_usd_per_hour=self.usd_per_hour,
            max_affordable_replicas=self.max_affordable_replicas,
            month_to_date_usd=self.month_to_date_usd,
            projected_month_usd=projected_month_usd(self),
            usd_per_million_inferences=usd_per_million_inferences,
            accounted_at=self.accounted_at,
            month=self.month,
            monthly_budget_alerts=list(self.alerted_percents),
            on_demand=_share_status(self.shares.get("on-demand")),
            spot=_share_status(self.shares.get("spot")),
        )
        return status.model_dump(by_alias=True, mode="json", exclude_none=True)

    def with_cap(self, affordable: int | None, alerted: tuple[int, ...]) -> SpendState:
        """This state with the cap and the alerts of its assessment."""
        return replace(self, max_affordable_replicas=affordable, alerted_percents=alerted)


def _share_status(share: CapacityShare | None) -> api.CapacityCost | None:
    if share is None:
        return None
    return api.CapacityCost(
        replicas=share.replicas,
        current_usd_per_hour=share.usd_per_hour,
        month_to_date_usd=share.month_to_date_usd,
    )


def _shares_of(status: api.CostStatus) -> dict[CapacityType, CapacityShare]:
    """The split in status.cost (none in a status written before it: see accrue_spend)."""
    found: dict[CapacityType, CapacityShare] = {}
    for capacity, item in (("on-demand", status.on_demand), ("spot", status.spot)):
        if item is not None:
            found[capacity] = CapacityShare(  # type: ignore[index]
                item.replicas, item.current_usd_per_hour, item.month_to_date_usd
            )
    return found


def accrue_spend(
    previous: SpendState | None,
    replicas: int,
    replica_usd_per_hour: float,
    now: datetime,
    by_capacity: CapacityRates | None = None,
) -> SpendState:
    """Integrate the serving pods' cost from the last accounting to `now`.

    `by_capacity` is the current rate of the pods on each capacity type (spend priced per
    pod, operator/capacity.py); without it, `replicas` x `replica_usd_per_hour` on-demand.
    Between two observations the pods are unknown, so each capacity type's interval is
    charged at the larger of its two rates: month-to-date never under-counts, and the cap
    built on it stays safe. Spend is split at month boundaries; a new month starts from zero
    with no alerts.
    """
    now = _utc(now)
    if replicas < 0 or replica_usd_per_hour < 0:
        raise ValueError("replicas and replica cost must not be negative")
    current = (
        dict(by_capacity)
        if by_capacity is not None
        else {"on-demand": (replicas, replicas * replica_usd_per_hour)}
    )
    if any(count < 0 or rate < 0 for count, rate in current.values()):
        raise ValueError("pods and their cost must not be negative")
    rate = sum(rate for _, rate in current.values())
    month = month_key(now)
    old: Mapping[CapacityType, CapacityShare] = {}
    if previous is not None:
        # A state without a split (written before it existed) was all on-demand.
        old = previous.shares or {
            "on-demand": CapacityShare(0, previous.usd_per_hour, previous.month_to_date_usd)
        }

    def shares(hours: float, carried: bool) -> dict[CapacityType, CapacityShare]:
        result: dict[CapacityType, CapacityShare] = {}
        for capacity in CAPACITY_TYPES:
            before = old.get(capacity)
            count, now_rate = current.get(capacity, (0, 0.0))
            if before is None and capacity not in current:
                continue
            charged = max(before.usd_per_hour if before else 0.0, now_rate) * hours
            kept = before.month_to_date_usd if before is not None and carried else 0.0
            result[capacity] = CapacityShare(count, now_rate, kept + charged)
        return result

    if previous is None:
        return SpendState(month, 0.0, now, rate, replica_usd_per_hour, shares=shares(0, False))
    common = {"usd_per_hour": rate, "replica_usd_per_hour": replica_usd_per_hour}
    if now <= previous.accounted_at:
        # A clock step backwards or a replayed event: nothing new to charge, never un-charge.
        return replace(previous, **common, shares=shares(0, True))  # type: ignore[arg-type]
    if previous.month == month:
        split = shares((now - previous.accounted_at) / HOUR, True)
        spent = previous.month_to_date_usd + sum(
            item.month_to_date_usd - (old[c].month_to_date_usd if c in old else 0.0)
            for c, item in split.items()
        )
        return replace(
            previous,
            month_to_date_usd=spent,
            accounted_at=now,
            shares=split,
            **common,  # type: ignore[arg-type]
        )
    since = max(previous.accounted_at, month_start(now))
    split = shares((now - since) / HOUR, False)
    spent = sum(item.month_to_date_usd for item in split.values())
    return SpendState(month, spent, now, rate, replica_usd_per_hour, None, (), split)


def projected_month_usd(spend: SpendState) -> float:
    """Month-to-date plus the current hourly cost until the month ends."""
    return spend.month_to_date_usd + spend.usd_per_hour * hours_left_in_month(spend.accounted_at)


def crossed_alerts(
    spend: SpendState, budget: Budget, percents: tuple[int, ...] = BUDGET_ALERT_PERCENTS
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(percents now alerted, percents newly crossed): each announced once per month.

    A percentage no longer reached (the budget was raised) is re-armed.
    """
    if budget.usd_per_month is None:
        return (), ()
    used = 100 * spend.month_to_date_usd / budget.usd_per_month
    reached = tuple(p for p in percents if used + _EPSILON >= p)
    new = tuple(p for p in reached if p not in spend.alerted_percents)
    return reached, new


# --- the cap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetCap:
    """What the budget allows: the autoscaler's maxReplicas and why."""

    max_replicas: int
    max_affordable_replicas: int | None
    limited_by: BudgetLimit
    below_minimum: bool
    reason: str
    message: str

    @property
    def within_budget(self) -> bool:
        return not self.below_minimum


def _floor_ratio(amount: float, price: float) -> int:
    return max(0, math.floor(amount / price + _EPSILON))


def cap_replicas(
    *,
    min_replicas: int,
    max_replicas: int,
    replica_usd_per_hour: float,
    budget: Budget,
    spend: SpendState | None,
    now: datetime,
    lookahead: timedelta = DEFAULT_LOOKAHEAD,
) -> BudgetCap:
    """The autoscaler's maxReplicas: min(spec max, what the hourly and monthly budgets allow).

    Monthly: minReplicas are reserved to the month's end; the surplus beyond that buys extra
    replicas at most surplus / (replica cost x lookahead). The surplus only shrinks, so the
    cap only falls within a month, and with lookahead >= 3 x the delay before a new cap
    reaches the pods, spend can never outrun it (a delayed drain x' = -x(t - d) / L stays
    positive when d / L < 1/e).

    BudgetBelowMinimum (even minReplicas are unaffordable): keep minReplicas running, never
    above; WithinBudget=False tells the user to raise the budget or lower the minimum.
    """
    if min_replicas < 0 or max_replicas < 0:
        raise ValueError("replica bounds must not be negative")
    if lookahead <= timedelta(0):
        raise ValueError("lookahead must be positive")
    spec_max = max(min_replicas, max_replicas)
    cost = replica_usd_per_hour
    if budget.unlimited or cost <= 0:
        text = "no budget annotations" if budget.unlimited else "replicas cost nothing"
        return BudgetCap(spec_max, None, "spec", False, "NoBudget", f"{text}; not capped")

    limits: list[tuple[int, BudgetLimit, str]] = []
    if budget.usd_per_hour is not None:
        hourly = _floor_ratio(budget.usd_per_hour, cost)
        limits.append(
            (
                hourly,
                "hourly",
                f"${budget.usd_per_hour:g}/h affords {hourly} replicas at ${cost:g}/h each",
            )
        )
    if budget.usd_per_month is not None:
        month = month_key(now)
        spent = spend.month_to_date_usd if spend is not None and spend.month == month else 0.0
        remaining = budget.usd_per_month - spent
        reserve = min_replicas * cost * hours_left_in_month(now)
        surplus = remaining - reserve
        if surplus < 0:
            monthly = _floor_ratio(max(remaining, 0.0), cost * hours_left_in_month(now))
        else:
            monthly = min_replicas + _floor_ratio(surplus, cost * (lookahead / HOUR))
        limits.append(
            (
                monthly,
                "monthly",
                f"${remaining:.2f} of ${budget.usd_per_month:g} left this month affords "
                f"{monthly} replicas at ${cost:g}/h each"
                + (f" while keeping {min_replicas} to the month's end" if surplus >= 0 else ""),
            )
        )
    affordable, limited_by, why = min(limits, key=lambda limit: limit[0])
    if affordable < min_replicas:
        return BudgetCap(
            min_replicas,
            affordable,
            limited_by,
            True,
            "BudgetBelowMinimum",
            f"{why}, below minReplicas {min_replicas}: keeping {min_replicas} running, never "
            f"more; raise the {limited_by} budget or lower spec.autoscaling.minReplicas",
        )
    if affordable >= spec_max:
        return BudgetCap(spec_max, affordable, "spec", False, "BudgetAllowsMaximum", why)
    reason = "CappedByHourlyBudget" if limited_by == "hourly" else "CappedByMonthlyBudget"
    return BudgetCap(
        affordable, affordable, limited_by, False, reason, f"{why}; maxReplicas {affordable}"
    )


def autoscaler_ceiling(min_replicas: int, max_replicas: int, affordable: int | None) -> int:
    """The maxReplicas the autoscaler gets for a given affordable count."""
    spec_max = max(min_replicas, max_replicas)
    if affordable is None:
        return spec_max
    return max(min_replicas, min(spec_max, affordable))


# --- inferences -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterSample:
    """A reading of a cumulative counter (Triton's nv_inference_count summed over pods)."""

    total: float
    at: datetime


def inferences_per_second(previous: CounterSample | None, current: CounterSample) -> float | None:
    """The counter's rate between two readings; None without a usable previous reading."""
    if previous is None:
        return None
    seconds = (current.at - previous.at).total_seconds()
    if seconds <= 0 or current.total < previous.total:
        return None  # no time passed, or pods restarted and the counter reset
    return (current.total - previous.total) / seconds


def usd_per_million_inferences(usd_per_hour: float, per_second: float | None) -> float | None:
    """What a million inferences cost at this spend rate; None while nothing is served."""
    if per_second is None or per_second <= 0:
        return None
    return usd_per_hour / (per_second * 3600) * 1_000_000


# --- one call per handler or timer tick -----------------------------------------------------


@dataclass(frozen=True)
class WithinBudget:
    """The WithinBudget condition's status, reason and message."""

    status: Literal["True", "False"]
    reason: str
    message: str


@dataclass(frozen=True)
class BudgetAssessment:
    """Everything a handler or the timer writes after accounting: status, cap, events."""

    spend: SpendState
    budget: Budget
    cap: BudgetCap
    condition: WithinBudget
    events: tuple[ModelEvent, ...]
    cost_status: dict[str, Any] = field(repr=False)


def assess_budget(
    *,
    previous_cost: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None,
    serving: Serving,
    catalog: PriceCatalog,
    min_replicas: int,
    max_replicas: int,
    replicas: int,
    now: datetime,
    inferences_per_second: float | None = None,
    previous_reason: str | None = None,
    lookahead: timedelta = DEFAULT_LOOKAHEAD,
    by_capacity: CapacityRates | None = None,
) -> BudgetAssessment:
    """Account spend to `now`, recompute the cap, the condition and the Events.

    `previous_cost` is status.cost, `replicas` the Deployment's status.replicas, `previous_reason`
    the reason of the current WithinBudget condition (for transition Events), `by_capacity`
    the pods priced one by one (else `replicas` at the on-demand price). Raises CostError
    (`.reason`, message naming the fix) for a bad annotation or an unpriced GPU type.
    """
    budget = parse_budget(annotations)
    replica_cost = replica_cost_per_hour(serving, catalog, parse_price_override(annotations))
    previous = SpendState.from_status(previous_cost)
    spend = accrue_spend(previous, replicas, replica_cost, now, by_capacity)
    cap = cap_replicas(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        replica_usd_per_hour=replica_cost,
        budget=budget,
        spend=spend,
        now=now,
        lookahead=lookahead,
    )
    alerted, crossed = crossed_alerts(spend, budget)
    events: list[ModelEvent] = []
    if previous is not None:
        before = autoscaler_ceiling(min_replicas, max_replicas, previous.max_affordable_replicas)
        if before != cap.max_replicas:
            events.append(
                ModelEvent(
                    "Normal",
                    "BudgetCapChanged",
                    f"maxReplicas {before} -> {cap.max_replicas}: {cap.message}",
                )
            )
    if cap.below_minimum and previous_reason != "BudgetBelowMinimum":
        events.append(ModelEvent("Warning", "BudgetBelowMinimum", cap.message))
    events.extend(
        ModelEvent(
            "Warning",
            "MonthlyBudgetReached" if percent >= 100 else "MonthlyBudgetAlert",
            f"{percent}% of the monthly budget spent: ${spend.month_to_date_usd:.2f} of "
            f"${budget.usd_per_month or 0:g} in {spend.month}",
        )
        for percent in crossed
    )
    spend = spend.with_cap(cap.max_affordable_replicas, alerted)
    condition = WithinBudget("False" if cap.below_minimum else "True", cap.reason, cap.message)
    per_million = usd_per_million_inferences(spend.usd_per_hour, inferences_per_second)
    return BudgetAssessment(
        spend, budget, cap, condition, tuple(events), spend.to_status(per_million)
    )
