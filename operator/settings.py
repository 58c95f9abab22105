"""Operator settings: one YAML file (a ConfigMap the Helm chart mounts) plus env overrides.

Validated once at startup; a bad file stops the operator with every problem named (field,
value, fix) instead of failing later inside a reconcile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from optimodel.model_builder import patterns
from optimodel.model_builder.documents import (
    DocumentError,
    DocumentLimits,
    MiB,
    json_data_problems,
    read_data_file,
)
from optimodel.model_builder.patterns import pattern_search
from optimodel.model_builder.served.configs import DEFAULT_RESPONSE_CACHE_BYTES
from optimodel.model_builder.serving_target import SERVED_ONNXRUNTIME
from optimodel.model_builder.spec import AUTO_GPU_TYPE, GPU_TYPE_PATTERN, SpecModel
from optimodel.operator.api import PvcStorage, SecretKeyRef, Storage
from optimodel.operator.autoscaling import DEFAULT_PROMETHEUS_ADDRESS, PrometheusSource
from optimodel.operator.capacity import PROVIDERS, CapacityProvider, ProviderName
from optimodel.operator.cost import (
    DEFAULT_CPU_REPLICA_USD_PER_HOUR,
    PriceCatalog,
)
from optimodel.operator.hardware import CPU, HardwareCatalog

# Built from images/triton.Dockerfile (the pinned NGC Triton 24.10 image + `tokenizers`).
DEFAULT_TRITON_IMAGE = "ghcr.io/optimodel/optimodel-triton:0.1.0"
SETTINGS_FILE_ENV = "OPTIMODEL_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = Path("/etc/optimodel/settings.yaml")
# The file is a ConfigMap key, and a ConfigMap holds at most 1 MiB.
SETTINGS_LIMITS = DocumentLimits(max_file_bytes=MiB, max_document_bytes=MiB)

# Env variable -> dotted settings field. Scalars and comma-separated lists only; everything
# structured lives in the file.
ENV_OVERRIDES: Mapping[str, str] = {
    "OPTIMODEL_BUILDER_IMAGE": "builderImage",
    "OPTIMODEL_TRITON_IMAGE": "tritonImage",
    "OPTIMODEL_S3_SYNC_IMAGE": "s3SyncImage",
    "OPTIMODEL_NAMESPACES": "namespaces",
    "OPTIMODEL_METRICS_PORT": "metricsPort",
    "OPTIMODEL_HEALTH_PORT": "healthPort",
    "OPTIMODEL_RESYNC_SECONDS": "resyncSeconds",
    "OPTIMODEL_BUDGET_INTERVAL_SECONDS": "budgetIntervalSeconds",
    "OPTIMODEL_PROMETHEUS_URL": "prometheus.url",
    "OPTIMODEL_PEERING_NAME": "peering.name",
    "OPTIMODEL_PEERING_PRIORITY": "peering.priority",
    "OPTIMODEL_PEERING_STANDALONE": "peering.standalone",
    "OPTIMODEL_HUB_ENDPOINT": "sources.hub.endpoint",
}

Resources = dict[str, dict[str, str]]
_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
_SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(k|Ki|M|Mi|G|Gi|T|Ti)?$"
_LABEL_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class SettingsError(ValueError):
    """The settings file or an env override is invalid; the message lists every problem."""


def _check_resources(value: Resources, where: str) -> Resources:
    for section, quantities in value.items():
        if section not in ("requests", "limits"):
            raise ValueError(f"{where}: unknown section {section!r}; use requests and limits")
        for name, quantity in quantities.items():
            if not pattern_search(_QUANTITY_PATTERN, str(quantity)):
                raise ValueError(
                    f"{where}.{section}.{name}: {quantity!r} is not a Kubernetes quantity; "
                    f'write e.g. "500m", "2" or "8Gi"'
                )
    return value


def _size(default: str, what: str) -> Any:
    return Field(default=default, pattern=_SIZE_PATTERN, description=f"sizeLimit of {what}.")


def _helper_resources() -> Resources:
    return {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }


class BuildVolumes(SpecModel):
    """Size limits of the build pod's emptyDirs (a full disk fails the build, not the node)."""

    tmp: str = _size("32Gi", "/tmp (HOME and the Hugging Face cache: the downloaded model)")
    out: str = _size("16Gi", "/out (the built repository before its upload; S3 stores only)")


