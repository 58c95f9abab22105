"""`optimodel validate`: the examples pass; bad manifests fail, each naming its field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.operator.validation import manifest_problems, parse_spec, validate_file
from tests.conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
Manifest = dict[str, Any]


def good() -> Manifest:
    # GPU serving with autoscaling: every rule below has something to act on.
    document: Manifest = yaml.safe_load((REPO / "examples" / "minilm-gpu.yaml").read_text())
    return document


def edit(change: Callable[[Manifest], object]) -> Manifest:
    document = copy.deepcopy(good())
    change(document)
    return document


def _set(path: str, value: object) -> Callable[[Manifest], None]:
    def apply(document: Manifest) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return apply


def _delete(path: str) -> Callable[[Manifest], None]:
    def apply(document: Manifest) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[part]
        del node[last]

    return apply


def _annotate(key: str, value: object) -> Callable[[Manifest], None]:
    return lambda document: document["metadata"]["annotations"].__setitem__(key, value)


BAD: list[tuple[str, Callable[[Manifest], object], str, str]] = [
    # (case, change, field path the problem must name, a word the fix must contain)
    (
        "typo-field",
        _set("spec.serving.maxBatchsize", 16),
        "spec.serving.maxBatchsize",
        "maxBatchSize",
    ),
    ("unknown-top-field", _set("spec.optimise", {}), "spec.optimise", "optimize"),
    (
        "quantize-mode-enum",
        _set("spec.optimize.quantize.mode", "int9"),
        "spec.optimize.quantize.mode",
        "int8-dynamic",
    ),
    (
        "task-enum",
        _set("spec.source.task", "translation"),
        "spec.source.task",
        "feature-extraction",
    ),
    (
        "batch-as-string",
        _set("spec.serving.maxBatchSize", "32"),
        "spec.serving.maxBatchSize",
        "without quotes",
    ),
    ("batch-zero", _set("spec.serving.maxBatchSize", 0), "spec.serving.maxBatchSize", ">= 1"),
    (
        "sparsity-too-high",
        _set("spec.optimize.prune.sparsity", 1.5),
        "spec.optimize.prune.sparsity",
        "<= 0.9",
    ),
    (
        "gpu-util-over-100",
        _set("spec.autoscaling.targetGPUUtilization", 150),
        "spec.autoscaling.targetGPUUtilization",
        "<= 100",
    ),
    ("source-missing", _delete("spec.source"), "spec.source", "add source"),
    ("uri-scheme", _set("spec.source.uri", "ftp://models/minilm"), "spec.source.uri", "hf://"),
    (
        "max-below-min",
        _set("spec.autoscaling.minReplicas", 9),
        "spec.autoscaling.maxReplicas",
        "maxReplicas",
    ),
    (
        "static-without-calibration",
        _set("spec.optimize.quantize.mode", "int8-static"),
        "spec.optimize.calibrationData",
        "calibrationData",
    ),
    (
        "metric-wrong-task",
        _set("spec.optimize.accuracy.metric", "top1-agreement"),
        "spec.optimize.accuracy.metric",
        "cosine",
    ),
    (
        "worst-above-mean",
        _set("spec.optimize.accuracy.worstCaseMin", 0.9999),
        "spec.optimize.accuracy.worstCaseMin",
        "min",
    ),
    (
        "preferred-over-max",
        _set("spec.serving.preferredBatchSizes", [16, 64]),
        "spec.serving.preferredBatchSizes[1]",
        "between 1 and 32",
    ),
    (
        "budget-negative",
        _annotate("optimodel.io/budget-usd-per-hour", "-3"),
        "metadata.annotations[optimodel.io/budget-usd-per-hour]",
        "positive",
    ),
    (
        "budget-not-number",
        _annotate("optimodel.io/budget-usd-per-month", "lots"),
        "metadata.annotations[optimodel.io/budget-usd-per-month]",
        "positive",
    ),
    (
        "budget-annotation-typo",
        _annotate("optimodel.io/budget-usd-per-hours", "3"),
        "metadata.annotations[optimodel.io/budget-usd-per-hours]",
        "budget-usd-per-hour",
    ),
    (
        "hpa-scale-to-zero",
        _set("spec.autoscaling.minReplicas", 0),
        "spec.autoscaling.minReplicas",
        "keda",
    ),
    ("replicas-with-autoscaling", _set("spec.replicas", 3), "spec.replicas", "enabled: false"),
    (
        "both-stores",
        _set("spec.storage", {"pvc": {"claimName": "a"}, "s3": {"uri": "s3://models"}}),
        "spec.storage",
        "exactly one",
    ),
    (
        "fp16-on-cpu",
        lambda d: (
            _set("spec.optimize.quantize.mode", "fp16")(d),
            _set("spec.serving.gpu", {"count": 0})(d),
        ),
        "spec.optimize.quantize.mode",
        "gpu.count",
    ),
    (
        "prune-without-sparsity",
        _set("spec.optimize.prune.method", "structured"),
        "spec.optimize.prune.sparsity",
        "sparsity",
    ),
    (
        "recovery-without-structured",
        _set("spec.optimize.prune.recovery", {"method": "distillation"}),
        "spec.optimize.prune.recovery.method",
        "structured",
    ),
    ("wrong-api-version", _set("apiVersion", "optimodel.io/v1"), "apiVersion", "v1alpha1"),
    ("bad-name", _set("metadata.name", "MiniLM_v2"), "metadata.name", "lowercase"),
    (
        "gpu-type-form",
        _set("spec.serving.gpu.type", "NVIDIA L4"),
        "spec.serving.gpu.type",
        "catalog",
    ),
]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_are_valid(example: Path) -> None:
    results = validate_file(example)
    assert results, "no manifest found"
    for result in results:
        assert result.problems == [], result.problems


def test_there_are_at_least_three_examples() -> None:
    kinds = {yaml.safe_load(path.read_text())["kind"] for path in EXAMPLES}
    assert len(EXAMPLES) >= 3 and "OptimizedModel" in kinds


@pytest.mark.parametrize(("case", "change", "field", "fix_word"), BAD, ids=[b[0] for b in BAD])
def test_bad_manifest_is_rejected_naming_the_field(
    case: str, change: Callable[[Manifest], object], field: str, fix_word: str
) -> None:
    problems = manifest_problems(edit(change))
    assert problems, f"{case} was accepted"
    named = [problem for problem in problems if problem.path == field]
    assert named, f"no problem names {field}: {[str(p) for p in problems]}"
    assert any(fix_word in problem.fix or fix_word in problem.message for problem in named), [
        str(p) for p in named
    ]


def test_all_problems_are_reported_at_once() -> None:
    document = edit(_set("spec.serving.maxBatchSize", 0))
    document["spec"]["optimize"].setdefault("quantize", {})["mode"] = "int9"
    paths = {problem.path for problem in manifest_problems(document)}
    assert {"spec.serving.maxBatchSize", "spec.optimize.quantize.mode"} <= paths


def test_defaults_are_applied_like_the_api_server() -> None:
    spec = parse_spec({"spec": {"source": {"uri": "hf://a/b", "task": "feature-extraction"}}})
    assert spec.optimize.quantize.mode is None and spec.optimize.recipe == "auto"
    assert spec.optimize.accuracy.min == 0.99
    assert spec.serving.max_batch_size == 32
    assert spec.autoscaling.max_replicas == 8
    assert spec.storage is None


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", *map(str, EXAMPLES)])
    assert ok.exit_code == 0, ok.output
    assert f"{len(EXAMPLES)} valid, 0 invalid" in ok.output

    bad = tmp_path / "bad.yaml"
    documents = [edit(_set("spec.serving.maxBatchsize", 8)), good()]
    bad.write_text(yaml.safe_dump_all(documents))
    result = runner.invoke(app, ["validate", str(bad)], terminal_width=200)
    assert result.exit_code == 1
    assert "spec.serving.maxBatchsize" in result.output
    assert "did you mean 'maxBatchSize'?" in result.output
    assert "1 valid, 1 invalid" in result.output


@pytest.mark.parametrize(
    ("text", "where"),
    [("spec: [unclosed\n", "line"), ("", "(file)"), ("- just\n- a list\n", "(document)")],
)
def test_unreadable_files_are_reported(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    [result] = validate_file(path)
    assert not result.valid
    assert result.problems[0].path.startswith(where)


def test_other_kinds_are_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    path.write_text(yaml.safe_dump_all([service, good()]))
    results = validate_file(path)
    assert [r.kind for r in results] == ["Service", "OptimizedModel"]
    assert all(r.valid for r in results)
