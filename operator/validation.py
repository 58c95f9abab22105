"""Offline validation of OptimizedModel manifests.

Two layers, both pure: the generated CRD schema (what the API server enforces: types, enums,
ranges, unknown fields, defaults) and the rules a schema cannot express (cross-field
contradictions, annotations). Every problem names the field path, the value and the fix.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from optimodel.model_builder.spec import SpecProblem, build_spec_problems
from optimodel.operator import api
from optimodel.operator.crd import JsonSchema, open_api_schema

# Children are named "<name>-build-g<generation>" etc., and a Job's name must fit a
# 63-character label, so the resource name keeps room for the longest suffix.
MAX_NAME_LENGTH = 45
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ManifestError(ValueError):
    """A manifest is invalid; carries every problem found."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


@dataclass(frozen=True)
class ManifestResult:
    """The outcome of validating one YAML document."""

    origin: str
    name: str | None
    problems: list[SpecProblem]
    kind: str | None = api.KIND

    @property
    def valid(self) -> bool:
        return not self.problems


@cache
def strict_schema() -> JsonSchema:
    """The CRD schema as kubectl's strict field validation sees it: unknown fields rejected."""
    schema = copy.deepcopy(open_api_schema())
    _forbid_unknown_fields(schema)
    return schema


def _forbid_unknown_fields(node: JsonSchema) -> None:
    if "properties" in node:
        node.setdefault("additionalProperties", False)
        for child in node["properties"].values():
            _forbid_unknown_fields(child)
    if isinstance(node.get("items"), dict):
        _forbid_unknown_fields(node["items"])


def apply_defaults(schema: JsonSchema, instance: Any) -> Any:
    """Fill schema defaults into `instance` the way the API server does (a new object)."""
    if isinstance(instance, dict) and "properties" in schema:
        filled = dict(instance)
        for name, prop in schema["properties"].items():
            if name not in filled and "default" in prop:
                filled[name] = copy.deepcopy(prop["default"])
            if name in filled:
                filled[name] = apply_defaults(prop, filled[name])
        return filled
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in instance]
    return instance