class ServingVolumes(SpecModel):
    """Size limits of the Triton pod's emptyDirs."""

    model_repository: str = _size("16Gi", "/models (the served model repository)")
    tmp: str = _size("1Gi", "/tmp")
    shm: str = _size("1Gi", "/dev/shm (memory-backed; counts against the memory limit)")


class BuildSettings(SpecModel):
    """The builder Job: retries, clean-up, resources."""

    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Pod retries of a build that failed with exit code 1 (unexpected errors). "
        "Invalid specs (exit 2) and failed accuracy gates (exit 3) are never retried.",
    )
    ttl_seconds_after_finished: int = Field(
        default=86_400, ge=0, description="Finished build Jobs are deleted after this."
    )
    active_deadline_seconds: int = Field(
        default=21_600, ge=60, description="A build running longer than this fails."
    )
    resources: Resources = Field(
        default_factory=lambda: {
            "requests": {"cpu": "2", "memory": "8Gi"},
            "limits": {"cpu": "4", "memory": "16Gi"},
        },
        description="Builder container resources (requests/limits).",
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=patterns.KUBERNETES_NAME_PATTERN,
        max_length=253,
        description="ServiceAccount of build pods (e.g. for workload identity).",
    )
    upload_resources: Resources = Field(
        default_factory=_helper_resources,
        description="Resources of the upload container (the builder image running "
        "model_builder.publish) that writes a build to an S3 store.",
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="Mount a Kubernetes API token into build pods. The builder never calls the "
        "API; workload identity (EKS, GKE, AKS) works without it.",
    )
    volumes: BuildVolumes = Field(default_factory=BuildVolumes)

    @field_validator("resources", "upload_resources")
    @classmethod
    def _resources(cls, value: Resources, info: ValidationInfo) -> Resources:
        return _check_resources(value, f"build.{to_camel(str(info.field_name))}")


NETWORK_PEER_KEYS = ("podSelector", "namespaceSelector", "ipBlock")


