"""The Triton Deployment serving one built artifact.

An init container assembles the model repository in an emptyDir: the artifact's whole served
repository from the store (PVC copy, or `aws s3 sync`: the text-in ensemble, the tokenizer and
answer steps, the raw-tensor model) plus every config.pbtxt from the ConfigMap. Triton then
serves it: the model step on the onnxruntime backend, the text steps on the python backend of
the serving image (images/triton.Dockerfile). The config hash and the artifact URI sit in the pod
template, so a batching change or a new artifact rolls the pods; maxUnavailable 0 keeps the
old version serving until new pods are ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from optimodel.model_builder.served.configs import response_cache_arguments
from optimodel.model_builder.served.layout import ServedNames
from optimodel.operator import api, naming
from optimodel.operator.artifacts import ARTIFACTS_MOUNT, ArtifactStore, pvc_location
from optimodel.operator.capacity import (
    CAPACITY_LABEL,
    base_placement,
    spot_deployment_name,
    spot_placement,
)
from optimodel.operator.render.common import (
    Manifest,
    ModelRef,
    container_resources,
    empty_dir,
    metadata,
    pod_identity,
    restricted_container_security,
    restricted_pod_security,
)
from optimodel.operator.render.placement import gpu_node_selector
from optimodel.operator.render.storage import s3_env
from optimodel.operator.settings import OperatorSettings

MODELS_MOUNT = "/models"
CONFIG_MOUNT = "/etc/optimodel/triton"
GPU_RESOURCE = "nvidia.com/gpu"
# all: the one Deployment of capacity on-demand; on-demand / spot: the base and the spot tier
# of capacity spot and spot-with-fallback (operator/capacity.py).
Tier = Literal["all", "on-demand", "spot"]


@dataclass(frozen=True)
class TritonDeploymentInputs:
    """What the Deployment is rendered from."""

    model: ModelRef
    spec: api.OptimizedModelSpec
    build: api.BuildStatus
    store: ArtifactStore
    config_hash: str
    replicas: int
    tier: Tier = "all"

    @property
    def name(self) -> str:
        if self.tier == "spot":
            return spot_deployment_name(self.model.name)
        return naming.deployment_name(self.model.name)

    @property
    def selector(self) -> dict[str, str]:
        """The pod selector (immutable): the spot tier's adds the capacity label, so its
        autoscaler sees spot pods only; the base keeps the one it always had."""
        selector = naming.server_selector(self.model.name)
        if self.tier == "spot":
            selector[CAPACITY_LABEL] = "spot"
        return selector


def served_models(inputs: TritonDeploymentInputs) -> list[str]:
    """The Triton models of the served repository (the ensemble and its steps)."""
    return ServedNames.of(inputs.model.name).all()


def _install_configs(models: list[str]) -> str:
    """Shell lines putting each model's config from the ConfigMap into the repository."""
    return "; ".join(
        f'mkdir -p "$MODELS/{model}/1"; '
        f'cp "$CONFIGS/{naming.config_key(model)}" "$MODELS/{model}/{naming.CONFIG_FILE}"'
        for model in models
    )


def _fetch_model(inputs: TritonDeploymentInputs, settings: OperatorSettings) -> dict[str, Any]:
    """Init container copying the whole served repository, then every config from the ConfigMap.

    The artifact's `<name>/` folder is the served repository (served/layout.py): the text-in
    ensemble, its tokenizer and answer steps with their files, and the raw-tensor model.
    """
    name = inputs.model.name
    env: list[dict[str, Any]] = [
        {"name": "MODELS", "value": MODELS_MOUNT},
        {"name": "CONFIGS", "value": CONFIG_MOUNT},
        {"name": "HOME", "value": "/tmp"},
    ]
    mounts = [
        {"name": "model-repository", "mountPath": MODELS_MOUNT},
        {"name": "triton-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if inputs.build.artifact.startswith("s3://"):
        assert inputs.store.s3 is not None
        image = settings.s3_sync_image
        env += [
            {"name": "SOURCE", "value": f"{inputs.build.artifact}/{name}"},
            *s3_env(inputs.store.s3),
        ]
        fetch = 'aws s3 sync "$SOURCE" "$MODELS" --only-show-errors'
    else:
        _, path = pvc_location(inputs.build.artifact)
        # The platform's image, never spec.serving.image: this container mounts the claim.
        image = settings.triton_image
        env.append({"name": "SOURCE", "value": f"{ARTIFACTS_MOUNT}/{path}/{name}"})
        mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT, "readOnly": True})
        fetch = 'cp -R "$SOURCE/." "$MODELS/"'
    # A restarted init container finds the emptyDir as it left it: start from nothing.
    clean = 'rm -rf "${MODELS:?}"/*'
    script = f"set -eu; {clean}; {fetch}; {_install_configs(served_models(inputs))}"
    return {
        "name": "fetch-model",
        "image": image,
        "command": ["sh", "-c", script],
        "env": env,
        "resources": container_resources(settings.serving.fetch_resources),
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }


def _response_cache_args(inputs: TritonDeploymentInputs, settings: OperatorSettings) -> list[str]:
    """`--cache-config` when the model enables its response cache (else the block is inert)."""
    if not inputs.spec.serving.response_cache:
        return []
    return response_cache_arguments(settings.serving.response_cache_bytes)


