"""Input that cannot hurt: every class of hostile or broken manifest, settings file and build
spec ends in a field-named problem, quickly, never in a traceback, a hang or a wrong value."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import re2  # type: ignore[import-untyped]
import yaml
from pydantic import TypeAdapter, ValidationError, constr
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.model_builder.__main__ import SPEC_ENV, SpecInputError, read_spec
from optimodel.model_builder.documents import DocumentError, load_yaml_documents
from optimodel.model_builder.patterns import pattern_search
from optimodel.operator.crd import open_api_schema
from optimodel.operator.settings import SETTINGS_FILE_ENV, SettingsError, load_settings
from optimodel.operator.validation import manifest_problems, validate_file
from tests.conftest import REPO

EXAMPLE = (REPO / "examples" / "minilm-int8.yaml").read_text()
OPTIMODEL = [str(Path(sys.executable).parent / "optimodel")]


def _problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "m.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    started = time.monotonic()
    results = validate_file(path)
    assert time.monotonic() - started < 2.0, "validation took too long"
    return [str(problem) for result in results for problem in result.problems]


def _with_spec_line(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


# --- the reader: each case failed today with a traceback, a hang or a silently wrong value ---


def test_a_duplicated_key_is_refused_not_last_one_wins(tmp_path: Path) -> None:
    text = _with_spec_line("min: 0.99", "min: 0.99\n      min: 0.10")
    [problem] = _problems(tmp_path, text)
    assert problem.startswith("spec.optimize.accuracy.min: the key 'min' appears twice")


def test_huge_integers_name_their_field(tmp_path: Path) -> None:
    text = _with_spec_line("maxBatchSize: 32", "maxBatchSize: " + "9" * 5000)
    [problem] = _problems(tmp_path, text)
    assert problem.startswith("spec.serving.maxBatchSize: the integer")
    assert "64-bit" in problem
    text = _with_spec_line("maxBatchSize: 32", "maxBatchSize: 9223372036854775808")
    assert _problems(tmp_path, text)[0].startswith("spec.serving.maxBatchSize")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    for deep in (
        "spec: " + "[" * 100_000 + "]" * 100_000,
        "spec:\n" + "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 400)),
    ):
        [problem] = _problems(tmp_path, deep)
        assert "nested more than 100 levels deep" in problem


def test_non_utf8_bytes_are_named_by_line(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, EXAMPLE.encode().replace(b"minilm", b"minil\xe9m", 1))
    assert "is not UTF-8" in problem and problem.startswith("line ")


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("1: x", "spec[1]"),
        ("on: x", "spec.on"),
        ("[a, b]: x", "spec"),
    ],
)
def test_non_string_keys_are_named(tmp_path: Path, line: str, field: str) -> None:
    text = EXAMPLE.replace("spec:\n", f"spec:\n  {line}\n", 1)
    problems = _problems(tmp_path, text)
    assert any(problem.startswith(f"{field}: ") for problem in problems), problems


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (".inf", "not a finite number"),
        ("!!binary aGVsbG8=", "no JSON form"),
        ("!!set {a}", "no JSON form"),
    ],
)
def test_values_json_cannot_carry_are_named(tmp_path: Path, value: str, message: str) -> None:
    text = _with_spec_line("maxBatchSize: 32", f"maxBatchSize: {value}")
    [problem] = _problems(tmp_path, text)
    assert problem.startswith("spec.serving.maxBatchSize") and message in problem


def test_unquoted_dates_stay_strings_as_in_kubectl() -> None:
    [document] = load_yaml_documents("day: 2024-01-01\n")
    assert document == {"day": "2024-01-01"}


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    text = _with_spec_line("maxBatchSize: 32", "maxBatchSize: &loop [*loop]")
    [problem] = _problems(tmp_path, text)
    assert "refers to a node that contains it" in problem


BOMB = "".join(
    f"x{level}: &x{level} [{', '.join([f'*x{level - 1}'] * 9) if level else '1'}]\n"
    for level in range(12)
)


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    # Today `validate` hangs on this: the error message repr()s the expanded value.
    text = BOMB.replace("\n", "\n  ") + "\n"
    manifest = EXAMPLE.replace("spec:\n", "spec:\n  " + text, 1)
    manifest = manifest.replace("maxBatchSize: 32", "maxBatchSize: *x11", 1)
    path = tmp_path / "bomb.yaml"
    path.write_text(manifest)
    result = subprocess.run(
        [*OPTIMODEL, "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "expands to more than" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_10_mb_annotation_is_refused_at_once(tmp_path: Path) -> None:
    text = EXAMPLE.replace("annotations:\n", f"annotations:\n    big: {'x' * 10_000_000}\n", 1)
    [problem] = _problems(tmp_path, text)
    assert "the most the API server accepts" in problem


def test_annotations_above_256_kib_are_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace("annotations:\n", f"annotations:\n    big: {'x' * 300_000}\n", 1)
    [problem] = _problems(tmp_path, text)
    assert problem.startswith("metadata.annotations: annotations hold 293 KiB")


def test_annotation_and_label_keys_and_values_as_the_api_server_checks(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "annotations:\n",
        "labels: {'bad key': x, team: 'a b', tier: 3}\n  annotations:\n    count: 3\n",
        1,
    )
    problems = _problems(tmp_path, text)
    assert any(
        p.startswith("metadata.labels[bad key]: 'bad key' is not a valid key") for p in problems
    )
    assert any(p.startswith("metadata.labels[team]: 'a b' is not a label value") for p in problems)
    assert any(p.startswith("metadata.labels[tier]: 3 is not a label value") for p in problems)
    assert any(
        p.startswith("metadata.annotations[count]: annotation values are strings") for p in problems
    )


# --- patterns: names matched whole, no traversal, in the CRD as the API server reads it ---

BAD_FIELDS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("name-newline", lambda d: d["metadata"].update(name="minilm\n"), "metadata.name"),
    (
        "gpu-type-newline",
        lambda d: d["spec"]["serving"]["gpu"].update(type="nvidia-l4\n"),
        "spec.serving.gpu.type",
    ),
    (
        "file-traversal",
        lambda d: d["spec"]["source"].update(uri="file:///models/../etc"),
        "spec.source.uri",
    ),
    (
        "pvc-traversal",
        lambda d: d["spec"]["source"].update(uri="pvc://models/../../x"),
        "spec.source.uri",
    ),
    ("pvc-no-claim", lambda d: d["spec"]["source"].update(uri="pvc:///models"), "spec.source.uri"),
    ("s3-no-bucket", lambda d: d["spec"]["source"].update(uri="s3:///models"), "spec.source.uri"),
    ("uri-newline", lambda d: d["spec"]["source"].update(uri="hf://a/b\n"), "spec.source.uri"),
    (
        "data-traversal",
        lambda d: d["spec"]["optimize"].update(evalData={"uri": "file:///data/../../etc/passwd"}),
        "spec.optimize.evalData.uri",
    ),
    (
        "empty-label-field",
        lambda d: d["spec"]["optimize"].update(
            evalData={"uri": "builtin://eval-texts", "labelField": ""}
        ),
        "spec.optimize.evalData.labelField",
    ),
    (
        "image-with-space",
        lambda d: d["spec"]["serving"].update(
            image="nvcr.io/nvidia/tritonserver:24.10-py3 --model-control-mode=explicit"
        ),
        "spec.serving.image",
    ),
    (
        "revision-traversal",
        lambda d: d["spec"]["source"].update(revision="../../refs"),
        "spec.source.revision",
    ),
    (
        "claim-name",
        lambda d: d["spec"].update(storage={"pvc": {"claimName": "Models/../x"}}),
        "spec.storage.pvc.claimName",
    ),
    (
        "sub-path-traversal",
        lambda d: d["spec"].update(
            storage={"pvc": {"claimName": "models", "subPath": "a/../../b"}}
        ),
        "spec.storage.pvc.subPath",
    ),
    (
        "s3-store-no-bucket",
        lambda d: d["spec"].update(storage={"s3": {"uri": "s3:///x"}}),
        "spec.storage.s3.uri",
    ),
    (
        "endpoint-not-url",
        lambda d: d["spec"].update(
            storage={"s3": {"uri": "s3://models", "endpoint": "minio:9000"}}
        ),
        "spec.storage.s3.endpoint",
    ),
    (
        "secret-name",
        lambda d: d["spec"].update(
            storage={"s3": {"uri": "s3://models", "credentialsSecret": {"name": "keys\n"}}}
        ),
        "spec.storage.s3.credentialsSecret.name",
    ),
    (
        "secret-key",
        lambda d: d["spec"].update(
            storage={
                "s3": {
                    "uri": "s3://models",
                    "credentialsSecret": {"name": "keys", "accessKeyIdKey": "../token"},
                }
            }
        ),
        "spec.storage.s3.credentialsSecret.accessKeyIdKey",
    ),
]


@pytest.mark.parametrize(("case", "change", "field"), BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_malformed_values_are_refused_by_pattern(
    case: str, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    document = yaml.safe_load(EXAMPLE)
    change(document)
    problems = manifest_problems(document)
    assert [p.path for p in problems] == [field], [str(p) for p in problems]


def _crd_patterns(node: Any, path: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    if isinstance(node, dict):
        if "pattern" in node:
            found[path] = node["pattern"]
        for key, child in node.get("properties", {}).items():
            found.update(_crd_patterns(child, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.update(_crd_patterns(node["items"], f"{path}[]"))
    return found


# A value each CRD pattern accepts; the trailing-newline twin must fail in every engine.
ACCEPTED = {
    ".spec.source.uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
    ".spec.source.revision": "main",
    ".spec.source.adapter.uri": "s3://models/adapters/reviews-lora",
    ".spec.source.adapter.revision": "v1.0",
    ".spec.optimize.calibrationData.uri": "pvc://data/texts.jsonl",
    ".spec.optimize.evalData.uri": "builtin://eval-texts",
    ".spec.serving.gpu.type": "nvidia-l4",
    ".spec.serving.gpu.types[]": "nvidia-t4",
    ".spec.serving.image": "nvcr.io/nvidia/tritonserver:24.10-py3",
    ".spec.storage.pvc.claimName": "optimodel-artifacts",
    ".spec.storage.pvc.subPath": "models/minilm",
    ".spec.storage.s3.uri": "s3://ml-artifacts/optimodel",
    ".spec.storage.s3.endpoint": "http://minio.minio.svc:9000",
    ".spec.storage.s3.region": "eu-west-1",
    ".spec.storage.s3.credentialsSecret.name": "artifact-store",
    ".spec.storage.s3.credentialsSecret.accessKeyIdKey": "AWS_ACCESS_KEY_ID",
    ".spec.storage.s3.credentialsSecret.secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY",
    ".status.conditions[].reason": "Built",
}


def test_every_crd_pattern_reads_alike_in_re2_rust_and_the_validator() -> None:
    patterns = _crd_patterns(open_api_schema())
    assert set(patterns) == set(ACCEPTED), set(patterns) ^ set(ACCEPTED)
    for field, pattern in patterns.items():
        rust = TypeAdapter(constr(pattern=pattern))
        good = ACCEPTED[field]
        for value, expected in ((good, True), (good + "\n", False), (" " + good, False)):
            # re2 is the API server's engine (Go regexp is RE2), pydantic's is Rust regex.
            assert bool(re2.search(pattern, value)) is expected, (field, value)
            assert pattern_search(pattern, value) is expected, (field, value)
            try:
                rust.validate_python(value)
                assert expected, (field, value)
            except ValidationError:
                assert not expected, (field, value)


# --- warnings: valid, but it cannot work ---


def _warnings(tmp_path: Path, document: dict[str, Any]) -> list[str]:
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(document))
    [result] = validate_file(path)
    assert result.valid, result.problems
    return [f"{w.path}: {w.message}" for w in result.warnings]


def test_an_hourly_budget_below_one_replica_warns(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE)
    document["metadata"]["annotations"]["optimodel.io/budget-usd-per-hour"] = "0.10"
    document["spec"]["serving"]["gpu"] = {"type": "nvidia-l4", "count": 1}
    del document["spec"]["optimize"]["quantize"]  # int8-dynamic does not run on GPU serving
    [warning] = _warnings(tmp_path, document)
    assert warning.startswith(
        "metadata.annotations[optimodel.io/budget-usd-per-hour]: $0.1/h is below the price"
    )
    document["metadata"]["annotations"]["optimodel.io/budget-usd-per-hour"] = "100"
    assert _warnings(tmp_path, document) == []


def test_keda_at_zero_and_gpu_autoscaling_without_gpus_warn(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE)
    document["metadata"]["annotations"] = {}
    document["spec"]["autoscaling"] = {"engine": "keda", "minReplicas": 0}
    document["spec"]["serving"]["gpu"] = {"count": 0}
    warnings = _warnings(tmp_path, document)
    assert [w.split(":")[0] for w in warnings] == [
        "spec.autoscaling.minReplicas",
        "spec.autoscaling.targetGPUUtilization",
    ]
    assert "can never wake" in warnings[0] and "no GPU utilization" in warnings[1]


def test_examples_work_as_written(tmp_path: Path) -> None:
    for example in sorted((REPO / "examples").glob("*.yaml")):
        for result in validate_file(example):
            assert result.valid and result.warnings == [], (example, result.warnings)


def test_validate_shows_warnings_apart_and_exits_0(tmp_path: Path) -> None:
    document = yaml.safe_load(EXAMPLE)
    document["spec"]["autoscaling"] = {"engine": "keda", "minReplicas": 0}
    path = tmp_path / "keda.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["validate", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "! " in result.output and "warning spec.autoscaling.minReplicas" in result.output
    assert "1 valid, 0 invalid, 1 with warnings" in result.output


# --- the same reader for settings and build specs ---


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            b"resyncSeconds: 120\nresyncSeconds: 5\n",
            "resyncSeconds: the key 'resyncSeconds' appears twice",
        ),
        (b"namespaces: [caf\xe9]\n", "is not UTF-8"),
        (b'build: {resources: {requests: {cpu: "2\\n"}}}\n', "is not a Kubernetes quantity"),
        (b'gpuPrices: {"nvidia-l4\\n": 1.0}\n', "is not a GPU type name"),
        (b"metricsPort: " + b"9" * 5000 + b"\n", "metricsPort: the integer"),
    ],
)
def test_settings_files_are_read_by_the_safe_reader(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        load_settings({SETTINGS_FILE_ENV: str(path)})
    assert fragment in str(caught.value)


def test_build_specs_are_read_by_the_safe_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(SpecInputError, match="'name' appears twice"):
        read_spec(path)
    path = tmp_path / "spec.json"
    path.write_text('{"name": "a", "name": "b"}')
    with pytest.raises(SpecInputError, match="'name' appears twice"):
        read_spec(path)
    monkeypatch.setenv(SPEC_ENV, json.dumps({"name": "x"})[:-1] + ', "n": ' + "[" * 5000)
    with pytest.raises(SpecInputError):
        read_spec(None)
    monkeypatch.setenv(SPEC_ENV, '{"source": {"maxSequenceLength": ' + "1" * 5000 + "}}")
    with pytest.raises(SpecInputError, match="64-bit"):
        read_spec(None)


def test_a_document_error_lists_problems() -> None:
    with pytest.raises(DocumentError) as caught:
        load_yaml_documents("a: 1\na: 2\nb: .nan\n")
    assert [p.path for p in caught.value.problems] == ["a", "b"]
