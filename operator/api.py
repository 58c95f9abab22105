"""The `OptimizedModel` API (optimodel.io/v1alpha1): spec, status and annotations.

The CRD under `crds/` is generated from these models (`optimodel crd`), so the schema the
API server enforces, the operator's parsing and the offline validator can never drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from optimodel.model_builder import patterns
from optimodel.model_builder.spec import Optimize, Serving, Source, SpecModel
from optimodel.model_builder.triton_config import ModelSignature
from optimodel.model_builder.work import InferenceWork

GROUP = "optimodel.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OptimizedModel"
PLURAL = "optimizedmodels"
SINGULAR = "optimizedmodel"
SHORT_NAMES = ("om",)

BUDGET_USD_PER_HOUR = f"{GROUP}/budget-usd-per-hour"
BUDGET_USD_PER_MONTH = f"{GROUP}/budget-usd-per-month"
PRICE_USD_PER_GPU_HOUR = f"{GROUP}/price-usd-per-gpu-hour"
BUDGET_ANNOTATIONS = (BUDGET_USD_PER_HOUR, BUDGET_USD_PER_MONTH, PRICE_USD_PER_GPU_HOUR)
# A new value asks the operator to build a spec whose build failed once more.
RETRY_BUILD = f"{GROUP}/retry-build"
# Every optimodel.io/ annotation a model may carry (others are reported as unknown).
MODEL_ANNOTATIONS = (*BUDGET_ANNOTATIONS, RETRY_BUILD)

AutoscalingEngine = Literal["hpa", "keda"]
ConditionType = Literal["Built", "Deployed", "Ready", "WithinBudget", "TargetReachable"]
ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal["Pending", "Building", "Deploying", "Ready", "Failed"]


class Autoscaling(SpecModel):
    """Replica autoscaling on GPU utilization, capped by the budget annotations."""

    enabled: bool = Field(
        default=True, description="When false, spec.replicas replicas run and nothing scales."
    )
    engine: AutoscalingEngine = Field(
        default="hpa",
        description="hpa (autoscaling/v2 through prometheus-adapter) or keda (ScaledObject).",
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest serving replicas.")
    max_replicas: int = Field(
        default=8, ge=1, le=1000, description="Most replicas; the budget may cap it lower."
    )
    target_gpu_utilization: int = Field(
        default=70,
        ge=1,
        le=100,
        alias="targetGPUUtilization",
        description="Average GPU utilization (DCGM_FI_DEV_GPU_UTIL, percent) to hold.",
    )
    target_queue_time_microseconds: int | None = Field(
        default=None,
        ge=1,
        alias="targetQueueTimeMicroseconds",
        description="Optional second signal: average Triton queue time per request.",
    )


class SecretKeyRef(SpecModel):
    """Credentials for an S3-compatible store, from a Secret in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=patterns.KUBERNETES_NAME_PATTERN,
        description="Secret name.",
    )
    access_key_id_key: str = Field(
        default="AWS_ACCESS_KEY_ID",
        max_length=253,
        pattern=patterns.SECRET_KEY_PATTERN,
        description="Key of the access key id in the Secret.",
    )
    secret_access_key_key: str = Field(
        default="AWS_SECRET_ACCESS_KEY",
        max_length=253,
        pattern=patterns.SECRET_KEY_PATTERN,
        description="Key of the secret access key in the Secret.",
    )


class PvcStorage(SpecModel):
    """Artifacts on a PersistentVolumeClaim (ReadWriteMany for more than one replica)."""

    claim_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=patterns.KUBERNETES_NAME_PATTERN,
        description="PVC name.",
    )
    sub_path: str = Field(
        default="",
        max_length=1024,
        pattern=patterns.SUB_PATH_PATTERN,
        description="Folder inside the volume (relative, no '..').",
    )


class S3Storage(SpecModel):
    """Artifacts in an S3-compatible bucket (Triton reads s3:// natively)."""

    uri: str = Field(pattern=patterns.S3_URI_PATTERN, description="s3://bucket/prefix")
    endpoint: str | None = Field(
        default=None,
        pattern=patterns.ENDPOINT_PATTERN,
        max_length=1024,
        description="Endpoint URL for non-AWS stores (http(s)://host[:port]).",
    )
    region: str | None = Field(
        default=None,
        pattern=patterns.REGION_PATTERN,
        max_length=63,
        description="Bucket region, e.g. eu-west-1.",
    )
    credentials_secret: SecretKeyRef | None = Field(
        default=None, description="Secret holding the access keys; omit for workload identity."
    )


class Storage(SpecModel):
    """Where built artifacts go; omit to use the operator's default store."""

    pvc: PvcStorage | None = Field(default=None, description="Use a PersistentVolumeClaim.")
    s3: S3Storage | None = Field(default=None, description="Use an S3-compatible bucket.")


class OptimizedModelSpec(SpecModel):
    """Desired state: the model, how to optimize it, how to serve and scale it."""

    source: Source = Field(description="The original model.")
    optimize: Optimize = Field(
        default_factory=Optimize, description="Prune, quantize and the accuracy gate."
    )
    serving: Serving = Field(default_factory=Serving, description="Triton serving settings.")
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="Autoscaling on GPU utilization."
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed replicas when autoscaling is disabled (kubectl scale sets it).",
    )
    storage: Storage | None = Field(default=None, description="Artifact store override.")


class Condition(SpecModel):
    """A Kubernetes-convention status condition."""

    type: ConditionType
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


