"""The build report (`report.json`): the contract between the builder, the operator's status,
local serving and the benchmarks. Every number in it is measured by the builder run.

Artifact layout written by the builder: `OUT/<name>/` is a Triton model repository serving
text (the ensemble `<name>`, its tokenizer step, the raw-tensor model `<name>-model`, the
answer step), fixed in one place: `served/layout.py`. This report is `OUT/<name>/report.json`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from optimodel.model_builder.machine import MachineInfo
from optimodel.model_builder.serving_choice import ServingChoice
from optimodel.model_builder.serving_target import Target, serving_target
from optimodel.model_builder.spec import Optimize, Serving, Source, SpecModel
from optimodel.model_builder.triton_config import ModelSignature
from optimodel.model_builder.work import InferenceWork

REPORT_FILE = "report.json"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"

StepName = Literal["load", "prune", "recover", "export", "quantize", "evaluate", "benchmark"]
TerminationReason = Literal[
    "Built",
    "AccuracyBelowThreshold",
    "InvalidSpec",
    "BuildFailed",
    # Fetching the inputs (model, adapter, data) or uploading the artifact failed for good.
    "SourceNotFound",
    "SourceAccessDenied",
    "SourceUnavailable",
    "AdapterMismatch",
    "StorageFailed",
    "StorageNotFound",
    "StorageAccessDenied",
]

# Kubernetes keeps at most 4096 bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096


class StepRecord(SpecModel):
    """One pipeline stage as it ran."""

    name: StepName
    detail: str = Field(description="What the step did, in words (method, sparsity, mode…).")
    seconds: float = Field(ge=0)
    size_bytes: int | None = Field(default=None, ge=0, description="Model size after the step.")
    accuracy: float | None = Field(
        default=None, description="Gate metric measured right after the step, when measured."
    )


class Measurement(SpecModel):
    """Size and speed of one model variant, measured in the same run."""

    size_bytes: int = Field(ge=0)
    latency_p50_ms: float | None = Field(default=None, ge=0, alias="latencyP50Ms")
    latency_p95_ms: float | None = Field(default=None, ge=0, alias="latencyP95Ms")
    throughput: float | None = Field(
        default=None, ge=0, description="Inferences per second at the benchmark batch size."
    )
    batch_size: int = Field(default=32, ge=1, description="Batch size of the throughput figure.")
    sequence_length: int = Field(default=64, ge=1)
    threads: int | None = Field(default=None, ge=1)


class AccuracyResult(SpecModel):
    """The accuracy gate's verdict."""

    metric: str
    mean: float
    min: float | None = None
    threshold: float
    worst_case_threshold: float | None = None
    samples: int = Field(ge=0)
    passed: bool


class InputLimits(SpecModel):
    """What token ids the served model accepts: what serving checks requests against."""

    vocab_size: int = Field(ge=1, description="Ids must lie in 0..vocabSize-1.")
    max_sequence_length: int = Field(ge=1, description="Most tokens the model's positions hold.")


class RecipeTrial(SpecModel):
    """One candidate recipe of the search: what it made, how it scored, why it lost."""

    recipe: str
    summary: str = Field(description="What the recipe does, in words.")
    detail: str = Field(default="", description="What building it did (op counts, kept nodes).")
    op_summary: dict[str, int] = Field(
        default_factory=dict, description="Counts of the graph's notable ops (int8, fused, fp32)."
    )
    size_bytes: int | None = Field(default=None, ge=0)
    throughput: float | None = Field(
        default=None, ge=0, description="Inferences/s at the search's batch (32 x 64 tokens)."
    )
    latency_p50_ms: float | None = Field(
        default=None, ge=0, alias="latencyP50Ms", description="Median latency at batch 1."
    )
    fidelity_metric: str | None = None
    fidelity_mean: float | None = None
    fidelity_worst: float | None = Field(
        default=None, description="Worst single example (cosine only)."
    )
    build_seconds: float = Field(default=0.0, ge=0, description="Building and scoring it.")
    scored_on: str | None = Field(
        default=None, description="Execution provider and precision it was scored with."
    )
    passed: bool = Field(default=False, description="Passed the accuracy gate.")
    chosen: bool = Field(default=False, description="The published artifact.")
    rejected: str | None = Field(default=None, description="Why it was not published.")


