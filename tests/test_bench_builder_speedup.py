"""benchmarks/builder_speedup.py --quick on a tiny BERT: both builds, one alternating run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.builder_speedup import alternating_timings, main
from optimodel.model_builder.benchmark import BenchmarkSettings, Runner
from optimodel.model_builder.modeling import TokenBatch
from tests.builder_models import single_torch_thread, tiny_model_dir


@pytest.mark.slow
def test_quick_builder_speedup_on_a_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "builder_speedup.json"
    source = f"file://{tiny_model_dir('bert')}"
    with single_torch_thread():
        main(["--quick", "--no-optimum", "--source", source, "--threads", "1", "--out", str(out)])
    results = json.loads(out.read_text())
    variants = results["variants"]
    auto = next(name for name in variants if name.startswith("recipe auto → "))
    assert auto.removeprefix("recipe auto → ") == results["builds"]["auto"]["recipe"]
    assert "default int8 (int8-dynamic per-channel)" in variants
    for name, variant in variants.items():
        assert len(variant["round_throughputs"]) == 2, name  # both alternating rounds
        assert variant["throughput"] > 0
    assert results["builds"]["auto"]["trials"], "the search's trials are recorded"
    assert results["machine"]["isa"] is not None and results["machine"]["cores"] >= 1
    assert set(results["met"]) >= {"auto_meets_the_gate", "search_adds_at_most_3_minutes"}
    assert results["optimum"] == "left out: --no-optimum"


def test_rounds_alternate_their_order() -> None:
    calls: list[str] = []

    def runner(name: str) -> Runner:
        def run(batch: TokenBatch) -> object:
            if batch.input_ids.shape[0] == 2:  # the full batch: throughput calls
                calls.append(name)
            return None

        return run

    single = TokenBatch(np.ones((1, 4), np.int64), np.ones((1, 4), np.int64))
    full = TokenBatch(np.ones((2, 4), np.int64), np.ones((2, 4), np.int64))
    settings = BenchmarkSettings(
        batch_size=2, rounds=3, seconds_per_round=0.0, latency_calls_per_round=1
    )
    timings = alternating_timings({n: runner(n) for n in "abc"}, single, full, settings)
    order = [name for index, name in enumerate(calls) if index == 0 or calls[index - 1] != name]
    assert order == list("abcbabc")  # a b c | c b a | a b c, repeats merged
    assert all(len(t.round_throughputs) == 3 for t in timings.values())
