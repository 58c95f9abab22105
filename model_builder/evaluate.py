"""The accuracy gate: compare a model variant's outputs with the original PyTorch model's.

cosine: per-example cosine similarity of embeddings (mean, and the worst example).
top1-agreement: share of examples where the variant's top class is the original's.
accuracy: share of examples where the variant's top class is the label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optimodel.model_builder.data import Label
from optimodel.model_builder.errors import EvalDataError
from optimodel.model_builder.modeling import FloatArray, length_sorted_batches
from optimodel.model_builder.report import AccuracyResult
from optimodel.model_builder.spec import AccuracyGate


@dataclass(frozen=True)
class Score:
    """One variant's score on the evaluation set."""

    metric: str
    mean: float
    min: float | None
    samples: int


Device = Literal["cpu", "gpu"]


def cuda_provider_available() -> bool:
    """Whether this onnxruntime can run on a GPU (the CUDA execution provider is present)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def execution_providers(device: Device) -> list[str]:
    """Providers for `device`: CUDA (CPU fallback) for gpu when present, else the CPU."""
    if device == "gpu" and cuda_provider_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session(
    path: Path, threads: int | None = None, *, spinning: bool = True, device: Device = "cpu"
) -> Any:
    """An onnxruntime session with all graph optimizations (fusion happens here), on the CPU
    provider, or on the CUDA provider for device gpu when this onnxruntime has it.

    Without `spinning`, idle worker threads sleep instead of busy-waiting: a little slower
    per call, much kinder to a machine shared with other work (evaluation is not timed).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=execution_providers(device))


def onnx_outputs(
    path: Path,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
    *,
    threads: int | None = None,
    batch_size: int = 32,
    device: Device = "cpu",
) -> FloatArray:
    """The ONNX model's outputs for `texts`, in order."""
    session = onnx_session(path, threads, spinning=False, device=device)
    results: list[FloatArray | None] = [None] * len(texts)
    for indices, batch in length_sorted_batches(tokenizer, texts, max_length, batch_size):
        (output,) = session.run(None, batch.feeds())
        for row, index in enumerate(indices):
            results[index] = np.asarray(output[row], dtype=np.float32)
    return np.stack([r for r in results if r is not None])


def cosine_similarities(reference: FloatArray, candidate: FloatArray) -> FloatArray:
    """Per-row cosine similarity (1.0 for two zero rows, which are identical)."""
    dot = (reference * candidate).sum(axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))


def label_ids(labels: list[Label], id2label: dict[int, str], *, field: str) -> list[int]:
    """Class ids of `labels`, given as ids or as the model's label names."""
    by_name = {name.lower(): index for index, name in id2label.items()}
    ids = []
    for number, label in enumerate(labels, start=1):
        if isinstance(label, int) or (
            isinstance(label, str) and label.strip().lstrip("-").isdigit()
        ):
            value = int(label)
            if value not in id2label:
                raise EvalDataError(
                    f"example {number}: label {value} is not a class id of the model "
                    f"(ids: {sorted(id2label)})",
                    field=field,
                    fix="use the model's class ids or label names",
                )
            ids.append(value)
            continue
        name = str(label).strip().lower()
        if name not in by_name:
            raise EvalDataError(
                f"example {number}: label {label!r} is not a class of the model "
                f"(classes: {', '.join(id2label.values())})",
                field=field,
                fix="use the model's label names or class ids",
            )
        ids.append(by_name[name])
    return ids


def score_outputs(
    metric: str,
    reference: FloatArray,
    candidate: FloatArray,
    labels: list[int] | None = None,
) -> Score:
    """Score `candidate` outputs against the original's (or against labels)."""
    if metric == "cosine":
        similarities = cosine_similarities(reference, candidate)
        return Score(metric, float(similarities.mean()), float(similarities.min()), len(reference))
    predicted = candidate.argmax(axis=1)
    if metric == "accuracy":
        if labels is None:
            raise EvalDataError(
                "metric accuracy needs labels",
                field="spec.optimize.evalData.labelField",
                fix="set labelField, or use metric top1-agreement",
            )
        truth = np.asarray(labels)
    else:
        truth = reference.argmax(axis=1)
    return Score(metric, float((predicted == truth).mean()), None, len(reference))


def gate_verdict(score: Score, gate: AccuracyGate) -> AccuracyResult:
    """Pass or fail: mean at or above min, and the worst example at or above worstCaseMin."""
    worst_ok = gate.worst_case_min is None or (
        score.min is not None and score.min >= gate.worst_case_min
    )
    return AccuracyResult(
        metric=score.metric,
        mean=score.mean,
        min=score.min,
        threshold=gate.min,
        worst_case_threshold=gate.worst_case_min,
        samples=score.samples,
        passed=score.mean >= gate.min and worst_ok,
    )


def shortfall(result: AccuracyResult) -> float:
    """By how much the gate was missed (0 when it passed): the larger of the two misses."""
    misses = [result.threshold - result.mean]
    if result.worst_case_threshold is not None and result.min is not None:
        misses.append(result.worst_case_threshold - result.min)
    return max(0.0, *misses)


def tokens_per_text(tokenizer: Any, texts: list[str], max_length: int) -> float:
    """Mean tokens per text after truncation (recorded with the scores)."""
    batches = length_sorted_batches(tokenizer, texts, max_length, 256)
    total = sum(int(batch.attention_mask.sum()) for _, batch in batches)
    return total / max(1, len(texts))
