"""The build spec: what the builder is asked to do, independent of Kubernetes.

These pydantic models are the single source of truth for the `source`, `optimize` and
`serving` parts of an `OptimizedModel`; the operator composes them into its API and the CRD
schema is generated from them. Field names are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from optimodel.model_builder import patterns
from optimodel.model_builder.serving_target import (
    RECIPES_BY_TARGET,
    RecipeName,
    mode_refusal,
    serving_target,
)

Task = Literal["feature-extraction", "text-classification"]
PruneMethod = Literal["none", "magnitude", "structured"]
PruneTarget = Literal["ffn", "heads", "ffn-and-heads"]
RecoveryMethod = Literal["none", "distillation"]
QuantizeMode = Literal[
    "none", "int8-dynamic", "int8-static", "fp16", "int8-weight-only", "int4-weight-only"
]
RecipeChoice = Literal["auto", RecipeName]
Accelerator = Literal["none", "tensorrt"]
# Which nodes serving replicas run on (operator/capacity.py renders it for the cluster).
Capacity = Literal["on-demand", "spot", "spot-with-fallback"]
AccuracyMetric = Literal["cosine", "top1-agreement", "accuracy"]
DataFormat = Literal["jsonl", "csv"]

# Whole URIs, no `.`/`..` path segments, a claim or bucket name where one belongs
# (model_builder/patterns.py: every regex engine reads these alike).
SOURCE_URI_PATTERN = (
    rf"^({patterns.HF_URI}|{patterns.FILE_URI}|{patterns.PVC_URI}|{patterns.S3_URI})$"
)
DATA_URI_PATTERN = (
    rf"^({patterns.BUILTIN_URI}|{patterns.FILE_URI}|{patterns.PVC_URI}|{patterns.S3_URI})$"
)
GPU_TYPE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "feature-extraction": ("cosine",),
    "text-classification": ("top1-agreement", "accuracy"),
}


class SpecModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


class Adapter(SpecModel):
    """A PEFT LoRA adapter merged into the base model before pruning and export."""

    uri: str = Field(
        pattern=SOURCE_URI_PATTERN,
        description=(
            "Adapter folder (adapter_config.json + adapter_model.safetensors or .bin, as "
            "peft's save_pretrained writes it): hf://org/name, s3://bucket/prefix, "
            "pvc://claim/path or file:///path. Only LoRA adapters are merged; one trained for "
            "another base model (other name, modules or shapes) fails the build."
        ),
        examples=["hf://acme/minilm-reviews-lora"],
    )
    revision: str | None = Field(
        default=None,
        pattern=patterns.HF_REVISION_PATTERN,
        max_length=255,
        description="Branch, tag or commit of an hf:// adapter; resolved to a commit that "
        "status.build.adapterCommit records.",
    )


class Source(SpecModel):
    """Where the original model comes from and what it does."""

    uri: str = Field(
        pattern=SOURCE_URI_PATTERN,
        description=(
            "Model location. hf://org/name: downloaded from the Hugging Face Hub (or the "
            "operator's mirror, sources.hub.endpoint) with only config, tokenizer and one copy "
            "of the weights (safetensors preferred), cached across builds; a model shipped "
            "with the builder is used as is when no revision is set. s3://bucket/prefix: the "
            "objects under the prefix (same files as on the Hub), read with the operator's "
            "sources.s3 endpoint and credentials. pvc://claim/path: a folder on a "
            "PersistentVolumeClaim of the model's namespace. file:///path: a folder on the "
            "builder's disk (local builds). No spaces, no '.' or '..' path segments."
        ),
        examples=["hf://sentence-transformers/all-MiniLM-L6-v2"],
    )
    task: Task = Field(
        description="What the model computes: mean-pooled sentence embeddings or class logits."
    )
    revision: str | None = Field(
        default=None,
        pattern=patterns.HF_REVISION_PATTERN,
        max_length=255,
        description="Branch, tag or commit of an hf:// model (default: main). Resolved to a "
        "commit when the build starts; report.json and status.build.sourceCommit record it. "
        "Pin a commit for reproducible builds: a moving branch is not rebuilt by itself.",
    )
    adapter: Adapter | None = Field(
        default=None,
        description="A LoRA adapter merged into the model first; the accuracy gate then "
        "compares the optimized artifact with base + adapter.",
    )
    max_sequence_length: int = Field(
        default=128, ge=8, le=8192, description="Longest input in tokens; longer text is truncated."
    )


class Recovery(SpecModel):
    """Accuracy recovery after structured pruning."""

    method: RecoveryMethod = Field(
        default="none",
        description="distillation trains the pruned model to match the original's outputs.",
    )
    steps: int = Field(default=200, ge=1, le=100_000, description="Training steps of recovery.")


class Prune(SpecModel):
    """Weight removal before export."""

    method: PruneMethod = Field(
        default="none",
        description=(
            "magnitude zeroes the smallest weights (smaller when compressed, not faster on dense "
            "kernels); structured removes FFN neurons and/or attention heads so matrices shrink."
        ),
    )
    sparsity: float = Field(
        default=0.0, ge=0.0, le=0.9, description="Fraction of weights (or neurons/heads) removed."
    )
    target: PruneTarget = Field(
        default="ffn", description="What structured pruning removes: FFN neurons, heads, or both."
    )
    recovery: Recovery = Field(
        default_factory=Recovery, description="Accuracy recovery after structured pruning."
    )


class Quantize(SpecModel):
    """Numeric precision of the exported graph."""

    mode: QuantizeMode | None = Field(
        default=None,
        description=(
            "Unset: optimize.recipe decides (auto searches the serving target's recipes). Set, it "
            "wins: int8-dynamic / int8-static (CPU serving; static needs calibrationData), fp16 "
            "(GPU serving), int8/int4-weight-only (MatMulNBits, where the served onnxruntime "
            "has the kernel), none (fp32)."
        ),
    )
    per_channel: bool = Field(
        default=True, description="Per-channel int8 scales: slower to build, far more accurate."
    )
    keep_fp32_nodes: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Number of most accuracy-sensitive MatMuls left in fp32 (fallback).",
    )


class AccuracyGate(SpecModel):
    """The accuracy gate: the build fails, and nothing is published, below these numbers."""

    metric: AccuracyMetric = Field(
        default="cosine",
        description=(
            "cosine (embeddings vs the original), top1-agreement (classifier vs the original) or "
            "accuracy (classifier vs labels in evalData)."
        ),
    )
    min: float = Field(
        default=0.99, ge=0.0, le=1.0, description="Lowest acceptable mean of the metric."
    )
    worst_case_min: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Lowest acceptable single-example score (cosine only), e.g. 0.95.",
    )


class DataRef(SpecModel):
    """A text data set: calibration or evaluation examples."""

    uri: str = Field(
        pattern=DATA_URI_PATTERN,
        description="builtin://eval-texts or builtin://calibration-texts (shipped with the "
        "builder), s3://bucket/key (one object, read with the operator's sources.s3 settings), "
        "pvc://claim/path (a file on a PersistentVolumeClaim) or file:///path (local builds); no "
        "spaces, no '.' or '..' path segments.",
    )
    format: DataFormat = Field(default="jsonl", description="jsonl (one object a line) or csv.")
    text_field: str = Field(
        default="text", min_length=1, max_length=256, description="Column holding the text."
    )
    label_field: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Column holding the class label (needed for metric accuracy).",
    )
    max_samples: int = Field(default=256, ge=1, le=100_000, description="Examples used at most.")


class Optimize(SpecModel):
    """The optimization pipeline: prune, export, quantize, then gate on accuracy."""

    recipe: RecipeChoice = Field(
        default="auto",
        description=(
            "auto: build every candidate recipe for the serving target (CPU: int8 variants and "
            "fused fp32; GPU: fp16 fused/plain and fused fp32), gate and benchmark each, publish "
            "the fastest that passes. A recipe name builds that candidate only. An explicit "
            "quantize.mode wins over both."
        ),
    )
    search_seconds: int = Field(
        default=180,
        ge=1,
        le=3600,
        description=(
            "Time recipe auto may spend on candidates; those not started by then are skipped "
            "(recorded in report.json as such)."
        ),
    )
    prune: Prune = Field(default_factory=Prune, description="Weight removal before export.")
    quantize: Quantize = Field(default_factory=Quantize, description="Numeric precision.")
    accuracy: AccuracyGate = Field(
        default_factory=AccuracyGate, description="The accuracy gate against the original model."
    )
    calibration_data: DataRef | None = Field(
        default=None, description="Calibration examples; required by quantize.mode int8-static."
    )
    eval_data: DataRef | None = Field(
        default=None,
        description="Evaluation examples for the gate; defaults to the shipped builtin://eval-texts.",
    )


# serving.gpu.type's value asking the operator to choose the type (operator/performance.py).
AUTO_GPU_TYPE = "auto"


class Gpu(SpecModel):
    """GPUs per serving replica."""

    type: str = Field(
        default="nvidia-l4",
        pattern=GPU_TYPE_PATTERN,
        description=(
            "GPU type: a key of the operator's hardware catalog (e.g. nvidia-l4, nvidia-h100), "
            "or auto: after the build the operator picks the type (and replica count) with the "
            "lowest cost that meets serving.target, among `types` (default: every GPU type of "
            "its catalog the admin policy allows)."
        ),
    )
    types: list[Annotated[str, Field(pattern=GPU_TYPE_PATTERN, max_length=63)]] = Field(
        default_factory=list,
        max_length=32,
        description="With type auto: the GPU types it may choose from; empty: every GPU type "
        "of the operator's catalog.",
    )
    count: int = Field(default=1, ge=0, le=8, description="GPUs per replica; 0 serves on CPU.")


class ServingTarget(SpecModel):
    """What the serving must sustain: the hardware choice sizes replicas for it."""

    inferences_per_second: float = Field(
        gt=0, le=10_000_000, description="Inferences per second to sustain (the peak to plan for)."
    )
    latency_p99_ms: float | None = Field(
        default=None,
        gt=0,
        le=600_000,
        alias="latencyP99Ms",
        description="Highest acceptable p99 latency per request, in milliseconds; unset: "
        "throughput only.",
    )


class Serving(SpecModel):
    """How Triton serves the artifact: batching, instances, hardware."""

    gpu: Gpu = Field(default_factory=Gpu, description="GPUs per serving replica.")
    target: ServingTarget | None = Field(
        default=None,
        description="Throughput (and p99) to plan for: gpu.type auto picks the cheapest type "
        "that meets it; with a fixed type the operator reports whether it does "
        "(status.hardware).",
    )
    max_batch_size: int = Field(
        default=32, ge=1, le=1024, description="Largest batch Triton forms (max_batch_size)."
    )
    dynamic_batching: bool = Field(
        default=True, description="Let Triton merge concurrent requests into batches."
    )
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=list,
        max_length=16,
        description="Batch sizes the dynamic batcher aims for; each at most maxBatchSize.",
    )
    max_queue_delay_microseconds: int = Field(
        default=500,
        ge=0,
        le=1_000_000,
        description="How long a request may wait for a fuller batch.",
    )
    instances: int = Field(
        default=1,
        ge=1,
        le=16,
        description=(
            "Model instances (instance_group count): on each GPU of the replica when "
            "gpu.count > 0 (gpu.count x instances in all), per replica on CPU."
        ),
    )
    response_cache: bool = Field(
        default=False, description="Enable Triton's response cache for repeated inputs."
    )
    image: str | None = Field(
        default=None,
        pattern=patterns.IMAGE_PATTERN,
        max_length=512,
        description="Triton image override (registry/path:tag[@digest]); defaults to the "
        "operator's setting.",
    )
    accelerator: Accelerator = Field(
        default="none",
        description=(
            "GPU execution accelerator of Triton's onnxruntime backend: none (CUDA provider) or "
            "tensorrt (FP16 engines built at load, cached; profile shapes from maxBatchSize x "
            "source.maxSequenceLength)."
        ),
    )
    capacity: Capacity = Field(
        default="on-demand",
        description=(
            "Node capacity of the replicas above the on-demand base: on-demand (all replicas "
            "on on-demand nodes), spot (only on spot nodes) or spot-with-fallback (prefer spot, "
            "run on on-demand when no spot node has room). Spot needs the operator's "
            "serving.capacity.provider setting."
        ),
    )
    on_demand_replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description=(
            "Replicas that always run on on-demand nodes when capacity is spot or "
            "spot-with-fallback (the base; only the rest scale); unset: "
            "autoscaling.minReplicas (without autoscaling, also at most replicas)."
        ),
    )


class BuildSpec(SpecModel):
    """Everything the builder needs: one model's source, optimization and serving shape."""

    name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Model name in the Triton repository.",
    )
    source: Source
    optimize: Optimize = Field(default_factory=Optimize)
    serving: Serving = Field(default_factory=Serving)


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a manifest: where, what, and how to fix it."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.fix})"