def _check_peers(peers: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    for index, peer in enumerate(peers):
        unknown = sorted(set(peer) - set(NETWORK_PEER_KEYS))
        if unknown or not peer:
            raise ValueError(
                f"{where}[{index}]: a NetworkPolicy peer has one or more of "
                f"{', '.join(NETWORK_PEER_KEYS)}"
                + (f", not {', '.join(unknown)}" if unknown else "")
            )
        for key, value in peer.items():
            if not isinstance(value, dict):
                raise ValueError(f"{where}[{index}].{key}: write a mapping (a label selector)")
    return peers


class NetworkPolicySettings(SpecModel):
    """An optional NetworkPolicy in front of every model's Triton pods (ingress only)."""

    enabled: bool = Field(
        default=False,
        description="Render a NetworkPolicy per model: only `clients` reach Triton's HTTP and "
        "gRPC ports, only `metricsScrapers` its metrics port; nothing else gets in.",
    )
    clients: list[dict[str, Any]] = Field(
        default_factory=list,
        description="NetworkPolicy peers (podSelector, namespaceSelector, ipBlock) allowed to "
        "call Triton on 8000/8001; empty: every pod of the model's own namespace.",
    )
    metrics_scrapers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Peers allowed to scrape 8002 (Prometheus, dcgm-exporter's consumers); "
        "empty: every pod of the model's own namespace.",
    )

    @field_validator("clients", "metrics_scrapers")
    @classmethod
    def _peers(cls, value: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        return _check_peers(value, f"serving.networkPolicy.{to_camel(str(info.field_name))}")


class CapacitySettings(SpecModel):
    """How the cluster marks spot nodes (spec.serving.capacity spot, spot-with-fallback)."""

    provider: ProviderName | None = Field(
        default=None,
        description="Whose spot node labels and taints to render and to price pods by: gke "
        "(cloud.google.com/gke-spot), eks (eks.amazonaws.com/capacityType), aks "
        "(kubernetes.azure.com/scalesetpriority, with its NoSchedule taint) or karpenter "
        "(karpenter.sh/capacity-type). Unset: specs asking for spot are refused, and every "
        "pod is priced on-demand.",
    )

    def resolved(self) -> CapacityProvider | None:
        return None if self.provider is None else PROVIDERS[self.provider]


class ShutdownSettings(SpecModel):
    """How a Triton pod stops (rollouts, scale-down, node drains, spot preemption) without
    losing an accepted request."""

    drain_seconds: int = Field(
        default=5,
        ge=0,
        le=300,
        description="preStop wait: Triton keeps serving while the terminating pod is taken "
        "out of the Service's endpoints, so no new request reaches it after SIGTERM.",
    )
    exit_timeout_seconds: int = Field(
        default=15,
        ge=1,
        le=3600,
        description="Triton's --exit-timeout-secs: after SIGTERM it refuses new requests and "
        "waits this long for in-flight ones. Keep drainSeconds + this within the notice the "
        "provider gives on preemption (GKE 30 s, AKS 30 s, AWS 2 min).",
    )

    @property
    def grace_period_seconds(self) -> int:
        """terminationGracePeriodSeconds: the drain, Triton's exit timeout, 5 s to exit."""
        return self.drain_seconds + self.exit_timeout_seconds + 5


class ServingSettings(SpecModel):
    """Triton pods: resources besides GPUs, scheduling."""

    resources: Resources = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "4", "memory": "8Gi"},
        },
        description="Triton container CPU/memory; GPUs come from spec.serving.gpu.",
    )
    gpu_node_label: str | None = Field(
        default=None,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=317,
        description="Node label whose value is the GPU type (e.g. "
        "cloud.google.com/gke-accelerator, or nvidia.com/gpu.product from GPU feature "
        "discovery): GPU pods get nodeSelector {label: value of the served type} "
        "(render/placement.py), the type gpu.type auto chose included.",
    )
    gpu_node_label_values: dict[
        Annotated[str, Field(pattern=GPU_TYPE_PATTERN)],
        Annotated[str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", max_length=63)],
    ] = Field(
        default_factory=dict,
        description="The gpuNodeLabel value of each GPU type where it is not the type's name, "
        "e.g. {nvidia-t4: nvidia-tesla-t4} on GKE or {nvidia-l4: NVIDIA-L4} for "
        "nvidia.com/gpu.product.",
    )
    fetch_resources: Resources = Field(
        default_factory=_helper_resources,
        description="Resources of the init container copying the artifact into the pod.",
    )
    service_account_name: str | None = Field(
        default=None,
        pattern=patterns.KUBERNETES_NAME_PATTERN,
        max_length=253,
        description="ServiceAccount of Triton pods in the model's namespace (workload identity "
        "to an S3 store); unset: the namespace's default.",
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="Mount a Kubernetes API token into Triton pods (Triton never calls the API).",
    )
    volumes: ServingVolumes = Field(default_factory=ServingVolumes)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    response_cache_bytes: int = Field(
        default=DEFAULT_RESPONSE_CACHE_BYTES,
        ge=1 << 20,
        le=1 << 40,
        description="Size of Triton's local response cache (--cache-config local,size=...) "
        "in pods of models with spec.serving.responseCache; it counts against the pod's memory.",
    )

    @field_validator("resources", "fetch_resources")
    @classmethod
    def _resources(cls, value: Resources, info: ValidationInfo) -> Resources:
        return _check_resources(value, f"serving.{to_camel(str(info.field_name))}")


class HardwareSettings(SpecModel):
    """Catalog figures of one hardware type (operator/hardware.py); unset fields keep the
    built-in value. A type the catalog lacks needs onDemandUSDPerHour, and the datasheet
    figures too before the hardware choice can estimate it."""

    on_demand_usd_per_hour: float | None = Field(
        default=None, ge=0, alias="onDemandUSDPerHour", description="USD per GPU-hour."
    )
    spot_usd_per_hour: float | None = Field(
        default=None, ge=0, alias="spotUSDPerHour", description="USD per GPU-hour on spot."
    )
    memory_gib: float | None = Field(
        default=None, gt=0, alias="memoryGiB", description="Device memory."
    )
    memory_bandwidth_gb_per_s: float | None = Field(
        default=None, gt=0, alias="memoryBandwidthGBps", description="Memory bandwidth, GB/s."
    )
    fp32_tflops: float | None = Field(
        default=None, gt=0, alias="fp32TFLOPS", description="Dense fp32 peak, TFLOPS."
    )
    fp16_tflops: float | None = Field(
        default=None, gt=0, alias="fp16TFLOPS", description="Dense fp16 (tensor) peak, TFLOPS."
    )
    int8_tops: float | None = Field(
        default=None, gt=0, alias="int8TOPS", description="Dense int8 (tensor) peak, TOPS."
    )

    def changes(self) -> dict[str, float]:
        """The fields this entry sets (snake_case, as HardwareCatalog.with_overrides takes)."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class HardwareProfileSettings(SpecModel):
    """A measured profile of one hardware type: it replaces the roofline estimate there."""

    type: str = Field(
        pattern=GPU_TYPE_PATTERN,
        description="Hardware type (a catalog GPU type, or cpu for the CPU replica).",
    )
    model: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="The OptimizedModel (metadata.name) it was measured for; unset: every "
        "model without a profile of its own on this type.",
    )
    inferences_per_second: float = Field(
        gt=0, description="What one replica (gpu.count GPUs, or one CPU replica) sustained."
    )
    latency_p99_ms: float = Field(gt=0, alias="latencyP99Ms", description="p99 at that rate.")
    batch: int = Field(default=32, ge=1, le=1024, description="Batch size it ran at.")
    measured_by: str = Field(
        min_length=1,
        max_length=256,
        description="What measured it (e.g. benchmarks/gpu_check.py 2026-12-01 on g2-standard-4).",
    )


class PeeringSettings(SpecModel):
    """Kopf peering: of several operator replicas only the highest priority one acts."""

    name: str = Field(default="optimodel", min_length=1, description="(Cluster)KopfPeering name.")
    priority: int | None = Field(
        default=None,
        description="Peering priority; unset picks a random one per process, so of two "
        "replicas exactly one acts and the other takes over when it dies.",
    )
    standalone: bool = Field(default=False, description="Run without peering (one replica).")


class PrometheusSettings(SpecModel):
    """The Prometheus the operator asks for inference rates and KEDA's triggers query."""

    url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        description="Base URL, e.g. http://prometheus-operated.monitoring.svc:9090. Unset: "
        "status.cost.usdPerMillionInferences stays empty, and KEDA ScaledObjects query "
        f"{DEFAULT_PROMETHEUS_ADDRESS}.",
    )
    timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Timeout of one query by the operator."
    )
    dcgm_namespace_label: str = Field(
        default="exported_namespace",
        pattern=_LABEL_PATTERN,
        description="Label naming a GPU's pod namespace in dcgm-exporter's series.",
    )
    dcgm_pod_label: str = Field(
        default="exported_pod",
        pattern=_LABEL_PATTERN,
        description="Label naming a GPU's pod in dcgm-exporter's series.",
    )
    triton_namespace_label: str = Field(
        default="namespace",
        pattern=_LABEL_PATTERN,
        description="Namespace label of Triton's series.",
    )
    triton_pod_label: str = Field(
        default="pod", pattern=_LABEL_PATTERN, description="Pod label of Triton's series."
    )

    def source(self) -> PrometheusSource:
        """The queries' address and labels, as the autoscaler renderer takes them."""
        return PrometheusSource(
            server_address=self.url or DEFAULT_PROMETHEUS_ADDRESS,
            dcgm_namespace_label=self.dcgm_namespace_label,
            dcgm_pod_label=self.dcgm_pod_label,
            triton_namespace_label=self.triton_namespace_label,
            triton_pod_label=self.triton_pod_label,
        )


