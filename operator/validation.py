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
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import ValidationError

from optimodel.model_builder.documents import (
    MANIFEST_LIMITS,
    DocumentError,
    decode_utf8,
    json_data_problems,
    load_yaml_documents,
    read_bytes,
)
from optimodel.model_builder.patterns import pattern_search
from optimodel.model_builder.spec import SpecProblem, build_spec_problems
from optimodel.operator import api
from optimodel.operator.capacity import capacity_problems
from optimodel.operator.crd import JsonSchema, open_api_schema
from optimodel.operator.policy import policy_violations
from optimodel.operator.settings import OperatorSettings

# Children are named "<name>-build-g<generation>" etc., and a Job's name must fit a
# 63-character label, so the resource name keeps room for the longest suffix.
MAX_NAME_LENGTH = 45
NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # matched whole (fullmatch)
# The API server's metadata rules (apimachinery validation): qualified names as keys, label
# values of at most 63 characters, and annotations of at most 256 KiB in all.
TOTAL_ANNOTATIONS_BYTES = 256 * 1024
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


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
    warnings: list[SpecProblem] = field(default_factory=list)
    document: Any = None

    @property
    def valid(self) -> bool:
        return not self.problems


def _whole_pattern(
    validator: Any, pattern: str, instance: Any, schema: JsonSchema
) -> Iterator[jsonschema.ValidationError]:
    # The API server reads `pattern` as RE2, where `$` is the end of the text; Python's `re`
    # would also let a value with a trailing newline through.
    if validator.is_type(instance, "string") and not pattern_search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


# Draft 4 as the API server applies it, with `pattern` evaluated as RE2/ECMA-262 do.
ApiServerValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": _whole_pattern}
)


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
    validator = ApiServerValidator(strict_schema())
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
    elif len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        problems.append(
            SpecProblem(
                "metadata.name",
                f"{name!r} cannot name the Deployment, Service and build Jobs",
                f"use lowercase letters, digits and '-', starting with a letter, at most "
                f"{MAX_NAME_LENGTH} characters",
            )
        )
    namespace = metadata.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace)
    ):
        problems.append(
            SpecProblem(
                "metadata.namespace",
                f"{namespace!r} is not a namespace name",
                "use lowercase letters, digits and '-', at most 63 characters",
            )
        )
    problems.extend(label_problems(metadata.get("labels")))
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
    problems.extend(annotation_problems(annotations))
    if budget_annotations:
        problems.extend(budget_annotation_problems(annotations))
    return problems


def _key_problem(where: str, key: object) -> SpecProblem | None:
    """A label or annotation key that is not a qualified name ([prefix/]name)."""
    if isinstance(key, str):
        prefix, _, name = key.rpartition("/")
        prefix_ok = not prefix or (len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix))
        if prefix_ok and len(name) <= 63 and _QUALIFIED_NAME.fullmatch(name):
            return None
    return SpecProblem(
        f"{where}[{key}]",
        f"{key!r} is not a valid key",
        "use [prefix/]name: a DNS prefix, then at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit",
    )


def label_problems(labels: object) -> list[SpecProblem]:
    """Label keys and values as the API server checks them."""
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [
            SpecProblem(
                "metadata.labels", "labels must be a mapping", 'write labels as key: "value" pairs'
            )
        ]
    problems = []
    for key, value in labels.items():
        problem = _key_problem("metadata.labels", key)
        if problem is not None:
            problems.append(problem)
        if (
            not isinstance(value, str)
            or len(value) > 63
            or (value and not _QUALIFIED_NAME.fullmatch(value))
        ):
            problems.append(
                SpecProblem(
                    f"metadata.labels[{key}]",
                    f"{value!r} is not a label value",
                    'quote it as a string of at most 63 letters, digits, "-", "_" or ".", '
                    "starting and ending with a letter or digit",
                )
            )
    return problems


