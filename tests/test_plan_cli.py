"""`optimodel plan`: the operator's hardware comparison for a manifest and a build report, as
a table and a PNG, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from optimodel import cli
from optimodel.cli import app
from optimodel.model_builder.report import BuildReport
from tests.test_performance import MINILM_FP16


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table unwrapped, as on a wide terminal."""
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err_console, "width", 250)


def manifest(tmp_path: Path, gpu: dict[str, object], target: dict[str, object]) -> Path:
    document = {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "minilm"},
        "spec": {
            "source": {"uri": "hf://org/minilm", "task": "feature-extraction"},
            "serving": {"gpu": gpu, "target": target},
        },
    }
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def report(tmp_path: Path) -> Path:
    built = BuildReport(
        name="minilm",
        spec_hash="0" * 16,
        passed=True,
        source_uri="hf://org/minilm",
        task="feature-extraction",
        created_at=datetime(2026, 12, 2, tzinfo=UTC),
        work=MINILM_FP16,
    )
    path = tmp_path / "report.json"
    built.write(path)
    return path


def test_plan_shows_the_choice_and_writes_the_plot(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "hardwareProfiles": [
                    {
                        "type": "nvidia-l4",
                        "inferencesPerSecond": 900,
                        "latencyP99Ms": 30,
                        "measuredBy": "gpu_check.py",
                    }
                ]
            }
        )
    )
    model = manifest(tmp_path, {"type": "auto"}, {"inferencesPerSecond": 2000, "latencyP99Ms": 50})
    png = tmp_path / "plan.png"
    result = CliRunner().invoke(
        app,
        ["plan", str(model), "--report", str(report(tmp_path)), "--settings", str(settings),
         "--png", str(png)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "nvidia-t4 ← chosen" in result.output
    assert "measured" in result.output and "estimated" in result.output
    assert "runner-up" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_fixed_type_is_compared_with_the_rest(tmp_path: Path) -> None:
    model = manifest(tmp_path, {"type": "nvidia-h100"}, {"inferencesPerSecond": 2000})
    result = CliRunner().invoke(
        app,
        ["plan", str(model), "--report", str(report(tmp_path)), "--png", str(tmp_path / "p.png")],
    )
    assert result.exit_code == 0, result.output
    assert "nvidia-h100 ← the spec's type" in result.output


def test_out_of_reach_and_missing_inputs_exit_non_zero(tmp_path: Path) -> None:
    far = manifest(tmp_path, {"type": "auto"}, {"inferencesPerSecond": 9_000_000})
    result = CliRunner().invoke(
        app, ["plan", str(far), "--report", str(report(tmp_path)), "--png", str(tmp_path / "p.png")]
    )
    assert result.exit_code == 1 and "out of reach" in result.output
    no_report = CliRunner().invoke(app, ["plan", str(far)])
    assert no_report.exit_code == 2 and "--report" in no_report.output
