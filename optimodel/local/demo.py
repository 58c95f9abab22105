"""`optimodel demo`: build → serve on the real Triton server → query → load test → report.

1. build the manifest's model (reused when `report.json` already matches the manifest);
2. serve it on tritonserver, with a twin that has dynamic batching off;
3. send texts with tritonclient over HTTP and gRPC to the text-in ensemble and check the
   answers against the original pipeline in this process (its tokenizer, onnxruntime on
   the same model.onnx, the same answer math);
4. a short concurrency sweep of mixed-length texts (5-120 tokens), batching on and off,
   with the model step's average batch from the server's own metrics;
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

from optimodel.local.loadtest import LoadResult, LoadTarget
from optimodel.local.query import text_array
from optimodel.local.reference import TextReference
from optimodel.local.repository import UNBATCHED_SUFFIX, BuiltModel
from optimodel.local.server import LocalServer, ServerPorts
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.served.postprocess_model import EMBEDDINGS, LOGITS
from optimodel.model_builder.served.tokenize_model import TEXT_INPUT

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
# A request the server runs as it was sent (alone, or one client-side batch) is the same
# computation as onnxruntime in-process on the same array: answers agree to float rounding.
EXACT_ATOL = 1e-5
CLIENT_BATCH = 8
Array = npt.NDArray[Any]


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


def main_output(model: BuiltModel) -> str:
    """The answer compared: the embeddings, or a classifier's logits."""
    return LOGITS if model.task == "text-classification" else EMBEDDINGS


def query_http(url: str, model_name: str, output: str, texts: list[str]) -> list[Array]:
    """Each text as one HTTP request with tritonclient.http (sequential)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        answers = []
        for text in texts:
            tensor = httpclient.InferInput(TEXT_INPUT, [1, 1], "BYTES")
            tensor.set_data_from_numpy(text_array([text]), binary_data=True)
            result = client.infer(
                model_name, [tensor], outputs=[httpclient.InferRequestedOutput(output)]
            )
            answers.append(np.asarray(result.as_numpy(output)))
        return answers
    finally:
        client.close()


def query_grpc(
    url: str, model_name: str, output: str, requests: list[list[str]], *, concurrent: bool
) -> list[Array]:
    """Each list of texts as one gRPC request (tritonclient.grpc.aio); all at once if
    CONCURRENT."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    async def run() -> list[Array]:
        client = grpcaio.InferenceServerClient(url)
        try:

            async def one(texts: list[str]) -> Array:
                array = text_array(texts)
                tensor = grpcclient.InferInput(TEXT_INPUT, list(array.shape), "BYTES")
                tensor.set_data_from_numpy(array)
                result = await client.infer(model_name, [tensor])
                return np.asarray(result.as_numpy(output))

            if concurrent:
                return list(await asyncio.gather(*(one(t) for t in requests)))
            return [await one(t) for t in requests]
        finally:
            await client.close()

    return asyncio.run(run())


def check_answers(
    running: LocalServer, model: BuiltModel, texts: list[str], batched_min_cosine: float
) -> list[Agreement]:
    """Served answers to texts vs the original pipeline in this process (`reference`).

    A text the server runs alone must agree to float rounding with the same text tokenized
    and run alone here; a request of several rows with the same rows padded alike here.
    Concurrent requests are merged by the batcher in length groups and padded; an
    int8-dynamic model then quantizes every activation with one scale per batch, so each
    answer depends a little on its batch-mates: those must stay within BATCHED_MIN_COSINE.
    """
    server = running.server
    output = main_output(model)
    reference = TextReference(model)
    alone = [answer[output] for answer in reference.alone(texts)]
    rows = texts[:CLIENT_BATCH]
    return [
        agreement(
            "HTTP, one text at a time",
            query_http(server.http_url, model.name, output, texts),
            alone,
        ),
        agreement(
            "gRPC, one text at a time",
            query_grpc(server.grpc_url, model.name, output, [[t] for t in texts], concurrent=False),
            alone,
        ),
        agreement(
            f"gRPC, one request of {CLIENT_BATCH} texts",
            query_grpc(server.grpc_url, model.name, output, [rows], concurrent=False),
            [reference.answers(rows)[output]],
        ),
        agreement(
            f"gRPC, {len(texts)} at once (server batches; cosine >= {batched_min_cosine})",
            query_grpc(server.grpc_url, model.name, output, [[t] for t in texts], concurrent=True),
            alone,
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
    return report.passed and report.spec_hash == build_inputs_hash(
        spec.source, spec.optimize, spec.serving
    )


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
    from optimodel.local.loadtest import sweep
    from optimodel.local.repository import read_built_model
    from optimodel.local.server import serve_built_repository
    from optimodel.local.text_load import MIXED_LENGTHS, mixed_lengths, texts_of_lengths
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
    # Texts of 5-120 tokens, as clients send them: the text-in ensemble batches them.
    workload = texts_of_lengths(model.tokenizer_dir, mixed_lengths(256, *MIXED_LENGTHS))

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
            agreements = check_answers(running, model, workload.texts[:32], tolerance)
        console.print(agreement_table(agreements))
        if not all(a.passed for a in agreements):
            err_console.print("[red]✗ served answers differ from onnxruntime[/red]")
            return EXIT_FAILED

        console.rule("[bold]4/4 load test through the text path: dynamic batching on vs off")
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
                workload.payloads(),
                options.concurrencies,
                duration_s=options.duration_s,
                perf_analyzer=perf_analyzer,
                on_result=advance,
                token_lengths=workload.token_lengths,
                batch_models={name: ServedNames.of(name).model for name in models},
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
