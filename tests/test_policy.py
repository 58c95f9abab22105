"""The admin policy (operator/policy.py): one pure check for the operator and `validate`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.operator import api
from optimodel.operator.artifacts import ArtifactStore
from optimodel.operator.planning import decide_build, ready_condition
from optimodel.operator.policy import policy_violations
from optimodel.operator.render import BuildRequest, ModelRef, render_build_job
from optimodel.operator.render.storage import s3_env
from optimodel.operator.settings import OperatorSettings, SettingsError, parse_settings
from optimodel.operator.status import ConditionUpdate

SOURCE = {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "task": "feature-extraction"}
KEYS = {"name": "team-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}
OPEN_POLICY: dict[str, Any] = {
    "servingImages": ["nvcr.io/nvidia/tritonserver:*", "registry.team/triton@sha256:*"],
    "storage": {
        "pvcClaims": ["optimodel-*"],
        "inputClaims": ["datasets"],
        "s3": [
            {
                "bucket": "team-*",
                "endpoint": "https://minio.storage:9000",
                "credentialsSecret": KEYS,
            },
            {"bucket": "aws-models"},
        ],
    },
    "defaultCaps": {"maxReplicas": 8},
    "namespaceCaps": {"small": {"maxReplicas": 2, "gpuTypes": ["nvidia-t4", "nvidia-l4"]}},
}


def spec(**fields: Any) -> api.OptimizedModelSpec:
    return api.OptimizedModelSpec.model_validate({"source": SOURCE, **fields})


def settings(policy: dict[str, Any] | None = None, **more: Any) -> OperatorSettings:
    return OperatorSettings.model_validate({"policy": policy or {}, **more})


def rules(
    found: api.OptimizedModelSpec, policy: OperatorSettings, namespace: str = "ml"
) -> list[str]:
    return [v.rule for v in policy_violations(found, namespace, policy)]


# (spec fields, namespace, rules refused by OPEN_POLICY, rules refused by the default policy)
CASES: list[Any] = [
    pytest.param({}, "ml", [], [], id="nothing-chosen"),
    pytest.param(
        {"serving": {"image": "nvcr.io/nvidia/tritonserver:24.10-py3"}},
        "ml",
        [],
        ["policy.servingImages"],
        id="allowed-image",
    ),
    pytest.param(
        {"serving": {"image": "attacker.example/triton:1"}},
        "ml",
        ["policy.servingImages"],
        ["policy.servingImages"],
        id="foreign-image",
    ),
    pytest.param(
        {"storage": {"pvc": {"claimName": "optimodel-team"}}},
        "ml",
        [],
        ["policy.storage.pvcClaims"],
        id="allowed-claim",
    ),
    pytest.param(
        {"storage": {"pvc": {"claimName": "postgres-data"}}},
        "ml",
        ["policy.storage.pvcClaims"],
        ["policy.storage.pvcClaims"],
        id="someone-elses-claim",
    ),
    pytest.param(
        {"storage": {"pvc": {"claimName": "optimodel-artifacts"}}},
        "ml",
        [],
        [],
        id="the-platforms-own-store",
    ),
    pytest.param(
        {"storage": {"s3": {"uri": "s3://team-a/models"}}},
        "ml",
        [],
        ["policy.storage.s3"],
        id="allowed-bucket",
    ),
    pytest.param(
        {"storage": {"s3": {"uri": "s3://team-a/models", "endpoint": "https://evil.example"}}},
        "ml",
        ["policy.storage.s3[0].endpoint"],
        ["policy.storage.s3"],
        id="exfiltrating-endpoint",
    ),
    pytest.param(
        {
            "storage": {
                "s3": {
                    "uri": "s3://team-a/models",
                    "credentialsSecret": {"name": "db", "accessKeyIdKey": "password"},
                }
            }
        },
        "ml",
        ["policy.storage.s3[0].credentialsSecret"],
        ["policy.storage.s3"],
        id="any-secret-key",
    ),
    pytest.param(
        {"storage": {"s3": {"uri": "s3://team-a/models", "credentialsSecret": KEYS}}},
        "ml",
        [],
        ["policy.storage.s3"],
        id="naming-the-platforms-secret",
    ),
    pytest.param(
        {"storage": {"s3": {"uri": "s3://aws-models/x", "endpoint": "https://minio.storage:9000"}}},
        "ml",
        ["policy.storage.s3[1].endpoint"],
        ["policy.storage.s3"],
        id="aws-bucket-elsewhere",
    ),
    pytest.param(
        {"storage": {"s3": {"uri": "s3://other/models"}}},
        "ml",
        ["policy.storage.s3"],
        ["policy.storage.s3"],
        id="foreign-bucket",
    ),
    pytest.param(
        {"source": {"uri": "pvc://datasets/minilm", "task": "feature-extraction"}},
        "ml",
        [],
        ["policy.storage.inputClaims"],
        id="allowed-input-claim",
    ),
    pytest.param(
        {"optimize": {"evalData": {"uri": "pvc://secrets-vault/dump.jsonl"}}},
        "ml",
        ["policy.storage.inputClaims"],
        ["policy.storage.inputClaims"],
        id="foreign-input-claim",
    ),
    pytest.param(
        {"source": {"uri": "pvc://optimodel-artifacts/ml/base", "task": "feature-extraction"}},
        "ml",
        [],
        [],
        id="input-from-the-store-claim",
    ),
    pytest.param(
        {"autoscaling": {"maxReplicas": 9}}, "ml", ["policy.defaultCaps.maxReplicas"], [], id="cap"
    ),
    pytest.param(
        {"autoscaling": {"maxReplicas": 3}},
        "small",
        ["policy.namespaceCaps.small.maxReplicas"],
        [],
        id="namespace-cap",
    ),
    pytest.param(
        {"autoscaling": {"enabled": False}, "replicas": 3},
        "small",
        ["policy.namespaceCaps.small.maxReplicas"],
        [],
        id="fixed-replicas-cap",
    ),
    pytest.param(
        {"autoscaling": {"maxReplicas": 2}, "serving": {"gpu": {"type": "nvidia-h100"}}},
        "small",
        ["policy.namespaceCaps.small.gpuTypes"],
        [],
        id="gpu-type",
    ),
    pytest.param(
        {
            "autoscaling": {"maxReplicas": 2},
            "serving": {"gpu": {"type": "nvidia-h100", "count": 0}},
        },
        "small",
        [],
        [],
        id="cpu-serving-needs-no-gpu-type",
    ),
]


@pytest.mark.parametrize(("fields", "namespace", "open_rules", "default_rules"), CASES)
def test_policy_refuses_what_the_platform_did_not_allow(
    fields: dict[str, Any], namespace: str, open_rules: list[str], default_rules: list[str]
) -> None:
    found = spec(**fields)
    assert rules(found, settings(OPEN_POLICY), namespace) == open_rules
    assert rules(found, OperatorSettings(), namespace) == default_rules


def test_a_violation_names_the_field_the_rule_and_the_fix() -> None:
    [violation] = policy_violations(
        spec(storage={"s3": {"uri": "s3://team-a/m", "endpoint": "https://evil.example"}}),
        "ml",
        settings(OPEN_POLICY),
    )
    problem = violation.problem()
    assert problem.path == "spec.storage.s3.endpoint"
    assert (
        "https://evil.example" in problem.message
        and "https://minio.storage:9000" in problem.message
    )
    assert "policy rule policy.storage.s3[0].endpoint" in problem.message
    assert "remove spec.storage.s3.endpoint" in problem.fix


def test_an_allowed_s3_store_gets_the_platforms_endpoint_and_secret() -> None:
    """Credentials are chosen by the platform: the rendered pods read the policy's Secret and
    talk to the policy's endpoint, whatever the spec leaves out."""
    chosen = settings(OPEN_POLICY)
    model = spec(storage={"s3": {"uri": "s3://team-a/models", "region": "eu-west-1"}})
    store = ArtifactStore.for_model(model.storage, chosen)
    assert store.s3 is not None
    env = {item["name"]: item for item in s3_env(store.s3)}
    assert env["AWS_ENDPOINT_URL"]["value"] == "https://minio.storage:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "team-s3", "key": "id"}
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    ref = ModelRef("m", "ml", "u")
    job = render_build_job(BuildRequest(ref, model, 1, "k", "h", store, "m-build-g1"), chosen)
    [upload] = job["spec"]["template"]["spec"]["containers"]
    keys = {e["valueFrom"]["secretKeyRef"]["name"] for e in upload["env"] if "valueFrom" in e}
    assert keys == {"team-s3"}


