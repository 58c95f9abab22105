"""Generate the OptimizedModel CustomResourceDefinition from the pydantic API models.

Pydantic emits JSON Schema 2020-12 with `$ref`s; a CRD needs a *structural* OpenAPI v3.0
schema: everything inlined, no `anyOf` with null, boolean `exclusiveMinimum`, no titles.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from optimodel.operator import api

JsonSchema = dict[str, Any]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Ready condition of the current generation.",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
    {
        "name": "Smaller",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.build.sizeReduction",
        "description": "Original size / optimized size (x).",
    },
    {
        "name": "Recipe",
        "type": "string",
        "jsonPath": ".status.build.recipe",
        "description": "The published recipe (recipe auto's pick, or the quantize.mode).",
    },
    {
        "name": "Accuracy",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.build.accuracy",
        "description": "Accuracy-gate metric against the original model.",
    },
    {
        "name": "P50-ms",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.build.latencyP50Ms",
        "description": "Median latency at batch 1, milliseconds.",
    },
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {
        "name": "USD/h",
        "type": "number",
        "format": "float",
        "jsonPath": ".status.cost.currentUSDPerHour",
        "description": "Current serving cost per hour.",
    },
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROPPED_KEYS = frozenset({"title", "examples", "$defs"})


class _DefaultedObjectsSchema(GenerateJsonSchema):
    """Emit `default: {}` for fields whose default is a whole sub-model (`default_factory`).

    The API server applies defaults only inside objects that exist; an empty default object
    makes `optimize: {}`, or no `optimize` at all, come back fully defaulted.
    """

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        factory = schema.get("default_factory")
        takes_data = schema.get("default_factory_takes_data", False)
        if factory is not None and not takes_data and isinstance(factory(), BaseModel):  # type: ignore[call-arg]
            return {**self.generate_inner(schema["schema"]), "default": {}}
        return super().default_schema(schema)


def model_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural OpenAPI v3 schema of one API model (wire names, all refs inlined)."""
    raw = model.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_DefaultedObjectsSchema
    )
    structural: JsonSchema = _structural(raw, raw.get("$defs", {}))
    return structural


def _structural(node: Any, defs: dict[str, JsonSchema]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", "unset") is None:
                del rest["default"]
            return _structural({**variants[0], **rest}, defs)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or (key == "additionalProperties" and value is False):
            # A structural schema forbids `additionalProperties: false`; the API server prunes
            # unknown fields instead, and kubectl's strict field validation rejects them.
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _conditions_list(status: JsonSchema) -> None:
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions.pop("default", None)


def open_api_schema() -> JsonSchema:
    """The full openAPIV3Schema of the OptimizedModel resource."""
    spec = model_schema(api.OptimizedModelSpec)
    spec["description"] = api.OptimizedModelSpec.__doc__
    status = model_schema(api.OptimizedModelStatus)
    status["description"] = api.OptimizedModelStatus.__doc__
    _conditions_list(status)
    return {
        "type": "object",
        "description": (
            "OptimizedModel turns a Hugging Face model into a pruned, quantized, accuracy-gated "
            "Triton deployment that autoscales on GPU utilization inside a cost budget."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def render_crd() -> JsonSchema:
    """The CustomResourceDefinition object (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "optimodel"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["all", "optimodel"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as the YAML text committed under crds/ (stable key order)."""
    header = "# Generated by `optimodel crd` from optimodel/operator/api.py. Do not edit.\n"
    return header + yaml.safe_dump(render_crd(), sort_keys=False, width=100)