Patterns = list[Annotated[str, Field(min_length=1, max_length=512)]]


class S3Target(SpecModel):
    """An S3 location models may keep their artifacts in, reached the platform's way."""

    bucket: str = Field(
        min_length=1,
        max_length=255,
        description="Bucket name or glob pattern (fnmatch: *, ?, [..]), e.g. team-*-models.",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=patterns.ENDPOINT_PATTERN,
        description="The only endpoint requests to these buckets go to; unset: AWS S3. A spec "
        "naming another endpoint is refused.",
    )
    credentials_secret: SecretKeyRef | None = Field(
        default=None,
        description="The Secret (in each model's namespace) whose keys reach these buckets; "
        "unset: workload identity. A spec naming another Secret or other keys is refused.",
    )


class StoragePolicy(SpecModel):
    """Which per-model stores (spec.storage) and input claims a spec may name."""

    pvc_claims: Patterns = Field(
        default_factory=list,
        description="Claims (glob patterns) spec.storage.pvc.claimName may name; build pods "
        "mount them read-write. Empty: no per-model PVC store.",
    )
    s3: list[S3Target] = Field(
        default_factory=list,
        description="S3 locations spec.storage.s3 may use, each with the endpoint and "
        "credentials the platform chose. Empty: no per-model S3 store.",
    )
    input_claims: Patterns = Field(
        default_factory=list,
        description="Claims (glob patterns) pvc:// sources, calibration and eval data may name; "
        "build pods mount them read-only. Empty: no pvc:// inputs.",
    )


