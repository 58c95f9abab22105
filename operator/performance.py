"""What an artifact does on each hardware type, and the cheapest type that meets a target. Pure.

From the artifact's work per inference (model_builder/work.py, in the build report) and the
hardware catalog (hardware.py), a roofline estimates one replica's throughput at the manifest's
batching (full batches of maxBatchSize: the time of a batch is the larger of its arithmetic
at a stated share of the datasheet peak and its bytes at a stated share of the bandwidth, plus
a fixed cost per batch) and its p99 latency at a load. A measured profile (the operator's
`hardwareProfiles` setting, e.g. written by `benchmarks/gpu_check.py --profile`) replaces the
estimate for its type. Every figure carries its basis: measured or estimated.

`choose_hardware` then sizes every candidate for a target (inferences per second, p99): the
replicas it needs at the autoscaler's target utilization (fewer where latency needs headroom),
what they cost per hour on-demand and on spot, and picks the cheapest that meets the target
within maxReplicas and the hourly budget; when none does, the one that comes closest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from optimodel.model_builder.work import InferenceWork, Precision
from optimodel.operator.hardware import CPU, Hardware, HardwareCatalog

Basis = Literal["measured", "estimated"]
Bound = Literal["compute", "memory", "measured"]

# Shares of the datasheet peaks a served encoder reaches. Why these values:
# - GPU fp16: transformer encoders at batch 32 x 128 reach 40-60% of the dense tensor-core peak
#   in onnxruntime's CUDA provider (its GEMMs are cuBLAS; softmax, layer norm and GELU run
#   at memory speed between them); 0.45 sits inside that range.
# - GPU fp32 and int8: fp32 uses the plain FMA peak (cuBLAS reaches ~70% of it); int8 kernels
#   of the CUDA provider are few (onnxruntime#7745), so int8 work is rated low.
# - CPU: measured here (DESIGN.md), PyTorch fp32 runs MiniLM near 2/3 of the 2-core fp32
#   peak and onnxruntime's int8 (u8s8) kernels reach far less of theirs (dynamic quantization
#   of every activation and the fp32 ops between the MatMuls cost as much again).
COMPUTE_EFFICIENCY: Mapping[str, Mapping[Precision, float]] = {
    "gpu": {"fp16": 0.45, "fp32": 0.7, "int8": 0.25},
    "cpu": {"fp16": 0.5, "fp32": 0.5, "int8": 0.35},
}
# STREAM-like kernels reach 70-80% of the datasheet bandwidth on GPUs; a CPU core shares its
# memory controller with its neighbours, so it is rated lower.
MEMORY_EFFICIENCY: Mapping[str, float] = {"gpu": 0.7, "cpu": 0.6}
# Fixed cost of one batch execution: Triton's scheduling and the request's way through the
# ensemble, and on a GPU ~100-300 kernel launches of a 6-12 layer encoder plus the copies
# between host and device (each ~5-10 us).
BATCH_OVERHEAD_SECONDS: Mapping[str, float] = {"gpu": 1.5e-3, "cpu": 0.3e-3}
# The utilization one replica is planned at when the autoscaler has no target (and the most a
# latency target may use).
DEFAULT_UTILIZATION = 0.7


class HardwareChoiceError(ValueError):
    """The choice cannot be made at all (no candidate); the message names the fix."""


@dataclass(frozen=True)
class HardwareProfile:
    """A measured profile: one replica of the type served the artifact at this rate."""

    hardware: str
    inferences_per_second: float  # per replica (gpu.count GPUs, or one CPU replica)
    latency_p99_ms: float
    batch: int
    measured_by: str


@dataclass(frozen=True)
class Batching:
    """The manifest's batching settings and the replica's shape."""

    max_batch_size: int
    max_queue_delay_ms: float
    gpus_per_replica: int  # 0: CPU replicas
    utilization: float = DEFAULT_UTILIZATION  # the autoscaler's target (0..1]

    @property
    def batch(self) -> int:
        return self.max_batch_size


@dataclass(frozen=True)
class HardwareEstimate:
    """One replica of a type serving the artifact at full batches."""

    hardware: str
    basis: Basis
    inferences_per_second: float  # per replica, at full batches
    batch_seconds: float  # one batch execution
    bound: Bound
    measured_latency_p99_ms: float | None = None
    measured_by: str | None = None

    def latency_p99_ms(self, utilization: float, queue_delay_ms: float) -> float:
        """p99 at a replica utilization: the queue delay, the batch being executed and the
        request's own, with an M/D/1-style growth of the wait as utilization nears 1. A
        measured p99 (taken at the profile's load) is used as is."""
        if self.measured_latency_p99_ms is not None:
            return self.measured_latency_p99_ms
        rho = min(max(utilization, 0.0), 0.999)
        return queue_delay_ms + 1000 * self.batch_seconds * (1 + rho / (1 - rho))

    def max_utilization(self, latency_p99_ms: float, queue_delay_ms: float) -> float:
        """The highest utilization whose p99 is within `latency_p99_ms` (0: never)."""
        if self.measured_latency_p99_ms is not None:
            return 1.0 if self.measured_latency_p99_ms <= latency_p99_ms else 0.0
        budget = (latency_p99_ms - queue_delay_ms) / (1000 * self.batch_seconds)
        # 1 + rho / (1 - rho) = 1 / (1 - rho) <= budget
        return 0.0 if budget <= 1 else 1 - 1 / budget


def _precision_peak(hardware: Hardware, precision: Precision) -> float | None:
    """Operations per second for `precision`; a device without fp16 (or int8) arithmetic
    computes it in fp32, as onnxruntime does on CPUs."""
    peak = hardware.peak_ops_per_second(precision)
    if peak is None and precision != "fp32":
        return hardware.peak_ops_per_second("fp32")
    return peak


def batch_seconds(work: InferenceWork, hardware: Hardware, batch: int) -> tuple[float, Bound]:
    """The roofline time of one batch on one device, and what bounds it."""
    if not hardware.rated:
        raise HardwareChoiceError(
            f"hardware.{hardware.name}: no bandwidth or fp32 figure to estimate from; fix: add "
            "memoryBandwidthGBps and fp32TFLOPS (and fp16TFLOPS/int8TOPS) to its hardware "
            "setting, or a measured hardwareProfiles entry"
        )
    efficiency = COMPUTE_EFFICIENCY[hardware.kind]
    compute = 0.0
    for precision in ("fp32", "fp16", "int8"):
        ops = work.ops(precision)
        if ops:
            peak = _precision_peak(hardware, precision)
            assert peak is not None  # rated: fp32 is known
            compute += batch * ops / (peak * efficiency[precision])
    bandwidth = hardware.bandwidth_bytes_per_second
    assert bandwidth is not None
    moved = work.weight_bytes + batch * work.activation_bytes
    memory = moved / (bandwidth * MEMORY_EFFICIENCY[hardware.kind])
    bound: Bound = "compute" if compute >= memory else "memory"
    return max(compute, memory) + BATCH_OVERHEAD_SECONDS[hardware.kind], bound


def estimate(
    work: InferenceWork | None,
    hardware: Hardware,
    batching: Batching,
    profile: HardwareProfile | None = None,
) -> HardwareEstimate:
    """One replica of `hardware`: the measured profile if there is one, else the roofline."""
    if profile is not None:
        return HardwareEstimate(
            hardware.name,
            "measured",
            profile.inferences_per_second,
            profile.batch / profile.inferences_per_second,
            "measured",
            profile.latency_p99_ms,
            profile.measured_by,
        )
    if work is None:
        raise HardwareChoiceError(
            "the build report has no work per inference (built by an older builder); fix: "
            "rebuild the model (annotation optimodel.io/retry-build), or add a measured "
            "hardwareProfiles entry for the type"
        )
    needed = work.weight_bytes + batching.batch * work.activation_bytes
    if hardware.memory_gib is not None and needed > hardware.memory_gib * 2**30:
        raise HardwareChoiceError(
            f"{hardware.name}: the weights and a batch of {batching.batch} need "
            f"{needed / 2**30:.1f} GiB, the device has {hardware.memory_gib:g} GiB; fix: a "
            "smaller maxBatchSize, or a type with more memory"
        )
    seconds, bound = batch_seconds(work, hardware, batching.batch)
    devices = max(batching.gpus_per_replica, 1)
    return HardwareEstimate(
        hardware.name, "estimated", devices * batching.batch / seconds, seconds, bound
    )


@dataclass(frozen=True)
class Target:
    """What the serving must sustain."""

    inferences_per_second: float
    latency_p99_ms: float | None = None


@dataclass(frozen=True)
class Limits:
    """What caps a candidate: replicas (spec/policy) and the hourly budget."""

    max_replicas: int
    max_usd_per_hour: float | None = None
    # None: every replica on-demand; n: the first n on-demand, the rest on spot.
    on_demand_replicas: int | None = None


@dataclass(frozen=True)
class HardwareOption:
    """One candidate type sized for the target."""

    estimate: HardwareEstimate
    replicas: int
    replica_usd_per_hour: float  # on-demand
    replica_spot_usd_per_hour: float
    usd_per_hour: float  # at the limits' on-demand/spot split
    latency_p99_ms: float
    served_per_second: float  # what `replicas` sustain at the planned utilization
    meets_target: bool
    shortfall: str = ""  # why it misses the target

    @property
    def hardware(self) -> str:
        return self.estimate.hardware

    @property
    def basis(self) -> Basis:
        return self.estimate.basis

    def usd_per_million(self, per_second: float, capacity: str = "on-demand") -> float:
        """USD per 1M inferences at `per_second` on this many replicas."""
        price = self.replica_spot_usd_per_hour if capacity == "spot" else self.replica_usd_per_hour
        return self.replicas * price / (per_second * 3600) * 1e6


@dataclass(frozen=True)
class HardwareChoice:
    """The comparison: every option, the chosen one and the runner-up."""

    target: Target
    options: tuple[HardwareOption, ...]  # cheapest first; those meeting the target first
    chosen: HardwareOption
    unavailable: Mapping[str, str] = field(default_factory=dict)  # type -> why not rated

    @property
    def reachable(self) -> bool:
        return self.chosen.meets_target

    @property
    def runner_up(self) -> HardwareOption | None:
        others = [option for option in self.options if option is not self.chosen]
        return others[0] if others else None

    def summary(self) -> str:
        """One sentence for the status condition and Events."""
        chosen = self.chosen
        what = _describe_target(self.target)
        head = (
            f"{chosen.hardware} x {chosen.replicas} replica(s) meets {what} at "
            f"${chosen.usd_per_hour:.2f}/h (p99 {chosen.latency_p99_ms:.1f} ms, "
            f"{chosen.basis})"
        )
        if not chosen.meets_target:
            head = (
                f"{what} is out of reach: the best is {chosen.hardware} x {chosen.replicas} "
                f"replica(s), {chosen.served_per_second:.0f}/s at p99 "
                f"{chosen.latency_p99_ms:.1f} ms ({chosen.shortfall}; {chosen.basis})"
            )
        runner = self.runner_up
        if runner is not None:
            head += (
                f"; runner-up {runner.hardware} x {runner.replicas} at "
                f"${runner.usd_per_hour:.2f}/h ({runner.basis})"
            )
        return head


def _describe_target(target: Target) -> str:
    latency = (
        f" at p99 <= {target.latency_p99_ms:g} ms" if target.latency_p99_ms is not None else ""
    )
    return f"the target {target.inferences_per_second:g}/s{latency}"


def replica_prices(hardware: Hardware, gpus_per_replica: int) -> tuple[float, float]:
    """(on-demand, spot) USD per hour of one replica of this type."""
    count = max(gpus_per_replica, 1) if hardware.kind == "gpu" else 1
    return count * hardware.price("on-demand"), count * hardware.price("spot")


def _hourly(replicas: int, on_demand: float, spot: float, limits: Limits) -> float:
    if limits.on_demand_replicas is None:
        return replicas * on_demand
    base = min(replicas, limits.on_demand_replicas)
    return base * on_demand + (replicas - base) * spot


def size_option(
    estimate: HardwareEstimate,
    hardware: Hardware,
    target: Target,
    batching: Batching,
    limits: Limits,
) -> HardwareOption:
    """The replicas `estimate` needs for `target`, their cost, and whether they meet it."""
    on_demand, spot = replica_prices(hardware, batching.gpus_per_replica)
    queue = batching.max_queue_delay_ms
    utilization = batching.utilization
    shortfall = ""
    if target.latency_p99_ms is not None:
        headroom = estimate.max_utilization(target.latency_p99_ms, queue)
        if headroom <= 0:
            shortfall = (
                f"p99 {estimate.latency_p99_ms(0.0, queue):.1f} ms even when idle, above "
                f"{target.latency_p99_ms:g} ms"
            )
        utilization = min(utilization, headroom) if headroom > 0 else utilization
    per_replica = estimate.inferences_per_second * utilization
    needed = max(1, math.ceil(target.inferences_per_second / per_replica - 1e-9))
    replicas = min(needed, max(limits.max_replicas, 1))
    if needed > replicas and not shortfall:
        shortfall = f"needs {needed} replicas, maxReplicas is {limits.max_replicas}"
    if limits.max_usd_per_hour is not None:
        affordable = 0
        while (
            affordable < replicas
            and _hourly(affordable + 1, on_demand, spot, limits) <= limits.max_usd_per_hour + 1e-9
        ):
            affordable += 1
        if affordable < replicas:
            if not shortfall:
                shortfall = (
                    f"needs {needed} replicas at ${_hourly(needed, on_demand, spot, limits):.2f}"
                    f"/h, the hourly budget ${limits.max_usd_per_hour:g} affords {affordable}"
                )
            replicas = max(affordable, 1)
    served = min(target.inferences_per_second, replicas * per_replica)
    # Past the planned utilization the queue grows without bound: report the p99 the replicas
    # have at that utilization, with the shortfall saying they cannot carry the rest.
    load = min(target.inferences_per_second / (replicas * estimate.inferences_per_second), 1.0)
    if needed > replicas:
        load = min(load, utilization)
    return HardwareOption(
        estimate=estimate,
        replicas=replicas,
        replica_usd_per_hour=on_demand,
        replica_spot_usd_per_hour=spot,
        usd_per_hour=_hourly(replicas, on_demand, spot, limits),
        latency_p99_ms=estimate.latency_p99_ms(load, queue),
        served_per_second=served,
        meets_target=not shortfall,
        shortfall=shortfall,
    )


def _closeness(option: HardwareOption) -> tuple[float, float, float]:
    """How near an option comes to the target when none meets it: most served, then the
    lowest p99, then the cheapest."""
    return (-option.served_per_second, option.latency_p99_ms, option.usd_per_hour)


def choose_hardware(
    work: InferenceWork | None,
    catalog: HardwareCatalog,
    candidates: Sequence[str],
    target: Target,
    batching: Batching,
    limits: Limits,
    profiles: Mapping[str, HardwareProfile] | None = None,
) -> HardwareChoice:
    """Size every candidate for `target`; choose the cheapest that meets it (else the closest).

    A candidate with neither datasheet figures nor a measured profile is listed as
    unavailable. HardwareChoiceError when no candidate can be rated at all."""
    profiles = profiles or {}
    options: list[HardwareOption] = []
    unavailable: dict[str, str] = {}
    for name in candidates:
        hardware = catalog.get(name)
        try:
            rated = estimate(work, hardware, batching, profiles.get(name))
        except HardwareChoiceError as error:
            unavailable[name] = str(error)
            continue
        options.append(size_option(rated, hardware, target, batching, limits))
    if not options:
        reasons = "; ".join(f"{name}: {why}" for name, why in unavailable.items())
        raise HardwareChoiceError(f"no candidate hardware can be rated ({reasons})")
    meeting = sorted(
        (o for o in options if o.meets_target), key=lambda o: (o.usd_per_hour, o.hardware)
    )
    missing = sorted((o for o in options if not o.meets_target), key=_closeness)
    ordered = (*meeting, *missing)
    return HardwareChoice(target, ordered, ordered[0], unavailable)


def rated_candidates(catalog: HardwareCatalog, gpus_per_replica: int) -> tuple[str, ...]:
    """What `auto` chooses among by default: every GPU type (CPU serving: the CPU replica)."""
    if gpus_per_replica == 0:
        return (CPU,)
    return tuple(name for name in catalog.names if name != CPU)


def profiles_by_type(
    profiles: Iterable[HardwareProfile],
) -> dict[str, HardwareProfile]:
    """The profiles keyed by type (a later entry for the same type wins)."""
    return {profile.hardware: profile for profile in profiles}
