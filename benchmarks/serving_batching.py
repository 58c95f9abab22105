"""Serving text on the real Triton server: the issue-12 performance checks, in one run.

One server serves the built MiniLM repository as a cluster runs it (the text-in ensemble: the
tokenizer step, the model step without ragged batching, the answer step) under four names:

    minilm             as built: dynamic batching on, no response cache
    minilm-unbatched   dynamic batching off on every step
    minilm-cached      batching on, response cache on (the server has --cache-config)
    minilm-pytorch     what users run without optimodel: the original PyTorch fp32 model in a
                       python-backend model, text in, one request at a time, no batching

Checks, on texts of mixed lengths (5-120 tokens, the served tokenizer's count):

1. 64 concurrent batch-1 requests, batching on vs off (target >= 2x), with the average batch
   the model step formed (nv_inference_count / nv_inference_exec_count of minilm-model);
   plus a concurrency sweep of both for the plot.
2. Full batches (requests of maxBatchSize texts): the ensemble vs the raw-tensor model
   `minilm-model` fed the same texts tokenized by the client (overhead target <= 15%).
3. A trace where half the requests repeat an earlier text, replayed once at 64 concurrent:
   response cache on vs off (target >= 1.5x), with the cache hits from Triton's metrics.
4. Cost per 1M inferences of the whole served path vs minilm-pytorch on the same trace at
   the same concurrency (target >= 4x cheaper, goal 5x), at the catalog's CPU replica price
   (same machine for both, so the ratio is the throughput ratio). Plot: cost and throughput.

    python benchmarks/serving_batching.py                  # build MiniLM if needed, measure
    python benchmarks/serving_batching.py --quick          # seconds: smoke run
    python benchmarks/serving_batching.py --artifact OUT/minilm

Writes benchmarks/results/serving_batching.json and two PNG plots; prints the tables. On a
shared 2-core machine the load average at start and end is recorded beside the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from optimodel.local.installation import find_perf_analyzer
from optimodel.local.load_report import replica_usd_per_hour, save_load_plot, usd_per_million
from optimodel.local.loadtest import (
    LoadResult,
    LoadTarget,
    Payload,
    measure,
    replay_trace,
    run_client_load,
)
from optimodel.local.query import Endpoint, infer_texts
from optimodel.local.reference import TextReference
from optimodel.local.repository import (
    UNBATCHED_SUFFIX,
    BuiltModel,
    derive_local_repository,
    find_built_models,
)
from optimodel.local.server import ServerPorts, TritonServer, free_ports, metrics_text
from optimodel.local.text_load import (
    MIXED_LENGTHS,
    TextWorkload,
    load_counting_tokenizer,
    mixed_lengths,
    repeating_trace,
    texts_of_lengths,
)
from optimodel.model_builder.report import CONFIG_FILE, BuildReport
from optimodel.model_builder.served.configs import (
    DEFAULT_RESPONSE_CACHE_BYTES,
    render_text_model_config,
)
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.spec import Gpu, Serving

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "examples" / "minilm-int8.yaml"
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "build" / "benchmarks"
CACHED_SUFFIX = "-cached"
PYTORCH_SUFFIX = "-pytorch"
console = Console(highlight=False)


@dataclass(frozen=True)
class Mode:
    """How long and how often: the full run, or a smoke run of seconds."""

    duration_s: float
    rounds: int
    concurrency: int
    sweep: tuple[int, ...]
    trace_size: int
    workload_size: int
    client_processes: int


FULL = Mode(
    duration_s=4.0, rounds=3, concurrency=64, sweep=(1, 8, 32, 64), trace_size=768,
    workload_size=512, client_processes=2,
)  # fmt: skip
QUICK = Mode(
    duration_s=1.0, rounds=1, concurrency=16, sweep=(1, 16), trace_size=64, workload_size=64,
    client_processes=1,
)  # fmt: skip


def obtain_artifact(explicit: Path | None) -> tuple[Path, str]:
    """(served repository, how it was made)."""
    if explicit is not None:
        return explicit, f"given: {explicit}"
    from optimodel.manifest import build_spec_from_manifest
    from optimodel.model_builder.pipeline import run_build

    spec = build_spec_from_manifest(MANIFEST)
    out = CACHE / "built"
    served = out / spec.name
    if not (served / spec.name / CONFIG_FILE).exists():  # absent, or an older layout
        run_build(spec, out, benchmark=False)
    return served, f"optimodel builder: run_build({MANIFEST.relative_to(REPO)})"


def variants(model: BuiltModel) -> list[BuiltModel]:
    """The built model as built (no cache), and its cached twin; `-unbatched` comes from
    derive_local_repository."""
    plain = dataclasses.replace(
        model, serving=model.serving.model_copy(update={"response_cache": False})
    )
    cached = dataclasses.replace(
        model,
        name=model.name + CACHED_SUFFIX,
        serving=model.serving.model_copy(update={"response_cache": True}),
    )
    return [plain, cached]


def add_pytorch_baseline(repository: Path, model: BuiltModel, report: BuildReport) -> str:
    """`<name>-pytorch` in REPOSITORY: the original model in torch, text in, no batching."""
    name = model.name + PYTORCH_SUFFIX
    serving = Serving(
        gpu=Gpu(count=0), max_batch_size=model.serving.max_batch_size, dynamic_batching=False
    )
    max_length = json.loads(model.layout.tokenize_settings.read_text())["max_length"]
    parameters = {
        "source_uri": report.source_uri,
        "task": model.task,
        "max_sequence_length": str(max_length),
    }
    folder = repository / name
    (folder / "1").mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(
        render_text_model_config(name, model.task, model.signature, serving, parameters)
    )
    shutil.copyfile(Path(__file__).with_name("pytorch_text_model.py"), folder / "1" / "model.py")
    return name


def full_batch_payloads(
    model: BuiltModel, workload: TextWorkload, size: int
) -> tuple[list[Payload], list[Payload]]:
    """Requests of SIZE texts: as text for the ensemble, and the same texts tokenized here
    (padded to each request's longest, as the tokenizer step pads) for the raw-tensor model."""
    reference = TextReference(model)
    texts, raw = [], []
    for start in range(0, len(workload.texts) - size + 1, size):
        chunk = workload.texts[start : start + size]
        texts.append({"text": np.array([t.encode() for t in chunk], dtype=np.object_)[:, None]})
        raw.append(reference.token_ids(chunk))
    return texts, raw


def unique_trace(model: BuiltModel, mode: Mode, round_index: int) -> TextWorkload:
    """The cache trace of one round: texts no earlier round sent, half of them repeated."""
    lengths = mixed_lengths(mode.trace_size, *MIXED_LENGTHS, seed=100 + round_index)
    base = texts_of_lengths(model.tokenizer_dir, lengths)
    counting = load_counting_tokenizer(model.tokenizer_dir)
    texts = [f"r{round_index} q{i}: {text}" for i, text in enumerate(base.texts)]
    unique = TextWorkload(texts, [len(counting.encode(t).ids) for t in texts])
    return repeating_trace(unique, 0.5, seed=round_index)


def warm_up(
    server: TritonServer, models: list[str], workload: TextWorkload, raw: list[Payload]
) -> None:
    """A few requests to every model first: the python stubs' first calls are slow."""
    endpoint = Endpoint("grpc", server.grpc_url)
    for name in models:
        if name.endswith("-model"):  # long enough for the first full batch, which is slow
            run_client_load(
                server.grpc_url, name, raw[:1], concurrency=1, duration_s=3.0, warmup_s=0.0,
                processes=1,
            )  # fmt: skip
            continue
        for text in workload.texts[:4]:
            infer_texts(endpoint, name, [text])


def cache_counter(metrics: str, model: str, metric: str) -> float:
    prefix = f'{metric}{{model="{model}",version="1"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_description() -> dict[str, Any]:
    """CPU model and the ISA flags that decide int8 speed (as README figures name them)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        for line in info.splitlines():
            if line.startswith("model name") and model in ("unknown", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def save_cost_plot(rows: list[tuple[str, float, float]], path: Path, title: str) -> Path:
    """Cost per 1M inferences and throughput, one bar per served path (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [label for label, _, _ in rows]
    colours = ["#d62728", "#7f7f7f", "#2ca02c"][: len(rows)]
    left.bar(labels, [cost for _, cost, _ in rows], color=colours)
    left.set_ylabel("USD per 1M inferences")
    right.bar(labels, [throughput for _, _, throughput in rows], color=colours)
    right.set_ylabel("inferences / s")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(True, axis="y", alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="served repository (OUT/<name>)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    parser.add_argument("--tool", choices=["auto", "tritonclient"], default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_batching.json")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL

    load_at_start = _load_average()
    artifact, provenance = obtain_artifact(args.artifact)
    model = find_built_models(artifact)[0]
    if model.report is None:
        console.print(f"[red]{artifact} has no report.json[/red]: the baseline needs its source")
        return 2
    perf_analyzer = find_perf_analyzer() if args.tool == "auto" else None
    workload = texts_of_lengths(
        model.tokenizer_dir, mixed_lengths(mode.workload_size, *MIXED_LENGTHS)
    )
    max_batch = model.serving.max_batch_size
    ensemble_full, raw_full = full_batch_payloads(model, workload, max_batch)
    names = ServedNames.of(model.name)
    batched, unbatched = model.name, model.name + UNBATCHED_SUFFIX
    cached = model.name + CACHED_SUFFIX
    usd_per_hour = replica_usd_per_hour(Serving(gpu=Gpu(count=0)))

    root = Path(tempfile.mkdtemp(prefix="optimodel-bench-"))
    results: list[tuple[str, int, LoadResult]] = []
    batching: dict[str, list[LoadResult]] = {batched: [], unbatched: []}
    sweep: list[LoadResult] = []
    overhead: list[tuple[LoadResult, LoadResult]] = []
    cache_rounds: list[dict[str, Any]] = []
    cost: dict[str, list[LoadResult]] = {}
    try:
        repository = root / "repository"
        derive_local_repository(variants(model), repository, with_unbatched=True)
        pytorch = add_pytorch_baseline(repository, model, model.report)
        cost = {batched: [], unbatched: [], pytorch: []}
        server = TritonServer(
            repository,
            ServerPorts(*free_ports(3)),
            log_path=root / "tritonserver.log",
            response_cache_bytes=DEFAULT_RESPONSE_CACHE_BYTES,
        )
        server.start(timeout_s=600)
        target = LoadTarget(server.grpc_url, server.metrics_url)
        warm_up(server, [batched, unbatched, cached, pytorch, names.model], workload, raw_full)

        def load(name: str, payloads: list[Payload], concurrency: int) -> LoadResult:
            return measure(
                target,
                name,
                payloads,
                concurrency=concurrency,
                duration_s=mode.duration_s,
                perf_analyzer=perf_analyzer,
                client_processes=mode.client_processes,
                token_lengths=workload.token_lengths,
                batch_model=ServedNames.of(name).model if name != pytorch else name,
            )

        try:
            # 1 + 4: batching on / off and the PyTorch baseline, same trace, same concurrency.
            for index in range(mode.rounds):
                order = [batched, unbatched, pytorch]
                for name in order if index % 2 == 0 else order[::-1]:
                    console.print(f"[dim]round {index + 1}: {name}, {mode.concurrency} concurrent…")
                    result = load(name, workload.payloads(), mode.concurrency)
                    results.append(("mixed texts", index + 1, result))
                    cost[name].append(result)
                    if name in batching:
                        batching[name].append(result)
            for level in mode.sweep:
                for name in (batched, unbatched):
                    console.print(f"[dim]sweep: {name}, {level} concurrent…")
                    sweep.append(load(name, workload.payloads(), level))
            # 2: full batches through the ensemble vs the raw-tensor model.
            for index in range(mode.rounds):
                pair = []
                for name, payloads in ((batched, ensemble_full), (names.model, raw_full)):
                    console.print(f"[dim]full batches, round {index + 1}: {name}…")
                    result = run_client_load(
                        server.grpc_url,
                        name,
                        payloads,
                        concurrency=2,
                        duration_s=mode.duration_s,
                        processes=1,
                        metrics_url=server.metrics_url,
                        token_lengths=workload.token_lengths,
                        batch_model=names.model,
                    )
                    results.append((f"full batches ({max_batch} texts)", index + 1, result))
                    pair.append(result)
                overhead.append((pair[0], pair[1]))
            # 3: a trace with repeats, replayed once with the cache on and off.
            for index in range(mode.rounds):
                trace = unique_trace(model, mode, index)
                distinct = len(set(trace.texts))
                row: dict[str, Any] = {"requests": len(trace.texts), "distinct_texts": distinct}
                for name in (cached, batched) if index % 2 == 0 else (batched, cached):
                    console.print(f"[dim]trace, round {index + 1}: {name}…")
                    before = metrics_text(server.metrics_url)
                    result = replay_trace(
                        server.grpc_url,
                        name,
                        trace.payloads(),
                        concurrency=mode.concurrency,
                        processes=mode.client_processes,
                        metrics_url=server.metrics_url,
                        token_lengths=trace.token_lengths,
                        batch_model=ServedNames.of(name).model,
                    )
                    after = metrics_text(server.metrics_url)
                    results.append(("half-repeated trace", index + 1, result))
                    row[name] = result.as_dict()
                    row[name]["cache_hits"] = cache_counter(
                        after, name, "nv_cache_num_hits_per_model"
                    ) - cache_counter(before, name, "nv_cache_num_hits_per_model")
                cache_rounds.append(row)
        finally:
            leftovers = server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_at_end = _load_average()

    # -- tables ---------------------------------------------------------------------------
    table = Table(title=f"Text path on tritonserver 2.51 ({provenance.split(':')[0]})")
    for column in ("case", "rnd", "model", "req.", "inf/s", "p50 ms", "p99 ms", "model batch"):
        table.add_column(column, justify="left" if column in ("case", "model") else "right")
    for case, index, r in results:
        table.add_row(
            case,
            str(index),
            r.model,
            f"{r.concurrency}x b{r.batch_size}",
            f"{r.throughput:.1f}",
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p99_ms:.1f}",
            f"{r.average_batch:.1f}" if r.average_batch else "-",
        )
    console.print(table)

    speedups = [
        a.throughput / b.throughput
        for a, b in zip(batching[batched], batching[unbatched], strict=True)
    ]
    overheads = [1.0 - ens.throughput / raw.throughput for ens, raw in overhead]
    cache_speedups = [
        row[cached]["throughput"] / row[batched]["throughput"] for row in cache_rounds
    ]
    served_tp = _median([r.throughput for r in cost[batched]])
    pytorch_tp = _median([r.throughput for r in cost[pytorch]])
    unbatched_tp = _median([r.throughput for r in cost[unbatched]])
    served_cost = usd_per_million(usd_per_hour, served_tp)
    pytorch_cost = usd_per_million(usd_per_hour, pytorch_tp)
    unbatched_cost = usd_per_million(usd_per_hour, unbatched_tp)
    cost_ratios = [
        a.throughput / b.throughput for a, b in zip(cost[batched], cost[pytorch], strict=True)
    ]
    model_batch = _median([r.average_batch or 0.0 for r in batching[batched]])
    checks = [
        (
            f"batching on / off, {mode.concurrency} concurrent batch-1 mixed texts",
            f"{_median(speedups):.2f}x",
            speedups,
            ">= 2x",
            _median(speedups) >= 2.0,
        ),
        (
            f"ensemble overhead vs raw-tensor model, full batches of {max_batch}",
            f"{100 * _median(overheads):.1f}%",
            overheads,
            "<= 15%",
            _median(overheads) <= 0.15,
        ),
        (
            "response cache on / off, half-repeated trace",
            f"{_median(cache_speedups):.2f}x",
            cache_speedups,
            ">= 1.5x",
            _median(cache_speedups) >= 1.5,
        ),
        (
            "cost per 1M inferences, PyTorch fp32 / served path",
            f"{_median(cost_ratios):.2f}x cheaper",
            cost_ratios,
            ">= 4x (goal 5x)",
            _median(cost_ratios) >= 4.0,
        ),
    ]
    summary = Table(title="Checks (medians of the rounds)")
    for column in ("check", "measured", "per round", "target", "verdict"):
        summary.add_column(column)
    for check, measured, rounds, goal, ok in checks:
        summary.add_row(
            check,
            measured,
            ", ".join(f"{v:.2f}" for v in rounds),
            goal,
            "[green]PASS[/green]" if ok else "[red]FAIL[/red]",
        )
    console.print(summary)
    cpu = cpu_description()
    console.print(
        f"model step average batch (batching on, {mode.concurrency} concurrent): "
        f"{model_batch:.1f}; cost at ${usd_per_hour:.2f}/CPU-replica-hour: served path "
        f"${served_cost:.3f}, unbatched ${unbatched_cost:.3f}, PyTorch ${pytorch_cost:.3f} "
        f"per 1M; {cpu['model']} ({', '.join(cpu['flags'])}); load average "
        f"{load_at_start[0]:.1f} at start, {load_at_end[0]:.1f} at end"
    )

    stem = args.out.with_suffix("")
    bars = [
        (f"PyTorch fp32\n(no batching)\n{pytorch_tp:.0f} inf/s", pytorch_cost, pytorch_tp),
        (f"optimodel\nbatching off\n{unbatched_tp:.0f} inf/s", unbatched_cost, unbatched_tp),
        (f"optimodel\nserved path\n{served_tp:.0f} inf/s", served_cost, served_tp),
    ]
    cost_plot = save_cost_plot(
        [(label, usd or 0.0, throughput) for label, usd, throughput in bars],
        Path(f"{stem}_cost.png"),
        f"{model.name}: {mode.concurrency} concurrent mixed-length texts (5-120 tokens), "
        f"same Triton, {cpu['model']}",
    )
    sweep_plot = save_load_plot(
        sweep,
        Path(f"{stem}_concurrency.png"),
        f"{model.name}: text path, batching on vs off (mixed 5-120 tokens)",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "serving_batching",
        "command": "python benchmarks/serving_batching.py " + " ".join(sys.argv[1:] or []),
        "quick": args.quick,
        "created_at": datetime.now(UTC).isoformat(),
        "artifact": provenance,
        "tool": "perf_analyzer" if perf_analyzer else "tritonclient-grpc-aio",
        "machine": {
            "cpu": cpu,
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": load_at_end,
        },
        "workload": {
            "token_lengths": list(MIXED_LENGTHS),
            "requests": len(workload.texts),
            "mean_tokens": float(np.mean(workload.token_lengths)),
        },
        "concurrency": mode.concurrency,
        "rounds": mode.rounds,
        "batching": {
            "speedup_median": _median(speedups),
            "rounds": speedups,
            "model_step_average_batch": model_batch,
            "passed": checks[0][4],
        },
        "ensemble_overhead": {
            "median": _median(overheads),
            "rounds": overheads,
            "batch_size": max_batch,
            "passed": checks[1][4],
        },
        "response_cache": {
            "speedup_median": _median(cache_speedups),
            "rounds": cache_rounds,
            "passed": checks[2][4],
        },
        "cost": {
            "usd_per_replica_hour": usd_per_hour,
            "replica": "CPU (both paths on this machine)",
            "served_usd_per_million": served_cost,
            "unbatched_usd_per_million": unbatched_cost,
            "pytorch_usd_per_million": pytorch_cost,
            "cheaper_median": _median(cost_ratios),
            "rounds": cost_ratios,
            "passed": checks[3][4],
            "goal_5x": _median(cost_ratios) >= 5.0,
        },
        "plots": [
            str(p.relative_to(REPO) if p.is_relative_to(REPO) else p)
            for p in (cost_plot, sweep_plot)
        ],
        "sweep": [r.as_dict() for r in sweep],
        "results": [{"case": case, "round": index, **r.as_dict()} for case, index, r in results],
        "leftover_shared_memory": [str(p) for p in leftovers],
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {args.out}, {cost_plot}, {sweep_plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
