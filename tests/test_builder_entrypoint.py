"""The edges: the builder Job entrypoint, its termination message, manifests, `optimodel build`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.manifest import build_spec_from_manifest
from optimodel.model_builder.__main__ import main
from optimodel.model_builder.report import (
    TERMINATION_MESSAGE_LIMIT,
    BuildSummary,
    TerminationMessage,
)
from optimodel.operator.validation import ManifestError
from tests.builder_models import single_torch_thread, tiny_model_dir
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _build_spec(**optimize: Any) -> dict[str, Any]:
    """An explicit int8-dynamic build for CPU serving: the Job's mechanics, not the search."""
    return {
        "name": "tiny",
        "source": {"uri": f"file://{tiny_model_dir('bert')}", "task": "feature-extraction"},
        "optimize": {
            "accuracy": {"metric": "cosine", "min": 0.9},
            "evalData": {"uri": "builtin://eval-texts", "maxSamples": 32},
            "quantize": {"mode": "int8-dynamic"},
            **optimize,
        },
        "serving": {"gpu": {"count": 0}},
    }


def _manifest(tmp_path: Path, **optimize: Any) -> Path:
    document = {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "tiny"},
        "spec": {k: v for k, v in _build_spec(**optimize).items() if k != "name"},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _termination(path: Path) -> TerminationMessage:
    text = path.read_text()
    assert "\n" not in text and len(text.encode()) < TERMINATION_MESSAGE_LIMIT
    return TerminationMessage.parse(text)


def test_job_builds_from_a_spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_build_spec()))
    log = tmp_path / "termination-log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))

    code = main(["--spec", str(spec_file), "--out", str(tmp_path / "out"), "--no-benchmark"])

    assert code == 0
    assert (tmp_path / "out" / "tiny" / "tiny-model" / "1" / "model.onnx").is_file()
    message = _termination(log)
    assert message.reason == "Built" and message.report is not None
    assert message.report.size_bytes < message.report.original_size_bytes
    assert message.report.accuracy_metric == "cosine"
    assert message.report.signature is not None
    written = json.loads(log.read_text())
    assert set(written["report"]) >= {"specHash", "sizeBytes", "originalSizeBytes", "accuracy"}


