"""`optimodel serve` and `optimodel loadtest` on a terminal; the commands in cli.py are thin
shells around these functions, which return exit codes and never call sys.exit."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape

from optimodel.local.installation import TritonNotInstalledError
from optimodel.local.repository import InvalidRepositoryError, LocalModel
from optimodel.local.server import PortInUseError, ServerError, ServerPorts, log_tail
from optimodel.local.text_load import MIXED_LENGTHS

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_PORT_TAKEN = 0, 1, 2, 3


class _StopRequestedError(Exception):
    """SIGTERM arrived: unwind like Ctrl-C does."""


@contextmanager
def sigterm_as_stop() -> Iterator[None]:
    """Turn SIGTERM into an exception in the main thread, so cleanup code runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _StopRequestedError

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_startup_error(error: Exception, err_console: Console) -> int:
    """Print a server/repository error with its fix; the exit code for it."""
    if isinstance(error, PortInUseError):
        err_console.print(f"[red]✗ port taken:[/red] {escape(str(error))}")
        return EXIT_PORT_TAKEN
    if isinstance(error, InvalidRepositoryError):
        err_console.print(f"[red]✗ invalid repository:[/red] {escape(str(error))}")
        return EXIT_INVALID
    if isinstance(error, TritonNotInstalledError):
        err_console.print(f"[red]✗ Triton not installed:[/red] {escape(str(error))}")
        return EXIT_FAILED
    err_console.print(f"[red]✗ server failed:[/red] {escape(str(error))}")
    return EXIT_FAILED


def served_model_line(model: LocalModel, http_url: str) -> str:
    """How to call one served text model: its text path, its raw-tensor model, its settings."""
    serving = model.source.serving
    batching = "on" if model.dynamic_batching else "off"
    cache = ", response cache on" if serving.response_cache else ""
    request = '{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":["Hello"]}]}'
    infer = f"http://{http_url}/v2/models/{model.name}/infer"
    return (
        f"  model    [bold]{model.name}[/bold] (text in; dynamic batching {batching}, max batch "
        f"{serving.max_batch_size}, {serving.instances} instance(s){cache}):\n"
        f"           curl -s {infer} -d '{escape(request)}'\n"
        f"           raw token ids: {model.names.model}"
    )


def serve_until_stopped(
    repository: Path,
    ports: ServerPorts,
    *,
    with_unbatched: bool,
    intra_op_threads: int,
    console: Console,
    err_console: Console,
) -> int:
    """Serve REPOSITORY until Ctrl-C or SIGTERM; stop cleanly and say so."""
    from optimodel.local.server import serve_built_repository

    startup_errors = (PortInUseError, InvalidRepositoryError, TritonNotInstalledError, ServerError)
    code = EXIT_OK
    with sigterm_as_stop(), ExitStack() as stack:
        try:
            with console.status("starting tritonserver…"):
                running = stack.enter_context(
                    serve_built_repository(
                        repository,
                        ports=ports,
                        with_unbatched=with_unbatched,
                        intra_op_threads=intra_op_threads,
                    )
                )
        except startup_errors as error:
            return report_startup_error(error, err_console)
        except (KeyboardInterrupt, _StopRequestedError):
            err_console.print("stopped while starting; the server was shut down")
            return EXIT_OK
        server = running.server
        try:
            console.print("[green]✓[/green] tritonserver ready (Triton 2.51, CPU)")
            console.print(
                f"  HTTP     http://{server.http_url}  (KServe v2: /v2/models/<name>/infer)"
            )
            console.print(f"  gRPC     {server.grpc_url}")
            console.print(f"  metrics  {server.metrics_url}")
            for model in running.models:
                console.print(served_model_line(model, server.http_url))
            console.print(f"  log      {server.log_path}")
            console.print("Ctrl-C (or SIGTERM) stops the server.")
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
            tail = log_tail(server.log_path) if server.log_path else ""
            err_console.print(f"[red]✗ tritonserver exited by itself[/red]; its log ends:\n{tail}")
            code = EXIT_FAILED
        except (KeyboardInterrupt, _StopRequestedError):
            console.print("stopping…")
        stack.close()  # stops the server, removes the work folder
    leftovers = running.leftover_shm
    alive = server.group_alive()
    if leftovers or alive:
        err_console.print(
            f"[yellow]cleaned up after the server: shared memory {leftovers}, "
            f"processes left {alive}[/yellow]"
        )
    else:
        console.print("[green]✓[/green] stopped: no server process, no shared memory left")
    return code


