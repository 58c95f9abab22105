"""The CRD is generated from the API models, structural, and committed up to date."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from optimodel.operator.crd import PRINTER_COLUMNS, render_crd, render_crd_yaml
from tests.conftest import REPO

CRD_FILE = REPO / "crds" / "optimizedmodel.yaml"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            found.extend(_walk(node["items"], f"{path}[]"))
    return found


def schema() -> dict[str, Any]:
    version = render_crd()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), "run `optimodel crd` and commit the result"


def test_crd_is_a_valid_kubernetes_object() -> None:
    document = yaml.safe_load(CRD_FILE.read_text())
    kubernetes_validate.validate(document, "1.30", strict=True)


def test_schema_is_structural() -> None:
    for path, node in _walk(schema()):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs"):
            assert banned not in node, f"{path} has {banned}"
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path} mixes properties and additional"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True


def test_spec_fields_are_described_typed_and_bounded() -> None:
    nodes = dict(_walk(schema()))
    spec_leaves = [
        (path, node)
        for path, node in nodes.items()
        if path.startswith(".spec.")
        and not path.endswith("[]")
        and node["type"] in {"integer", "number", "string", "boolean"}
    ]
    assert len(spec_leaves) > 40
    for path, node in spec_leaves:
        assert node.get("description"), f"{path} has no description"
    assert nodes[".spec.serving.maxBatchSize"]["minimum"] == 1
    assert nodes[".spec.serving.maxBatchSize"]["default"] == 32
    modes = nodes[".spec.optimize.quantize.mode"]["enum"]
    assert {"none", "int8-dynamic", "int8-static", "fp16", "int4-weight-only"} <= set(modes)
    assert nodes[".spec.autoscaling.targetGPUUtilization"]["maximum"] == 100
    assert nodes[".spec.source"].get("required") == ["uri", "task"]
    assert nodes[".spec.optimize"]["default"] == {}
    assert "default" not in nodes[".spec.storage"], "storage must stay unset unless given"


def test_conditions_are_a_map_list_keyed_by_type() -> None:
    conditions = dict(_walk(schema()))[".status.conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_subresources_printer_columns_and_short_name() -> None:
    crd = render_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert crd["spec"]["names"]["shortNames"] == ["om"]
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    assert names[0] == "Ready" and names[-1] == "Age"
    nodes = dict(_walk(schema()))
    for column in PRINTER_COLUMNS:
        json_path = column["jsonPath"].split("[")[0]
        if json_path.startswith(".metadata"):
            continue
        assert json_path in nodes, f"printer column {column['name']} points at {json_path}"


def test_cli_check_detects_a_stale_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optimodel.cli import app

    stale = tmp_path / "crd.yaml"
    stale.write_text("stale\n")
    runner = CliRunner()
    assert runner.invoke(app, ["crd", "--out", str(stale), "--check"]).exit_code == 1
    assert runner.invoke(app, ["crd", "--out", str(stale)]).exit_code == 0
    assert runner.invoke(app, ["crd", "--out", str(stale), "--check"]).exit_code == 0
