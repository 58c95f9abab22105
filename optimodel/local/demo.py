"""`optimodel demo`: build → serve on the real Triton server → query → load test → report.

1. build the manifest's model (reused when `report.json` already matches the manifest);
2. serve it on tritonserver, with a twin that has dynamic batching off;
3. send real requests with tritonclient over HTTP and gRPC and check the answers against
   onnxruntime in this process on the same model.onnx;
4. a short concurrency sweep, batching on and off, measured by the server's own metrics;
5. a table (throughput, p50/p99, average batch, cost per 1M inferences at the manifest's
   GPU price), a PNG plot and a JSON file of every number.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimodel.local.loadtest import LoadResult, LoadTarget, Payload
from optimodel.local.repository import UNBATCHED_SUFFIX, BuiltModel
from optimodel.local.server import LocalServer, ServerPorts

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
# A request the server runs as it was sent (alone, or one client-side batch) is the same
# computation as onnxruntime in-process on the same array: answers agree to float rounding.
EXACT_ATOL = 1e-5
CLIENT_BATCH = 8


@dataclass(frozen=True)
class DemoOptions:
    """What `optimodel demo` runs."""

    manifest: Path = Path("examples/minilm-int8.yaml")
    out: Path = Path("build/demo")
    ports: ServerPorts = field(default_factory=ServerPorts)
    concurrencies: tuple[int, ...] = (1, 8, 64)
    duration_s: float = 3.0
    rebuild: bool = False
    use_perf_analyzer: bool = True


@dataclass(frozen=True)
class Agreement:
    """How the served answers compare with onnxruntime in this process."""

    check: str
    requests: int
    max_abs_diff: float
    min_cosine: float
    passed: bool


def _cosines(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a2 = a.reshape(a.shape[0], -1).astype(np.float64)
    b2 = b.reshape(b.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.asarray((a2 * b2).sum(axis=1) / np.maximum(norms, 1e-12))


def agreement(
    check: str,
    served: list[npt.NDArray[Any]],
    local: list[npt.NDArray[Any]],
    min_cosine: float | None = None,
) -> Agreement:
    """Compare per-request outputs: equal to float rounding, or (MIN_COSINE) at least that
    close in direction."""
    a, b = np.concatenate(served), np.concatenate(local)
    max_diff = float(np.max(np.abs(a - b)))
    min_cos = float(np.min(_cosines(a, b)))
    passed = max_diff <= EXACT_ATOL if min_cosine is None else min_cos >= min_cosine
    return Agreement(check, len(served), max_diff, min_cos, passed)


def pad_batch(payloads: list[Payload]) -> Payload:
    """One request holding every payload as a row, zero-padded to the longest."""
    longest = max(next(iter(p.values())).shape[1] for p in payloads)
    return {
        name: np.concatenate(
            [np.pad(p[name], [(0, 0), (0, longest - p[name].shape[1])]) for p in payloads]
        )
        for name in payloads[0]
    }


def in_process_outputs(model: BuiltModel, payloads: list[Payload]) -> list[npt.NDArray[Any]]:
    """The first output of each request, run alone by onnxruntime in this process."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    output = model.signature.outputs[0].name
    return [np.asarray(session.run([output], payload)[0]) for payload in payloads]


def query_http(url: str, model: BuiltModel, payloads: list[Payload]) -> list[npt.NDArray[Any]]:
    """Each payload as one HTTP request with tritonclient.http (sequential)."""
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    output = model.signature.outputs[0].name
    client = httpclient.InferenceServerClient(url)
    try:
        answers = []
        for payload in payloads:
            inputs = []
            for name, array in payload.items():
                tensor = httpclient.InferInput(
                    name, list(array.shape), np_to_triton_dtype(array.dtype)
                )
                tensor.set_data_from_numpy(array, binary_data=True)
                inputs.append(tensor)
            result = client.infer(
                model.name, inputs, outputs=[httpclient.InferRequestedOutput(output)]
            )
            answers.append(np.asarray(result.as_numpy(output)))
        return answers
    finally:
        client.close()


