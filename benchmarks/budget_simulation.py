"""A month of fluctuating demand under the budget logic: does spend stay inside the budget?

Demand (daily cycles, quiet weekends, random spikes) drives an HPA-like replica model: desired
replicas from demand and the target GPU utilization, stabilization windows, rate limits, pod
start-up time. Every step the operator's timer path runs exactly as in the cluster: spend is
accrued and the cap recomputed by `cost.assess_budget` from the status it wrote the step
before, and the new cap reaches the autoscaler one step late. A twin without a budget shows
what demand alone would have done, so every replica the budget withheld is accounted for.

    python -m benchmarks.budget_simulation            # 1-minute steps, writes results JSON
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from optimodel.model_builder.spec import Gpu, Serving
from optimodel.operator import api
from optimodel.operator.cost import (
    DEFAULT_LOOKAHEAD,
    HOUR,
    PriceCatalog,
    assess_budget,
    month_key,
    replica_cost_per_hour,
)

RESULTS = Path(__file__).resolve().parent / "results" / "budget_simulation.json"
# June 2025 has 30 days: the simulated month is exactly one accounting month.
MONTH_START = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Scenario:
    """One budget against the same month of demand."""

    name: str
    budget_usd_per_hour: float | None
    budget_usd_per_month: float | None
    min_replicas: int = 1
    max_replicas: int = 12
    target_gpu_utilization: int = 70
    gpu_type: str = "nvidia-l4"
    # Inferences/s one replica serves at 100% GPU utilization.
    replica_capacity: float = 400.0
    # Steps until a new pod serves (billed from creation: the GPU is held while it loads).
    startup_steps: int = 2


@dataclass
class Outcome:
    """What one scenario did over the month."""

    scenario: str
    budget_usd_per_hour: float | None
    budget_usd_per_month: float | None
    replica_usd_per_hour: float
    spend_usd: float
    accounted_usd: float
    accounted_true_usd: float
    unbudgeted_spend_usd: float
    max_hour_spend_usd: float
    demand_served_pct: float
    unbudgeted_demand_served_pct: float
    hours_capped: float
    steps_below_unbudgeted: int
    unexplained_deficit_steps: int
    max_replicas_seen: int
    min_replicas_seen: int
    within_budget_false_steps: int
    # Day of the month from which the monthly budget held replicas at the minimum.
    surplus_spent_on_day: float | None = None
    events: dict[str, int] = field(default_factory=dict)
    # Per step, for the tests' own checks (not written to the results file).
    replicas: list[int] = field(default_factory=list, repr=False)
    caps: list[int] = field(default_factory=list, repr=False)
    twin_replicas: list[int] = field(default_factory=list, repr=False)
    step_spend: list[float] = field(default_factory=list, repr=False)


def demand_curve(days: int, step: timedelta, seed: int, peak: float = 2000.0) -> list[float]:
    """Inferences/s per step: a daily cycle, quieter weekends, noise and random spikes."""
    rng = random.Random(seed)
    steps_per_day = round(timedelta(days=1) / step)
    total = days * steps_per_day
    spikes = [0.0] * total
    for _ in range(days // 2):  # about 3-4 spikes a week, 30-120 minutes, 1.5-3x
        start = rng.randrange(total)
        length = round(timedelta(minutes=rng.randint(30, 120)) / step)
        height = rng.uniform(1.5, 3.0)
        for index in range(start, min(total, start + length)):
            spikes[index] = max(spikes[index], height)
    demand = []
    for index in range(total):
        moment = MONTH_START + index * step
        hour = moment.hour + moment.minute / 60
        daily = 0.2 + 0.8 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) ** 1.5
        weekend = 0.45 if moment.weekday() >= 5 else 1.0
        noise = rng.uniform(0.9, 1.1)
        demand.append(peak * daily * weekend * noise * max(1.0, spikes[index]))
    return demand


class ReplicaModel:
    """HPA-like: recommendations stabilized over windows, rate-limited, clamped to a cap."""

    def __init__(self, scenario: Scenario, step: timedelta) -> None:
        self.scenario = scenario
        minutes = step / timedelta(minutes=1)
        self.up_window = max(1, round(1 / minutes))
        self.down_window = max(1, round(5 / minutes))
        self.down_period = max(1, round(2 / minutes))
        self.recommendations: deque[int] = deque(maxlen=self.down_window)
        self.replicas = scenario.min_replicas
        self.last_scale_down = -self.down_period
        self.started: deque[int] = deque()  # step at which each pod was created

    def desired(self, demand: float) -> int:
        per_replica = self.scenario.replica_capacity * self.scenario.target_gpu_utilization / 100
        return max(1, math.ceil(demand / per_replica))

    def advance(self, index: int, demand: float, cap: int) -> int:
        """Replicas for this step, given the demand and the maxReplicas in force."""
        self.recommendations.append(self.desired(demand))
        recent = list(self.recommendations)
        up = min(recent[-self.up_window :])
        down = max(recent)
        current = self.replicas
        if current > cap:
            target = cap  # the HPA enforces a lowered maxReplicas at once
        elif up > current:
            target = min(up, max(2 * current, current + 2))
        elif down < current and index - self.last_scale_down >= self.down_period:
            target = max(down, current - current // 2)
            self.last_scale_down = index
        else:
            target = current
        target = max(self.scenario.min_replicas, min(target, cap))
        while len(self.started) < target:
            self.started.append(index)
        while len(self.started) > target:
            self.started.pop()
        self.replicas = target
        return target

    def ready(self, index: int) -> int:
        return sum(1 for created in self.started if index - created >= self.scenario.startup_steps)


def simulate(
    scenario: Scenario, demand: list[float], step: timedelta, catalog: PriceCatalog
) -> Outcome:
    """Run one scenario over the demand; spend accrued and capped by the operator's code."""
    serving = Serving(gpu=Gpu(type=scenario.gpu_type, count=1))
    replica_cost = replica_cost_per_hour(serving, catalog)
    annotations = {}
    if scenario.budget_usd_per_hour is not None:
        annotations[api.BUDGET_USD_PER_HOUR] = f"{scenario.budget_usd_per_hour:g}"
    if scenario.budget_usd_per_month is not None:
        annotations[api.BUDGET_USD_PER_MONTH] = f"{scenario.budget_usd_per_month:g}"
    hours = step / HOUR

    budgeted = ReplicaModel(scenario, step)
    twin = ReplicaModel(scenario, step)
    outcome = Outcome(
        scenario.name,
        scenario.budget_usd_per_hour,
        scenario.budget_usd_per_month,
        replica_cost,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0,
        0,
        0,
        10**9,
        0,
    )
    # A new cap lands one step late and accounting charges each step at the larger of two
    # observations: a delay of two steps, so the lookahead must be >= e x 2 steps.
    lookahead = max(DEFAULT_LOOKAHEAD, 6 * step)
    # The create handler accounts first, before any replica runs.
    created = assess_budget(
        previous_cost=None,
        annotations=annotations,
        serving=serving,
        catalog=catalog,
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        replicas=0,
        now=MONTH_START,
        lookahead=lookahead,
    )
    cost_status: dict[str, Any] | None = created.cost_status
    for event in created.events:
        outcome.events[event.reason] = outcome.events.get(event.reason, 0) + 1
    reason: str | None = created.condition.reason
    # The create handler renders the autoscaler with this cap.
    cap_in_force = pending_cap = created.cap.max_replicas
    served = twin_served = wanted = true_spend = 0.0
    capped_steps = 0
    for index, load in enumerate(demand):
        replicas = budgeted.advance(index, load, cap_in_force)
        twin_replicas = twin.advance(index, load, scenario.max_replicas)
        served += min(load, budgeted.ready(index) * scenario.replica_capacity)
        twin_served += min(load, twin.ready(index) * scenario.replica_capacity)
        wanted += load
        outcome.step_spend.append(replicas * replica_cost * hours)
        true_spend += outcome.step_spend[-1]
        outcome.unbudgeted_spend_usd += twin_replicas * replica_cost * hours
        outcome.replicas.append(replicas)
        outcome.twin_replicas.append(twin_replicas)
        outcome.caps.append(cap_in_force)
        capped_steps += cap_in_force < twin_replicas

        # The operator's timer at the end of the step: the same call as in the cluster.
        assessment = assess_budget(
            previous_cost=cost_status,
            annotations=annotations,
            serving=serving,
            catalog=catalog,
            min_replicas=scenario.min_replicas,
            max_replicas=scenario.max_replicas,
            replicas=replicas,
            now=MONTH_START + (index + 1) * step,
            previous_reason=reason,
            lookahead=lookahead,
        )
        cost_status = json.loads(json.dumps(assessment.cost_status))  # as stored by the API
        reason = assessment.condition.reason
        outcome.within_budget_false_steps += assessment.condition.status == "False"
        for event in assessment.events:
            outcome.events[event.reason] = outcome.events.get(event.reason, 0) + 1
        if cost_status["month"] == month_key(MONTH_START):
            outcome.accounted_usd = float(cost_status["monthToDateUSD"])
            outcome.accounted_true_usd = true_spend
        # The operator patches the autoscaler now; the HPA applies it from the next step.
        cap_in_force, pending_cap = pending_cap, assessment.cap.max_replicas

    outcome.spend_usd = sum(outcome.step_spend)
    per_hour = round(HOUR / step)
    window = sum(outcome.step_spend[:per_hour])
    worst = window
    for index in range(per_hour, len(outcome.step_spend)):
        window += outcome.step_spend[index] - outcome.step_spend[index - per_hour]
        worst = max(worst, window)
    outcome.max_hour_spend_usd = worst
    outcome.demand_served_pct = 100 * served / wanted
    outcome.unbudgeted_demand_served_pct = 100 * twin_served / wanted
    outcome.hours_capped = capped_steps * hours
    outcome.max_replicas_seen = max(outcome.replicas)
    outcome.min_replicas_seen = min(outcome.replicas)
    outcome.steps_below_unbudgeted = sum(
        1 for mine, free in zip(outcome.replicas, outcome.twin_replicas, strict=True) if mine < free
    )
    outcome.unexplained_deficit_steps = len(unexplained_deficits(outcome, recovery_steps(step)))
    above_minimum = [i for i, cap in enumerate(outcome.caps) if cap > scenario.min_replicas]
    if scenario.budget_usd_per_month is not None and above_minimum:
        last = above_minimum[-1] + 1
        if last < len(outcome.caps):
            outcome.surplus_spent_on_day = round(last * step / timedelta(days=1), 2)
    return outcome


