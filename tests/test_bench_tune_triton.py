"""`optimodel tune` end to end: a tiny built model, a real Triton sweep, a recorded choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.compare.classifier import tiny_bert
from optimodel.cli import app
from optimodel.local.repository import read_built_model
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.spec import BuildSpec


@pytest.mark.slow
@pytest.mark.triton
def test_tune_sweeps_chooses_and_records(tmp_path: Path) -> None:
    model = tiny_bert(tmp_path / "model", classifier=False)
    spec = BuildSpec.model_validate(
        {
            "name": "tiny",
            "source": {"uri": f"file://{model.path}", "task": "feature-extraction"},
            "optimize": {"accuracy": {"min": 0.9}, "evalData": {"uri": "builtin://eval-texts",
                                                                 "maxSamples": 16}},
            "serving": {"maxQueueDelayMicroseconds": 100, "instances": 1},
        }
    )  # fmt: skip
    run_build(spec, tmp_path / "out", benchmark=False)
    artifact = tmp_path / "out" / "tiny"

    options = ["--p99-target-ms", "2000", "--concurrency", "1,4", "--duration", "0.5", "--apply"]
    result = CliRunner().invoke(app, ["tune", str(artifact), *options])

    assert result.exit_code == 0, result.output
    report = BuildReport.read(artifact / "report.json")
    choice = report.serving_choice
    assert choice is not None and choice.met_target
    assert choice.points_considered == 10  # 5 configurations x 2 levels, none failed
    assert choice.latency_p99_ms <= 2000 and choice.throughput > 0
    served = read_built_model(artifact).serving
    assert (served.dynamic_batching, served.instances) == (
        choice.config.dynamic_batching,
        choice.config.instances,
    )
    assert "spec.serving for the manifest" in result.output