def _resources(inputs: TritonDeploymentInputs, settings: OperatorSettings) -> dict[str, Any]:
    resources = container_resources(settings.serving.resources)
    gpus = inputs.spec.serving.gpu.count
    if gpus:
        for section in ("requests", "limits"):
            resources.setdefault(section, {})[GPU_RESOURCE] = str(gpus)
    return resources


def _triton(inputs: TritonDeploymentInputs, settings: OperatorSettings) -> dict[str, Any]:
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "name": naming.TRITON_CONTAINER,
        "image": inputs.spec.serving.image or settings.triton_image,
        "command": ["tritonserver"],
        "args": [
            f"--model-repository={MODELS_MOUNT}",
            "--model-control-mode=none",
            "--disable-auto-complete-config",
            "--exit-on-error=true",
            f"--http-port={naming.HTTP_PORT}",
            f"--grpc-port={naming.GRPC_PORT}",
            f"--metrics-port={naming.METRICS_PORT}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=true",
            # After SIGTERM Triton refuses new requests and lets in-flight ones finish.
            f"--exit-timeout-secs={settings.serving.shutdown.exit_timeout_seconds}",
            *_response_cache_args(inputs, settings),
        ],
        # The root filesystem is read-only: whatever Triton writes goes to /tmp.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "ports": [
            {"name": "http", "containerPort": naming.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": naming.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": naming.METRICS_PORT, "protocol": "TCP"},
        ],
        # Loading (and warming up) a model takes a while: up to 10 minutes before liveness counts.
        "startupProbe": probe("/v2/health/ready", 5, 120),
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "resources": _resources(inputs, settings),
        **_drain(settings),
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "model-repository", "mountPath": MODELS_MOUNT, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _drain(settings: OperatorSettings) -> dict[str, Any]:
    """The preStop wait: a terminating pod leaves the Service's endpoints at once, but
    kube-proxy and load balancers learn it a few seconds later; Triton serves on meanwhile,
    and only then gets SIGTERM."""
    seconds = settings.serving.shutdown.drain_seconds
    if not seconds:
        return {}
    return {"lifecycle": {"preStop": {"exec": {"command": ["sleep", str(seconds)]}}}}


def _placement(inputs: TritonDeploymentInputs, settings: OperatorSettings) -> dict[str, Any]:
    """The tier's node affinity and tolerations (nothing for capacity on-demand)."""
    if inputs.tier == "all":
        return {}
    provider = settings.serving.capacity.resolved()
    if provider is None:
        raise ValueError(
            f"spec.serving.capacity {inputs.spec.serving.capacity} needs the operator's "
            "serving.capacity.provider setting (policy.py refuses such specs first)"
        )
    if inputs.tier == "on-demand":
        return base_placement(provider)
    return spot_placement(provider, inputs.spec.serving.capacity)


def render_triton_deployment(
    inputs: TritonDeploymentInputs, settings: OperatorSettings
) -> Manifest:
    model = inputs.model
    sizes = settings.serving.volumes
    volumes: list[dict[str, Any]] = [
        empty_dir("model-repository", sizes.model_repository),
        {"name": "triton-config", "configMap": {"name": naming.config_map_name(model.name)}},
        empty_dir("dshm", sizes.shm, medium="Memory"),
        empty_dir("tmp", sizes.tmp),
    ]
    if inputs.build.artifact.startswith("pvc://"):
        claim, _ = pvc_location(inputs.build.artifact)
        volumes.append(
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    pod_spec: dict[str, Any] = {
        **pod_identity(
            settings.serving.service_account_name,
            settings.serving.automount_service_account_token,
        ),
        "securityContext": restricted_pod_security(),
        "initContainers": [_fetch_model(inputs, settings)],
        "containers": [_triton(inputs, settings)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": settings.serving.shutdown.grace_period_seconds,
    }
    gpu = inputs.spec.serving.gpu
    tolerations: list[dict[str, Any]] = []
    if gpu.count:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
        selector = gpu_node_selector(gpu.type, gpu.count, settings.serving)
        if selector:
            pod_spec["nodeSelector"] = selector
    placement = _placement(inputs, settings)
    tolerations += placement.pop("tolerations", [])
    pod_spec.update(placement)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    labels = naming.labels(model.name, naming.SERVER)
    if inputs.tier != "all":
        labels[CAPACITY_LABEL] = inputs.tier
    template_annotations = {
        naming.CONFIG_HASH: inputs.config_hash,
        naming.ARTIFACT: inputs.build.artifact,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(naming.METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            model,
            inputs.name,
            naming.SERVER,
            extra_labels={CAPACITY_LABEL: inputs.tier} if inputs.tier != "all" else None,
            annotations={
                naming.ARTIFACT: inputs.build.artifact,
                naming.SPEC_HASH: inputs.build.spec_hash,
            },
        ),
        "spec": {
            "replicas": inputs.replicas,
            "revisionHistoryLimit": 3,
            # Past the startup probe's 10 minutes plus image pull: a stuck rollout is reported
            # (Deployed=False, ProgressDeadlineExceeded) rather than waited on forever.
            "progressDeadlineSeconds": 1200,
            "selector": {"matchLabels": inputs.selector},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": template_annotations,
                },
                "spec": pod_spec,
            },
        },
    }
