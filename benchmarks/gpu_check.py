"""The prepared GPU check (issue 11): what a GPU machine with PyTorch and CUDA can measure.

    python benchmarks/gpu_check.py                 # on a CUDA machine, MiniLM-L6 (< 8 min)
    python benchmarks/gpu_check.py --cpu --quick   # anywhere: the same code paths on the CPU

1. PyTorch eager fp32 vs fp16 vs bf16 (the shipped MiniLM-L6 by default): throughput at batch
   32 x 64 tokens and latency at batch 1, timed in interleaved rounds (best round kept), with
   the device synchronized around every call.
2. fp16 / bf16 fidelity against fp32 on a varied text set (the shipped eval texts: short and
   long, several domains): per-text cosine, mean and worst.
3. The fp16 ONNX artifact the GPU recipe publishes (fusion with the GPU options, fp16 with fp32
   inputs/outputs): timed and scored on onnxruntime's CUDA provider when this onnxruntime has
   one; otherwise recorded as skipped, with the providers it has (with --cpu it runs on the CPU
   provider, labelled so: that is the CI smoke run, not a GPU figure).

Writes benchmarks/results/gpu_check.json (machine: CPU model + ISA flags, GPU name, versions)
and prints a table. Ratios are within this run only.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from optimodel.model_builder.benchmark import benchmark_batch
from optimodel.model_builder.data import DEFAULT_EVAL_DATA, load_text_set
from optimodel.model_builder.evaluate import cosine_similarities
from optimodel.model_builder.export import export_onnx
from optimodel.model_builder.fusion import attention_shape, fuse_transformer
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.machine import describe_machine
from optimodel.model_builder.modeling import (
    FloatArray,
    TaskModel,
    TokenBatch,
    length_sorted_batches,
)
from optimodel.model_builder.quantize import INT8_OPS, model_size_bytes, op_counts
from optimodel.model_builder.spec import Source

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "gpu_check.json"
MINILM = "hf://sentence-transformers/all-MiniLM-L6-v2"
# The GPU gate for the fp16 artifact.
TARGETS = {"fp16_cosine_mean": 0.999, "fp16_cosine_min": 0.99}

Call = Callable[[TokenBatch], object]


@dataclass
class Timings:
    latencies: list[float] = field(default_factory=list)
    round_throughputs: list[float] = field(default_factory=list)
    batch_seconds: list[float] = field(default_factory=list)  # each full-batch call

    def summary(self) -> dict[str, float | None]:
        latency = float(np.percentile(self.latencies, 50)) * 1000 if self.latencies else None
        best = max(self.round_throughputs, default=0.0)
        return {"throughput_b32": round(best, 2), "latency_p50_ms_b1": latency}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_call(model: TaskModel, device: torch.device) -> Call:
    def run(batch: TokenBatch) -> object:
        ids, mask = (tensor.to(device) for tensor in batch.tensors())
        with torch.inference_mode():
            output = model(ids, mask)
        _synchronize(device)
        return output

    return run


def onnx_call(path: Path, providers: list[str]) -> Call:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)

    def run(batch: TokenBatch) -> object:
        return session.run(None, batch.feeds())

    return run


def time_calls(
    calls: dict[str, Call],
    single: TokenBatch,
    full: TokenBatch,
    *,
    rounds: int,
    seconds: float,
    latency_calls: int,
) -> dict[str, Timings]:
    """Interleaved rounds (A B C, A B C, ...): a burst of other work hits every variant."""
    timings = {name: Timings() for name in calls}
    for _ in range(rounds):
        for name, run in calls.items():
            run(single)
            for _ in range(latency_calls):
                started = time.perf_counter()
                run(single)
                timings[name].latencies.append(time.perf_counter() - started)
            run(full)
            count, started = 0, time.perf_counter()
            while count < 2 or time.perf_counter() - started < seconds:
                call = time.perf_counter()
                run(full)
                timings[name].batch_seconds.append(time.perf_counter() - call)
                count += 1
            elapsed = time.perf_counter() - started
            timings[name].round_throughputs.append(count * full.input_ids.shape[0] / elapsed)
    return timings


def outputs_on(
    run: Call, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32
) -> FloatArray:
    results: list[FloatArray | None] = [None] * len(texts)
    for indices, batch in length_sorted_batches(tokenizer, texts, max_length, batch_size):
        output = run(batch)
        array = (
            output.float().cpu().numpy()
            if isinstance(output, torch.Tensor)
            else np.asarray(output[0], dtype=np.float32)  # type: ignore[index]
        )
        for row, index in enumerate(indices):
            results[index] = array[row]
    return np.stack([r for r in results if r is not None])


def fp16_artifact(loaded: LoadedModel, work: Path) -> tuple[Path, dict[str, int]]:
    """The GPU recipe's fp16-fused artifact (gpu_recipe.fp16_fused), built here."""
    exported, artifact = work / "exported.onnx", work / "fp16-fused.onnx"
    export_onnx(
        loaded.task_model, loaded.tokenizer, exported, max_length=loaded.max_sequence_length
    )
    shape = attention_shape(loaded.task_model)
    fuse_transformer(exported, artifact, shape, gpu=True, fp16=True)
    counts = op_counts(artifact)
    return artifact, {op: counts[op] for op in ("Attention", "MatMul", *INT8_OPS) if counts[op]}