class NamespaceCaps(SpecModel):
    """Limits on what the models of one namespace may ask for."""

    max_replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Most serving replicas a model may ask for (autoscaling.maxReplicas, or "
        "replicas without autoscaling); unset: no cap.",
    )
    gpu_types: list[Annotated[str, Field(pattern=GPU_TYPE_PATTERN)]] = Field(
        default_factory=list,
        description="GPU types spec.serving.gpu.type may name; empty: any.",
    )


class AdminPolicy(SpecModel):
    """What the platform lets a spec choose (operator/policy.py checks it; so does
    `optimodel validate --settings`). The defaults allow nothing beyond the platform's own
    images and store: safe for a cluster shared by teams that do not trust each other."""

    serving_images: Patterns = Field(
        default_factory=list,
        description="Images (glob patterns, e.g. nvcr.io/nvidia/tritonserver:*) "
        "spec.serving.image may name; it runs the Triton container only. Empty: no override.",
    )
    storage: StoragePolicy = Field(default_factory=StoragePolicy)
    default_caps: NamespaceCaps = Field(
        default_factory=NamespaceCaps, description="Caps of namespaces not in namespaceCaps."
    )
    namespace_caps: dict[str, NamespaceCaps] = Field(
        default_factory=dict, description="Caps by namespace name (instead of defaultCaps)."
    )

    def caps_for(self, namespace: str) -> NamespaceCaps:
        return self.namespace_caps.get(namespace, self.default_caps)


class SecretRef(SpecModel):
    """One key of a Secret in the model's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    key: str = Field(default="HF_TOKEN", min_length=1, description="Key holding the value.")


class HubSourceSettings(SpecModel):
    """How builder Jobs reach the Hugging Face Hub for hf:// models and adapters."""

    endpoint: str | None = Field(
        default=None,
        pattern=patterns.ENDPOINT_PATTERN,
        description="HF_ENDPOINT of the builder: a company mirror of the Hub (e.g. "
        "https://hf-mirror.internal); unset: https://huggingface.co.",
    )
    token_secret: SecretRef | None = Field(
        default=None,
        description="Secret (in each model's namespace) whose key holds a Hub token for private "
        "or gated repositories; the builder gets it as HF_TOKEN. Never in the model's spec.",
    )


class S3SourceSettings(SpecModel):
    """How builder Jobs read s3:// models, adapters and data (not the artifact store)."""

    endpoint: str | None = Field(
        default=None,
        pattern=patterns.ENDPOINT_PATTERN,
        description="Endpoint URL of an S3-compatible store (MinIO, Ceph); unset: AWS.",
    )
    region: str | None = Field(default=None, description="Region of the source buckets.")
    credentials_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret (in each model's namespace) with read access keys; omit for the "
        "build ServiceAccount's workload identity.",
    )


class ModelCacheSettings(SpecModel):
    """Where builder Jobs keep downloaded models between builds."""

    claim_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="PersistentVolumeClaim (ReadWriteMany, in each model's namespace) holding "
        "the download cache. Unset: a PVC artifact store holds it in <subPath>/.model-cache; "
        "with an S3 store, an emptyDir of sizeLimit (no reuse across builds).",
    )
    sub_path: str = Field(default="", description="Folder inside claimName.")
    size_limit: str = Field(
        default="20Gi",
        pattern=_QUANTITY_PATTERN,
        description="Size of the emptyDir cache when no claim holds it (the models a build "
        "downloads must fit).",
    )


