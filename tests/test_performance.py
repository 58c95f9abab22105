"""The cost model: roofline estimates, measured profiles, and the cheapest type for a target."""

from __future__ import annotations

import pytest

from optimodel.model_builder.work import InferenceWork
from optimodel.operator import performance
from optimodel.operator.hardware import Hardware, HardwareCatalog
from optimodel.operator.performance import (
    Batching,
    HardwareChoiceError,
    HardwareProfile,
    Limits,
    Target,
    batch_seconds,
    choose_hardware,
    estimate,
)

# MiniLM-L6 as the fp16 GPU recipe builds it, at 128 tokens (work.py's count, rounded).
MINILM_FP16 = InferenceWork(
    sequence_length=128,
    batch_size=32,
    fp16_flops=2.87e9,
    weight_bytes=21_300_000,
    activation_bytes=16_700_000,
)
BATCHING = Batching(max_batch_size=32, max_queue_delay_ms=0.5, gpus_per_replica=1)
CATALOG = HardwareCatalog()
FAST = Hardware("fast", "gpu", 10.0, 3.0, 80, 3000, 60, 1000, 2000)
SLOW = Hardware("slow", "gpu", 1.0, 0.3, 16, 300, 8, 60, 120)
PAIR = HardwareCatalog({"fast": FAST, "slow": SLOW})


def test_roofline_takes_the_larger_of_compute_and_memory() -> None:
    compute_only = InferenceWork(
        sequence_length=64, batch_size=32, fp16_flops=1e9, weight_bytes=0, activation_bytes=0
    )
    seconds, bound = batch_seconds(compute_only, SLOW, 32)
    efficiency = performance.COMPUTE_EFFICIENCY["gpu"]["fp16"]
    overhead = performance.BATCH_OVERHEAD_SECONDS["gpu"]
    assert bound == "compute"
    assert seconds == pytest.approx(32 * 1e9 / (60e12 * efficiency) + overhead)
    memory_only = InferenceWork(
        sequence_length=64, batch_size=32, weight_bytes=300_000_000, activation_bytes=0
    )
    seconds, bound = batch_seconds(memory_only, SLOW, 32)
    assert bound == "memory"
    assert seconds == pytest.approx(
        0.3e9 / (300e9 * performance.MEMORY_EFFICIENCY["gpu"]) + overhead
    )


def test_fp16_work_on_a_cpu_runs_at_the_fp32_peak() -> None:
    cpu = CATALOG.cpu_replica
    fp16 = batch_seconds(MINILM_FP16, cpu, 32)[0]
    as_fp32 = MINILM_FP16.model_copy(update={"fp16_flops": 0.0, "fp32_flops": 2.87e9})
    assert fp16 == pytest.approx(batch_seconds(as_fp32, cpu, 32)[0])


def test_an_unrated_type_is_not_estimated() -> None:
    priced_only = Hardware("priced", "gpu", 1.0)
    with pytest.raises(HardwareChoiceError, match="memoryBandwidthGBps"):
        estimate(MINILM_FP16, priced_only, BATCHING)
    profile = HardwareProfile("priced", 900.0, 12.0, 32, "a benchmark")
    measured = estimate(MINILM_FP16, priced_only, BATCHING, profile)
    assert (measured.basis, measured.inferences_per_second) == ("measured", 900.0)
    assert measured.latency_p99_ms(0.7, 0.5) == 12.0


def test_gpus_per_replica_multiply_throughput() -> None:
    one = estimate(MINILM_FP16, SLOW, BATCHING)
    two = estimate(MINILM_FP16, SLOW, Batching(32, 0.5, 2))
    assert two.inferences_per_second == pytest.approx(2 * one.inferences_per_second)


