"""The benchmark command end to end, `--quick` on a tiny random BERT (no Optimum, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.compare.run import main


@pytest.mark.slow
def test_quick_bench_on_a_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = main(
        [
            "--quick",
            "--models",
            "tiny",
            "--no-optimum",
            "--no-serving",
            "--out-dir",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ]
    )
    assert code == 0
    results = json.loads((out / "peers.json").read_text())
    (model,) = results["models"]
    names = [row["name"] for row in model["contenders"]]
    assert names == [
        "pytorch-fp32",
        "pytorch-fp32-eager-attention",
        "torch-ao-int8",
        "onnxruntime-fp32",
        "optimodel-int8",
        "optimodel-pruned-recovered-int8",
    ]
    for row in model["contenders"]:
        assert row["throughput"]["n"] == 2  # two alternating rounds, median kept
        assert row["throughput"]["min"] <= row["throughput"]["median"] <= row["throughput"]["max"]
        assert row["size_bytes"] > 0
        assert 0.9 < row["fidelity"]["cosine_mean"] <= 1.0 + 1e-6
    baseline, *_, int8, _pruned = model["contenders"]
    assert baseline["ratios"] == {"size": 1.0, "latency_p50": 1.0, "throughput": 1.0}
    # The builder's int8 artifact really is int8: about a quarter of the fp32 weights.
    assert int8["ratios"]["size"] > 2.5
    assert int8["build"]["gate_metric"] == "cosine"
    assert [s["name"] for s in int8["build"]["steps"]][:1] == ["load"]
    assert results["machine"]["other_load"].split(":")[0] in ("quiet", "busy")
    assert results["optimum"]["available"] is False
    assert results["serving"] is None
    table = (out / "README-table.md").read_text()
    assert "| **optimodel int8 dynamic per-channel (default)** |" in table
    assert (out / "peers_throughput_vs_fidelity.png").stat().st_size > 10_000
