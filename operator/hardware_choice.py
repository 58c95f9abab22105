"""The hardware one model is served on: its spec, its build's work and the operator's settings
in, the chosen type, status.hardware and the TargetReachable condition out. Pure.

`performance.py` does the arithmetic; this module reads a spec the way the operator does
(candidates narrowed by the admin policy, limits from maxReplicas and the hourly budget,
measured profiles for the model) and is shared by the reconciler and `optimodel plan`.

The recipe is decided before the build by serving.gpu.count (CPU or GPU), so `auto` chooses
among the hardware the built artifact runs on: GPU types for gpu.count >= 1. With gpu.count 0
the CPU replica is the only candidate, and a target sizes its replicas. Until the build reports
its work, an auto model is priced (budget cap, cost status) at its dearest candidate, so the cap
is never set higher than the chosen type will afford; nothing is served before a build anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from optimodel.model_builder.spec import AUTO_GPU_TYPE
from optimodel.model_builder.work import InferenceWork
from optimodel.operator import api
from optimodel.operator.capacity import on_demand_base
from optimodel.operator.cost import CostError, parse_budget
from optimodel.operator.hardware import CPU, HardwareCatalog
from optimodel.operator.performance import (
    DEFAULT_UTILIZATION,
    Batching,
    HardwareChoice,
    HardwareChoiceError,
    HardwareOption,
    HardwareProfile,
    Limits,
    Target,
    choose_hardware,
    rated_candidates,
)
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import ConditionUpdate, ModelEvent, find_condition, set_condition

CONDITION: api.ConditionType = "TargetReachable"


def is_auto(spec: api.OptimizedModelSpec) -> bool:
    return spec.serving.gpu.type == AUTO_GPU_TYPE and spec.serving.gpu.count > 0


def candidate_types(
    spec: api.OptimizedModelSpec, namespace: str, settings: OperatorSettings
) -> tuple[str, ...]:
    """The types the choice compares: for auto, gpu.types (or every catalog GPU type) that the
    namespace's policy caps allow; for a fixed type, that type (or the CPU replica)."""
    gpu = spec.serving.gpu
    if gpu.count == 0:
        return (CPU,)
    if not is_auto(spec):
        return (gpu.type,)
    catalog = settings.hardware_catalog
    listed = tuple(gpu.types) or rated_candidates(catalog, gpu.count)
    allowed = settings.policy.caps_for(namespace).gpu_types
    return tuple(name for name in listed if not allowed or name in allowed)


def batching_of(spec: api.OptimizedModelSpec) -> Batching:
    """The manifest's batching, as the performance model takes it."""
    serving = spec.serving
    batch = max(serving.preferred_batch_sizes or [serving.max_batch_size])
    if not serving.dynamic_batching:
        batch = 1  # each request runs alone
    scaling = spec.autoscaling
    utilization = scaling.target_gpu_utilization / 100 if scaling.enabled else DEFAULT_UTILIZATION
    return Batching(
        max_batch_size=batch,
        max_queue_delay_ms=serving.max_queue_delay_microseconds / 1000,
        gpus_per_replica=serving.gpu.count,
        utilization=utilization,
    )


def limits_of(spec: api.OptimizedModelSpec, annotations: Mapping[str, str]) -> Limits:
    """maxReplicas (or the fixed replicas), the hourly budget annotation if readable, and the
    on-demand base of spot capacity."""
    scaling = spec.autoscaling
    replicas = scaling.max_replicas if scaling.enabled else (spec.replicas or 1)
    try:
        hourly = parse_budget(annotations).usd_per_hour
    except CostError:
        hourly = None  # WithinBudget reports the bad annotation
    # Spot capacity: the on-demand base is priced on-demand, the replicas above it on spot.
    base = None if spec.serving.capacity == "on-demand" else on_demand_base(spec)
    return Limits(max_replicas=replicas, max_usd_per_hour=hourly, on_demand_replicas=base)


def profiles_for(model: str, settings: OperatorSettings) -> dict[str, HardwareProfile]:
    """The measured profiles that apply to `model`: its own beat the general ones."""
    found: dict[str, tuple[bool, HardwareProfile]] = {}
    for entry in settings.hardware_profiles:
        if entry.model is not None and entry.model != model:
            continue
        own = entry.model is not None
        if entry.type in found and found[entry.type][0] and not own:
            continue
        found[entry.type] = (
            own,
            HardwareProfile(
                entry.type,
                entry.inferences_per_second,
                entry.latency_p99_ms,
                entry.batch,
                entry.measured_by,
            ),
        )
    return {name: profile for name, (_, profile) in found.items()}


def compare_hardware(
    spec: api.OptimizedModelSpec,
    work: InferenceWork | None,
    *,
    model: str,
    namespace: str,
    annotations: Mapping[str, str],
    settings: OperatorSettings,
    candidates: Sequence[str] | None = None,
) -> HardwareChoice:
    """The comparison for spec.serving.target (HardwareChoiceError: nothing can be rated);
    `candidates` overrides the spec's (optimodel plan compares a fixed type with the rest)."""
    target = spec.serving.target
    if target is None:
        raise HardwareChoiceError("spec.serving.target is not set; fix: set it to compare")
    return choose_hardware(
        work,
        settings.hardware_catalog,
        candidates if candidates is not None else candidate_types(spec, namespace, settings),
        Target(target.inferences_per_second, target.latency_p99_ms),
        batching_of(spec),
        limits_of(spec, annotations),
        profiles_for(model, settings),
    )