def source_problems(source: Source, prefix: str = "spec") -> list[SpecProblem]:
    """Revisions name Hub commits: they mean nothing for s3://, pvc:// or file:// sources."""
    problems: list[SpecProblem] = []
    if source.revision is not None and not source.uri.startswith("hf://"):
        problems.append(
            SpecProblem(
                f"{prefix}.source.revision",
                f"revision {source.revision!r} applies to hf:// sources, not {source.uri!r}",
                "remove revision (or point source.uri at hf://org/name)",
            )
        )
    adapter = source.adapter
    if adapter is not None and adapter.revision is not None and not adapter.uri.startswith("hf://"):
        problems.append(
            SpecProblem(
                f"{prefix}.source.adapter.revision",
                f"revision {adapter.revision!r} applies to hf:// adapters, not {adapter.uri!r}",
                "remove adapter.revision (or point adapter.uri at hf://org/name)",
            )
        )
    return problems


def build_spec_problems(
    source: Source, optimize: Optimize, serving: Serving, prefix: str = "spec"
) -> list[SpecProblem]:
    """Rules the schema cannot express, over the builder's part of a spec."""
    problems: list[SpecProblem] = []
    problems += source_problems(source, prefix)
    allowed = METRICS_BY_TASK[source.task]
    gate = optimize.accuracy
    if gate.metric not in allowed:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.accuracy.metric",
                f"metric {gate.metric!r} does not apply to task {source.task!r}",
                f"use one of: {', '.join(allowed)}",
            )
        )
    if gate.worst_case_min is not None and gate.metric != "cosine":
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.accuracy.worstCaseMin",
                "worstCaseMin is defined for metric cosine only",
                "remove worstCaseMin or use metric cosine",
            )
        )
    if gate.worst_case_min is not None and gate.worst_case_min > gate.min:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.accuracy.worstCaseMin",
                f"worstCaseMin {gate.worst_case_min} is above the mean threshold min {gate.min}",
                "set worstCaseMin at or below min",
            )
        )
    if gate.metric == "accuracy" and (
        optimize.eval_data is None or optimize.eval_data.label_field is None
    ):
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.evalData.labelField",
                "metric accuracy needs labelled evaluation data",
                "set optimize.evalData with a labelField, or use metric top1-agreement",
            )
        )
    quantize = optimize.quantize
    if quantize.mode == "int8-static" and optimize.calibration_data is None:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.calibrationData",
                "quantize.mode int8-static needs calibration data",
                "add optimize.calibrationData (e.g. uri: builtin://eval-texts) or use int8-dynamic",
            )
        )
    if quantize.mode == "fp16" and serving.gpu.count == 0:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.quantize.mode",
                "fp16 gives no speed-up on CPU serving (onnxruntime computes in fp32 there)",
                "set serving.gpu.count >= 1, or use int8-dynamic for CPU",
            )
        )
    if quantize.keep_fp32_nodes and quantize.mode is None:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.quantize.keepFp32Nodes",
                "keepFp32Nodes applies to an explicit int8 quantize.mode; recipe auto tries its "
                "own ladder of kept MatMuls",
                "remove keepFp32Nodes, or set quantize.mode: int8-dynamic / int8-static",
            )
        )
    elif quantize.keep_fp32_nodes and not (quantize.mode or "").startswith("int8"):
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.quantize.keepFp32Nodes",
                f"keepFp32Nodes applies to int8 modes, not {quantize.mode!r}",
                "remove keepFp32Nodes or use int8-dynamic / int8-static",
            )
        )
    problems.extend(target_problems(optimize, serving, prefix))
    problems.extend(gpu_choice_problems(serving, prefix))
    prune = optimize.prune
    if prune.method != "none" and prune.sparsity == 0.0:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.prune.sparsity",
                f"prune.method {prune.method!r} with sparsity 0 removes nothing",
                "set sparsity above 0 (e.g. 0.3) or method: none",
            )
        )
    if prune.method == "none" and prune.sparsity > 0.0:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.prune.method",
                f"sparsity {prune.sparsity} is set but prune.method is none",
                "set method: magnitude or structured, or remove sparsity",
            )
        )
    if prune.recovery.method != "none" and prune.method != "structured":
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.prune.recovery.method",
                "recovery applies to structured pruning only",
                "set prune.method: structured or recovery.method: none",
            )
        )
    for index, size in enumerate(serving.preferred_batch_sizes):
        if size < 1 or size > serving.max_batch_size:
            problems.append(
                SpecProblem(
                    f"{prefix}.serving.preferredBatchSizes[{index}]",
                    f"preferred batch size {size} is outside 1..maxBatchSize "
                    f"({serving.max_batch_size})",
                    f"use sizes between 1 and {serving.max_batch_size}",
                )
            )
    if serving.preferred_batch_sizes and not serving.dynamic_batching:
        problems.append(
            SpecProblem(
                f"{prefix}.serving.preferredBatchSizes",
                "preferredBatchSizes needs dynamicBatching",
                "set dynamicBatching: true or remove preferredBatchSizes",
            )
        )
    return problems