@pytest.mark.parametrize(
    ("target", "chosen", "replicas", "reachable"),
    [
        # Cheap and plenty: the slow type at $1/h beats one fast replica at $10/h.
        (Target(1000), "slow", 1, True),
        # Many slow replicas still cost less than the fast ones.
        (Target(20_000), "slow", 5, True),
        # A p99 the slow type cannot reach even idle: only the fast one meets it.
        (Target(1000, latency_p99_ms=5.0), "fast", 1, True),
        # Beyond both within maxReplicas 8: the one that serves most.
        (Target(10_000_000), "fast", 8, False),
    ],
)
def test_the_cheapest_type_that_meets_the_target(
    target: Target, chosen: str, replicas: int, reachable: bool
) -> None:
    choice = choose_hardware(MINILM_FP16, PAIR, ["fast", "slow"], target, BATCHING, Limits(8))
    assert (choice.chosen.hardware, choice.chosen.replicas, choice.reachable) == (
        chosen,
        replicas,
        reachable,
    )
    assert choice.runner_up is not None and choice.runner_up.hardware != chosen
    assert ("out of reach" in choice.summary()) is not reachable


def test_latency_headroom_buys_more_replicas() -> None:
    fast = estimate(MINILM_FP16, FAST, BATCHING)
    loose = performance.size_option(fast, FAST, Target(50_000), BATCHING, Limits(100))
    # A p99 just above the idle one leaves little utilization per replica.
    tight_p99 = fast.latency_p99_ms(0.2, 0.5)
    tight = performance.size_option(fast, FAST, Target(50_000, tight_p99), BATCHING, Limits(100))
    assert tight.replicas > loose.replicas and tight.meets_target
    assert tight.latency_p99_ms <= tight_p99 + 1e-9


def test_the_hourly_budget_and_the_spot_share_price_the_replicas() -> None:
    slow = estimate(MINILM_FP16, SLOW, BATCHING)
    option = performance.size_option(slow, SLOW, Target(20_000), BATCHING, Limits(8, 3.5))
    assert not option.meets_target and option.replicas == 3
    assert "hourly budget $3.5 affords 3" in option.shortfall
    mixed = performance.size_option(
        slow, SLOW, Target(20_000), BATCHING, Limits(8, on_demand_replicas=2)
    )
    assert mixed.usd_per_hour == pytest.approx(2 * 1.0 + 3 * 0.3)
    assert mixed.usd_per_million(20_000, "spot") < mixed.usd_per_million(20_000)


def test_a_measured_profile_replaces_the_estimate_in_the_choice() -> None:
    # Measured, the slow type does far less than its roofline says: the fast one wins.
    profile = HardwareProfile("slow", 100.0, 40.0, 32, "gpu_check.py")
    choice = choose_hardware(
        MINILM_FP16, PAIR, ["fast", "slow"], Target(2000), BATCHING, Limits(8), {"slow": profile}
    )
    assert choice.chosen.hardware == "fast"
    slow = next(o for o in choice.options if o.hardware == "slow")
    assert slow.basis == "measured" and not slow.meets_target


def test_no_rateable_candidate_is_an_error() -> None:
    catalog = HardwareCatalog({"priced": Hardware("priced", "gpu", 1.0)})
    with pytest.raises(HardwareChoiceError, match="no candidate hardware can be rated"):
        choose_hardware(MINILM_FP16, catalog, ["priced"], Target(10), BATCHING, Limits(8))
    with pytest.raises(HardwareChoiceError, match="rebuild the model"):
        estimate(None, SLOW, BATCHING)


def test_the_catalog_gpus_rank_minilm_by_price_performance() -> None:
    names = performance.rated_candidates(CATALOG, 1)
    choice = choose_hardware(MINILM_FP16, CATALOG, names, Target(2000, 50), BATCHING, Limits(8))
    assert choice.reachable and choice.chosen.hardware == "nvidia-t4"
    costs = [option.usd_per_hour for option in choice.options]
    assert costs == sorted(costs)
    assert performance.rated_candidates(CATALOG, 0) == ("cpu",)


def test_a_model_that_does_not_fit_is_not_a_candidate() -> None:
    huge = MINILM_FP16.model_copy(update={"weight_bytes": 20 * 2**30})
    choice = choose_hardware(
        huge, CATALOG, ["nvidia-t4", "nvidia-l4"], Target(100), BATCHING, Limits(8)
    )
    assert choice.chosen.hardware == "nvidia-l4"  # 24 GiB holds 20 GiB of weights
    assert "16 GiB" in choice.unavailable["nvidia-t4"]