class SourceSettings(SpecModel):
    """Platform-side access to model sources: chosen by the operator's settings, never the spec."""

    hub: HubSourceSettings = Field(default_factory=HubSourceSettings)
    s3: S3SourceSettings = Field(default_factory=S3SourceSettings)
    cache: ModelCacheSettings = Field(default_factory=ModelCacheSettings)


class OperatorSettings(SpecModel):
    """Everything the operator reads at startup."""

    builder_image: str = Field(
        default="ghcr.io/optimodel/optimodel-builder:0.1.0",
        min_length=1,
        description="Image running `python -m optimodel.model_builder`.",
    )
    triton_image: str = Field(
        default=DEFAULT_TRITON_IMAGE,
        min_length=1,
        description="Triton serving image: nvcr.io/nvidia/tritonserver:24.10-py3 plus the "
        "tokenizer step's pinned packages (images/triton.Dockerfile); spec.serving.image "
        "overrides it per model and must carry the same packages. The quantize-mode rules "
        f"assume its onnxruntime ({SERVED_ONNXRUNTIME}).",
    )
    s3_sync_image: str = Field(
        default="amazon/aws-cli:2.22.35",
        min_length=1,
        description="Image with the aws CLI: serving pods fetch builds from s3:// with it (the "
        "builder image uploads them).",
    )
    artifact_store: Storage = Field(
        default_factory=lambda: Storage(pvc=PvcStorage(claim_name="optimodel-artifacts")),
        description="Default artifact store (spec.storage overrides it per model).",
    )
    gpu_prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per GPU-hour by GPU type, merged over the built-in catalog.",
    )
    hardware: dict[str, HardwareSettings] = Field(
        default_factory=dict,
        description="Hardware catalog entries by type (and cpu for the CPU replica): prices "
        "on-demand and spot, memory, bandwidth and throughput, merged over the built-in "
        "catalog (operator/hardware.py).",
    )
    hardware_profiles: list[HardwareProfileSettings] = Field(
        default_factory=list,
        description="Measured profiles (e.g. from benchmarks/gpu_check.py --profile): each "
        "replaces the estimated throughput and p99 of its type, for its model or for all.",
    )
    cpu_replica_price: float | None = Field(
        default=None,
        ge=0,
        description="USD per hour of one CPU-only replica (serving.gpu.count 0); unset: "
        f"{DEFAULT_CPU_REPLICA_USD_PER_HOUR}.",
    )
    budget_interval_seconds: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="Spend is accounted, and budget caps recomputed, this often per model.",
    )
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    build: BuildSettings = Field(default_factory=BuildSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to serve; empty serves the whole cluster."
    )
    metrics_port: int = Field(
        default=9090, ge=0, le=65535, description="Prometheus /metrics port; 0 disables it."
    )
    health_port: int = Field(
        default=8080, ge=0, le=65535, description="Liveness /healthz port; 0 disables it."
    )
    resync_seconds: float = Field(
        default=300.0,
        ge=1.0,
        description="Every model is re-reconciled this often even without events.",
    )
    peering: PeeringSettings = Field(default_factory=PeeringSettings)
    policy: AdminPolicy = Field(
        default_factory=AdminPolicy, description="What specs may choose (admin policy)."
    )
    sources: SourceSettings = Field(
        default_factory=SourceSettings,
        description="How builds reach the Hub (mirror, token) and S3 sources, and the cache.",
    )

    @field_validator("gpu_prices")
    @classmethod
    def _prices(cls, value: dict[str, float]) -> dict[str, float]:
        for gpu, price in value.items():
            if not pattern_search(GPU_TYPE_PATTERN, gpu):
                raise ValueError(
                    f"gpuPrices: {gpu!r} is not a GPU type name; use lowercase like nvidia-l4"
                )
            if price < 0:
                raise ValueError(f"gpuPrices.{gpu}: {price} is negative; write USD per GPU-hour")
        return value

    @field_validator("hardware")
    @classmethod
    def _hardware(cls, value: dict[str, HardwareSettings]) -> dict[str, HardwareSettings]:
        for name in value:
            if name == AUTO_GPU_TYPE:
                raise ValueError(
                    f"hardware: {name!r} asks for the hardware choice in a spec; name the "
                    "type otherwise"
                )
            if name != CPU and not pattern_search(GPU_TYPE_PATTERN, name):
                raise ValueError(
                    f"hardware: {name!r} is not a hardware type name; use lowercase like "
                    "nvidia-l4, or cpu for the CPU replica"
                )
        return value

    @model_validator(mode="after")
    def _known_profiles(self) -> OperatorSettings:
        catalog = self.hardware_catalog
        for index, profile in enumerate(self.hardware_profiles):
            if profile.type != CPU and profile.type not in catalog.gpus:
                raise ValueError(
                    f"hardwareProfiles[{index}].type: {profile.type!r} is not in the hardware "
                    f"catalog (known: {', '.join(catalog.names)}); add it under hardware: first"
                )
        return self

    @model_validator(mode="after")
    def _complete_hardware(self) -> OperatorSettings:
        self.hardware_catalog  # noqa: B018 -- raises ValueError naming the missing field
        return self

    @model_validator(mode="after")
    def _one_store(self) -> OperatorSettings:
        store = self.artifact_store
        if bool(store.pvc) == bool(store.s3):
            raise ValueError("artifactStore: set exactly one of pvc and s3")
        return self

    @property
    def gpu_price_catalog(self) -> dict[str, float]:
        """The on-demand prices with the settings' overrides on top."""
        gpus = self.hardware_catalog.gpus
        return {name: gpu.on_demand_usd_per_hour for name, gpu in gpus.items()}

    @property
    def hardware_catalog(self) -> HardwareCatalog:
        """The built-in hardware catalog with the hardware, gpuPrices and cpuReplicaPrice
        settings on top."""
        return HardwareCatalog.with_overrides(
            {name: entry.changes() for name, entry in self.hardware.items()},
            self.gpu_prices,
            self.cpu_replica_price,
        )

    @property
    def price_catalog(self) -> PriceCatalog:
        """The price catalog budgets are computed with (0 is a valid price: on-prem GPUs)."""
        return PriceCatalog.from_hardware(self.hardware_catalog)


