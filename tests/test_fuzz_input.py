"""Property-based fuzzing of everything that reads user input before a build: `validate` on
file bytes, the operator's spec reading on API objects, and settings parsing.

Thousands of generated documents (mutated valid manifests, random YAML-ish text, random
bytes): none may raise, and each must finish well under a second (hypothesis' deadline).
Derandomized, so CI sees the same examples every run; OPTIMODEL_FUZZ_SCALE multiplies
their number for a longer local hunt.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimodel.model_builder.spec import SpecProblem
from optimodel.operator.settings import SettingsError, parse_settings
from optimodel.operator.validation import (
    manifest_problems,
    manifest_warnings,
    parse_spec,
    spec_rule_problems,
    validate_bytes,
)
from tests.conftest import REPO

SCALE = int(os.environ.get("OPTIMODEL_FUZZ_SCALE", "1"))
EXAMPLES = [
    doc
    for path in sorted((REPO / "examples").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text())
    if isinstance(doc, dict) and doc.get("kind") == "OptimizedModel"
]


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=1000,  # milliseconds: each document under a second
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Strings that probe the patterns: traversal, newlines, huge numbers as text, odd unicode.
NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "minilm\n",
        "..",
        "../../etc/passwd",
        "file:///a/../b",
        "pvc://claim/../x",
        "pvc:///x",
        "s3:///x",
        "s3://b",
        "hf://a/b\n",
        "nvcr.io/x y:1",
        "http://",
        "\x00",
        "\ud800",
        "é" * 70,
        "9" * 400,
        "-1",
        "1e999",
        "nan",
        "${HOME}",
        "*alias",
        "&anchor",
        "!!binary",
        "a" * 300,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    NASTY_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), NASTY_TEXT), children, max_size=4),
    ),
    max_leaves=12,
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "annotations",
            "labels",
            "spec",
            "source",
            "uri",
            "task",
            "optimize",
            "quantize",
            "mode",
            "accuracy",
            "min",
            "serving",
            "gpu",
            "count",
            "type",
            "maxBatchSize",
            "autoscaling",
            "engine",
            "minReplicas",
            "maxReplicas",
            "storage",
            "pvc",
            "claimName",
            "subPath",
            "s3",
            "endpoint",
            "credentialsSecret",
            "evalData",
            "labelField",
            "image",
            "replicas",
        ]
    ),
    st.text(max_size=6),
    st.integers(min_value=-3, max_value=3),  # non-string keys, as code could build them
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated_manifests(draw: st.DrawFn) -> Any:
    """A valid example with a few random edits: replace, delete, add, nest."""
    document: Any = copy.deepcopy(draw(st.sampled_from(EXAMPLES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(document)))
        action = draw(st.sampled_from(["replace", "delete", "add", "nest"]))
        if not path:
            if action == "replace":
                document = draw(JSON_VALUES)
            continue
        parent = _at(document, path[:-1])
        last = path[-1]
        if action == "replace":
            parent[last] = draw(JSON_VALUES)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(KEYS)] = draw(JSON_VALUES)
        elif action == "nest":
            parent[last] = {draw(KEYS): parent[last]}
    return document


def _check_results(origin: str, data: bytes) -> None:
    for result in validate_bytes(data, origin):
        for problem in [*result.problems, *result.warnings]:
            assert isinstance(problem, SpecProblem) and problem.path and problem.fix


@given(mutated_manifests())
@fuzz_settings(1500)
def test_spec_reading_never_raises_on_mutated_manifests(document: Any) -> None:
    """The operator's path: an object (not text) through the same rules as validate."""
    problems = manifest_problems(document, budget_annotations=False)
    assert all(problem.path and problem.fix for problem in problems)
    if not manifest_problems(document):
        spec = parse_spec(document)
        spec_rule_problems(spec)
        manifest_warnings(document)


@given(mutated_manifests(), st.sampled_from(["yaml", "json", "flow"]))
@fuzz_settings(800)
def test_validate_never_raises_on_mutated_manifest_files(document: Any, style: str) -> None:
    if style == "json":
        import json

        try:
            text = json.dumps(document)
        except (TypeError, ValueError):
            return
    else:
        try:
            text = yaml.safe_dump(document, default_flow_style=style == "flow")
        except yaml.YAMLError:
            return
    _check_results("mutated.yaml", text.encode("utf-8", "surrogatepass"))


YAML_ALPHABET = st.sampled_from(list(":-[]{},&*!|>'\"#%@?\n\n  \t~.0123456789abcyesonnull<="))


@given(st.text(alphabet=YAML_ALPHABET, max_size=200))
@fuzz_settings(1500)
def test_validate_never_raises_on_yaml_like_text(text: str) -> None:
    _check_results("random.yaml", text.encode())


@given(st.binary(max_size=300))
@fuzz_settings(800)
def test_validate_never_raises_on_random_bytes(data: bytes) -> None:
    _check_results("random.bin", data)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "artifactStore",
                "gpuPrices",
                "build",
                "serving",
                "namespaces",
                "metricsPort",
                "prometheus",
                "peering",
                "cpuReplicaPrice",
                "resyncSeconds",
                "tritonImage",
            ]
        ),
        JSON_VALUES,
        max_size=4,
    )
)
@fuzz_settings(300)
def test_settings_parsing_raises_only_settings_errors(document: dict[str, Any]) -> None:
    try:
        parse_settings(document, {}, "fuzz")
    except SettingsError as error:
        assert "invalid operator settings (fuzz)" in str(error)


def test_the_fuzzer_reaches_valid_and_invalid_documents(tmp_path: Path) -> None:
    """The mutations keep some documents valid, so the parse_spec branch is exercised."""
    valid = invalid = 0

    @given(mutated_manifests())
    @settings(max_examples=200, derandomize=True, database=None, deadline=None)
    def count(document: Any) -> None:
        nonlocal valid, invalid
        if manifest_problems(document):
            invalid += 1
        else:
            valid += 1

    count()
    assert valid >= 5 and invalid >= 50, (valid, invalid)