def with_gpu_type(spec: api.OptimizedModelSpec, gpu_type: str) -> api.OptimizedModelSpec:
    """The spec as served: serving.gpu.type set to the chosen type (prices, node selection)."""
    if spec.serving.gpu.type == gpu_type:
        return spec
    gpu = spec.serving.gpu.model_copy(update={"type": gpu_type})
    serving = spec.serving.model_copy(update={"gpu": gpu})
    return spec.model_copy(update={"serving": serving})


def dearest(candidates: Sequence[str], catalog: HardwareCatalog) -> str:
    """The candidate with the highest on-demand price (the conservative price before a choice)."""
    return max(candidates, key=lambda name: (catalog.get(name).on_demand_usd_per_hour, name))


def option_status(option: HardwareOption, target: Target) -> api.HardwareOptionStatus:
    rate = option.served_per_second or target.inferences_per_second
    return api.HardwareOptionStatus(
        type=option.hardware,
        replicas=option.replicas,
        basis=option.basis,
        inferences_per_second=round(option.estimate.inferences_per_second, 2),
        latency_p99_ms=round(option.latency_p99_ms, 3),
        usd_per_hour=round(option.usd_per_hour, 4),
        usd_per_million_inferences=round(option.usd_per_million(rate), 4),
        spot_usd_per_million_inferences=round(option.usd_per_million(rate, "spot"), 4),
        meets_target=option.meets_target,
    )


def hardware_status(choice: HardwareChoice) -> api.HardwareStatus:
    runner = choice.runner_up
    return api.HardwareStatus(
        chosen=option_status(choice.chosen, choice.target),
        runner_up=None if runner is None else option_status(runner, choice.target),
        candidates=len(choice.options) + len(choice.unavailable),
        target_reachable=choice.reachable,
    )


@dataclass(frozen=True)
class ModelHardware:
    """What the reconciler serves and records: the spec as served, status.hardware, the
    TargetReachable condition (None: no target, no condition)."""

    spec: api.OptimizedModelSpec
    status: api.HardwareStatus | None = None
    condition: ConditionUpdate | None = None
    choice: HardwareChoice | None = None


def model_hardware(
    spec: api.OptimizedModelSpec,
    build: api.BuildStatus | None,
    *,
    model: str,
    namespace: str,
    annotations: Mapping[str, str],
    settings: OperatorSettings,
) -> ModelHardware:
    """The hardware of one model for this reconcile (see the module docstring)."""
    target = spec.serving.target
    if target is None:
        return ModelHardware(spec)
    candidates = candidate_types(spec, namespace, settings)
    catalog = settings.hardware_catalog
    if build is None:
        served = with_gpu_type(spec, dearest(candidates, catalog)) if is_auto(spec) else spec
        return ModelHardware(
            served,
            condition=ConditionUpdate(
                CONDITION,
                "Unknown",
                "AwaitingBuild",
                "the hardware is compared once the build reports the artifact's work"
                + (
                    f"; priced at the dearest candidate, {served.serving.gpu.type}, until then"
                    if is_auto(spec)
                    else ""
                ),
            ),
        )
    try:
        choice = compare_hardware(
            spec,
            build.work,
            model=model,
            namespace=namespace,
            annotations=annotations,
            settings=settings,
        )
    except HardwareChoiceError as error:
        served = with_gpu_type(spec, dearest(candidates, catalog)) if is_auto(spec) else spec
        return ModelHardware(
            served,
            condition=ConditionUpdate(CONDITION, "Unknown", "CannotEstimate", str(error)),
        )
    served = with_gpu_type(spec, choice.chosen.hardware) if is_auto(spec) else spec
    condition = ConditionUpdate(
        CONDITION,
        "True" if choice.reachable else "False",
        "TargetMet" if choice.reachable else "TargetUnreachable",
        choice.summary(),
    )
    return ModelHardware(served, hardware_status(choice), condition, choice)


def record_hardware(
    status: api.OptimizedModelStatus,
    hardware: ModelHardware | None,
    generation: int,
    now: datetime,
) -> tuple[api.OptimizedModelStatus, tuple[ModelEvent, ...]]:
    """status.hardware and the TargetReachable condition after this reconcile, with an Event
    when the choice or its verdict changed (no target: both removed)."""
    previous = find_condition(status.conditions, CONDITION)
    if hardware is None or hardware.condition is None:
        kept = [c for c in status.conditions if c.type != CONDITION]
        return status.model_copy(update={"hardware": None, "conditions": kept}), ()
    update = hardware.condition
    conditions = set_condition(status.conditions, update, generation, now)
    events: tuple[ModelEvent, ...] = ()
    before = status.hardware.chosen.type if status.hardware is not None else None
    after = hardware.status.chosen.type if hardware.status is not None else None
    moved = previous is None or (previous.status, previous.reason) != (update.status, update.reason)
    if hardware.status is not None and (moved or before != after):
        if update.status == "True":
            events = (ModelEvent("Normal", "HardwareChosen", update.message),)
        else:
            events = (ModelEvent("Warning", update.reason, update.message),)
    elif update.status == "Unknown" and update.reason != "AwaitingBuild" and moved:
        events = (ModelEvent("Warning", update.reason, update.message),)
    hardware_status = hardware.status if hardware.status is not None else status.hardware
    if update.status == "Unknown":
        hardware_status = None
    updated = status.model_copy(update={"hardware": hardware_status, "conditions": conditions})
    return updated, events
