"""The serving target decides the recipe: what validate, the operator and the builder refuse."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from optimodel.model_builder.serving_target import (
    RECIPES_BY_TARGET,
    SERVED_ONNXRUNTIME,
    Target,
    mode_refusal,
    serving_target,
    version_tuple,
)
from optimodel.model_builder.spec import BuildSpec, build_spec_problems
from optimodel.operator import api
from optimodel.operator.planning import decide_build
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.validation import manifest_problems
from tests.conftest import REPO

MANIFEST: dict[str, Any] = yaml.safe_load((REPO / "examples" / "minilm-gpu.yaml").read_text())


def _manifest(optimize: dict[str, Any], serving: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(MANIFEST)
    document["spec"]["optimize"].update(optimize)
    document["spec"]["serving"].update(serving)
    return document


@pytest.mark.parametrize(
    ("mode", "target", "onnxruntime", "refused"),
    [
        ("int8-dynamic", "gpu", SERVED_ONNXRUNTIME, True),
        ("int8-static", "gpu", SERVED_ONNXRUNTIME, True),
        ("int8-dynamic", "cpu", SERVED_ONNXRUNTIME, False),
        ("int8-weight-only", "gpu", SERVED_ONNXRUNTIME, True),
        ("int8-weight-only", "gpu", "1.22.0", False),
        ("int8-weight-only", "cpu", "1.19.2", True),  # the CPU kernel also enforced bits == 4
        ("int8-weight-only", "cpu", "1.31.1", False),
        ("int4-weight-only", "gpu", SERVED_ONNXRUNTIME, False),
        ("int4-weight-only", "gpu", "1.16.3", True),
        ("fp16", "gpu", SERVED_ONNXRUNTIME, False),
        ("none", "gpu", SERVED_ONNXRUNTIME, False),
    ],
)
def test_mode_refusal_reads_the_target_and_the_served_onnxruntime(
    mode: str, target: Target, onnxruntime: str, refused: bool
) -> None:
    refusal = mode_refusal(mode, target, onnxruntime)
    assert (refusal is not None) == refused
    if refusal is not None:
        assert "\n" not in refusal.reason and refusal.fix


def test_versions_compare_as_numbers() -> None:
    assert version_tuple("1.19.2") < version_tuple("1.22.0") < version_tuple("1.100")
    assert version_tuple("1.22.0rc1+cu12") == (1, 22, 0)
    assert SERVED_ONNXRUNTIME == "1.19.2"  # the onnxruntime of nvcr.io/.../tritonserver:24.10


def test_gpu_count_decides_the_target() -> None:
    assert serving_target(0) == "cpu" and serving_target(1) == "gpu" and serving_target(8) == "gpu"
    assert "fp16-fused" in RECIPES_BY_TARGET["gpu"]
    assert not any(name.startswith("int8") for name in RECIPES_BY_TARGET["gpu"])


@pytest.mark.parametrize(
    ("optimize", "serving", "path", "words"),
    [
        (
            {"quantize": {"mode": "int8-dynamic"}},
            {},
            "spec.optimize.quantize.mode",
            "CUDA provider",
        ),
        (
            {"quantize": {"mode": "int8-weight-only"}},
            {},
            "spec.optimize.quantize.mode",
            "onnxruntime 1.19.2",
        ),
        ({"recipe": "int8-fused"}, {}, "spec.optimize.recipe", "not a GPU recipe"),
        (
            {"recipe": "fp16-fused"},
            {"gpu": {"count": 0}, "accelerator": "none"},
            "spec.optimize.recipe",
            "not a CPU recipe",
        ),
        (
            {"recipe": "fp16", "quantize": {"mode": "fp16"}},
            {},
            "spec.optimize.recipe",
            "both set",
        ),
        ({}, {"gpu": {"count": 0}}, "spec.serving.accelerator", "GPU accelerator"),
        (
            {"recipe": "auto", "quantize": {"keepFp32Nodes": 2}},
            {},
            "spec.optimize.quantize.keepFp32Nodes",
            "explicit int8",
        ),
    ],
)
def test_validate_refuses_what_the_target_cannot_run(
    optimize: dict[str, Any], serving: dict[str, Any], path: str, words: str
) -> None:
    problems = manifest_problems(_manifest(optimize, serving))
    assert [problem.path for problem in problems] == [path], problems
    assert words in problems[0].message and problems[0].fix


def test_int8_on_cpu_serving_and_auto_on_gpu_are_valid() -> None:
    cpu = {"gpu": {"count": 0}, "accelerator": "none"}
    assert manifest_problems(_manifest({"quantize": {"mode": "int8-dynamic"}}, cpu)) == []
    assert manifest_problems(_manifest({}, {})) == []


def test_the_builder_applies_the_same_rule() -> None:
    spec = BuildSpec.model_validate(
        {
            "name": "m",
            "source": {"uri": "file:///m", "task": "feature-extraction"},
            "optimize": {"quantize": {"mode": "int8-static"}},
            "serving": {"gpu": {"count": 2}},
        }
    )
    paths = [p.path for p in build_spec_problems(spec.source, spec.optimize, spec.serving)]
    assert "spec.optimize.quantize.mode" in paths


def test_operator_reports_int8_on_gpu_as_invalid_spec_and_builds_nothing() -> None:
    body = _manifest({"quantize": {"mode": "int8-dynamic"}}, {})
    body["metadata"].update({"namespace": "ml", "uid": "uid-1", "generation": 1})
    decision = decide_build(body, api.OptimizedModelStatus(), [], [], OperatorSettings())
    assert decision.job_to_create is None
    assert (decision.built.status, decision.built.reason) == ("False", "InvalidSpec")
    assert "spec.optimize.quantize.mode" in decision.built.message
    assert "CUDA provider" in decision.built.message