def annotation_problems(annotations: Mapping[Any, Any]) -> list[SpecProblem]:
    """Annotation keys, string values, and the API server's 256 KiB total."""
    problems = []
    total = 0
    for key, value in annotations.items():
        problem = _key_problem("metadata.annotations", key)
        if problem is not None:
            problems.append(problem)
        if not isinstance(value, str):
            if str(key) not in api.BUDGET_ANNOTATIONS:  # those say more, below
                problems.append(
                    SpecProblem(
                        f"metadata.annotations[{key}]",
                        f"annotation values are strings, got {type(value).__name__}",
                        'quote the value: key: "value"',
                    )
                )
            continue
        total += len(str(key).encode()) + len(value.encode("utf-8", "replace"))
    if total > TOTAL_ANNOTATIONS_BYTES:
        problems.append(
            SpecProblem(
                "metadata.annotations",
                f"annotations hold {total / 1024:.0f} KiB, more than the "
                f"{TOTAL_ANNOTATIONS_BYTES // 1024} KiB the API server accepts",
                "keep annotations short: large data belongs in a volume or bucket",
            )
        )
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
        if key.startswith(f"{api.GROUP}/") and key not in api.MODEL_ANNOTATIONS
    ]
    for key in unknown:
        close = difflib.get_close_matches(key, api.MODEL_ANNOTATIONS, n=1, cutoff=0.6)
        fix = (
            f"did you mean {close[0]!r}?"
            if close
            else (f"use one of: {', '.join(api.MODEL_ANNOTATIONS)}")
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
    problems += [SpecProblem(*problem) for problem in capacity_problems(spec)]
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

    Never raises, whatever `document` holds: data that is not JSON (from code, not a reader)
    is named as such. The operator passes budget_annotations=False: a bad budget annotation
    must not stop builds or rollouts, it sets WithinBudget=False instead (operator/budget.py)."""
    if not isinstance(document, dict):
        return [
            SpecProblem(
                "(document)",
                "a manifest must be a YAML mapping",
                "write an OptimizedModel object with apiVersion, kind, metadata, spec",
            )
        ]
    not_json = json_data_problems(document, MANIFEST_LIMITS)
    if not_json:
        return not_json
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


def manifest_warnings(document: Mapping[str, Any]) -> list[SpecProblem]:
    """What makes a valid manifest unable to work (see operator/feasibility.py)."""
    from optimodel.operator.feasibility import feasibility_warnings

    metadata = document.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return feasibility_warnings(parse_spec(document), annotations)


def policy_problems(
    document: Mapping[str, Any], settings: OperatorSettings, namespace: str | None = None
) -> list[SpecProblem]:
    """What the operator's admin policy (settings.policy) refuses in a valid manifest, for
    `namespace`, else the manifest's own, else "default" (as kubectl would create it)."""
    metadata = document.get("metadata")
    own = metadata.get("namespace") if isinstance(metadata, dict) else None
    where = namespace or (own if isinstance(own, str) and own else "default")
    return [v.problem() for v in policy_violations(parse_spec(document), where, settings)]


def validate_document(
    document: object,
    origin: str,
    settings: OperatorSettings | None = None,
    namespace: str | None = None,
) -> ManifestResult:
    """Validate one parsed YAML document; other kinds are passed over, not judged.

    With `settings`, a valid manifest is also checked against their admin policy, the way
    the operator running with them would."""
    name = None
    kind = api.KIND
    if isinstance(document, dict):
        metadata = document.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        name = name if isinstance(name, str) else None
        kind = str(document.get("kind"))
        ours = str(document.get("apiVersion", "")).startswith(f"{api.GROUP}/")
        if kind != api.KIND and not ours:
            return ManifestResult(origin, name, [], kind=kind, document=document)
    problems = manifest_problems(document)
    if not problems and settings is not None and isinstance(document, dict):
        problems = policy_problems(document, settings, namespace)
    warnings = [] if problems or not isinstance(document, dict) else manifest_warnings(document)
    return ManifestResult(origin, name, problems, warnings=warnings, document=document)


def validate_file(
    path: Path, settings: OperatorSettings | None = None, namespace: str | None = None
) -> list[ManifestResult]:
    """Validate every document in a YAML file (multi-document files included); with
    `settings`, against their admin policy too (see `validate_document`)."""
    try:
        data = read_bytes(path, MANIFEST_LIMITS.max_file_bytes)
    except DocumentError as error:
        return [ManifestResult(str(path), None, error.problems)]
    return validate_bytes(data, str(path), settings, namespace)


def validate_bytes(
    data: bytes,
    origin: str,
    settings: OperatorSettings | None = None,
    namespace: str | None = None,
) -> list[ManifestResult]:
    """Validate every document of a file's bytes; `origin` names it in the results (with
    `settings`, against their admin policy too).

    The bytes are read by the safe reader (model_builder/documents.py): size caps, UTF-8,
    duplicate keys, alias and depth budgets, JSON types; any of those is the file's problem."""
    try:
        documents = [
            doc
            for doc in load_yaml_documents(decode_utf8(data), MANIFEST_LIMITS)
            if doc is not None
        ]
    except DocumentError as error:
        return [ManifestResult(origin, None, error.problems)]
    if not documents:
        return [
            ManifestResult(
                origin,
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
        validate_document(doc, f"{origin}#{index + 1}" if many else origin, settings, namespace)
        for index, doc in enumerate(documents)
    ]