def manifest(namespace: str = "ml", **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m", "namespace": namespace, "uid": "u", "generation": 1},
        "spec": {"source": SOURCE, **fields},
    }


def test_the_operator_refuses_with_policy_violation_and_creates_nothing() -> None:
    body = manifest(serving={"image": "attacker.example/triton:1"})
    decision = decide_build(body, api.OptimizedModelStatus(), [], [], OperatorSettings())
    assert decision.invalid and decision.job_to_create is None and decision.spec is None
    assert decision.built.reason == "PolicyViolation"
    assert "policy rule policy.servingImages" in decision.built.message
    deployed = ConditionUpdate("Deployed", "False", "AwaitingBuild", "")
    ready = ready_condition(decision, decision.built, deployed, None)
    assert (ready.status, ready.reason) == ("False", "PolicyViolation")


def test_the_chart_values_reach_the_policy() -> None:
    document = {"policy": OPEN_POLICY}
    parsed = parse_settings(document, {}, "settings.yaml")
    assert parsed.policy.storage.s3[0].credentials_secret is not None
    with pytest.raises(SettingsError, match=re.escape("policy.namespaceCaps.small.gpuTypes")):
        parse_settings({"policy": {"namespaceCaps": {"small": {"gpuTypes": ["H100"]}}}}, {}, "x")
    with pytest.raises(SettingsError, match=re.escape("policy.storage.s3.0.endpoint")):
        parse_settings(
            {"policy": {"storage": {"s3": [{"bucket": "b", "endpoint": "x y"}]}}}, {}, "x"
        )