def recovery_steps(step: timedelta) -> int:
    """Steps the replica model needs to catch up once a cap is lifted (windows + start-up)."""
    return max(3, math.ceil(timedelta(minutes=15) / step))


def unexplained_deficits(outcome: Outcome, recovery: int) -> list[int]:
    """Steps with fewer replicas than demand alone asked for and no cap below it recently."""
    deficits = []
    for index, (mine, free) in enumerate(zip(outcome.replicas, outcome.twin_replicas, strict=True)):
        if mine >= free:
            continue
        recent = range(max(0, index - recovery), index + 1)
        if not any(outcome.caps[j] < outcome.twin_replicas[j] for j in recent):
            deficits.append(index)
    return deficits


def scenarios(unbudgeted_month_usd: float, replica_cost: float) -> list[Scenario]:
    """An ample budget, an hourly cap that bites on spikes, a tight month, one below minimum."""
    return [
        Scenario("ample", budget_usd_per_hour=12.0, budget_usd_per_month=5000.0),
        Scenario(
            "hourly-cap",
            budget_usd_per_hour=round(7 * replica_cost, 2) + 0.01,
            budget_usd_per_month=None,
        ),
        Scenario(
            "monthly-cap",
            budget_usd_per_hour=8.0,
            budget_usd_per_month=round(0.7 * unbudgeted_month_usd),
        ),
        Scenario(
            "below-minimum",
            budget_usd_per_hour=None,
            budget_usd_per_month=round(0.5 * 2 * replica_cost * 24 * 30),
            min_replicas=2,
        ),
    ]