def target_problems(
    optimize: Optimize, serving: Serving, prefix: str = "spec"
) -> list[SpecProblem]:
    """What the serving target (serving.gpu.count) cannot run: modes, recipes, accelerators."""
    problems: list[SpecProblem] = []
    target = serving_target(serving.gpu.count)
    where = f"{target.upper()} serving (serving.gpu.count {serving.gpu.count})"
    mode = optimize.quantize.mode
    refusal = None if mode is None else mode_refusal(mode, target)
    if refusal is not None:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.quantize.mode",
                refusal.reason,
                refusal.fix,
            )
        )
    recipe = optimize.recipe
    if recipe != "auto" and mode is not None:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.recipe",
                f"recipe {recipe!r} and quantize.mode {mode!r} are both set; the mode would win",
                "keep one of optimize.recipe and optimize.quantize.mode",
            )
        )
    elif recipe != "auto" and recipe not in RECIPES_BY_TARGET[target]:
        problems.append(
            SpecProblem(
                f"{prefix}.optimize.recipe",
                f"recipe {recipe!r} is not a {target.upper()} recipe, and {where} decides",
                f"use auto or one of: {', '.join(RECIPES_BY_TARGET[target])}",
            )
        )
    if serving.accelerator == "tensorrt" and target == "cpu":
        problems.append(
            SpecProblem(
                f"{prefix}.serving.accelerator",
                "tensorrt is a GPU accelerator and serving.gpu.count is 0",
                "set serving.gpu.count >= 1, or accelerator: none",
            )
        )
    return problems