class BuildStatus(SpecModel):
    """Summary of the builder's report for the artifact currently served."""

    artifact: str = Field(description="Artifact URI of the built Triton model repository.")
    generation: int = Field(ge=0, description="metadata.generation the artifact was built for.")
    size_bytes: int = Field(ge=0, description="Size of the optimized model file.")
    original_size_bytes: int = Field(ge=0, description="Size of the original model's weights.")
    size_reduction: float = Field(ge=0, description="originalSizeBytes / sizeBytes.")
    accuracy_metric: str = Field(description="Metric of the accuracy gate.")
    accuracy: float = Field(description="Measured mean of the metric against the original.")
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    throughput: float | None = Field(default=None, description="Inferences/s at batch 32.")
    spec_hash: str = Field(default="", description="Hash of the build inputs.")
    recipe: str | None = Field(
        default=None,
        description="The published recipe (recipe auto's pick, or the explicit quantize.mode).",
    )
    signature: ModelSignature | None = Field(
        default=None,
        description="Tensors the model takes and returns (renders the served config.pbtxt).",
    )
    source_commit: str | None = Field(
        default=None, description="Commit spec.source.revision resolved to (hf:// sources)."
    )
    adapter_commit: str | None = Field(
        default=None, description="Commit spec.source.adapter.revision resolved to (hf://)."
    )
    work: InferenceWork | None = Field(
        default=None,
        description="The artifact's work per inference (FLOPs by precision, bytes moved), "
        "counted from its graph: what the hardware choice estimates from.",
    )


class FailedBuild(SpecModel):
    """The failed build of the current inputs: kept after its Job is gone (the TTL
    controller), so the same spec is not built again until it changes or the user asks."""

    key: str = Field(description="Build key (inputs and store) of the failed build.")
    retry: str = Field(
        default="",
        max_length=1024,
        description=f"The {RETRY_BUILD} annotation's value the failed Job was created for.",
    )
    generation: int = Field(ge=0, description="metadata.generation the Job was created for.")
    job: str = Field(description="Name of the failed Job.")
    reason: str = Field(max_length=1024, description="The Built condition's reason.")
    message: str = Field(default="", max_length=32768, description="Its message.")


class CapacityCost(SpecModel):
    """The serving pods on one capacity type (on-demand or spot nodes) and their spend."""

    replicas: int = Field(default=0, ge=0, description="Serving pods on such nodes now.")
    current_usd_per_hour: float = Field(default=0.0, ge=0, alias="currentUSDPerHour")
    month_to_date_usd: float = Field(default=0.0, ge=0, alias="monthToDateUSD")


class CostStatus(SpecModel):
    """What serving costs now and what the budget allows."""

    replica_usd_per_hour: float = Field(ge=0, alias="replicaUSDPerHour")
    current_usd_per_hour: float = Field(ge=0, alias="currentUSDPerHour")
    max_affordable_replicas: int | None = Field(default=None, ge=0)
    month_to_date_usd: float = Field(default=0.0, ge=0, alias="monthToDateUSD")
    projected_month_usd: float | None = Field(default=None, ge=0, alias="projectedMonthUSD")
    usd_per_million_inferences: float | None = Field(
        default=None, ge=0, alias="usdPerMillionInferences"
    )
    accounted_at: datetime | None = Field(default=None, description="Last spend accounting.")
    month: str | None = Field(default=None, description="Month (YYYY-MM) of monthToDateUSD.")
    monthly_budget_alerts: list[int] = Field(
        default_factory=list,
        description="Percentages of the monthly budget already announced by an Event this month.",
    )
    on_demand: CapacityCost | None = Field(
        default=None,
        description="Pods on on-demand nodes (each priced by its node's labels), and their "
        "share of monthToDateUSD.",
    )
    spot: CapacityCost | None = Field(
        default=None, description="Pods on spot nodes, and their share of monthToDateUSD."
    )


class HardwareOptionStatus(SpecModel):
    """One hardware type sized for spec.serving.target."""

    type: str = Field(description="Hardware type (a catalog GPU type, or cpu).")
    replicas: int = Field(ge=0, description="Replicas it needs for the target (or can run).")
    basis: Literal["measured", "estimated"] = Field(
        description="measured: an operator hardwareProfiles entry; estimated: the roofline "
        "from the build's work (operator/performance.py)."
    )
    inferences_per_second: float = Field(ge=0, description="One replica, at full batches.")
    latency_p99_ms: float = Field(ge=0, alias="latencyP99Ms", description="p99 at the target.")
    usd_per_hour: float = Field(ge=0, alias="usdPerHour", description="Those replicas' cost.")
    usd_per_million_inferences: float = Field(
        ge=0, alias="usdPerMillionInferences", description="On-demand, at the target rate."
    )
    spot_usd_per_million_inferences: float = Field(
        ge=0, alias="spotUSDPerMillionInferences", description="All on spot, at the target rate."
    )
    meets_target: bool = Field(description="Whether it meets the target within the limits.")


class HardwareStatus(SpecModel):
    """The hardware comparison for spec.serving.target: what serves, and what came next."""

    chosen: HardwareOptionStatus = Field(description="The type the model is served on.")
    runner_up: HardwareOptionStatus | None = Field(default=None, description="The next best type.")
    candidates: int = Field(ge=0, description="Types compared (optimodel plan lists them all).")
    target_reachable: bool = Field(description="Whether the chosen type meets the target.")


class OptimizedModelStatus(SpecModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(default=None, ge=0)
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    build: BuildStatus | None = None
    replicas: int | None = Field(default=None, ge=0)
    selector: str | None = Field(default=None, description="Label selector of serving pods.")
    endpoint: str | None = Field(default=None, description="In-cluster Triton HTTP endpoint.")
    cost: CostStatus | None = None
    hardware: HardwareStatus | None = Field(
        default=None,
        description="The hardware choice for spec.serving.target (gpu.type auto, or a check of "
        "the fixed type).",
    )
    failed_build: FailedBuild | None = Field(
        default=None, description="The failed build of the current spec, until it changes."
    )