def run(step: timedelta = timedelta(minutes=1), days: int = 30, seed: int = 7) -> list[Outcome]:
    """Every scenario over the same demand."""
    catalog = PriceCatalog()
    demand = demand_curve(days, step, seed)
    probe = simulate(Scenario("unbudgeted", None, None), demand, step, catalog)
    return [
        simulate(scenario, demand, step, catalog)
        for scenario in scenarios(probe.unbudgeted_spend_usd, probe.replica_usd_per_hour)
    ]


def summary_table(outcomes: list[Outcome]) -> str:
    """Plain-text table of spend vs budget and demand served."""
    header = (
        f"{'scenario':<14}{'$/h budget':>11}{'max $ in 1h':>12}{'$/month budget':>15}"
        f"{'spent $':>10}{'unbudgeted $':>13}{'served %':>9}{'unbudg. %':>10}"
        f"{'h capped':>9}{'replicas':>9}"
    )
    lines = [header, "-" * len(header)]
    for o in outcomes:
        hourly = "-" if o.budget_usd_per_hour is None else f"{o.budget_usd_per_hour:.2f}"
        monthly = "-" if o.budget_usd_per_month is None else f"{o.budget_usd_per_month:.0f}"
        lines.append(
            f"{o.scenario:<14}{hourly:>11}{o.max_hour_spend_usd:>12.2f}{monthly:>15}"
            f"{o.spend_usd:>10.2f}{o.unbudgeted_spend_usd:>13.2f}{o.demand_served_pct:>9.1f}"
            f"{o.unbudgeted_demand_served_pct:>10.1f}{o.hours_capped:>9.1f}"
            f"{o.min_replicas_seen:>4}-{o.max_replicas_seen:<4}"
        )
    return "\n".join(lines)


def write_results(outcomes: list[Outcome], step: timedelta, path: Path = RESULTS) -> Path:
    hidden = {"replicas", "caps", "twin_replicas", "step_spend"}
    rows = [{key: value for key, value in asdict(o).items() if key not in hidden} for o in outcomes]
    document = {"month": MONTH_START.strftime("%Y-%m"), "step_seconds": step.total_seconds()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**document, "scenarios": rows}, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    step = timedelta(minutes=args.step_minutes)
    outcomes = run(step, seed=args.seed)
    print(summary_table(outcomes))
    for o in outcomes:
        events = ", ".join(f"{k} x{v}" for k, v in sorted(o.events.items())) or "none"
        print(
            f"{o.scenario}: accounted ${o.accounted_usd:.2f} "
            f"for a true ${o.accounted_true_usd:.2f}; "
            f"WithinBudget=False {o.within_budget_false_steps} steps; events: {events}"
            + (
                ""
                if o.surplus_spent_on_day is None
                else f"; held at minReplicas from day {o.surplus_spent_on_day:.1f}"
            )
        )
    print(f"wrote {write_results(outcomes, step, args.out)}")


if __name__ == "__main__":
    main()