def _path(parts: Iterator[Any] | list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _schema_problem(error: jsonschema.ValidationError) -> list[SpecProblem]:
    """Turn one jsonschema error into user-facing problems (field, value, fix)."""
    path = list(error.absolute_path)
    where = _path(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("description", "")
    match error.validator:
        case "additionalProperties":
            known = sorted(schema.get("properties", {}))
            problems = []
            for field in sorted(set(error.instance) - set(known)):
                close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
                fix = f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(known)}"
                problems.append(SpecProblem(_path([*path, field]), f"unknown field {field!r}", fix))
            return problems
        case "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            field = missing[0] if missing else str(error.validator_value)
            prop = schema.get("properties", {}).get(field, {})
            return [
                SpecProblem(
                    _path([*path, field]),
                    f"required field {field!r} is missing",
                    f"add {field}" + (f": {prop['description']}" if "description" in prop else ""),
                )
            ]
        case "enum":
            choices = ", ".join(str(choice) for choice in error.validator_value)
            return [
                SpecProblem(where, f"{error.instance!r} is not allowed", f"use one of: {choices}")
            ]
        case "type":
            wanted = error.validator_value
            fix = f"write {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}"
            if wanted in ("integer", "number") and isinstance(error.instance, str):
                fix += " without quotes"
            return [
                SpecProblem(
                    where,
                    f"expected {wanted}, got {type(error.instance).__name__} {error.instance!r}",
                    fix,
                )
            ]
        case "minimum" | "maximum":
            bound = error.validator_value
            exclusive = schema.get(f"exclusive{error.validator.capitalize()}", False)
            side = ">" if error.validator == "minimum" else "<"
            op = side if exclusive else f"{side}="
            return [
                SpecProblem(
                    where, f"{error.instance!r} is out of range", f"use a value {op} {bound}"
                )
            ]
        case "pattern":
            return [
                SpecProblem(
                    where,
                    f"{error.instance!r} has the wrong form",
                    f"expected: {hint}" if hint else f"match the pattern {error.validator_value}",
                )
            ]
        case "maxItems" | "maxLength" | "minLength" | "minItems":
            return [SpecProblem(where, error.message, hint or "see the CRD schema")]
        case _:
            return [SpecProblem(where, error.message, hint or "see the CRD schema")]


def schema_problems(document: Mapping[str, Any]) -> list[SpecProblem]:
    """What the CRD schema (with strict field validation) rejects in `document`."""
    instance = {k: v for k, v in document.items() if k != "status"}
    instance = apply_defaults(strict_schema(), instance)
    validator = jsonschema.Draft4Validator(strict_schema())
    problems: list[SpecProblem] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        problems.extend(_schema_problem(error))
    return problems


def metadata_problems(
    document: Mapping[str, Any], *, budget_annotations: bool = True
) -> list[SpecProblem]:
    """apiVersion, kind, name and (unless told otherwise) the budget annotations."""
    problems: list[SpecProblem] = []
    if document.get("apiVersion") != api.API_VERSION:
        problems.append(
            SpecProblem(
                "apiVersion",
                f"{document.get('apiVersion')!r} is not served",
                f"use apiVersion: {api.API_VERSION}",
            )
        )
    if document.get("kind") != api.KIND:
        problems.append(
            SpecProblem(
                "kind", f"{document.get('kind')!r} is not {api.KIND}", f"use kind: {api.KIND}"
            )
        )
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return [*problems, SpecProblem("metadata", "metadata is missing", "add metadata.name")]
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        problems.append(SpecProblem("metadata.name", "name is missing", "add metadata.name"))
    elif len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        problems.append(
            SpecProblem(
                "metadata.name",
                f"{name!r} cannot name the Deployment, Service and build Jobs",
                f"use lowercase letters, digits and '-', starting with a letter, at most "
                f"{MAX_NAME_LENGTH} characters",
            )
        )
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        return [
            *problems,
            SpecProblem(
                "metadata.annotations",
                "annotations must be a mapping",
                'write annotations as key: "value" pairs',
            ),
        ]
    if budget_annotations:
        problems.extend(budget_annotation_problems(annotations))
    return problems


def budget_annotation_problems(annotations: Mapping[str, Any]) -> list[SpecProblem]:
    """Budget annotations that are not positive amounts, and optimodel.io/ keys that are none.

    The operator reports these on the WithinBudget condition (the model keeps serving and
    building); `optimodel validate` reports them with the spec's problems."""
    problems: list[SpecProblem] = []
    for key in api.BUDGET_ANNOTATIONS:
        if key in annotations:
            problems.extend(_positive_amount(f"metadata.annotations[{key}]", annotations[key]))
    unknown = [
        key
        for key in annotations
        if key.startswith(f"{api.GROUP}/") and key not in api.BUDGET_ANNOTATIONS
    ]
    for key in unknown:
        close = difflib.get_close_matches(key, api.BUDGET_ANNOTATIONS, n=1, cutoff=0.6)
        fix = (
            f"did you mean {close[0]!r}?"
            if close
            else (f"use one of: {', '.join(api.BUDGET_ANNOTATIONS)}")
        )
        problems.append(SpecProblem(f"metadata.annotations[{key}]", "unknown annotation", fix))
    return problems


def _positive_amount(where: str, value: object) -> list[SpecProblem]:
    fix = 'write a positive number of US dollars as a string, e.g. "6" or "2.5"'
    if not isinstance(value, str):
        return [SpecProblem(where, f"annotation values are strings, got {value!r}", fix)]
    try:
        amount = float(value)
    except ValueError:
        return [SpecProblem(where, f"{value!r} is not a number", fix)]
    if not math.isfinite(amount) or amount <= 0:
        return [SpecProblem(where, f"{value!r} is not a positive amount", fix)]
    return []


def spec_rule_problems(spec: api.OptimizedModelSpec) -> list[SpecProblem]:
    """Cross-field rules of the whole spec that a schema cannot express."""
    problems = build_spec_problems(spec.source, spec.optimize, spec.serving)
    scaling = spec.autoscaling
    if scaling.max_replicas < scaling.min_replicas:
        problems.append(
            SpecProblem(
                "spec.autoscaling.maxReplicas",
                f"maxReplicas {scaling.max_replicas} is below minReplicas {scaling.min_replicas}",
                f"set maxReplicas >= {scaling.min_replicas} or lower minReplicas",
            )
        )
    if scaling.enabled and scaling.engine == "hpa" and scaling.min_replicas == 0:
        problems.append(
            SpecProblem(
                "spec.autoscaling.minReplicas",
                "a HorizontalPodAutoscaler cannot scale to zero",
                "set minReplicas >= 1, or engine: keda for scale-to-zero",
            )
        )
    if scaling.enabled and spec.replicas is not None:
        problems.append(
            SpecProblem(
                "spec.replicas",
                "replicas is set while autoscaling is enabled, so it would be ignored",
                "remove replicas, or set autoscaling.enabled: false",
            )
        )
    if spec.storage is not None and spec.storage.pvc and spec.storage.s3:
        problems.append(
            SpecProblem(
                "spec.storage",
                "both pvc and s3 are set",
                "keep exactly one of storage.pvc and storage.s3",
            )
        )
    if spec.storage is not None and not spec.storage.pvc and not spec.storage.s3:
        problems.append(
            SpecProblem(
                "spec.storage",
                "storage is set but names no store",
                "set storage.pvc or storage.s3, or remove storage to use the operator default",
            )
        )
    return problems


def parse_spec(document: Mapping[str, Any]) -> api.OptimizedModelSpec:
    """Defaulted, typed spec of a manifest that passed schema validation."""
    spec = apply_defaults(strict_schema(), dict(document)).get("spec", {})
    return api.OptimizedModelSpec.model_validate(spec)


def manifest_problems(document: object, *, budget_annotations: bool = True) -> list[SpecProblem]:
    """Every problem with one manifest, in field order; empty when it is valid.

    The operator passes budget_annotations=False: a bad budget annotation must not stop
    builds or rollouts, it sets WithinBudget=False instead (operator/budget.py)."""
    if not isinstance(document, dict):
        return [
            SpecProblem(
                "(document)",
                "a manifest must be a YAML mapping",
                "write an OptimizedModel object with apiVersion, kind, metadata, spec",
            )
        ]
    problems = metadata_problems(document, budget_annotations=budget_annotations)
    found = schema_problems(document)
    problems.extend(found)
    if found:
        return problems
    try:
        spec = parse_spec(document)
    except ValidationError as error:
        for item in error.errors():
            where = _path(["spec", *item["loc"]])
            problems.append(SpecProblem(where, item["msg"], "see the CRD schema"))
        return problems
    return problems + spec_rule_problems(spec)


def validate_document(document: object, origin: str) -> ManifestResult:
    """Validate one parsed YAML document; other kinds are passed over, not judged."""
    name = None
    kind = api.KIND
    if isinstance(document, dict):
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        kind = str(document.get("kind"))
        ours = str(document.get("apiVersion", "")).startswith(f"{api.GROUP}/")
        if kind != api.KIND and not ours:
            return ManifestResult(origin, name, [], kind=kind)
    return ManifestResult(origin, name, manifest_problems(document))


def validate_file(path: Path) -> list[ManifestResult]:
    """Validate every document in a YAML file (multi-document files included)."""
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except OSError as error:
        return [
            ManifestResult(
                str(path),
                None,
                [SpecProblem("(file)", f"cannot read: {error.strerror}", "check the path")],
            )
        ]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        return [
            ManifestResult(
                str(path),
                None,
                [
                    SpecProblem(
                        where,
                        f"not valid YAML: {getattr(error, 'problem', error)}",
                        "fix the YAML syntax (indentation, colons, quotes)",
                    )
                ],
            )
        ]
    if not documents:
        return [
            ManifestResult(
                str(path),
                None,
                [
                    SpecProblem(
                        "(file)", "the file holds no manifest", "add an OptimizedModel manifest"
                    )
                ],
            )
        ]
    many = len(documents) > 1
    return [
        validate_document(doc, f"{path}#{index + 1}" if many else str(path))
        for index, doc in enumerate(documents)
    ]