def _cosines(reference: FloatArray, candidate: FloatArray) -> dict[str, float]:
    similarities = cosine_similarities(reference, candidate)
    return {
        "cosine_mean": round(float(similarities.mean()), 6),
        "cosine_min": round(float(similarities.min()), 6),
    }


def hardware_profile(hardware: str, timing: Timings, where: str) -> dict[str, Any]:
    """The operator's hardwareProfiles entry from the served artifact's timing: throughput at
    batch 32 (best round) and the p99 of a full batch's execution (a request's time in a full
    batch; the operator's queueing model is not applied to measured figures)."""
    p99 = float(np.percentile(timing.batch_seconds, 99)) * 1000 if timing.batch_seconds else 0.0
    return {
        "type": hardware,
        "inferencesPerSecond": round(max(timing.round_throughputs, default=0.0), 1),
        "latencyP99Ms": round(p99, 3),
        "batch": 32,
        "measuredBy": f"benchmarks/gpu_check.py {datetime.now(UTC):%Y-%m-%d} on {where}"[:256],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (CI smoke run)")
    parser.add_argument("--source", default=MINILM, help="model URI (hf://, file://)")
    parser.add_argument("--quick", action="store_true", help="1 short round, 32 texts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--profile",
        metavar="TYPE",
        help="print the operator's hardwareProfiles entry for this catalog type (e.g. "
        "nvidia-l4) from the fp16 ONNX artifact's timing",
    )
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=130)
    if not args.cpu and not torch.cuda.is_available():
        console.print("[red]no CUDA device visible to torch[/red]; run with --cpu for the CPU run")
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    rounds, seconds, latency_calls = (1, 0.2, 3) if args.quick else (args.rounds, args.seconds, 20)
    started = time.perf_counter()

    loaded = load_model(Source(uri=args.source, task="feature-extraction"))
    texts = load_text_set(DEFAULT_EVAL_DATA, field="evalData").texts[: 32 if args.quick else 256]
    single = benchmark_batch(loaded.tokenizer, texts, 1, 64)
    full = benchmark_batch(loaded.tokenizer, texts, 32, 64)
    fp32 = loaded.task_model.eval().to(device)
    max_length = loaded.max_sequence_length
    reference = outputs_on(torch_call(fp32, device), loaded.tokenizer, texts, max_length)
    calls: dict[str, Call] = {"PyTorch fp32": torch_call(fp32, device)}
    fidelity: dict[str, dict[str, float]] = {}
    for label, dtype in (("PyTorch fp16", torch.float16), ("PyTorch bf16", torch.bfloat16)):
        variant = copy.deepcopy(fp32).to(dtype)
        calls[label] = torch_call(variant, device)
        fidelity[label] = _cosines(
            reference, outputs_on(calls[label], loaded.tokenizer, texts, max_length)
        )

    import onnxruntime

    providers = onnxruntime.get_available_providers()
    onnx_result: dict[str, Any] = {"onnxruntime": onnxruntime.__version__, "providers": providers}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        if args.cpu or "CUDAExecutionProvider" in providers:
            artifact, ops = fp16_artifact(loaded, Path(scratch))
            provider = "CPUExecutionProvider" if args.cpu else "CUDAExecutionProvider"
            label = f"ONNX fp16-fused ({provider})"
            calls[label] = onnx_call(artifact, [provider, "CPUExecutionProvider"])
            fidelity[label] = _cosines(
                reference, outputs_on(calls[label], loaded.tokenizer, texts, max_length)
            )
            onnx_result.update(
                {"label": label, "ops": ops, "size_bytes": model_size_bytes(artifact)}
            )
        else:
            onnx_result["skipped"] = (
                "this onnxruntime has no CUDAExecutionProvider; install onnxruntime-gpu to time "
                "the fp16 artifact on the GPU"
            )
        timings = time_calls(
            calls, single, full, rounds=rounds, seconds=seconds, latency_calls=latency_calls
        )

    summaries = {name: timing.summary() for name, timing in timings.items()}
    base = summaries["PyTorch fp32"]["throughput_b32"] or 1.0
    table = Table(title=f"gpu_check on {device.type}: batch 32 x 64 tokens; latency batch 1")
    for column in ("variant", "inf/s b32", "x fp32", "p50 ms b1", "cosine mean", "cosine min"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, summary in summaries.items():
        cosine = fidelity.get(name, {"cosine_mean": 1.0, "cosine_min": 1.0})
        throughput = summary["throughput_b32"] or 0.0
        latency = summary["latency_p50_ms_b1"]
        table.add_row(
            name,
            f"{throughput:.1f}",
            f"{throughput / base:.2f}x",
            "–" if latency is None else f"{latency:.2f}",
            f"{cosine['cosine_mean']:.5f}",
            f"{cosine['cosine_min']:.5f}",
        )
    console.print(table)
    if "skipped" in onnx_result:
        console.print(f"ONNX fp16 artifact: skipped ({onnx_result['skipped']})")
    machine = describe_machine()
    fp16 = fidelity["PyTorch fp16"]
    met = {
        "fp16_cosine_mean": fp16["cosine_mean"] >= TARGETS["fp16_cosine_mean"],
        "fp16_cosine_min": fp16["cosine_min"] >= TARGETS["fp16_cosine_min"],
    }
    payload = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "measured_at": datetime.now(UTC).isoformat(),
        "device": device.type,
        "machine": machine.model_dump(mode="json", by_alias=True),
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "onnxruntime": onnxruntime.__version__,
        },
        "source": args.source,
        "texts": len(texts),
        "settings": {
            "rounds": rounds,
            "seconds_per_round": seconds,
            "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        },
        "variants": {name: {**summaries[name], **fidelity.get(name, {})} for name in summaries},
        "ratios_vs_fp32": {
            name: round((summary["throughput_b32"] or 0.0) / base, 3)
            for name, summary in summaries.items()
        },
        "onnx": onnx_result,
        "targets": TARGETS,
        "met": met,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if args.profile and "label" in onnx_result:
        profile = hardware_profile(args.profile, timings[onnx_result["label"]], machine.label)
        payload["hardware_profile"] = profile
        console.print("operator settings entry (hardwareProfiles):")
        console.print(json.dumps([profile]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out} in {payload['wall_seconds']} s on {machine.label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
