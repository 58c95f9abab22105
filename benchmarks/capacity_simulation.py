"""The budget simulation's month with spot preemptions and GPU choice: what does each serving
plan spend, and how much of the demand does it serve within the latency target?

The same demand and HPA-like replica model as benchmarks/budget_simulation.py, and the
operator's own code for the budget cap (`cost.assess_budget`, priced on-demand as the operator
does) and for the hardware (`performance.py`: each type's throughput and p99 for MiniLM-L6's
fp16 artifact, and `choose_hardware` for auto). On top:

- a seeded preemption trace: now and then a share of the spot capacity is lost for minutes;
  the lost replicas come back on on-demand nodes after a replacement delay, and go back to spot
  when it returns;
- per step, p99 latency from the replicas' utilization (performance.py's queueing model);
  a step whose p99 exceeds the target, or that leaves demand unserved, is a violation minute;
- "reality": each type really delivers its estimate times a seeded factor (+-15%), so `auto`
  chooses on estimates and is judged on what the types then do. The hindsight optimum simulates
  every type and keeps the cheapest that served >= 99% of the demand within the target.

Scenarios: `on-demand` (the default type, all on-demand), `spot-with-fallback` (same type,
on-demand base = minReplicas, the rest spot), `fixed-expensive` (nvidia-h100, on-demand), `auto`
(performance.py's choice for the target, spot-with-fallback).

    python -m benchmarks.capacity_simulation        # writes results/capacity_simulation.json + .png
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from benchmarks.budget_simulation import MONTH_START, ReplicaModel, Scenario, demand_curve
from optimodel.model_builder.spec import Gpu, Serving
from optimodel.model_builder.work import InferenceWork
from optimodel.operator import api
from optimodel.operator.cost import HOUR, PriceCatalog, assess_budget, replica_cost_per_hour
from optimodel.operator.hardware import HardwareCatalog
from optimodel.operator.performance import (
    Batching,
    HardwareEstimate,
    Limits,
    Target,
    choose_hardware,
    estimate,
    rated_candidates,
)

RESULTS = Path(__file__).resolve().parent / "results" / "capacity_simulation.json"
# MiniLM-L6 as the GPU recipe publishes it (fused, fp16), counted by model_builder/work.py at
# 128 tokens (its source.maxSequenceLength default).
MINILM_FP16 = InferenceWork(
    sequence_length=128,
    batch_size=32,
    fp16_flops=2_868_903_936,
    weight_bytes=21_295_112,
    activation_bytes=16_711_696,
)
BATCHING = Batching(max_batch_size=32, max_queue_delay_ms=0.5, gpus_per_replica=1, utilization=0.7)
PEAK = 40000.0  # inferences/s at the daily peak (spikes reach 1.5-3x)
TARGET = Target(inferences_per_second=3 * PEAK, latency_p99_ms=50.0)
DEFAULT_TYPE, EXPENSIVE_TYPE = "nvidia-l4", "nvidia-h100"
HOURLY_BUDGET = 40.0  # USD/h: the budget annotation of every scenario
MIN_REPLICAS, MAX_REPLICAS = 1, 48  # minReplicas: the spec's default
# A lost spot replica comes back on an on-demand node after this (node provisioning + start).
FALLBACK_DELAY = timedelta(minutes=5)
Capacity = Literal["on-demand", "spot-with-fallback"]


@dataclass(frozen=True)
class Preemption:
    """A share of the spot capacity lost from `start` for `steps` steps."""

    start: int
    steps: int
    share: float


def preemption_trace(steps: int, step: timedelta, seed: int) -> list[Preemption]:
    """About three events a day, each taking 20-60% of the spot replicas for 5-45 minutes."""
    rng = random.Random(seed)
    per_day = round(timedelta(days=1) / step)
    events = []
    for _ in range(3 * steps // per_day):
        length = max(1, round(timedelta(minutes=rng.uniform(5, 45)) / step))
        events.append(Preemption(rng.randrange(steps), length, rng.uniform(0.2, 0.6)))
    return sorted(events, key=lambda event: event.start)


def reality_factors(names: list[str], seed: int, spread: float = 0.15) -> dict[str, float]:
    """What each type really delivers, as a share of its estimate (seeded)."""
    rng = random.Random(seed)
    return {name: rng.uniform(1 - spread, 1 + spread) for name in names}


@dataclass
class CapacityOutcome:
    """One serving plan over the month."""

    scenario: str
    gpu_types: list[str]
    capacity: str
    spend_usd: float = 0.0
    on_demand_spend_usd: float = 0.0
    spot_spend_usd: float = 0.0
    demand_served_fraction: float = 0.0
    served_within_latency_fraction: float = 0.0
    p99_violation_minutes: float = 0.0
    preempted_replica_minutes: float = 0.0
    fallback_replica_minutes: float = 0.0
    max_hour_spend_usd: float = 0.0
    hourly_budget_usd: float = HOURLY_BUDGET
    budget_exceeded: bool = False
    estimated_inferences_per_second: float = 0.0  # per replica, what the choice saw
    actual_inferences_per_second: float = 0.0  # per replica, what it delivered
    replicas_seen: tuple[int, int] = (0, 0)
    step_spend: list[float] = field(default_factory=list, repr=False)


def _budget_caps(gpu_type: str, min_replicas: int, catalog: PriceCatalog) -> tuple[float, int]:
    """The replica price and the hourly cap the operator computes (priced on-demand)."""
    serving = Serving(gpu=Gpu(type=gpu_type, count=1))
    annotations = {api.BUDGET_USD_PER_HOUR: f"{HOURLY_BUDGET:g}"}
    assessment = assess_budget(
        previous_cost=None,
        annotations=annotations,
        serving=serving,
        catalog=catalog,
        min_replicas=min_replicas,
        max_replicas=MAX_REPLICAS,
        replicas=0,
        now=MONTH_START,
    )
    return replica_cost_per_hour(serving, catalog), assessment.cap.max_replicas


def simulate_plan(
    name: str,
    gpu_type: str,
    capacity: Capacity,
    demand: list[float],
    preemptions: list[Preemption],
    step: timedelta,
    reality: float,
    hardware: HardwareCatalog,
    min_replicas: int = MIN_REPLICAS,
) -> CapacityOutcome:
    """Run one plan: HPA replicas under the budget cap, spot losses, fallback, latency."""
    catalog = PriceCatalog.from_hardware(hardware)
    device = hardware.get(gpu_type)
    planned = estimate(MINILM_FP16, device, BATCHING)
    actual = HardwareEstimate(
        planned.hardware,
        planned.basis,
        planned.inferences_per_second * reality,
        planned.batch_seconds / reality,
        planned.bound,
    )
    on_demand_price, cap = _budget_caps(gpu_type, min_replicas, catalog)
    spot_price = device.price("spot")
    # The HPA sizes on the GPU utilization it sees: the real throughput.
    scenario = Scenario(
        name,
        HOURLY_BUDGET,
        None,
        min_replicas=min_replicas,
        max_replicas=MAX_REPLICAS,
        target_gpu_utilization=round(100 * BATCHING.utilization),
        gpu_type=gpu_type,
        replica_capacity=actual.inferences_per_second,
    )
    replicas_model = ReplicaModel(scenario, step)
    outcome = CapacityOutcome(name, [gpu_type], capacity)
    outcome.estimated_inferences_per_second = round(planned.inferences_per_second, 1)
    outcome.actual_inferences_per_second = round(actual.inferences_per_second, 1)
    hours = step / HOUR
    minutes = step / timedelta(minutes=1)
    delay = max(1, round(FALLBACK_DELAY / step))
    lost_share = [0.0] * len(demand)
    for event in preemptions:
        for index in range(event.start, min(len(demand), event.start + event.steps)):
            lost_share[index] = max(lost_share[index], event.share)
    # Replicas lost to a preemption, by the step they were lost; each is replaced on demand
    # after `delay` steps, and the replacement is dropped when spot returns.
    lost_at: list[int] = []
    served = within = wanted = 0.0
    seen: list[int] = []
    for index, load in enumerate(demand):
        replicas = replicas_model.advance(index, load, cap)
        seen.append(replicas)
        ready = replicas_model.ready(index)
        spot_replicas = max(0, replicas - min_replicas) if capacity == "spot-with-fallback" else 0
        lost = math.floor(lost_share[index] * spot_replicas + 1e-9)
        if lost == 0:
            lost_at.clear()  # spot is back: replacements move to spot nodes
        while len(lost_at) < lost:
            lost_at.append(index)
        del lost_at[lost:]
        waiting = sum(1 for at in lost_at if index - at < delay)
        fallback = len(lost_at) - waiting
        running_spot = spot_replicas - lost
        running_on_demand = replicas - spot_replicas + fallback
        step_cost = (running_on_demand * on_demand_price + running_spot * spot_price) * hours
        outcome.step_spend.append(step_cost)
        outcome.on_demand_spend_usd += running_on_demand * on_demand_price * hours
        outcome.spot_spend_usd += running_spot * spot_price * hours
        outcome.preempted_replica_minutes += waiting * minutes
        outcome.fallback_replica_minutes += fallback * minutes
        serving = max(0, min(ready, replicas - waiting))
        capacity_now = serving * actual.inferences_per_second
        done = min(load, capacity_now)
        p99 = actual.latency_p99_ms(load / capacity_now if capacity_now else 1.0, 0.5)
        violated = done < load - 1e-9 or (
            TARGET.latency_p99_ms is not None and p99 > TARGET.latency_p99_ms
        )
        served += done
        within += 0.0 if violated else done
        wanted += load
        outcome.p99_violation_minutes += minutes if violated else 0.0
    outcome.spend_usd = round(sum(outcome.step_spend), 2)
    outcome.on_demand_spend_usd = round(outcome.on_demand_spend_usd, 2)
    outcome.spot_spend_usd = round(outcome.spot_spend_usd, 2)
    outcome.demand_served_fraction = round(served / wanted, 5)
    outcome.served_within_latency_fraction = round(within / wanted, 5)
    per_hour = round(HOUR / step)
    windows = [
        sum(outcome.step_spend[i : i + per_hour])
        for i in range(0, len(outcome.step_spend) - per_hour + 1)
    ]
    outcome.max_hour_spend_usd = round(max(windows), 4)
    outcome.budget_exceeded = outcome.max_hour_spend_usd > HOURLY_BUDGET + 1e-9
    outcome.replicas_seen = (min(seen), max(seen))
    return outcome


def auto_choice(hardware: HardwareCatalog) -> str:
    """What `gpu.type: auto` picks for the target: performance.py on the estimates."""
    limits = Limits(MAX_REPLICAS, HOURLY_BUDGET, on_demand_replicas=MIN_REPLICAS)
    names = rated_candidates(hardware, 1)
    return choose_hardware(MINILM_FP16, hardware, names, TARGET, BATCHING, limits).chosen.hardware


def meets_targets(outcome: CapacityOutcome) -> bool:
    return outcome.served_within_latency_fraction >= 0.99 and not outcome.budget_exceeded


@dataclass
class CapacityRun:
    """Every scenario, the hindsight sweep over all types, and the targets' verdicts."""

    scenarios: dict[str, CapacityOutcome]
    hindsight: dict[str, CapacityOutcome]
    hindsight_best: str | None
    preemptions: int
    step_seconds: float
    days: int
    checks: dict[str, float | bool | None] = field(default_factory=dict)
    # Spot's saving over on-demand (the default type) by minReplicas: the base stays on-demand.
    saving_by_min_replicas: dict[int, float] = field(default_factory=dict)