class BuildReport(SpecModel):
    """Everything a build did and measured."""

    name: str
    spec_hash: str = Field(description="build_inputs_hash(source, optimize) of the build.")
    passed: bool = Field(description="True only when the accuracy gate passed and files exist.")
    failure: str | None = Field(default=None, description="Why the build failed, if it did.")
    source_uri: str
    source_commit: str | None = Field(
        default=None, description="The commit source.revision resolved to (hf:// sources)."
    )
    adapter_uri: str | None = Field(default=None, description="The merged LoRA adapter.")
    adapter_commit: str | None = Field(
        default=None, description="The commit source.adapter.revision resolved to (hf://)."
    )
    task: str
    steps: list[StepRecord] = Field(default_factory=list)
    original: Measurement | None = None
    optimized: Measurement | None = None
    accuracy: AccuracyResult | None = None
    signature: ModelSignature | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    hashes: dict[str, str] = Field(default_factory=dict, description="sha256 of each file.")
    created_at: datetime
    serving_choice: ServingChoice | None = Field(
        default=None,
        description="Batching and instances chosen from a serving sweep (`optimodel tune`).",
    )
    input_limits: InputLimits | None = Field(
        default=None, description="Token ids and lengths the model accepts (serving checks)."
    )
    target: Target | None = Field(
        default=None, description="Serving target the artifact was built for (gpu.count > 0)."
    )
    recipe: str | None = Field(
        default=None, description="The published recipe (or the explicit quantize.mode)."
    )
    trials: list[RecipeTrial] = Field(
        default_factory=list, description="Every candidate of recipe auto, in search order."
    )
    machine: MachineInfo | None = Field(
        default=None, description="CPU model, ISA flags and GPU of the build machine."
    )
    work: InferenceWork | None = Field(
        default=None,
        description="The artifact's work per inference at the served sequence length, counted "
        "from its graph (model_builder/work.py): what the hardware choice estimates from.",
    )

    @property
    def size_reduction(self) -> float | None:
        """original size / optimized size."""
        if self.original is None or self.optimized is None or not self.optimized.size_bytes:
            return None
        return self.original.size_bytes / self.optimized.size_bytes

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(by_alias=True, indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> BuildReport:
        return cls.model_validate_json(path.read_text())


def build_inputs_hash(source: Source, optimize: Optimize, serving: Serving | None = None) -> str:
    """Stable hash of what determines the artifact; serving settings are deliberately out,
    so a batching or instance change never triggers a rebuild. Only the serving target (CPU
    or GPU, from `serving`) goes in: it decides the recipe."""
    payload: dict[str, object] = {
        "source": source.model_dump(mode="json", by_alias=True),
        "optimize": optimize.model_dump(mode="json", by_alias=True),
    }
    if serving is not None:
        payload["target"] = serving_target(serving.gpu.count)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BuildSummary(SpecModel):
    """The part of a BuildReport that fits a pod's termination message (and status.build)."""

    spec_hash: str
    size_bytes: int = Field(ge=0)
    original_size_bytes: int = Field(ge=0)
    accuracy_metric: str
    accuracy: float
    latency_p50_ms: float | None = Field(default=None, alias="latencyP50Ms")
    throughput: float | None = None
    signature: ModelSignature | None = None
    recipe: str | None = None
    source_commit: str | None = None
    adapter_commit: str | None = None
    work: InferenceWork | None = None

    @classmethod
    def from_report(cls, report: BuildReport) -> BuildSummary:
        if report.accuracy is None or report.optimized is None or report.original is None:
            raise ValueError(f"build report of {report.name!r} has no accuracy or sizes yet")
        return cls(
            spec_hash=report.spec_hash,
            size_bytes=report.optimized.size_bytes,
            original_size_bytes=report.original.size_bytes,
            accuracy_metric=report.accuracy.metric,
            accuracy=report.accuracy.mean,
            latency_p50_ms=report.optimized.latency_p50_ms,
            throughput=report.optimized.throughput,
            signature=report.signature,
            recipe=report.recipe,
            source_commit=report.source_commit,
            adapter_commit=report.adapter_commit,
            work=report.work,
        )


class TerminationMessage(SpecModel):
    """What the builder Job leaves in its termination message; the operator reads exactly this.

    Success: {"reason":"Built","report":{...}}; failure: reason, message and, for the gate,
    the measured accuracy, the threshold and the step that caused the drop.
    """

    reason: TerminationReason
    message: str | None = None
    accuracy: float | None = None
    threshold: float | None = None
    step: str | None = Field(default=None, description="The step that caused an accuracy drop.")
    report: BuildSummary | None = None

    def render(self) -> str:
        """One line of compact JSON, shortened (message first) to fit the 4096-byte limit."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) < TERMINATION_MESSAGE_LIMIT or not self.message:
            return text
        overflow = len(text.encode()) - TERMINATION_MESSAGE_LIMIT + 16
        keep = max(0, len(self.message.encode()) - overflow)
        short = self.message.encode()[:keep].decode(errors="ignore") + "…"
        shortened = self.model_copy(update={"message": short})
        return shortened.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, text: str) -> TerminationMessage:
        return cls.model_validate_json(text)
