"""The budget side of one reconcile: status.cost, WithinBudget, Events and the autoscaler's
cap, from `cost.assess_budget`. Pure: the reconciler passes in what it read.

When spend is accounted (month-to-date advanced to now and written to status):
- on every budget timer tick (`SpendTick`, settings.budgetIntervalSeconds);
- whenever the spend rate changed (the Deployment's replicas, the replica price), so an
  interval is never charged at a rate it did not have for longer than one event's delay;
- on the first assessment and at a new month.
Any other reconcile (an annotation or spec change, a resync, a child event) assesses the
budget "as of the last accounting": the same spend, so the status does not change unless
the budget or the spec did, and an idle model costs no writes. A tick that finds nothing
running (and nothing running before) does not write either; the reconciler remembers the
moment in memory (`idle_since`) and writes at most once per `IDLE_REFRESH`, which bounds
what an operator restart can over-charge when replicas appear.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from optimodel.operator import api, cost
from optimodel.operator.capacity import ServingSpendRate, replica_split
from optimodel.operator.planning import describe_problems
from optimodel.operator.render import initial_replicas
from optimodel.operator.status import ConditionUpdate, ModelEvent, find_condition
from optimodel.operator.validation import budget_annotation_problems

# How long a new cap takes to reach the pods besides the timer period: the HPA's 15 s sync,
# KEDA's 15 s polling, pod termination. The lookahead covers 3 x (interval + this).
AUTOSCALER_REACTION = timedelta(seconds=30)
# An idle model (no replicas before or now) writes its accounting at most this often.
IDLE_REFRESH = timedelta(hours=1)


@dataclass(frozen=True)
class SpendTick:
    """A budget timer tick: account spend up to now; the inference rate, when known."""

    inferences_per_second: float | None = None


@dataclass(frozen=True)
class BudgetOutcome:
    """What one reconcile writes for the budget."""

    max_replicas: int  # the autoscaler's maxReplicas
    cost_status: api.CostStatus | None  # status.cost (None: leave it as it is)
    condition: ConditionUpdate  # WithinBudget
    events: tuple[ModelEvent, ...]
    budget: cost.Budget | None  # None: the budget input is unusable (see condition)
    idle_since: datetime | None = None  # a tick found nothing running at this moment

    @property
    def within_budget(self) -> bool:
        return self.condition.status == "True"


def lookahead_for(interval: timedelta) -> timedelta:
    """The monthly cap's lookahead for a timer period: >= 3 x the delay of a new cap."""
    return max(cost.DEFAULT_LOOKAHEAD, 3 * (interval + AUTOSCALER_REACTION))


def replica_bounds(spec: api.OptimizedModelSpec) -> tuple[int, int]:
    """(min, max) replicas the budget is checked against.

    Without autoscaling, spec.replicas run: they are both bounds, so the budget only reports
    (BudgetBelowMinimum when they are unaffordable)."""
    scaling = spec.autoscaling
    if scaling.enabled:
        # minReplicas, or with spot capacity and an HPA the base plus the spot tier's one.
        low = replica_split(spec).min_total
        return low, max(low, scaling.max_replicas)
    fixed = initial_replicas(spec)
    return fixed, fixed