def _set_dotted(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = document
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def _env_value(field: str, raw: str) -> Any:
    if field == "namespaces":
        return [part.strip() for part in raw.split(",") if part.strip()]
    if field == "peering.standalone":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def _format_errors(error: ValidationError, origin: str) -> str:
    lines = [f"invalid operator settings ({origin}):"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(file)"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "string_pattern_mismatch":
            message = "has the wrong form (see the field's description in the settings reference)"
        fix = "remove it (see the settings reference)" if item["type"] == "extra_forbidden" else ""
        lines.append(f"  {where}: {message}{shown}" + (f"; fix: {fix}" if fix else ""))
    return "\n".join(lines)


def parse_settings(document: object, env: Mapping[str, str], origin: str) -> OperatorSettings:
    """Settings from a parsed YAML document with env overrides on top (pure)."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SettingsError(
            f"invalid operator settings ({origin}): the file must hold a YAML mapping, "
            f"got {type(document).__name__}"
        )
    not_json = json_data_problems(document, SETTINGS_LIMITS)
    if not_json:
        lines = "\n".join(f"  {problem}" for problem in not_json)
        raise SettingsError(f"invalid operator settings ({origin}):\n{lines}")
    merged: dict[str, Any] = dict(document)
    for variable, field in ENV_OVERRIDES.items():
        if variable in env:
            _set_dotted(merged, field, _env_value(field, env[variable]))
    try:
        return OperatorSettings.model_validate(merged)
    except ValidationError as error:
        raise SettingsError(_format_errors(error, origin)) from None


def load_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Read the settings file (OPTIMODEL_SETTINGS_FILE or the default path) and env overrides.

    A missing default file means built-in defaults; a missing file named explicitly is an error.
    """
    env = os.environ if env is None else env
    explicit = env.get(SETTINGS_FILE_ENV)
    path = Path(explicit) if explicit else DEFAULT_SETTINGS_FILE
    document: object = {}
    if path.exists():
        try:
            document = read_data_file(path, SETTINGS_LIMITS)
        except DocumentError as error:
            lines = "\n".join(f"  {problem}" for problem in error.problems)
            raise SettingsError(f"invalid operator settings ({path}):\n{lines}") from None
    elif explicit:
        raise SettingsError(
            f"operator settings file {path} does not exist; fix: mount it or unset "
            f"{SETTINGS_FILE_ENV}"
        )
    origin = str(path) if path.exists() else "defaults"
    return parse_settings(document, env, origin)
