"""Pick Triton's batching settings for a latency target from a measured serving sweep.

A small, in-loop version of Triton Model Analyzer's "maximize throughput under a latency
constraint": every configuration (dynamic batching on/off, max queue delay, instances) is
loaded at increasing concurrency on the real server; the choice is the configuration and
concurrency with the highest throughput whose p99 latency stays within the target. Among
configurations within `THROUGHPUT_TOLERANCE` of the best, the cheaper one wins (fewer
instances, then no or shorter queue delay), because a sweep on a busy machine cannot
separate them and the cheaper one costs less memory and adds less latency.

Pure: the sweep is measured elsewhere (`optimodel.local.tuning`); this only decides.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ConfigDict, Field

from optimodel.model_builder.spec import SpecModel

THROUGHPUT_TOLERANCE = 0.05  # configurations within 5% of the best throughput count as tied


class ServingConfig(SpecModel):
    """One candidate batching configuration of the sweep."""

    model_config = ConfigDict(frozen=True)  # hashable: sweep points are grouped by it

    dynamic_batching: bool
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    instances: int = Field(default=1, ge=1)

    @property
    def label(self) -> str:
        batching = (
            f"batching {self.max_queue_delay_microseconds} us"
            if self.dynamic_batching
            else "no batching"
        )
        return f"{batching}, {self.instances} inst."


# The grid `optimodel tune` and the benchmarks sweep: batching off/on, short and long
# queue delay, one or two instances, concurrency 1..64.
DEFAULT_CONFIGS = (
    ServingConfig(dynamic_batching=False, instances=1),
    ServingConfig(dynamic_batching=False, instances=2),
    ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=1),
    ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=5000, instances=1),
    ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=2),
)
DEFAULT_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)


class SweepPoint(SpecModel):
    """One configuration at one concurrency, as measured on the server."""

    config: ServingConfig
    concurrency: int = Field(ge=1)
    throughput: float = Field(ge=0, description="Inferences per second.")
    latency_p50_ms: float = Field(ge=0, alias="latencyP50Ms")
    latency_p99_ms: float = Field(ge=0, alias="latencyP99Ms")
    errors: int = Field(default=0, ge=0)
    average_batch: float | None = None


class ServingChoice(SpecModel):
    """The chosen configuration, why, and the measurement it rests on."""

    config: ServingConfig
    p99_target_ms: float = Field(gt=0)
    met_target: bool = Field(description="False when no measured point met the target.")
    concurrency: int = Field(ge=1, description="Highest concurrency measured within target.")
    throughput: float = Field(ge=0)
    latency_p99_ms: float = Field(ge=0, alias="latencyP99Ms")
    points_considered: int = Field(ge=0)
    reason: str


class EmptySweepError(ValueError):
    """The sweep holds no usable point (every point had errors, or there were none)."""


def _cost_key(config: ServingConfig) -> tuple[int, int, int]:
    # Fewer instances, then batching off before on at equal cost, then the shorter delay.
    return (
        config.instances,
        1 if config.dynamic_batching else 0,
        config.max_queue_delay_microseconds,
    )


def choose_serving_config(points: Sequence[SweepPoint], p99_target_ms: float) -> ServingChoice:
    """The configuration with the best throughput within `p99_target_ms` (see module doc).

    If no point meets the target, the point with the lowest p99 is returned with
    `met_target=False`, so the caller can report how far off the target is.
    """
    if p99_target_ms <= 0:
        raise ValueError(f"p99 target must be positive, got {p99_target_ms} ms")
    usable = [p for p in points if p.errors == 0 and p.throughput > 0]
    if not usable:
        raise EmptySweepError(
            f"none of the {len(points)} sweep points is usable (no answers, or errors at "
            f"every point); check the server log and re-run the sweep"
        )
    within = [p for p in usable if p.latency_p99_ms <= p99_target_ms]
    if not within:
        fastest = min(usable, key=lambda p: (p.latency_p99_ms, -p.throughput))
        return ServingChoice(
            config=fastest.config,
            p99_target_ms=p99_target_ms,
            met_target=False,
            concurrency=fastest.concurrency,
            throughput=fastest.throughput,
            latency_p99_ms=fastest.latency_p99_ms,
            points_considered=len(usable),
            reason=(
                f"no configuration kept p99 within {p99_target_ms:g} ms; the lowest p99 "
                f"measured was {fastest.latency_p99_ms:.1f} ms ({fastest.config.label}, "
                f"concurrency {fastest.concurrency}): raise the target or add replicas"
            ),
        )
    # Each configuration's best point within the target.
    best_per_config: dict[tuple[int, int, int], SweepPoint] = {}
    for point in within:
        key = _cost_key(point.config)
        held = best_per_config.get(key)
        if held is None or (point.throughput, -point.latency_p99_ms) > (
            held.throughput,
            -held.latency_p99_ms,
        ):
            best_per_config[key] = point
    top = max(p.throughput for p in best_per_config.values())
    tied = [p for p in best_per_config.values() if p.throughput >= top * (1 - THROUGHPUT_TOLERANCE)]
    chosen = min(tied, key=lambda p: (_cost_key(p.config), p.latency_p99_ms))
    others = len(tied) - 1
    tie_note = (
        f"; {others} other configuration(s) within {THROUGHPUT_TOLERANCE:.0%} of that "
        f"throughput cost more (instances, queue delay)"
        if others
        else ""
    )
    return ServingChoice(
        config=chosen.config,
        p99_target_ms=p99_target_ms,
        met_target=True,
        concurrency=chosen.concurrency,
        throughput=chosen.throughput,
        latency_p99_ms=chosen.latency_p99_ms,
        points_considered=len(usable),
        reason=(
            f"{chosen.config.label}: {chosen.throughput:.1f} inf/s at concurrency "
            f"{chosen.concurrency} with p99 {chosen.latency_p99_ms:.1f} ms <= "
            f"{p99_target_ms:g} ms{tie_note}"
        ),
    )
