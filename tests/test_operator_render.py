"""The operator's pure renderers: every child manifest validates against the Kubernetes API
schema (kubernetes-validate, strict: unknown fields fail), and carries what the cluster needs."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from optimodel.local.repository import parse_config_text
from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.spec import BuildSpec, Serving
from optimodel.model_builder.triton_config import ModelSignature, TensorSpec, render_triton_config
from optimodel.operator import api, naming
from optimodel.operator.artifacts import ArtifactStore, build_key, pvc_location
from optimodel.operator.render import (
    BuildRequest,
    ModelRef,
    ServingInputs,
    initial_replicas,
    render_build_job,
    render_children,
)
from optimodel.operator.render.configmap import configs_hash
from optimodel.operator.settings import OperatorSettings
from tests.triton_models import write_built_repository

K8S_VERSION = "1.30"
MODEL = ModelRef(name="minilm", namespace="ml", uid="11111111-2222-3333-4444-555555555555")
SIGNATURE = ModelSignature.model_validate(
    {
        "inputs": [
            {"name": "input_ids", "dataType": "TYPE_INT64", "dims": [-1]},
            {"name": "attention_mask", "dataType": "TYPE_INT64", "dims": [-1]},
        ],
        "outputs": [{"name": "embeddings", "dataType": "TYPE_FP32", "dims": [384]}],
    }
)
S3 = {
    "s3": {
        "uri": "s3://ml-artifacts/optimodel",
        "endpoint": "https://minio.storage:9000",
        "region": "eu-west-1",
        "credentialsSecret": {"name": "artifact-keys"},
    }
}
PVC = {"pvc": {"claimName": "models", "subPath": "builds"}}


def make_spec(**overrides: Any) -> api.OptimizedModelSpec:
    document: dict[str, Any] = {
        "source": {
            "uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
            "task": "feature-extraction",
        },
        "serving": {"gpu": {"type": "nvidia-l4", "count": 1}, "maxBatchSize": 32},
    }
    document.update(overrides)
    return api.OptimizedModelSpec.model_validate(document)


def build_request(spec: api.OptimizedModelSpec, settings: OperatorSettings) -> BuildRequest:
    store = ArtifactStore.for_model(spec.storage, settings)
    return BuildRequest(
        model=MODEL,
        spec=spec,
        generation=3,
        key=build_key("abc", store),
        spec_hash="abc",
        store=store,
        job_name=naming.build_job_name(MODEL.name, 3),
    )


def serving_inputs(spec: api.OptimizedModelSpec, settings: OperatorSettings) -> ServingInputs:
    store = ArtifactStore.for_model(spec.storage, settings)
    build = api.BuildStatus(
        artifact=store.artifact_uri(MODEL.namespace, MODEL.name, 2),
        generation=2,
        size_bytes=23,
        original_size_bytes=90,
        size_reduction=3.9,
        accuracy_metric="cosine",
        accuracy=0.995,
        spec_hash="abc",
        signature=SIGNATURE,
    )
    return ServingInputs(
        model=MODEL, spec=spec, build=build, store=store, settings=settings, now=datetime.now(UTC)
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


STORES = [
    pytest.param(None, id="default-pvc"),
    pytest.param(PVC, id="spec-pvc"),
    pytest.param(S3, id="spec-s3"),
]


@pytest.mark.parametrize("storage", STORES)
def test_build_job_validates_and_carries_the_build(storage: dict[str, Any] | None) -> None:
    settings = OperatorSettings()
    job = render_build_job(build_request(make_spec(storage=storage), settings), settings)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    assert job["metadata"]["ownerReferences"][0]["uid"] == MODEL.uid
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    spec = job["spec"]
    assert spec["backoffLimit"] == settings.build.backoff_limit
    assert spec["ttlSecondsAfterFinished"] == settings.build.ttl_seconds_after_finished
    # The deterministic failures (invalid spec, accuracy gate) are never retried, nor a source
    # or store that refused after the builder's own retries (any container).
    rule, sources = spec["podFailurePolicy"]["rules"][:2]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2, 3]
    assert sources["action"] == "FailJob" and sources["onExitCodes"]["values"] == [4]
    assert "containerName" not in sources["onExitCodes"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    containers = pod.get("initContainers", []) + pod["containers"]
    builder = next(c for c in containers if c["name"] == naming.BUILDER_CONTAINER)
    assert builder["image"] == settings.builder_image
    assert builder["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert builder["resources"] == settings.build.resources
    env = env_of(builder)
    sent = BuildSpec.model_validate_json(env["OPTIMODEL_BUILD_SPEC"])
    assert sent.name == MODEL.name and sent.source.uri.startswith("hf://")
    assert builder["args"] == ["--out", env["OPTIMODEL_OUTPUT_DIR"]]
    artifact = job["metadata"]["annotations"][naming.ARTIFACT]
    assert artifact.endswith("/ml/minilm/g3")


def test_pvc_build_writes_the_generation_folder_on_the_claim() -> None:
    settings = OperatorSettings()
    job = render_build_job(build_request(make_spec(storage=PVC), settings), settings)
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "models"
    builder = pod["containers"][0]
    assert env_of(builder)["OPTIMODEL_OUTPUT_DIR"] == "/artifacts/builds/ml/minilm/g3"
    assert job["metadata"]["annotations"][naming.ARTIFACT] == "pvc://models/builds/ml/minilm/g3"


def test_s3_build_uploads_with_the_secret_keys_and_the_builder_never_sees_them() -> None:
    settings = OperatorSettings()
    job = render_build_job(build_request(make_spec(storage=S3), settings), settings)
    pod = job["spec"]["template"]["spec"]
    builder = pod["initContainers"][0]
    upload = pod["containers"][0]
    assert "AWS_ACCESS_KEY_ID" not in env_of(builder)
    env = env_of(upload)
    assert upload["image"] == settings.builder_image
    assert upload["command"] == ["python", "-m", "optimodel.model_builder.publish"]
    assert upload["args"] == [
        "--from",
        env["OUT_DIR"],
        "--to",
        env["ARTIFACT_URI"],
        "--field",
        "spec.storage.s3.uri",
    ]
    assert upload["terminationMessagePath"] == "/dev/termination-log"
    assert env["ARTIFACT_URI"] == "s3://ml-artifacts/optimodel/ml/minilm/g3"
    assert env["AWS_ENDPOINT_URL"] == "https://minio.storage:9000"
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "artifact-keys", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["OUT_DIR"] == env_of(builder)["OPTIMODEL_OUTPUT_DIR"]


def test_pvc_sources_are_mounted_read_only_and_passed_as_local_paths() -> None:
    settings = OperatorSettings()
    spec = make_spec(
        source={"uri": "pvc://model-zoo/minilm", "task": "feature-extraction"},
        optimize={"evalData": {"uri": "pvc://optimodel-artifacts/eval/texts.jsonl"}},
    )
    job = render_build_job(build_request(spec, settings), settings)
    pod = job["spec"]["template"]["spec"]
    builder = pod["containers"][0]
    sent = BuildSpec.model_validate_json(env_of(builder)["OPTIMODEL_BUILD_SPEC"])
    assert sent.source.uri == "file:///mnt/sources/model-zoo/minilm"
    # The artifact claim is mounted already: the eval data is read through it.
    assert sent.optimize.eval_data is not None
    assert sent.optimize.eval_data.uri == "file:///artifacts/eval/texts.jsonl"
    mounts = {m["mountPath"]: m for m in builder["volumeMounts"]}
    assert mounts["/mnt/sources/model-zoo"]["readOnly"] is True
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


SERVING_CASES = [
    pytest.param({}, None, id="gpu-autoscaled-pvc"),
    pytest.param({"serving": {"gpu": {"count": 0}}}, None, id="cpu"),
    pytest.param({"autoscaling": {"enabled": False}, "replicas": 3}, None, id="fixed-replicas"),
    pytest.param({}, S3, id="s3"),
    pytest.param({"serving": {"image": "registry.local/triton:custom"}}, PVC, id="image-override"),
]


@pytest.mark.parametrize(("overrides", "storage"), SERVING_CASES)
def test_serving_children_validate(
    overrides: dict[str, Any], storage: dict[str, Any] | None
) -> None:
    settings = OperatorSettings.model_validate(
        {"serving": {"gpuNodeLabel": "cloud.google.com/gke-accelerator"}}
    )
    spec = make_spec(storage=storage, **overrides)
    children = render_children(serving_inputs(spec, settings))
    autoscaler = ["HorizontalPodAutoscaler"] if spec.autoscaling.enabled else []
    assert [c["kind"] for c in children] == [
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        *autoscaler,
    ]
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
        assert child["metadata"]["ownerReferences"][0]["uid"] == MODEL.uid
        assert child["metadata"]["labels"][naming.MODEL] == MODEL.name


def deployment_of(children: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in children if c["kind"] == "Deployment")


def test_triton_deployment_serves_the_artifact_with_probes_ports_and_gpus() -> None:
    settings = OperatorSettings.model_validate(
        {"serving": {"gpuNodeLabel": "cloud.google.com/gke-accelerator"}}
    )
    children = render_children(
        serving_inputs(make_spec(serving={"gpu": {"type": "nvidia-l4", "count": 2}}), settings)
    )
    deployment = deployment_of(children)
    pod = deployment["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["image"] == settings.triton_image
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--model-repository=/models" in triton["args"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    fetch = pod["initContainers"][0]
    assert env_of(fetch)["SOURCE"] == "/artifacts/ml/minilm/g2/minilm"  # the whole repository
    claim, _ = pvc_location("pvc://optimodel-artifacts/ml/minilm/g2")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
    assert volumes["triton-config"]["configMap"]["name"] == naming.config_map_name(MODEL.name)
    # Old pods keep serving until new ones are ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["selector"]["matchLabels"] == naming.server_selector(MODEL.name)


def test_config_map_holds_every_config_of_the_builders_rendering_and_its_hash_rolls_pods() -> None:
    settings = OperatorSettings()
    spec = make_spec()
    children = render_children(serving_inputs(spec, settings))
    data = children[0]["data"]
    expected = render_served_configs(MODEL.name, "feature-extraction", SIGNATURE, spec.serving)
    assert data == {naming.config_key(name): text for name, text in expected.items()}
    assert sorted(data) == [
        "minilm-model.config.pbtxt",
        "minilm-postprocess.config.pbtxt",
        "minilm-tokenize.config.pbtxt",
        "minilm.config.pbtxt",
    ]
    model_step = data["minilm-model.config.pbtxt"]
    assert model_step == render_triton_config(
        "minilm-model", SIGNATURE, spec.serving, backend="onnxruntime"
    )
    # Nothing only the local server has: no ragged batching anywhere in the cluster's set.
    assert not any("allow_ragged_batch" in text for text in data.values())
    template = deployment_of(children)["spec"]["template"]["metadata"]["annotations"]
    assert template[naming.CONFIG_HASH] == configs_hash(expected)

    rebatched = make_spec(serving={"gpu": {"type": "nvidia-l4", "count": 1}, "maxBatchSize": 64})
    again = render_children(serving_inputs(rebatched, settings))
    assert all("max_batch_size: 64" in text for text in again[0]["data"].values())
    new_template = deployment_of(again)["spec"]["template"]["metadata"]["annotations"]
    assert new_template[naming.CONFIG_HASH] != template[naming.CONFIG_HASH]
    assert new_template[naming.ARTIFACT] == template[naming.ARTIFACT]


def test_a_classifier_ensemble_answers_label_and_score() -> None:
    spec = make_spec(source={"uri": "hf://org/reviews", "task": "text-classification"})
    logits = SIGNATURE.model_copy(
        update={"outputs": [TensorSpec(name="logits", data_type="TYPE_FP32", dims=[2])]}
    )
    inputs = serving_inputs(spec, OperatorSettings())
    inputs = replace(inputs, build=inputs.build.model_copy(update={"signature": logits}))
    ensemble = parse_config_text(render_children(inputs)[0]["data"]["minilm.config.pbtxt"])
    assert [(t.name, t.dims) for t in ensemble.output] == [
        ("logits", [2]),
        ("label", [1]),
        ("score", [1]),
    ]


@pytest.mark.parametrize("cache", [True, False])
def test_response_cache_runs_with_a_cache_config_of_the_settings_size(cache: bool) -> None:
    settings = OperatorSettings.model_validate({"serving": {"responseCacheBytes": 64 << 20}})
    spec = make_spec(serving={"gpu": {"type": "nvidia-l4", "count": 1}, "responseCache": cache})
    children = render_children(serving_inputs(spec, settings))
    args = deployment_of(children)["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = [a for a in args if a.startswith("--cache-config")]
    assert flags == ([f"--cache-config=local,size={64 << 20}"] if cache else [])
    ensemble = children[0]["data"]["minilm.config.pbtxt"]
    assert ("response_cache { enable: true }" in ensemble) == cache
    assert "response_cache" not in children[0]["data"]["minilm-model.config.pbtxt"]
    assert OperatorSettings().serving.response_cache_bytes == 256 << 20  # the default


def test_init_container_assembles_the_whole_served_repository(tmp_path: Path) -> None:
    """The rendered init-container script, run by a real shell against a real served
    repository on a stand-in for the PVC mount and the ConfigMap mount."""
    placeholder = tmp_path / "model.onnx"
    placeholder.write_bytes(b"onnx bytes")
    artifacts = tmp_path / "artifacts" / "ml" / "minilm" / "g2"
    write_built_repository(artifacts, "minilm", placeholder, Serving(max_batch_size=8))
    spec = make_spec(serving={"gpu": {"type": "nvidia-l4", "count": 1}, "maxBatchSize": 32})
    children = render_children(serving_inputs(spec, OperatorSettings()))
    configs = tmp_path / "configmap"
    configs.mkdir()
    for key, text in children[0]["data"].items():
        (configs / key).write_text(text)
    models = tmp_path / "models"
    models.mkdir()
    (models / "leftover-from-a-restart").write_text("x")
    fetch = deployment_of(children)["spec"]["template"]["spec"]["initContainers"][0]
    env = {**env_of(fetch), "MODELS": str(models), "CONFIGS": str(configs)}
    env["SOURCE"] = env["SOURCE"].replace("/artifacts", str(tmp_path / "artifacts"), 1)
    subprocess.run(fetch["command"], env=env, check=True, timeout=30)

    assert sorted(p.name for p in models.iterdir()) == [
        "minilm", "minilm-model", "minilm-postprocess", "minilm-tokenize", "report.json",
    ]  # fmt: skip
    for name in ServedNames.of("minilm").all():
        assert (models / name / "config.pbtxt").read_text() == children[0]["data"][
            naming.config_key(name)
        ]  # the ConfigMap's, not the artifact's (maxBatchSize 32, not 8)
        assert (models / name / "1").is_dir()
    assert (models / "minilm-model" / "1" / "model.onnx").read_bytes() == b"onnx bytes"
    assert (models / "minilm-tokenize" / "1" / "tokenizer" / "tokenizer.json").is_file()
    for step in ("minilm-tokenize", "minilm-postprocess"):
        assert (models / step / "1" / "model.py").is_file()


def test_s3_serving_fetches_with_the_aws_cli_and_the_secret() -> None:
    settings = OperatorSettings()
    children = render_children(serving_inputs(make_spec(storage=S3), settings))
    pod = deployment_of(children)["spec"]["template"]["spec"]
    fetch = pod["initContainers"][0]
    assert fetch["image"] == settings.s3_sync_image
    env = env_of(fetch)
    assert env["SOURCE"] == "s3://ml-artifacts/optimodel/ml/minilm/g2/minilm"
    assert 'aws s3 sync "$SOURCE" "$MODELS"' in fetch["command"][-1]
    assert env["AWS_SECRET_ACCESS_KEY"]["secretKeyRef"]["name"] == "artifact-keys"
    assert "artifacts" not in {v["name"] for v in pod["volumes"]}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, 1),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 5}}, 3),
        ({"autoscaling": {"engine": "keda", "minReplicas": 0}}, 1),
        ({"autoscaling": {"enabled": False}}, 1),
        ({"autoscaling": {"enabled": False}, "replicas": 4}, 4),
        ({"autoscaling": {"enabled": False}, "replicas": 0}, 0),
    ],
)
def test_initial_replicas(overrides: dict[str, Any], expected: int) -> None:
    assert initial_replicas(make_spec(**overrides)) == expected


def test_service_selects_the_triton_pods_on_three_ports() -> None:
    children = render_children(serving_inputs(make_spec(), OperatorSettings()))
    service = children[1]
    assert service["spec"]["selector"] == naming.server_selector(MODEL.name)
    assert [p["name"] for p in service["spec"]["ports"]] == ["http", "grpc", "metrics"]
    labels = deployment_of(children)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_rendering_is_deterministic() -> None:
    settings = OperatorSettings()
    first = render_children(serving_inputs(make_spec(storage=S3), settings))
    second = render_children(serving_inputs(make_spec(storage=S3), settings))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


@pytest.mark.parametrize(
    ("overrides", "cap", "kind", "max_field", "expected"),
    [
        ({}, None, "HorizontalPodAutoscaler", "maxReplicas", 8),
        ({}, 3, "HorizontalPodAutoscaler", "maxReplicas", 3),
        (
            {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
            2,
            "HorizontalPodAutoscaler",
            "maxReplicas",
            2,
        ),
        (
            {"autoscaling": {"engine": "keda", "minReplicas": 0}},
            5,
            "ScaledObject",
            "maxReplicaCount",
            5,
        ),
    ],
)
def test_autoscaler_targets_the_deployment_capped_by_the_budget(
    overrides: dict[str, Any], cap: int | None, kind: str, max_field: str, expected: int
) -> None:
    spec = make_spec(**overrides)
    inputs = serving_inputs(spec, OperatorSettings())
    children = render_children(replace(inputs, max_replicas=cap))
    autoscaler = children[-1]
    assert autoscaler["kind"] == kind
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment_of(children)["metadata"]["name"],
    }
    assert autoscaler["spec"][max_field] == expected
    assert autoscaler["metadata"]["ownerReferences"] == [MODEL.owner_reference()]
    # Labelled like every child, as the component the operator's autoscaler watch selects.
    labels = autoscaler["metadata"]["labels"]
    assert labels.items() >= naming.labels(MODEL.name, naming.AUTOSCALER).items()


def test_keda_triggers_query_the_configured_prometheus() -> None:
    settings = OperatorSettings.model_validate(
        {"prometheus": {"url": "http://prom.monitoring:9090", "dcgmPodLabel": "pod"}}
    )
    spec = make_spec(autoscaling={"engine": "keda"})
    scaled_object = render_children(serving_inputs(spec, settings))[-1]
    trigger = scaled_object["spec"]["triggers"][0]["metadata"]
    assert trigger["serverAddress"] == "http://prom.monitoring:9090"
    assert 'pod=~"minilm-' in trigger["query"]
    default = render_children(serving_inputs(spec, OperatorSettings()))[-1]
    assert default["spec"]["triggers"][0]["metadata"]["serverAddress"].startswith(
        "http://prometheus-operated."
    )


def test_network_policy_admits_only_the_named_clients_to_the_triton_pods() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
    gateway = {"podSelector": {"matchLabels": {"app": "gateway"}}}
    settings = OperatorSettings.model_validate(
        {
            "serving": {
                "networkPolicy": {
                    "enabled": True,
                    "clients": [gateway],
                    "metricsScrapers": [monitoring],
                }
            }
        }
    )
    children = render_children(serving_inputs(make_spec(), settings))
    assert [c["kind"] for c in children][:4] == [
        "ConfigMap",
        "Service",
        "NetworkPolicy",  # before the Deployment: no pod runs unfenced
        "Deployment",
    ]
    policy = next(c for c in children if c["kind"] == "NetworkPolicy")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    assert policy["metadata"]["name"] == naming.network_policy_name(MODEL.name)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == MODEL.uid
    selector = policy["spec"]["podSelector"]["matchLabels"]
    pod_labels = deployment_of(children)["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = {
        port["port"]: rule["from"] for rule in policy["spec"]["ingress"] for port in rule["ports"]
    }
    assert admitted == {8000: [gateway], 8001: [gateway], 8002: [monitoring]}
    # Unset peers admit the model's own namespace only; off renders no policy at all.
    default = OperatorSettings.model_validate({"serving": {"networkPolicy": {"enabled": True}}})
    policy = next(
        c
        for c in render_children(serving_inputs(make_spec(), default))
        if c["kind"] == "NetworkPolicy"
    )
    assert all(rule["from"] == [{"podSelector": {}}] for rule in policy["spec"]["ingress"])
    off = render_children(serving_inputs(make_spec(), OperatorSettings()))
    assert "NetworkPolicy" not in {c["kind"] for c in off}


def test_helper_containers_always_run_the_platforms_images() -> None:
    """spec.serving.image runs Triton only: the init container that mounts the artifact claim
    (or holds the S3 keys) and the uploader never run an image the spec chose."""
    settings = OperatorSettings()
    for storage in (None, PVC, S3):
        spec = make_spec(storage=storage, serving={"image": "registry.evil/anything:1"})
        pod = deployment_of(render_children(serving_inputs(spec, settings)))["spec"]["template"]
        [fetch] = pod["spec"]["initContainers"]
        assert fetch["image"] in (settings.triton_image, settings.s3_sync_image)
        assert pod["spec"]["containers"][0]["image"] == "registry.evil/anything:1"
        job = render_build_job(build_request(spec, settings), settings)
        images = {
            c["image"]
            for c in job["spec"]["template"]["spec"].get("initContainers", [])
            + job["spec"]["template"]["spec"]["containers"]
        }
        assert images <= {settings.builder_image, settings.s3_sync_image}


SOURCES = {
    "hub": {
        "endpoint": "https://hf-mirror.internal",
        "tokenSecret": {"name": "hub-token", "key": "token"},
    },
    "s3": {
        "endpoint": "https://minio.models:9000",
        "region": "eu-west-1",
        "credentialsSecret": {"name": "model-readers"},
    },
}


def _builder(job: dict[str, Any]) -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    return next(
        c
        for c in pod.get("initContainers", []) + pod["containers"]
        if c["name"] == naming.BUILDER_CONTAINER
    )


def test_hub_sources_get_the_mirror_and_the_token_secret_never_the_s3_keys() -> None:
    settings = OperatorSettings.model_validate({"sources": SOURCES})
    job = render_build_job(build_request(make_spec(), settings), settings)
    env = env_of(_builder(job))
    assert env["HF_ENDPOINT"] == "https://hf-mirror.internal"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hub-token", "key": "token"}}
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_ENDPOINT_URL" not in env
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_s3_sources_get_the_platform_s3_access_and_no_hub_token() -> None:
    settings = OperatorSettings.model_validate({"sources": SOURCES})
    spec = make_spec(
        source={
            "uri": "s3://model-zoo/minilm",
            "task": "feature-extraction",
            "adapter": {"uri": "pvc://adapters/reviews"},
        },
        optimize={"evalData": {"uri": "s3://datasets/eval.jsonl"}},
        storage=S3,
    )
    job = render_build_job(build_request(spec, settings), settings)
    builder = _builder(job)
    env = env_of(builder)
    assert env["AWS_ENDPOINT_URL"] == "https://minio.models:9000"
    assert env["AWS_REGION"] == "eu-west-1"
    # The source readers' keys, not the artifact store's (those go to the upload only).
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "model-readers", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert "HF_TOKEN" not in env and "HF_ENDPOINT" not in env
    sent = BuildSpec.model_validate_json(env["OPTIMODEL_BUILD_SPEC"])
    assert sent.source.uri == "s3://model-zoo/minilm"
    assert sent.source.adapter is not None
    assert sent.source.adapter.uri == "file:///mnt/sources/adapters/reviews"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("cache", "storage", "expected", "volume"),
    [
        ({}, None, "/artifacts/.model-cache", None),
        ({}, PVC, "/artifacts/builds/.model-cache", None),
        ({}, S3, "/cache", {"emptyDir": {"sizeLimit": "20Gi"}}),
        (
            {"claimName": "hub-cache", "subPath": "optimodel"},
            S3,
            "/cache",
            {"persistentVolumeClaim": {"claimName": "hub-cache"}},
        ),
    ],
)
def test_the_download_cache_outlives_the_build(
    cache: dict[str, Any],
    storage: dict[str, Any] | None,
    expected: str,
    volume: dict[str, Any] | None,
) -> None:
    settings = OperatorSettings.model_validate({"sources": {"cache": cache}})
    job = render_build_job(build_request(make_spec(storage=storage), settings), settings)
    builder = _builder(job)
    env = env_of(builder)
    assert env["OPTIMODEL_MODEL_CACHE"] == expected
    assert env["HF_HUB_CACHE"] == f"{expected}/huggingface/hub"
    mounted = [m["mountPath"] for m in builder["volumeMounts"]]
    assert any(expected.startswith(path) for path in mounted)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    if volume is None:
        assert "model-cache" not in volumes
    else:
        assert {k: v for k, v in volumes["model-cache"].items() if k != "name"} == volume
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