def test_job_reads_spec_and_output_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _build_spec(quantize={"mode": "none"}, accuracy={"metric": "cosine", "min": 1.0})
    monkeypatch.setenv("OPTIMODEL_BUILD_SPEC", json.dumps(spec))
    monkeypatch.setenv("OPTIMODEL_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(tmp_path / "log"))
    prune = {"method": "structured", "sparsity": 0.5, "target": "ffn"}
    monkeypatch.setenv(
        "OPTIMODEL_BUILD_SPEC",
        json.dumps({**spec, "optimize": {**spec["optimize"], "prune": prune}}),
    )

    code = main(["--no-benchmark"])

    assert code == 3
    assert not (tmp_path / "out" / "tiny").exists()
    message = _termination(tmp_path / "log")
    assert message.reason == "AccuracyBelowThreshold"
    assert message.step == "prune" and message.threshold == 1.0
    assert message.accuracy is not None and message.accuracy < 1.0
    assert message.message and "below accuracy.min" in message.message


@pytest.mark.parametrize(
    ("spec", "code", "reason", "names"),
    [
        (
            {"name": "tiny", "source": {"uri": "ftp://x", "task": "feature-extraction"}},
            2,
            "InvalidSpec",
            "source.uri",
        ),
        (
            {
                "name": "tiny",
                "source": {"uri": "file:///x", "task": "feature-extraction"},
                "optimize": {"quantize": {"mode": "int3"}},
            },
            2,
            "InvalidSpec",
            "optimize.quantize.mode",
        ),
        (
            {
                "name": "tiny",
                "source": {"uri": "file:///nonexistent", "task": "feature-extraction"},
            },
            4,
            "SourceNotFound",
            "spec.source.uri",
        ),
    ],
)
def test_job_failures_map_to_exit_codes_and_reasons(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec: dict[str, Any],
    code: int,
    reason: str,
    names: str,
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(tmp_path / "log"))
    assert main(["--spec", str(spec_file), "--out", str(tmp_path / "out")]) == code
    message = _termination(tmp_path / "log")
    assert message.reason == reason
    assert message.message is not None and names in message.message


def test_job_entrypoint_runs_as_a_module(tmp_path: Path) -> None:
    env = {
        "OPTIMODEL_BUILD_SPEC": "{not json",
        "OPTIMODEL_TERMINATION_LOG": str(tmp_path / "log"),
        "PATH": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "optimodel.model_builder", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "OPTIMODEL_BUILD_SPEC is not valid JSON" in result.stderr
    assert _termination(tmp_path / "log").reason == "InvalidSpec"


def test_termination_message_is_cut_to_fit() -> None:
    message = TerminationMessage(reason="BuildFailed", message="x" * 10_000)
    text = message.render()
    assert len(text.encode()) < TERMINATION_MESSAGE_LIMIT
    assert TerminationMessage.parse(text).reason == "BuildFailed"
    summary = BuildSummary(
        spec_hash="abc",
        size_bytes=1,
        original_size_bytes=4,
        accuracy_metric="cosine",
        accuracy=0.99,
    )
    built = json.loads(TerminationMessage(reason="Built", report=summary).render())
    assert built == {
        "reason": "Built",
        "report": {
            "specHash": "abc",
            "sizeBytes": 1,
            "originalSizeBytes": 4,
            "accuracyMetric": "cosine",
            "accuracy": 0.99,
        },
    }


def test_manifest_becomes_a_build_spec(repo: Path) -> None:
    spec = build_spec_from_manifest(repo / "examples" / "minilm-int8.yaml")
    assert spec.name == "minilm"
    assert spec.source.uri == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert spec.optimize.quantize.mode == "int8-dynamic"
    assert spec.serving.max_batch_size == 32


def test_invalid_manifest_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: optimodel.io/v1alpha1\nkind: OptimizedModel\nmetadata: {name: bad}\n"
        "spec:\n  source: {uri: 'hf://a/b', task: feature-extraction}\n"
        "  optimize: {quantize: {mode: int8-static}, prune: {method: magnitude}}\n"
    )
    with pytest.raises(ManifestError) as caught:
        build_spec_from_manifest(path)
    paths = {problem.path for problem in caught.value.problems}
    # int8-static is also refused for the default GPU serving (gpu.count 1)
    assert paths == {
        "spec.optimize.calibrationData",
        "spec.optimize.prune.sparsity",
        "spec.optimize.quantize.mode",
    }


def test_cli_build_shows_results_and_publishes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", str(_manifest(tmp_path)), "--out", str(tmp_path / "out"), "--no-benchmark"]
    )
    assert result.exit_code == 0, result.output
    assert "original vs optimized" in result.output
    assert "Loading weights" not in result.output  # one progress display, the builder's
    assert "passed" in result.output and "FAILED" not in result.output
    assert (tmp_path / "out" / "tiny" / "tiny" / "config.pbtxt").is_file()


def test_cli_build_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    gate = _manifest(
        tmp_path,
        quantize={"mode": "none"},
        accuracy={"metric": "cosine", "min": 1.0},
        prune={"method": "structured", "sparsity": 0.5},
    )
    result = runner.invoke(app, ["build", str(gate), "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "accuracy gate failed, nothing published" in result.output
    assert not (tmp_path / "out" / "tiny").exists()

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: optimodel.io/v1alpha1\nkind: OptimizedModel\nmetadata: {name: x}\n")
    result = runner.invoke(app, ["build", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "spec" in result.output


def test_stage_bars_finish_skipped_and_finished_stages() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from optimodel.build_console import StageBars
    from optimodel.model_builder.pipeline import BuildProgress

    with Progress(console=Console(file=io.StringIO())) as progress:
        bars = StageBars(progress)
        bars(BuildProgress("load", "started"))
        bars(BuildProgress("load", "finished", detail="bert"))
        bars(BuildProgress("prune", "skipped", detail="prune.method: none"))
        bars(BuildProgress("recover", "started"))
        bars(BuildProgress("recover", "advanced", 5, 20, "loss 0.1"))
        state = {t.description: (t.finished, t.completed, t.total) for t in progress.tasks}
    assert state["[green]✓ load[/green]"][0]
    assert state["[dim]– prune (prune.method: none)[/dim]"][0]
    assert state["[bold]recover[/bold] loss 0.1"] == (False, 5, 20)
