"""Dynamic batching on the real Triton server: the issue-4 performance check.

One server, one run, the MiniLM artifact served twice (as built, and a twin with dynamic
batching off) over the same model.onnx:

1. 64 concurrent batch-1 requests of short texts (<= 32 tokens): batching on vs off
   (target: >= 2x throughput), then the same comparison at exactly 64 and 128 tokens.
2. Full batches (batch-32 requests of 64 tokens): served throughput vs in-process
   onnxruntime on the same arrays (target: within 25%).

    python benchmarks/serving_batching.py                    # build MiniLM, measure
    python benchmarks/serving_batching.py --artifact OUT/minilm

The artifact comes from `--artifact`, else from the builder (`run_build` on
examples/minilm-int8.yaml), and the result says which. Numbers on a shared 2-core machine
are noisy: the load average at the start is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from optimodel.local.installation import find_perf_analyzer
from optimodel.local.loadtest import (
    LoadResult,
    LoadTarget,
    Payload,
    fit_to_signature,
    measure,
    run_client_load,
    stack,
    tokenize,
)
from optimodel.local.repository import UNBATCHED_SUFFIX, BuiltModel, find_built_models
from optimodel.local.server import ServerPorts, free_ports, serve_built_repository

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "examples" / "minilm-int8.yaml"
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "build" / "benchmarks"
console = Console(highlight=False)


def obtain_artifact(explicit: Path | None) -> tuple[Path, str]:
    """(model folder, how it was made)."""
    if explicit is not None:
        return explicit, f"given: {explicit}"
    from optimodel.manifest import build_spec_from_manifest
    from optimodel.model_builder.pipeline import run_build

    spec = build_spec_from_manifest(MANIFEST)
    out = CACHE / "built"
    if not (out / spec.name / "report.json").exists():
        run_build(spec, out, benchmark=False)
    return out / spec.name, f"optimodel builder: run_build({MANIFEST.relative_to(REPO)})"


def in_process_throughput(
    model: BuiltModel, batches: list[Payload], duration_s: float, *, server_options: bool
) -> float:
    """Inferences/s of onnxruntime in this process on BATCHES: with the session options the
    served model uses (threads spin-free), or with onnxruntime's defaults."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if server_options:
        options.intra_op_num_threads = 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(model.onnx_path), options, providers=["CPUExecutionProvider"]
    )
    for batch in batches[:2]:
        session.run(None, batch)
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < duration_s:
        batch = batches[done % len(batches)]
        session.run(None, batch)
        done += 1
    elapsed = time.perf_counter() - started
    return done * next(iter(batches[0].values())).shape[0] / elapsed


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, help="built model folder (OUT/<name>)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved on/off rounds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--tool",
        choices=["auto", "perf_analyzer", "tritonclient"],
        default="auto",
        help="load generator for the batch-1 comparisons (auto: perf_analyzer if it runs)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_batching.json")
    args = parser.parse_args(argv)

    load_at_start = os.getloadavg()
    artifact, provenance = obtain_artifact(args.artifact)
    model = find_built_models(artifact)[0]
    tokenizer_dir = model.directory / "tokenizer"
    if not tokenizer_dir.is_dir():
        console.print(f"[red]{tokenizer_dir} is missing[/red]: the benchmark tokenizes real text")
        return 2
    perf_analyzer = find_perf_analyzer() if args.tool != "tritonclient" else None
    if args.tool == "perf_analyzer" and perf_analyzer is None:
        console.print("[red]perf_analyzer not found[/red]: pip install tritonclient==2.51.0")
        return 2
    max_batch = model.serving.max_batch_size
    cases: dict[str, list[Payload]] = {
        "short texts": tokenize(tokenizer_dir, 256, None),
        "64 tokens": tokenize(tokenizer_dir, 256, 64),
        "128 tokens": tokenize(tokenizer_dir, 256, 128),
    }
    cases = {k: fit_to_signature(v, model.signature) for k, v in cases.items()}
    longest_short = max(p["input_ids"].shape[1] for p in cases["short texts"])
    full_batches = stack(cases["64 tokens"], max_batch)
    batched, unbatched = model.name, model.name + UNBATCHED_SUFFIX

    results: list[tuple[str, int, LoadResult]] = []
    speedups: dict[str, list[float]] = {case: [] for case in cases}
    served_full: list[LoadResult] = []
    local_full: list[float] = []
    with serve_built_repository(
        artifact, ports=ServerPorts(*free_ports(3)), with_unbatched=True
    ) as running:
        target = LoadTarget(running.server.grpc_url, running.server.metrics_url)
        for case, payloads in cases.items():
            for index in range(args.rounds):
                # ABA-style alternation: a drift in machine load hits both sides alike.
                order = (batched, unbatched) if index % 2 == 0 else (unbatched, batched)
                pair = {}
                for name in order:
                    console.print(
                        f"[dim]{case}, round {index + 1}: {name}, {args.concurrency} concurrent…"
                    )
                    pair[name] = measure(
                        target,
                        name,
                        payloads,
                        concurrency=args.concurrency,
                        duration_s=args.duration,
                        perf_analyzer=perf_analyzer,
                        client_processes=2,
                    )
                    results.append((case, index + 1, pair[name]))
                speedups[case].append(pair[batched].throughput / pair[unbatched].throughput)
        for index in range(args.rounds):
            console.print(f"[dim]full batches, round {index + 1}: served vs in-process…")
            served = run_client_load(
                target.grpc_url,
                batched,
                full_batches,
                concurrency=2,
                duration_s=args.duration,
                processes=1,
                metrics_url=target.metrics_url,
            )
            served_full.append(served)
            results.append((f"full batches ({max_batch}x64)", index + 1, served))
            # The server idles meanwhile (its onnxruntime threads do not spin). The baseline
            # is the faster of onnxruntime's defaults and the served model's options.
            local_full.append(
                max(
                    in_process_throughput(model, full_batches, args.duration, server_options=flag)
                    for flag in (False, True)
                )
            )
    leftovers = running.leftover_shm

    table = Table(title=f"Dynamic batching on tritonserver 2.51, {provenance.split(':')[0]}")
    for column in ("case", "rnd", "model", "req.", "inf/s", "p50 ms", "p99 ms", "avg batch"):
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
    summary = Table(title="Summary (medians of the rounds)")
    for column in ("check", "measured", "per round", "target", "verdict"):
        summary.add_column(column)
    verdicts: dict[str, bool | None] = {}
    for case, values in speedups.items():
        median = _median(values)
        ok = median >= 2.0 if case == "short texts" else None
        verdicts[case] = ok
        summary.add_row(
            f"batching on/off, {args.concurrency} x batch-1, {case}",
            f"{median:.2f}x",
            ", ".join(f"{v:.2f}" for v in values),
            ">= 2x" if case == "short texts" else "report",
            "-" if ok is None else ("[green]PASS[/green]" if ok else "[red]FAIL[/red]"),
        )
    served_median = _median([r.throughput for r in served_full])
    local_median = _median(local_full)
    full_ratio = served_median / local_median
    verdicts["full batches"] = full_ratio >= 0.75
    summary.add_row(
        f"full batches served / in-process ({served_median:.0f} / {local_median:.0f} inf/s)",
        f"{full_ratio:.2f}",
        ", ".join(f"{a.throughput / b:.2f}" for a, b in zip(served_full, local_full, strict=True)),
        ">= 0.75",
        "[green]PASS[/green]" if verdicts["full batches"] else "[red]FAIL[/red]",
    )
    console.print(summary)
    console.print(
        f"[dim]short texts are {longest_short} tokens at most; load average at start "
        f"{', '.join(f'{x:.1f}' for x in load_at_start)} on {os.cpu_count()} CPUs (shared "
        f"machine: other jobs may have run too); artifact: {provenance}[/dim]"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "serving_batching",
        "command": "python benchmarks/serving_batching.py " + " ".join(sys.argv[1:]),
        "created_at": datetime.now(UTC).isoformat(),
        "artifact": provenance,
        "tool": "perf_analyzer" if perf_analyzer else "tritonclient-grpc-aio",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "note": "shared machine; other jobs may have run during the measurement",
        },
        "short_text_max_tokens": longest_short,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "batching_speedup": {
            case: {"median": _median(values), "rounds": values, "target": verdicts[case]}
            for case, values in speedups.items()
        },
        "full_batches": {
            "batch_size": max_batch,
            "sequence_length": 64,
            "served_throughput_median": served_median,
            "in_process_throughput_median": local_median,
            "ratio": full_ratio,
            "passed": verdicts["full batches"],
        },
        "results": [{"case": case, "round": index, **r.as_dict()} for case, index, r in results],
        "leftover_shared_memory": [str(p) for p in leftovers],
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