def query_grpc(
    url: str, model_name: str, output: str, payloads: list[Payload], *, concurrent: bool
) -> list[npt.NDArray[Any]]:
    """Each payload as one gRPC request (tritonclient.grpc.aio); all at once if CONCURRENT."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import np_to_triton_dtype

    async def run() -> list[npt.NDArray[Any]]:
        client = grpcaio.InferenceServerClient(url)
        try:

            async def one(payload: Payload) -> npt.NDArray[Any]:
                inputs = []
                for name, array in payload.items():
                    tensor = grpcclient.InferInput(
                        name, list(array.shape), np_to_triton_dtype(array.dtype)
                    )
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                result = await client.infer(model_name, inputs)
                return np.asarray(result.as_numpy(output))

            if concurrent:
                return list(await asyncio.gather(*(one(p) for p in payloads)))
            return [await one(p) for p in payloads]
        finally:
            await client.close()

    return asyncio.run(run())


def check_answers(
    running: LocalServer, model: BuiltModel, payloads: list[Payload], batched_min_cosine: float
) -> list[Agreement]:
    """Served answers vs onnxruntime in this process on the same arrays.

    Requests the server runs as sent must agree to float rounding. Concurrent requests are
    merged by the dynamic batcher and padded; an int8-dynamic model then quantizes every
    activation with one scale per batch, so each answer depends a little on its batch-mates:
    those must stay within BATCHED_MIN_COSINE (the manifest's accuracy tolerance).
    """
    server = running.server
    output = model.signature.outputs[0].name
    local = in_process_outputs(model, payloads)
    batch = pad_batch(payloads[:CLIENT_BATCH])
    return [
        agreement(
            "HTTP, one request at a time", query_http(server.http_url, model, payloads), local
        ),
        agreement(
            "gRPC, one request at a time",
            query_grpc(server.grpc_url, model.name, output, payloads, concurrent=False),
            local,
        ),
        agreement(
            f"gRPC, one request of {CLIENT_BATCH} padded rows",
            query_grpc(server.grpc_url, model.name, output, [batch], concurrent=False),
            in_process_outputs(model, [batch]),
        ),
        agreement(
            f"gRPC, {len(payloads)} at once (server batches; cosine >= {batched_min_cosine})",
            query_grpc(server.grpc_url, model.name, output, payloads, concurrent=True),
            local,
            batched_min_cosine,
        ),
    ]


def agreement_table(rows: Sequence[Agreement]) -> Table:
    table = Table(title="Served answers vs onnxruntime in this process", title_justify="left")
    for name in ("requests", "n", "max |diff|", "min cosine", ""):
        table.add_column(name, justify="left" if name == "requests" else "right")
    for row in rows:
        table.add_row(
            row.check,
            str(row.requests),
            f"{row.max_abs_diff:.2e}",
            f"{row.min_cosine:.6f}",
            "[green]✓[/green]" if row.passed else "[red]✗[/red]",
        )
    return table


def _reusable_build(model_dir: Path, spec: Any) -> bool:
    from optimodel.model_builder.report import REPORT_FILE, BuildReport, build_inputs_hash

    report_path = model_dir / REPORT_FILE
    if not report_path.is_file():
        return False
    try:
        report = BuildReport.read(report_path)
    except ValueError:
        return False
    return report.passed and report.spec_hash == build_inputs_hash(spec.source, spec.optimize)


def _build(options: DemoOptions, spec: Any, console: Console, err_console: Console) -> int:
    """Build (or reuse) the artifact; returns an exit code."""
    from optimodel.build_console import StageBars, results_table, steps_table
    from optimodel.model_builder.errors import AccuracyGateError, BuildError
    from optimodel.model_builder.pipeline import run_build

    model_dir = options.out / spec.name
    if not options.rebuild and _reusable_build(model_dir, spec):
        console.print(
            f"[green]✓[/green] reusing the build in {escape(str(model_dir))} "
            f"(same source and optimize settings; --rebuild to build again)"
        )
        return EXIT_OK
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            report = run_build(spec, options.out, progress=StageBars(progress), benchmark=True)
    except AccuracyGateError as error:
        console.print(steps_table(error.report))
        err_console.print(f"[red]✗ accuracy gate failed, nothing to serve:[/red] {error}")
        return error.exit_code
    except BuildError as error:
        err_console.print(f"[red]✗ build failed:[/red] {escape(str(error))}")
        return error.exit_code
    console.print(results_table(report))
    return EXIT_OK


def run_demo(options: DemoOptions, console: Console, err_console: Console) -> int:
    """The whole demo; returns the process exit code."""
    from optimodel.local.installation import find_perf_analyzer
    from optimodel.local.load_report import (
        load_table,
        replica_usd_per_hour,
        save_load_plot,
    )
    from optimodel.local.loadtest import SAMPLE_TEXTS, fit_to_signature, sweep, tokenize
    from optimodel.local.repository import read_built_model
    from optimodel.local.server import serve_built_repository
    from optimodel.manifest import build_spec_from_manifest, print_problems
    from optimodel.operator.cost import parse_price_override
    from optimodel.operator.validation import ManifestError

    started = time.monotonic()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console.rule("[bold]1/4 build")
    try:
        spec = build_spec_from_manifest(options.manifest)
    except ManifestError as error:
        err_console.print(f"[red]✗ {escape(str(options.manifest))} is invalid[/red]")
        print_problems(err_console, error.problems)
        return EXIT_INVALID
    code = _build(options, spec, console, err_console)
    if code:
        return code
    model = read_built_model(options.out / spec.name)
    tokenizer_dir = model.directory / "tokenizer"
    payloads = fit_to_signature(tokenize(tokenizer_dir, 64, None, SAMPLE_TEXTS), model.signature)

    console.rule("[bold]2/4 serve on Triton")
    with ExitStack() as stack:
        with console.status("starting tritonserver (python backend running onnxruntime)…"):
            running = stack.enter_context(
                serve_built_repository(model.directory, ports=options.ports, with_unbatched=True)
            )
        server = running.server
        console.print(
            f"[green]✓[/green] tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, "
            f"metrics {server.metrics_url}; models {', '.join(m.name for m in running.models)}"
        )
        console.rule("[bold]3/4 query over HTTP and gRPC")
        with console.status("sending requests and running onnxruntime in-process…"):
            gate = spec.optimize.accuracy
            tolerance = gate.worst_case_min if gate.worst_case_min is not None else gate.min
            if gate.metric != "cosine":
                tolerance = 0.99
            agreements = check_answers(running, model, payloads[:32], tolerance)
        console.print(agreement_table(agreements))
        if not all(a.passed for a in agreements):
            err_console.print("[red]✗ served answers differ from onnxruntime[/red]")
            return EXIT_FAILED

        console.rule("[bold]4/4 load test: dynamic batching on vs off")
        perf_analyzer = find_perf_analyzer() if options.use_perf_analyzer else None
        models = [model.name, model.name + UNBATCHED_SUFFIX]
        levels = len(options.concurrencies) * len(models)
        tool = "perf_analyzer" if perf_analyzer else "tritonclient gRPC aio"
        with Progress(*_bar_columns(), console=console) as progress:
            task = progress.add_task(f"{tool}, {options.duration_s:.0f} s per level", total=levels)

            def advance(result: LoadResult) -> None:
                progress.advance(task)

            results = sweep(
                LoadTarget(server.grpc_url, server.metrics_url),
                models,
                payloads,
                options.concurrencies,
                duration_s=options.duration_s,
                perf_analyzer=perf_analyzer,
                on_result=advance,
            )
    if running.leftover_shm:
        err_console.print(
            f"[yellow]removed leftover shared memory: {running.leftover_shm}[/yellow]"
        )

    manifest_doc = _manifest_annotations(options.manifest)
    override = parse_price_override(manifest_doc)
    usd_per_hour = replica_usd_per_hour(spec.serving, override)
    gpu = spec.serving.gpu
    price_label = f"({gpu.count}x {gpu.type})" if gpu.count else "(CPU replica)"
    console.print(load_table(results, usd_per_hour, price_label))
    console.print(
        f"[dim]Throughput measured on this machine's CPU ({os.cpu_count()} cores, client and "
        f"server sharing them); cost = ${usd_per_hour:.2f}/replica-hour from the price catalog "
        f"÷ that throughput: a what-if for the manifest's GPU, not a GPU measurement.[/dim]"
    )
    plot = save_load_plot(
        results,
        options.out / "loadtest.png",
        f"{model.name} on tritonserver (CPU): dynamic batching on vs off",
    )
    record = {
        "manifest": str(options.manifest),
        "model": model.name,
        "tool": tool,
        "usd_per_replica_hour": usd_per_hour,
        "agreement": [asdict(a) for a in agreements],
        "results": [r.as_dict() for r in results],
    }
    (options.out / "loadtest.json").write_text(json.dumps(record, indent=2) + "\n")
    numbers = options.out / "loadtest.json"
    console.print(
        f"[green]✓[/green] plot {escape(str(plot))}, numbers {escape(str(numbers))}; "
        f"demo took {time.monotonic() - started:.0f} s. Serve it yourself: "
        f"[bold]optimodel serve {escape(str(model.directory))}[/bold]"
    )
    return EXIT_OK


def _bar_columns() -> tuple[Any, ...]:
    return (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())


def _manifest_annotations(path: Path) -> dict[str, str]:
    from optimodel.model_builder.documents import read_yaml_file

    for document in read_yaml_file(path):
        if isinstance(document, dict) and document.get("kind") == "OptimizedModel":
            annotations = (document.get("metadata") or {}).get("annotations") or {}
            return {str(k): str(v) for k, v in annotations.items()}
    return {}
