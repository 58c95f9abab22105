"""The build report (`report.json`): the contract between the builder, the operator's status,
local serving and the benchmarks. Every number in it is measured by the builder run.

Artifact layout written by the builder (the folder is a Triton model repository):

    OUT/<name>/config.pbtxt      rendered by render_triton_config (onnxruntime backend)
    OUT/<name>/1/model.onnx      the optimized model
    OUT/<name>/tokenizer/        tokenizer files of the source model
    OUT/<name>/report.json       this report
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from optimodel.model_builder.spec import Optimize, Source, SpecModel
from optimodel.model_builder.triton_config import ModelSignature

REPORT_FILE = "report.json"
MODEL_FILE = "model.onnx"
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "config.pbtxt"

StepName = Literal["load", "prune", "recover", "export", "quantize", "evaluate", "benchmark"]


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


class BuildReport(SpecModel):
    """Everything a build did and measured."""

    name: str
    spec_hash: str = Field(description="build_inputs_hash(source, optimize) of the build.")
    passed: bool = Field(description="True only when the accuracy gate passed and files exist.")
    failure: str | None = Field(default=None, description="Why the build failed, if it did.")
    source_uri: str
    task: str
    steps: list[StepRecord] = Field(default_factory=list)
    original: Measurement | None = None
    optimized: Measurement | None = None
    accuracy: AccuracyResult | None = None
    signature: ModelSignature | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    hashes: dict[str, str] = Field(default_factory=dict, description="sha256 of each file.")
    created_at: datetime

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


def build_inputs_hash(source: Source, optimize: Optimize) -> str:
    """Stable hash of what determines the artifact; serving settings are deliberately out,
    so a batching or instance change never triggers a rebuild."""
    payload = {
        "source": source.model_dump(mode="json", by_alias=True),
        "optimize": optimize.model_dump(mode="json", by_alias=True),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