def gpu_choice_problems(serving: Serving, prefix: str = "spec") -> list[SpecProblem]:
    """serving.gpu.type auto, its candidate list and the target it chooses against."""
    gpu = serving.gpu
    where = f"{prefix}.serving.gpu"
    problems: list[SpecProblem] = []
    auto = gpu.type == AUTO_GPU_TYPE
    if auto and serving.target is None:
        problems.append(
            SpecProblem(
                f"{prefix}.serving.target",
                "gpu.type auto chooses the cheapest type that meets a target, and none is set",
                "set serving.target.inferencesPerSecond (and latencyP99Ms), or name a GPU type",
            )
        )
    if auto and gpu.count == 0:
        problems.append(
            SpecProblem(
                f"{where}.type",
                "auto chooses among GPU types and gpu.count is 0 (CPU serving; the CPU recipe "
                "is built for it)",
                "set gpu.count >= 1 to choose a GPU type, or remove type (a target with "
                "gpu.count 0 sizes CPU replicas)",
            )
        )
    if gpu.types and not auto:
        problems.append(
            SpecProblem(
                f"{where}.types",
                f"types lists the candidates of type auto, and type is {gpu.type!r}",
                "set type: auto, or remove types",
            )
        )
    seen: set[str] = set()
    for index, name in enumerate(gpu.types):
        if name in (AUTO_GPU_TYPE, "cpu"):
            problems.append(
                SpecProblem(
                    f"{where}.types[{index}]",
                    f"{name!r} is not a GPU type",
                    "list GPU types of the operator's catalog, e.g. nvidia-l4"
                    + ("; gpu.count 0 serves on CPU" if name == "cpu" else ""),
                )
            )
        elif name in seen:
            problems.append(
                SpecProblem(f"{where}.types[{index}]", f"{name!r} is listed twice", "list once")
            )
        seen.add(name)
    return problems
