"""Speed of the original PyTorch model and the optimized ONNX model, measured in one run.

Latency: batch 1, p50/p95 over many calls. Throughput: batch 32 x 64 tokens, inferences per
second. Inputs are real tokens (no padding) of exactly the benchmark length. The two models
are timed in interleaved rounds and each keeps its best round, so a burst of other load on a
shared machine hits both alike and disturbs the ratio as little as possible.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimodel.model_builder.evaluate import Device, onnx_session
from optimodel.model_builder.modeling import TaskModel, TokenBatch
from optimodel.model_builder.report import Measurement

Runner = Callable[[TokenBatch], object]


@dataclass(frozen=True)
class BenchmarkSettings:
    """What the benchmark measures and for how long."""

    batch_size: int = 32
    sequence_length: int = 64
    threads: int | None = None  # None: every core this process may use
    rounds: int = 3
    seconds_per_round: float = 1.0
    latency_calls_per_round: int = 20

    @property
    def thread_count(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


def benchmark_batch(
    tokenizer: Any, texts: list[str], rows: int, sequence_length: int
) -> TokenBatch:
    """`rows` inputs of exactly `sequence_length` real tokens, each starting at another text."""
    ids = []
    for row in range(rows):
        parts: list[str] = []
        # Roughly 4 characters a token: enough text that no row needs padding.
        while sum(map(len, parts)) < sequence_length * 8 and len(parts) < 4 * len(texts):
            parts.append(texts[(row + len(parts)) % len(texts)])
        joined = " ".join(parts)
        encoded = tokenizer(
            joined, truncation=True, max_length=sequence_length, padding="max_length"
        )
        ids.append(encoded["input_ids"])
    input_ids = np.asarray(ids, dtype=np.int64)
    return TokenBatch(input_ids=input_ids, attention_mask=np.ones_like(input_ids))


def torch_runner(task_model: TaskModel) -> Runner:
    task_model.eval()

    def run(batch: TokenBatch) -> object:
        with torch.inference_mode():
            return task_model(*batch.tensors())

    return run


def onnx_runner(path: Path, threads: int, device: Device = "cpu") -> Runner:
    session = onnx_session(path, threads, device=device)

    def run(batch: TokenBatch) -> object:
        return session.run(None, batch.feeds())

    return run


@dataclass
class RunnerTimings:
    """Raw timings of one runner: every batch-1 latency, every round's throughput."""

    latencies: list[float]
    round_throughputs: list[float]

    @property
    def throughput(self) -> float:
        """The best round: the one least disturbed by other load on the machine."""
        return max(self.round_throughputs, default=0.0)


def _one_round(
    run: Runner,
    single: TokenBatch,
    full: TokenBatch,
    settings: BenchmarkSettings,
    timings: RunnerTimings,
) -> None:
    run(single)
    for _ in range(settings.latency_calls_per_round):
        start = time.perf_counter()
        run(single)
        timings.latencies.append(time.perf_counter() - start)
    run(full)
    calls = 0
    start = time.perf_counter()
    while True:
        run(full)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= settings.seconds_per_round and calls >= 2:
            break
    timings.round_throughputs.append(calls * full.input_ids.shape[0] / elapsed)


def time_runners(
    runners: dict[str, Runner],
    single: TokenBatch,
    full: TokenBatch,
    settings: BenchmarkSettings,
) -> dict[str, RunnerTimings]:
    """Time every runner in interleaved rounds, with the settings' thread count."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.thread_count)
    timings = {name: RunnerTimings(latencies=[], round_throughputs=[]) for name in runners}
    try:
        for _ in range(settings.rounds):
            for name, run in runners.items():
                _one_round(run, single, full, settings, timings[name])
    finally:
        torch.set_num_threads(previous_threads)
    return timings


def to_measurement(
    timings: RunnerTimings, size_bytes: int, settings: BenchmarkSettings
) -> Measurement:
    latencies_ms = np.asarray(timings.latencies) * 1000.0
    return Measurement(
        size_bytes=size_bytes,
        latency_p50_ms=round(float(np.percentile(latencies_ms, 50)), 3),
        latency_p95_ms=round(float(np.percentile(latencies_ms, 95)), 3),
        throughput=round(timings.throughput, 2),
        batch_size=settings.batch_size,
        sequence_length=settings.sequence_length,
        threads=settings.thread_count,
    )


def measure(
    runners: dict[str, Runner],
    sizes: dict[str, int],
    single: TokenBatch,
    full: TokenBatch,
    settings: BenchmarkSettings,
) -> dict[str, Measurement]:
    """One Measurement per runner, timed in interleaved rounds."""
    timings = time_runners(runners, single, full, settings)
    return {name: to_measurement(timings[name], sizes[name], settings) for name in runners}
