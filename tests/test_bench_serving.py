"""benchmarks/serving_batching.py end to end, `--quick`, on a tiny model built by the builder
(its source is a tiny BERT saved from a config, so the PyTorch baseline loads it too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.serving_batching import main
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.spec import BuildSpec
from tests.builder_models import single_torch_thread, tiny_model_dir


@pytest.mark.slow
@pytest.mark.triton
def test_quick_serving_benchmark_measures_every_check(tmp_path: Path) -> None:
    spec = BuildSpec.model_validate(
        {
            "name": "tiny",
            "source": {"uri": f"file://{tiny_model_dir('bert')}", "task": "feature-extraction"},
            "optimize": {
                "accuracy": {"min": 0.9},
                "evalData": {"uri": "builtin://eval-texts", "maxSamples": 16},
            },
            "serving": {"gpu": {"count": 0}, "maxBatchSize": 8, "maxQueueDelayMicroseconds": 2000},
        }
    )
    with single_torch_thread():
        run_build(spec, tmp_path / "out", benchmark=False)
    out = tmp_path / "results" / "serving.json"

    artifact = str(tmp_path / "out" / "tiny")
    options = ["--quick", "--tool", "tritonclient", "--artifact", artifact, "--out", str(out)]
    assert main(options) == 0

    record = json.loads(out.read_text())
    assert record["quick"] and record["machine"]["cpu"]["cores"]
    assert record["batching"]["model_step_average_batch"] > 1.0, "mixed texts formed batches"
    assert record["batching"]["speedup_median"] > 0
    assert -1.0 < record["ensemble_overhead"]["median"] < 1.0
    (cache_round,) = record["response_cache"]["rounds"]
    assert cache_round["tiny-cached"]["cache_hits"] > 0, "Triton's metrics show the cache hits"
    assert cache_round["tiny"]["cache_hits"] == 0
    assert cache_round["distinct_texts"] < cache_round["requests"]
    assert record["cost"]["pytorch_usd_per_million"] > 0 and record["cost"]["cheaper_median"] > 0
    assert {r["model"] for r in record["results"]} >= {"tiny", "tiny-unbatched", "tiny-pytorch"}
    assert all(r["errors"] == 0 for r in record["results"])
    for plot in ("serving_cost.png", "serving_concurrency.png"):
        assert (out.parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