def _cost_document(status: api.CostStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def _last_inference_rate(previous: api.CostStatus | None) -> float | None:
    """The inference rate behind the stored usdPerMillionInferences (from the last tick)."""
    if previous is None or not previous.usd_per_million_inferences:
        return None
    if previous.current_usd_per_hour <= 0:
        return None
    per_hour = previous.current_usd_per_hour / previous.usd_per_million_inferences * 1_000_000
    return per_hour / 3600


def _accounting_moment(
    previous: cost.SpendState | None,
    rate: float,
    replica_price: float,
    now: datetime,
    tick: SpendTick | None,
) -> tuple[datetime, bool]:
    """(when to account up to, whether that is an idle tick left unwritten)."""
    if previous is None or cost.month_key(now) != previous.month:
        return now, False
    if not math.isclose(rate, previous.usd_per_hour) or not math.isclose(
        replica_price, previous.replica_usd_per_hour
    ):
        return now, False
    if tick is None:
        return min(previous.accounted_at, now), False
    idle = rate == 0 and previous.usd_per_hour == 0
    if idle and now - previous.accounted_at < IDLE_REFRESH:
        return min(previous.accounted_at, now), True
    return now, False


def _fallback_cap(
    min_replicas: int,
    max_replicas: int,
    previous: api.CostStatus | None,
    annotations: Mapping[str, str],
) -> int:
    """The cap while the budget input is unusable: the last cap holds; with none yet and a
    budget asked for, minReplicas (never spend more than the user may have meant)."""
    if previous is not None and previous.max_affordable_replicas is not None:
        return cost.autoscaler_ceiling(min_replicas, max_replicas, previous.max_affordable_replicas)
    if any(key.startswith(f"{api.GROUP}/") for key in annotations):
        return min_replicas
    return max(min_replicas, max_replicas)


def _unusable(
    reason: str,
    message: str,
    cap: int,
    previous: api.OptimizedModelStatus,
) -> BudgetOutcome:
    message = f"{message}; the autoscaler keeps maxReplicas {cap} until this is fixed"
    condition = ConditionUpdate("WithinBudget", "False", reason, message)
    old = find_condition(previous.conditions, "WithinBudget")
    events: tuple[ModelEvent, ...] = ()
    if old is None or (old.status, old.reason, old.message) != ("False", reason, message):
        events = (ModelEvent("Warning", reason, message),)
    return BudgetOutcome(cap, None, condition, events, None)


def assess_model_budget(
    *,
    spec: api.OptimizedModelSpec,
    annotations: Mapping[str, str],
    previous: api.OptimizedModelStatus,
    replicas: int,
    catalog: cost.PriceCatalog,
    now: datetime,
    tick: SpendTick | None = None,
    idle_since: datetime | None = None,
    lookahead: timedelta = cost.DEFAULT_LOOKAHEAD,
    spend_rate: ServingSpendRate | None = None,
) -> BudgetOutcome:
    """The budget of one model after this reconcile.

    `replicas` is the Deployments' status.replicas (0 when nothing is deployed), `spend_rate`
    its pods priced one by one (capacity.price_serving_pods; None: `replicas` on-demand),
    `idle_since`
    the last tick that found nothing running and was not written (kept in memory by the
    reconciler). A bad annotation or an unpriced GPU never raises: it is WithinBudget=False
    with the reason and the fix, one Warning Event, and the last cap holds.
    """
    low, high = replica_bounds(spec)
    problems = budget_annotation_problems(annotations)
    if problems:
        cap = _fallback_cap(low, high, previous.cost, annotations)
        return _unusable("InvalidBudgetAnnotation", describe_problems(problems), cap, previous)
    try:
        price = cost.replica_cost_per_hour(
            spec.serving, catalog, cost.parse_price_override(annotations)
        )
    except cost.CostError as error:
        cap = _fallback_cap(low, high, previous.cost, annotations)
        return _unusable(error.reason, str(error), cap, previous)

    stored = _cost_document(previous.cost)
    state = cost.SpendState.from_status(stored)
    rate = replicas * price if spend_rate is None else spend_rate.usd_per_hour
    at, idle = _accounting_moment(state, rate, price, now, tick)
    if (
        stored is not None
        and state is not None
        and state.usd_per_hour == 0
        and idle_since is not None
        and state.accounted_at < idle_since <= at
    ):
        # Nothing ran from the stored accounting until the last idle tick: start from there.
        stored = {**stored, "accountedAt": idle_since.isoformat()}
    inference_rate = tick.inferences_per_second if tick else _last_inference_rate(previous.cost)
    old_condition = find_condition(previous.conditions, "WithinBudget")
    try:
        assessment = cost.assess_budget(
            previous_cost=stored,
            annotations=annotations,
            serving=spec.serving,
            catalog=catalog,
            min_replicas=low,
            max_replicas=high,
            replicas=replicas,
            now=at,
            inferences_per_second=inference_rate,
            previous_reason=old_condition.reason if old_condition else None,
            lookahead=lookahead,
            by_capacity=None
            if spend_rate is None
            else {
                capacity: (share.replicas, share.usd_per_hour)
                for capacity, share in spend_rate.by_capacity.items()
            },
        )
    except cost.CostError as error:
        cap = _fallback_cap(low, high, previous.cost, annotations)
        return _unusable(error.reason, str(error), cap, previous)
    status = api.CostStatus.model_validate(assessment.cost_status)
    # Between ticks the inference rate is the last tick's: keep its figure exactly while the
    # spend rate is unchanged (a recomputed float could differ in its last bit).
    if (
        tick is None
        and previous.cost is not None
        and math.isclose(status.current_usd_per_hour, previous.cost.current_usd_per_hour)
    ):
        status = status.model_copy(
            update={"usd_per_million_inferences": previous.cost.usd_per_million_inferences}
        )
    condition = ConditionUpdate(
        "WithinBudget",
        assessment.condition.status,
        assessment.condition.reason,
        assessment.condition.message,
    )
    events = assessment.events
    return BudgetOutcome(
        max_replicas=assessment.cap.max_replicas,
        cost_status=status,
        condition=condition,
        events=events,
        budget=assessment.budget,
        idle_since=now if idle else None,
    )
