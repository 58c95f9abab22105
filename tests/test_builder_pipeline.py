"""run_build end to end on tiny models: the repository it publishes, and what it refuses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from optimodel.model_builder import repository
from optimodel.model_builder.benchmark import BenchmarkSettings
from optimodel.model_builder.errors import (
    AccuracyGateError,
    InvalidBuildSpecError,
    OutputFolderError,
    UnsupportedQuantizationError,
)
from optimodel.model_builder.pipeline import BuildProgress, run_build
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.spec import BuildSpec
from tests.builder_models import HIDDEN, single_torch_thread, tiny_model_dir

QUICK_BENCHMARK = BenchmarkSettings(
    batch_size=4, sequence_length=16, rounds=1, seconds_per_round=0.05, latency_calls_per_round=3
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _spec(name: str = "tiny", kind: str = "bert", **optimize: Any) -> BuildSpec:
    """An explicit int8-dynamic build for CPU serving (the recipe search has its own tests)."""
    task = "text-classification" if "classifier" in kind else "feature-extraction"
    return BuildSpec.model_validate(
        {
            "name": name,
            "source": {"uri": f"file://{tiny_model_dir(kind)}", "task": task},
            "optimize": {
                "accuracy": {"metric": "cosine", "min": 0.9},
                "evalData": {"uri": "builtin://eval-texts", "maxSamples": 64},
                "quantize": {"mode": "int8-dynamic"},
                **optimize,
            },
            "serving": {"gpu": {"count": 0}, "maxBatchSize": 16, "preferredBatchSizes": [8, 16]},
        }
    )


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_build_publishes_a_triton_model_folder(tmp_path: Path) -> None:
    events: list[BuildProgress] = []
    report = run_build(
        _spec(), tmp_path, progress=events.append, benchmark_settings=QUICK_BENCHMARK
    )

    folder = tmp_path / "tiny"
    assert _entries(tmp_path) == ["tiny"], "no staging folder is left behind"
    # The served repository: text-in ensemble, its two python steps, the raw-tensor model.
    assert _entries(folder) == [
        "report.json", "tiny", "tiny-model", "tiny-postprocess", "tiny-tokenize",
    ]  # fmt: skip
    assert (folder / "tiny-model" / "1" / "model.onnx").is_file()
    assert (folder / "tiny-tokenize" / "1" / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((folder / "tiny-tokenize" / "1" / "tokenize.json").read_text()) == {
        "max_length": 128, "pad_id": 0, "pad_type_id": 0, "truncation_side": "right",
    }  # fmt: skip
    for step in ("tiny-tokenize", "tiny-postprocess"):
        assert "class TritonPythonModel" in (folder / step / "1" / "model.py").read_text()
    assert (folder / "tiny" / "1").is_dir()
    config = (folder / "tiny-model" / "config.pbtxt").read_text()
    assert 'name: "tiny-model"' in config and 'backend: "onnxruntime"' in config
    assert "max_batch_size: 16" in config
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in config
    assert f'{{ name: "embeddings" data_type: TYPE_FP32 dims: [ {HIDDEN} ] }}' in config
    assert "preferred_batch_size: [ 8, 16 ]" in config
    ensemble = (folder / "tiny" / "config.pbtxt").read_text()
    assert 'platform: "ensemble"' in ensemble and "TYPE_STRING" in ensemble

    stored = BuildReport.read(folder / "report.json")
    assert stored == report and report.passed
    assert [s.name for s in report.steps] == ["load", "export", "quantize", "evaluate", "benchmark"]
    assert report.accuracy is not None and report.accuracy.passed
    assert report.optimized is not None and report.original is not None
    assert report.optimized.throughput and report.original.throughput
    assert report.optimized.latency_p50_ms and report.optimized.latency_p95_ms
    assert report.size_reduction and report.size_reduction > 2.5
    for relative, digest in report.hashes.items():
        assert hashlib.sha256((folder / relative).read_bytes()).hexdigest() == digest
    assert {
        "tiny-model/1/model.onnx",
        "tiny-model/config.pbtxt",
        "tiny/config.pbtxt",
        "tiny-tokenize/1/tokenizer/tokenizer.json",
        "tiny-tokenize/1/model.py",
    } <= set(report.hashes)
    assert {"torch", "onnxruntime", "transformers"} <= set(report.versions)
    # The served graph's work per inference at the longest input, for the hardware choice.
    assert report.work is not None and report.work.method == "graph-shapes"
    assert report.work.sequence_length == 128 and report.work.batch_size == 16
    assert report.work.total_ops > 0 and report.work.weight_bytes > 0

    started = [e.step for e in events if e.state == "started"]
    assert started == ["load", "export", "quantize", "evaluate", "benchmark"]
    assert {e.step for e in events if e.state == "skipped"} == {"prune", "recover"}


def test_gate_failure_names_the_step_and_publishes_nothing(tmp_path: Path) -> None:
    spec = _spec(
        prune={"method": "structured", "sparsity": 0.75, "target": "ffn-and-heads"},
        quantize={"mode": "none"},
        accuracy={"metric": "cosine", "min": 0.9999},
    )
    with pytest.raises(AccuracyGateError) as caught:
        run_build(spec, tmp_path, benchmark=False)

    error = caught.value
    assert error.culprit == "prune"
    assert error.shortfall > 0
    assert "below accuracy.min 0.9999" in error.message
    assert "the largest drop came from step prune" in error.message
    assert error.field == "spec.optimize.accuracy.min" and error.exit_code == 3
    report = error.report
    assert not report.passed and report.failure == error.message
    prune_step = next(s for s in report.steps if s.name == "prune")
    assert prune_step.accuracy is not None and prune_step.accuracy < 0.9999
    assert _entries(tmp_path) == []


def test_failed_rebuild_keeps_the_published_version(tmp_path: Path) -> None:
    first = run_build(_spec(), tmp_path, benchmark=False)
    model_file = tmp_path / "tiny" / "tiny-model" / "1" / "model.onnx"
    before = model_file.read_bytes()
    with pytest.raises(AccuracyGateError):
        run_build(_spec(accuracy={"metric": "cosine", "min": 1.0}), tmp_path, benchmark=False)
    assert model_file.read_bytes() == before
    assert BuildReport.read(tmp_path / "tiny" / "report.json") == first
    assert _entries(tmp_path) == ["tiny"]


def test_rebuild_replaces_the_folder_whole(tmp_path: Path) -> None:
    run_build(_spec(), tmp_path, benchmark=False)
    (tmp_path / "tiny" / "stale.txt").write_text("from the previous version")
    second = run_build(_spec(quantize={"mode": "none"}), tmp_path, benchmark=False)
    assert not (tmp_path / "tiny" / "stale.txt").exists()
    assert BuildReport.read(tmp_path / "tiny" / "report.json") == second
    assert _entries(tmp_path) == ["tiny"]


def test_crash_while_writing_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(repository, "file_hashes", broken)
    monkeypatch.setattr("optimodel.model_builder.pipeline.file_hashes", broken)
    with pytest.raises(OSError, match="disk full"):
        run_build(_spec(), tmp_path, benchmark=False)
    assert _entries(tmp_path) == []


def test_classifier_gated_on_labelled_accuracy(tmp_path: Path) -> None:
    data = tmp_path / "labelled.jsonl"
    rows = [
        {"sentence": f"review number {i}", "label": ["negative", "positive"][i % 2]}
        for i in range(20)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = _spec(
        "sentiment",
        "bert-classifier",
        quantize={"mode": "int8-dynamic", "keepFp32Nodes": 2},
        accuracy={"metric": "accuracy", "min": 0.0},
        evalData={"uri": f"file://{data}", "textField": "sentence", "labelField": "label"},
    )
    report = run_build(spec, tmp_path / "out", benchmark=False)
    assert report.accuracy is not None and report.accuracy.metric == "accuracy"
    assert report.accuracy.samples == 20
    load_step = report.steps[0]
    assert load_step.name == "load" and load_step.accuracy is not None  # the original's own
    quantize_step = next(s for s in report.steps if s.name == "quantize")
    assert "2 kept fp32" in quantize_step.detail
    assert report.signature is not None and report.signature.outputs[0].name == "logits"
    served = tmp_path / "out" / "sentiment"
    config = (served / "sentiment-model" / "config.pbtxt").read_text()
    assert '{ name: "logits" data_type: TYPE_FP32 dims: [ 2 ] }' in config
    ensemble = (served / "sentiment" / "config.pbtxt").read_text()
    assert '{ name: "label" data_type: TYPE_STRING dims: [ 1 ] }' in ensemble
    assert '{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }' in ensemble
    answer = json.loads((served / "sentiment-postprocess" / "1" / "postprocess.json").read_text())
    assert answer == {
        "task": "text-classification", "labels": ["negative", "positive"], "function": "softmax",
    }  # fmt: skip


def test_keep_fp32_of_every_matmul_is_refused_with_the_field(tmp_path: Path) -> None:
    spec = _spec(quantize={"mode": "int8-dynamic", "keepFp32Nodes": 64})
    with pytest.raises(UnsupportedQuantizationError) as caught:
        run_build(spec, tmp_path, benchmark=False)
    assert caught.value.field == "spec.optimize.quantize.keepFp32Nodes"
    assert "12 weight MatMuls" in str(caught.value)
    assert caught.value.exit_code == 2
    assert _entries(tmp_path) == []


def test_contradictory_spec_is_refused_before_any_work(tmp_path: Path) -> None:
    spec = _spec(prune={"method": "magnitude", "sparsity": 0.0})
    with pytest.raises(InvalidBuildSpecError) as caught:
        run_build(spec, tmp_path)
    assert caught.value.field == "spec.optimize.prune.sparsity"
    assert not tmp_path.joinpath("tiny").exists()


def test_failed_swap_puts_the_served_version_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "tiny"
    served.mkdir()
    (served / "config.pbtxt").write_text("served")
    staged = tmp_path / ".staging-x" / "tiny"
    staged.mkdir(parents=True)
    rename = Path.rename

    def failing_rename(self: Path, target: Any) -> Any:
        if self == staged:
            raise OSError("cross-device link")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    report = BuildReport(
        name="tiny",
        spec_hash="0",
        passed=True,
        source_uri="file:///m",
        task="feature-extraction",
        created_at=datetime.now(UTC),
    )
    with pytest.raises(OutputFolderError, match="cross-device"):
        repository.publish_model_folder(staged, report, tmp_path)
    assert (served / "config.pbtxt").read_text() == "served"
    assert _entries(tmp_path) == [".staging-x", "tiny"]