def run(step: timedelta = timedelta(minutes=1), days: int = 30, seed: int = 7) -> CapacityRun:
    hardware = HardwareCatalog()
    demand = demand_curve(days, step, seed, peak=PEAK)
    preemptions = preemption_trace(len(demand), step, seed + 1)
    names = list(rated_candidates(hardware, 1))
    reality = reality_factors(names, seed + 2)

    def plan(
        name: str, gpu_type: str, capacity: Capacity, minimum: int = MIN_REPLICAS
    ) -> CapacityOutcome:
        return simulate_plan(
            name, gpu_type, capacity, demand, preemptions, step, reality[gpu_type], hardware,
            minimum,
        )  # fmt: skip

    chosen = auto_choice(hardware)
    scenarios = {
        "on-demand": plan("on-demand", DEFAULT_TYPE, "on-demand"),
        "spot-with-fallback": plan("spot-with-fallback", DEFAULT_TYPE, "spot-with-fallback"),
        "fixed-expensive": plan("fixed-expensive", EXPENSIVE_TYPE, "on-demand"),
        "auto": plan("auto", chosen, "spot-with-fallback"),
    }
    hindsight = {name: plan(f"hindsight {name}", name, "spot-with-fallback") for name in names}
    passing = [o for o in hindsight.values() if meets_targets(o)]
    best = min(passing, key=lambda o: o.spend_usd) if passing else None
    on_demand, spot = scenarios["on-demand"], scenarios["spot-with-fallback"]
    auto = scenarios["auto"]
    checks: dict[str, float | bool | None] = {
        "spot_saving_vs_on_demand": round(1 - spot.spend_usd / on_demand.spend_usd, 4),
        "spot_saving_at_least_40pct": spot.spend_usd <= 0.6 * on_demand.spend_usd,
        "spot_serves_99pct_within_latency": spot.served_within_latency_fraction >= 0.99,
        "budgets_never_exceeded": not any(
            o.budget_exceeded for o in (*scenarios.values(), *hindsight.values())
        ),
        "auto_over_hindsight_best": None
        if best is None
        else round(auto.spend_usd / best.spend_usd - 1, 4),
        "auto_within_10pct_of_hindsight": None
        if best is None
        else auto.spend_usd <= 1.10 * best.spend_usd and meets_targets(auto),
    }
    savings = {}
    for minimum in (1, 2, 4):
        base = plan("on-demand", DEFAULT_TYPE, "on-demand", minimum)
        mixed = plan("spot-with-fallback", DEFAULT_TYPE, "spot-with-fallback", minimum)
        savings[minimum] = round(1 - mixed.spend_usd / base.spend_usd, 4)
    return CapacityRun(
        scenarios,
        hindsight,
        None if best is None else best.gpu_types[0],
        len(preemptions),
        step.total_seconds(),
        days,
        checks,
        savings,
    )


