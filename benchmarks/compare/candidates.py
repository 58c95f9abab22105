"""The contenders, each as something to time and something to score.

Every contender is prepared from the same loaded original (`model_builder.load`), timed with
the builder's own runners (`model_builder.benchmark.torch_runner` / `onnx_runner`) and scored
on the same texts against the same PyTorch fp32 outputs:

- pytorch-fp32: the original model in eager PyTorch as `from_pretrained` gives it, with
  transformers' default (sdpa) attention: the do-nothing baseline;
- pytorch-fp32-eager-attention: the same with eager attention (what the builder exports);
- torch-ao-int8: `torch.ao.quantization.quantize_dynamic` on every nn.Linear (qint8) of the
  default model;
- onnxruntime-fp32: the plain ONNX export in onnxruntime, no quantization or pruning
  (graph fusion at session load, which every onnxruntime user gets by default);
- optimum-*: Optimum's ORT quantizer presets, quantized in the Optimum venv, run here;
- optimodel-*: `run_build` of one BuildSpec per variant (the product itself).
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from optimodel.model_builder.benchmark import Runner, onnx_runner, torch_runner
from optimodel.model_builder.data import DEFAULT_EVAL_DATA
from optimodel.model_builder.evaluate import onnx_outputs, onnx_session
from optimodel.model_builder.export import export_onnx
from optimodel.model_builder.load import LoadedModel
from optimodel.model_builder.modeling import (
    TaskModel,
    TokenBatch,
    length_sorted_batches,
    torch_outputs,
)
from optimodel.model_builder.pipeline import ProgressCallback, run_build
from optimodel.model_builder.quantize import model_size_bytes
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.served.layout import ServedRepository
from optimodel.model_builder.spec import BuildSpec, Source

Family = Literal["baseline", "peer", "optimum", "optimodel"]
FloatArray = npt.NDArray[np.float32]
Outputs = Callable[[list[str]], FloatArray]


@dataclass
class Contender:
    """One way of running the model: timed by `runner`, scored by `outputs`."""

    name: str
    label: str
    family: Family
    runner: Runner
    outputs: Outputs
    size_bytes: int
    notes: str = ""
    build: dict[str, Any] = field(default_factory=dict)


CPU_SERVING: dict[str, Any] = {"gpu": {"count": 0}}
GPU_SERVING: dict[str, Any] = {"gpu": {"count": 1}}
# The gate for MiniLM-class embeddings; the auto variant is held to it (it picks the
# fastest candidate that passes), the fixed-mode variants are built at gate 0 and reported.
AUTO_GATE: dict[str, Any] = {"metric": "cosine", "min": 0.99, "worstCaseMin": 0.95}


@dataclass(frozen=True)
class OptimodelVariant:
    """One optimodel build of the comparison: a name, its spec.optimize and spec.serving
    (wire format; the serving target decides which quantize modes are allowed), and the gate
    it is built against (None: 0, every variant is built and reported)."""

    name: str
    label: str
    optimize: dict[str, Any]
    serving: dict[str, Any] = field(default_factory=lambda: dict(CPU_SERVING))
    accuracy: dict[str, Any] | None = None


def optimodel_variants(recovery_steps: int) -> list[OptimodelVariant]:
    """recipe auto for CPU serving, every quantize mode the served Triton can run (int8
    weight-only needs onnxruntime >= 1.22, the Triton 24.10 image has 1.19.2), and structured
    pruning without and with recovery. All are timed here, on the CPU; fp16 is a GPU format
    (built for GPU serving) whose CPU row shows size and fidelity, not GPU speed."""
    pruned = {"method": "structured", "target": "ffn", "sparsity": 0.5}
    return [
        OptimodelVariant(
            "optimodel-auto",
            "optimodel recipe auto (CPU serving, at the gate)",
            {"recipe": "auto"},
            accuracy=AUTO_GATE,
        ),
        OptimodelVariant(
            "optimodel-int8",
            "optimodel int8 dynamic per-channel (default)",
            {"quantize": {"mode": "int8-dynamic"}},
        ),
        OptimodelVariant(
            "optimodel-int8-static",
            "optimodel int8 static (calibrated)",
            {
                "quantize": {"mode": "int8-static"},
                "calibrationData": {"uri": "builtin://calibration-texts", "maxSamples": 64},
            },
        ),
        OptimodelVariant(
            "optimodel-fp16",
            "optimodel fp16 (GPU format, timed on CPU)",
            {"quantize": {"mode": "fp16"}},
            serving=GPU_SERVING,
        ),
        OptimodelVariant(
            "optimodel-int4-weight-only",
            "optimodel int4 weight-only",
            {"quantize": {"mode": "int4-weight-only"}},
        ),
        OptimodelVariant(
            "optimodel-pruned-int8",
            "optimodel 50% FFN pruned + int8",
            {"prune": pruned, "quantize": {"mode": "int8-dynamic"}},
        ),
        OptimodelVariant(
            "optimodel-pruned-recovered-int8",
            f"optimodel 50% FFN pruned + distilled ({recovery_steps} steps) + int8",
            {
                "prune": {
                    **pruned,
                    "recovery": {"method": "distillation", "steps": recovery_steps},
                },
                "quantize": {"mode": "int8-dynamic"},
            },
        ),
    ]


def _pooled(loaded: LoadedModel, output: FloatArray, mask: npt.NDArray[np.int64]) -> FloatArray:
    """An encoder's last_hidden_state pooled as the original's head pools it."""
    if output.ndim == 2:
        return output
    if loaded.task_model.pooling == "cls":
        pooled = output[:, 0]
    else:
        weights = mask[:, :, None].astype(output.dtype)
        pooled = (output * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    if loaded.task_model.normalize:
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return np.asarray(pooled, dtype=np.float32)


def foreign_onnx_contender(
    name: str, label: str, path: Path, loaded: LoadedModel, threads: int, notes: str
) -> Contender:
    """An ONNX file not made by optimodel (token_type_ids input, hidden-state output)."""
    session = onnx_session(path, threads)
    wanted = {tensor.name for tensor in session.get_inputs()}

    def feeds(batch: TokenBatch) -> dict[str, npt.NDArray[np.int64]]:
        values = batch.feeds()
        if "token_type_ids" in wanted:
            values["token_type_ids"] = np.zeros_like(batch.input_ids)
        return {key: value for key, value in values.items() if key in wanted}

    def run(batch: TokenBatch) -> object:
        (output,) = session.run(None, feeds(batch))[:1]
        return _pooled(loaded, np.asarray(output), batch.attention_mask)

    def outputs(texts: list[str]) -> FloatArray:
        results: list[FloatArray | None] = [None] * len(texts)
        for indices, batch in length_sorted_batches(
            loaded.tokenizer, texts, loaded.max_sequence_length, 32
        ):
            pooled = run(batch)
            assert isinstance(pooled, np.ndarray)
            for row, index in enumerate(indices):
                results[index] = pooled[row]
        return np.stack([r for r in results if r is not None])

    return Contender(name, label, "optimum", run, outputs, model_size_bytes(path), notes)


def default_attention_model(loaded: LoadedModel) -> TaskModel:
    """The original as plain `from_pretrained` loads it (transformers' default attention).

    The builder loads eager attention because it exports to plain MatMuls; a user who does
    nothing gets sdpa, which is usually the faster of the two in PyTorch.
    """
    import transformers

    auto: Any = (
        transformers.AutoModelForSequenceClassification
        if loaded.task == "text-classification"
        else transformers.AutoModel
    )
    model = auto.from_pretrained(loaded.source_dir, local_files_only=True).eval()
    head = loaded.task_model
    return TaskModel(model, head.task, pooling=head.pooling, normalize=head.normalize).eval()


def _torch_contender(
    name: str, label: str, family: Family, model: TaskModel, loaded: LoadedModel, size: int,
    notes: str,
) -> Contender:  # fmt: skip
    def outputs(texts: list[str]) -> FloatArray:
        return torch_outputs(model, loaded.tokenizer, texts, loaded.max_sequence_length)

    return Contender(name, label, family, torch_runner(model), outputs, size, notes)


def baseline_contenders(loaded: LoadedModel) -> tuple[Contender, Contender, TaskModel]:
    """PyTorch fp32 with default attention (the baseline) and with eager attention."""
    default = default_attention_model(loaded)
    attention = getattr(default.model.config, "_attn_implementation", "default")
    baseline = _torch_contender(
        "pytorch-fp32",
        "PyTorch eager fp32 (baseline)",
        "baseline",
        default,
        loaded,
        loaded.size_bytes,
        f"from_pretrained as is ({attention} attention); size = the safetensors file",
    )
    eager = _torch_contender(
        "pytorch-fp32-eager-attention",
        "PyTorch eager fp32, eager attention",
        "peer",
        loaded.task_model,
        loaded,
        loaded.size_bytes,
        "attn_implementation='eager', as the builder loads it for export",
    )
    return baseline, eager, default


def torch_ao_contender(loaded: LoadedModel, original: TaskModel) -> Contender:
    with warnings.catch_warnings():
        # torch.ao warns that its quantized tensor API is deprecated; it is still what
        # "just use torch dynamic quantization" means today.
        warnings.simplefilter("ignore")
        model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(original), {torch.nn.Linear}, dtype=torch.qint8
        )
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return _torch_contender(
        "torch-ao-int8",
        "torch.ao dynamic int8",
        "peer",
        model,
        loaded,
        len(buffer.getvalue()),
        "quantize_dynamic({nn.Linear}, qint8) of the baseline; size = torch.save(state_dict)",
    )


def _onnx_contender(
    name: str,
    label: str,
    family: Family,
    path: Path,
    loaded: LoadedModel,
    threads: int,
    notes: str,
    build: dict[str, Any] | None = None,
) -> Contender:
    def outputs(texts: list[str]) -> FloatArray:
        return onnx_outputs(
            path, loaded.tokenizer, texts, loaded.max_sequence_length, threads=threads
        )

    return Contender(
        name,
        label,
        family,
        onnx_runner(path, threads),
        outputs,
        model_size_bytes(path),
        notes,
        build or {},
    )


def onnxruntime_fp32_contender(loaded: LoadedModel, work: Path, threads: int) -> Contender:
    path = work / "plain-export.onnx"
    export_onnx(loaded.task_model, loaded.tokenizer, path, max_length=loaded.max_sequence_length)
    return _onnx_contender(
        "onnxruntime-fp32",
        "onnxruntime fp32 (plain export)",
        "peer",
        path,
        loaded,
        threads,
        "torch.onnx export (opset 17), default session options, no quantization",
    )


def build_summary(report: BuildReport) -> dict[str, Any]:
    """What the benchmark keeps of a build report."""
    return {
        "spec_hash": report.spec_hash,
        "steps": [
            {"name": s.name, "seconds": s.seconds, "accuracy": s.accuracy, "detail": s.detail}
            for s in report.steps
        ],
        "gate_metric": report.accuracy.metric if report.accuracy else None,
        "gate_mean": report.accuracy.mean if report.accuracy else None,
        "gate_min": report.accuracy.min if report.accuracy else None,
        "build_seconds": round(sum(s.seconds for s in report.steps), 2),
    }


def optimodel_contender(
    variant: OptimodelVariant,
    source: Source,
    loaded: LoadedModel,
    out_dir: Path,
    threads: int,
    *,
    eval_samples: int,
    progress: ProgressCallback | None = None,
) -> Contender:
    """Build `variant` with run_build (gate at 0: every variant is built and reported)."""
    metric = "cosine" if source.task == "feature-extraction" else "top1-agreement"
    accuracy = variant.accuracy or {"metric": metric, "min": 0.0}
    if accuracy.get("metric") != metric:  # the classifier is gated on agreement, not cosine
        accuracy = {"metric": metric, "min": 0.98}
    spec = BuildSpec.model_validate(
        {
            "name": f"{variant.name.removeprefix('optimodel-')}",
            "source": source.model_dump(by_alias=True),
            "optimize": {
                **variant.optimize,
                "accuracy": accuracy,
                "evalData": {"uri": DEFAULT_EVAL_DATA.uri, "maxSamples": eval_samples},
            },
            "serving": variant.serving,
        }
    )
    report = run_build(spec, out_dir, progress=progress, benchmark=False)
    path = ServedRepository.at(out_dir / spec.name).onnx
    steps = "; ".join(s.detail for s in report.steps if s.name in ("prune", "recover", "quantize"))
    return _onnx_contender(
        variant.name,
        variant.label,
        "optimodel",
        path,
        loaded,
        threads,
        steps,
        build_summary(report),
    )