def test_validate_with_settings_mirrors_the_operator(tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(yaml.safe_dump({"policy": OPEN_POLICY}))
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump_all(
            [
                manifest(autoscaling={"maxReplicas": 2}),
                manifest(storage={"s3": {"uri": "s3://team-a/m", "endpoint": "https://evil"}}),
            ]
        )
    )
    runner = CliRunner()
    plain = runner.invoke(app, ["validate", str(models)])
    assert plain.exit_code == 0, plain.output  # no settings: schema and rules only
    checked = runner.invoke(app, ["validate", str(models), "--settings", str(settings_file)])
    assert checked.exit_code == 1
    assert "1 valid, 1 invalid" in checked.output
    assert "policy.storage.s3[0].endpoint" in checked.output
    # The namespace decides the caps: in "small" the first model's 2 replicas fit, 3 do not.
    models.write_text(yaml.safe_dump(manifest(autoscaling={"maxReplicas": 3})))
    small = runner.invoke(
        app, ["validate", str(models), "--settings", str(settings_file), "-n", "small"]
    )
    assert small.exit_code == 1 and "policy.namespaceCaps.small.maxReplicas" in small.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("policy: {servingImages: 3}\n")
    refused = runner.invoke(app, ["validate", str(models), "--settings", str(broken)])
    assert refused.exit_code == 2 and "policy.servingImages" in refused.output