def _row(outcome: CapacityOutcome) -> dict[str, object]:
    row = asdict(outcome)
    row.pop("step_spend")
    row["replicas_seen"] = list(outcome.replicas_seen)
    return row


def write_results(result: CapacityRun, path: Path = RESULTS) -> Path:
    document = {
        "command": "python -m benchmarks.capacity_simulation",
        "month": MONTH_START.strftime("%Y-%m"),
        "days": result.days,
        "step_seconds": result.step_seconds,
        "model": "MiniLM-L6 fp16 artifact, work counted by model_builder/work.py at 128 tokens",
        "peak_inferences_per_second": PEAK,
        "target": {
            "inferencesPerSecond": TARGET.inferences_per_second,
            "latencyP99Ms": TARGET.latency_p99_ms,
        },
        "hourly_budget_usd": HOURLY_BUDGET,
        "min_replicas": MIN_REPLICAS,
        "max_replicas": MAX_REPLICAS,
        "preemption_events": result.preemptions,
        "fallback_delay_minutes": FALLBACK_DELAY / timedelta(minutes=1),
        "scenarios": {name: _row(o) for name, o in result.scenarios.items()},
        "hindsight": {name: _row(o) for name, o in result.hindsight.items()},
        "hindsight_best": result.hindsight_best,
        "checks": result.checks,
        "spot_saving_by_min_replicas": result.saving_by_min_replicas,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def save_plot(result: CapacityRun, path: Path) -> Path:
    """Spend and demand served within the latency target per scenario, and the type sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(result.scenarios)
    outcomes = [result.scenarios[name] for name in names]
    labels = [f"{n}\n{o.gpu_types[0]}" for n, o in zip(names, outcomes, strict=True)]
    bars = left.bar(labels, [o.spend_usd for o in outcomes], color="tab:blue")
    for bar, outcome in zip(bars, outcomes, strict=True):
        left.annotate(
            f"${outcome.spend_usd:,.0f}\n{100 * outcome.served_within_latency_fraction:.2f}% ok",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylim(0, 1.2 * max(o.spend_usd for o in outcomes))
    left.set_ylabel("USD in the month")
    left.set_title("spend; share of demand served within p99 target", fontsize=10)
    left.tick_params(axis="x", labelsize=8)
    sweep = sorted(result.hindsight.values(), key=lambda o: o.spend_usd)
    colors = [
        "tab:green" if meets_targets(o) else "tab:red" for o in sweep
    ]  # green: meets the targets
    right.bar([o.gpu_types[0] for o in sweep], [o.spend_usd for o in sweep], color=colors)
    right.set_yscale("log")
    right.set_ylabel("USD in the month (log)")
    chosen = result.scenarios["auto"].gpu_types[0]
    right.set_title(
        f"every type, spot-with-fallback (green: >= 99% within target); auto chose {chosen}",
        fontsize=9,
    )
    right.tick_params(axis="x", labelsize=7, rotation=30)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def summary_table(result: CapacityRun) -> str:
    header = (
        f"{'scenario':<20}{'type':<18}{'spend $':>10}{'spot $':>9}{'served':>9}"
        f"{'in target':>10}{'viol. min':>10}{'max $/h':>9}"
    )
    lines = [header, "-" * len(header)]
    for name, o in {**result.scenarios, **result.hindsight}.items():
        served, within = 100 * o.demand_served_fraction, 100 * o.served_within_latency_fraction
        lines.append(
            f"{name:<20}{o.gpu_types[0]:<18}{o.spend_usd:>10.0f}{o.spot_spend_usd:>9.0f}"
            f"{served:>8.2f}%{within:>9.2f}%"
            f"{o.p99_violation_minutes:>10.0f}{o.max_hour_spend_usd:>9.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-minutes", type=float, default=1.0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(timedelta(minutes=args.step_minutes), args.days, args.seed)
    print(summary_table(result))
    print(json.dumps(result.checks, indent=2))
    print(f"hindsight best: {result.hindsight_best}")
    print(f"spot saving by minReplicas (on-demand base): {result.saving_by_min_replicas}")
    print(f"wrote {write_results(result, args.out)}")
    print(f"wrote {save_plot(result, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