def loadtest_and_show(
    repository: Path,
    *,
    ports: ServerPorts,
    concurrencies: Sequence[int],
    duration_s: float,
    sequence_length: int | None,
    compare_unbatched: bool,
    tool: str,
    grpc_url: str | None,
    metrics_url: str | None,
    model_name: str | None,
    plot: Path | None,
    json_path: Path | None,
    console: Console,
    err_console: Console,
    lengths: tuple[int, int] = MIXED_LENGTHS,
) -> int:
    """Concurrency sweep against REPOSITORY served here (or an already running server).

    Texts go to the text-in ensemble (mixed LENGTHS in tokens, or SEQUENCE_LENGTH each) and
    the average batch is the model step's; `--model <name>-model` loads the raw-tensor model
    with token ids instead.
    """
    import json

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from optimodel.local.installation import find_perf_analyzer
    from optimodel.local.load_report import load_table, save_load_plot
    from optimodel.local.loadtest import (
        LoadResult,
        LoadTarget,
        fit_to_signature,
        sweep,
        tokenize,
    )
    from optimodel.local.repository import UNBATCHED_SUFFIX, find_built_models
    from optimodel.local.server import serve_built_repository
    from optimodel.local.text_load import mixed_lengths, texts_of_lengths
    from optimodel.model_builder.served.layout import MODEL_SUFFIX, ServedNames

    try:
        built = find_built_models(repository)
    except InvalidRepositoryError as error:
        return report_startup_error(error, err_console)
    raw = model_name is not None and model_name.endswith(MODEL_SUFFIX)
    if model_name is not None:
        base = model_name.removesuffix(MODEL_SUFFIX) if raw else model_name
        matches = [m for m in built if m.name == base.removesuffix(UNBATCHED_SUFFIX)]
        if not matches:
            err_console.print(
                f"[red]✗ --model {escape(model_name)}[/red] is not in {escape(str(repository))}: "
                f"use one of {[m.name for m in built]} (text) or "
                f"{[m.names.model for m in built]} (token ids)"
            )
            return EXIT_INVALID
        model = matches[0]
    else:
        model = built[0]
    if raw:
        payloads = fit_to_signature(
            tokenize(model.tokenizer_dir, 256, sequence_length), model.signature
        )
        token_lengths = None
    else:
        wanted = [sequence_length] * 256 if sequence_length else mixed_lengths(256, *lengths)
        workload = texts_of_lengths(model.tokenizer_dir, wanted)
        payloads, token_lengths = workload.payloads(), workload.token_lengths
    perf_analyzer = None
    if tool in ("auto", "perf_analyzer"):
        perf_analyzer = find_perf_analyzer()
        if perf_analyzer is None and tool == "perf_analyzer":
            err_console.print(
                "[red]✗ perf_analyzer not found[/red]: install tritonclient==2.51.0 "
                "(it ships perf_analyzer), or use --tool tritonclient"
            )
            return EXIT_FAILED
    models = [model_name or model.name]
    if compare_unbatched and model.serving.dynamic_batching and model_name is None:
        models.append(model.name + UNBATCHED_SUFFIX)
    batch_models = {name: ServedNames.of(name).model for name in models if not raw}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    results: list[LoadResult] = []

    def run(target: LoadTarget) -> None:
        with Progress(*columns, console=console) as progress:
            label = "perf_analyzer" if perf_analyzer else "tritonclient gRPC aio"
            task = progress.add_task(
                f"{label}: {len(concurrencies)} levels x {len(models)} model(s)",
                total=len(concurrencies) * len(models),
            )
            results.extend(
                sweep(
                    target,
                    models,
                    payloads,
                    concurrencies,
                    duration_s=duration_s,
                    perf_analyzer=perf_analyzer,
                    on_result=lambda _: progress.advance(task),
                    token_lengths=token_lengths,
                    batch_models=batch_models,
                )
            )

    try:
        with sigterm_as_stop():
            if grpc_url is not None:
                run(LoadTarget(grpc_url, metrics_url))
            else:
                with ExitStack() as stack:
                    with console.status("starting tritonserver…"):
                        running = stack.enter_context(
                            serve_built_repository(
                                model.directory, ports=ports, with_unbatched=len(models) > 1
                            )
                        )
                    run(LoadTarget(running.server.grpc_url, running.server.metrics_url))
    except (PortInUseError, InvalidRepositoryError, TritonNotInstalledError, ServerError) as error:
        return report_startup_error(error, err_console)
    except (KeyboardInterrupt, _StopRequestedError):
        err_console.print("[yellow]load test interrupted[/yellow]")
        return EXIT_FAILED
    except RuntimeError as error:
        err_console.print(f"[red]✗ load test failed:[/red] {escape(str(error))}")
        return EXIT_FAILED
    console.print(load_table(results, None))
    if plot is not None:
        save_load_plot(results, plot, f"{model.name}: load test")
        console.print(f"plot: {escape(str(plot))}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
        console.print(f"numbers: {escape(str(json_path))}")
    return EXIT_OK
