"""The `optimodel` command line: a thin shell over the builder, the operator and the server.

Heavy modules (torch, Triton, Kopf) are imported inside the commands that need them, so
`optimodel validate` stays fast and works with the core install alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="optimodel",
    help="One OptimizedModel manifest to an optimized, accuracy-gated Triton deployment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DEFAULT_CRD_PATH = Path("crds/optimizedmodel.yaml")


@app.command()
def crd(
    out: Annotated[Path, typer.Option(help="Where to write the CRD YAML.")] = DEFAULT_CRD_PATH,
    check: Annotated[
        bool, typer.Option("--check", help="Fail if the file differs instead of writing it.")
    ] = False,
) -> None:
    """Generate the OptimizedModel CRD from the API models."""
    from optimodel.operator.crd import render_crd_yaml

    text = render_crd_yaml()
    if check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            err_console.print(f"[red]{out} is stale[/red]: run `optimodel crd --out {out}`")
            raise typer.Exit(1)
        console.print(f"{out} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(f"wrote {out}")


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Manifest files (multi-document YAML ok).")],
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--settings",
            help="The operator's settings file: also check the admin policy (policy.*) the "
            "operator would enforce.",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Namespace the models go to (per-namespace caps); default: each manifest's "
            "metadata.namespace, else 'default'.",
        ),
    ] = None,
) -> None:
    """Validate OptimizedModel manifests offline: schema plus cross-field rules, and with
    --settings the admin policy the operator would enforce.

    Warnings (valid manifests that cannot work) are shown apart and do not fail: exit 0 when
    nothing is invalid, 1 otherwise.
    """
    from optimodel.manifest import print_problems
    from optimodel.operator.settings import SETTINGS_FILE_ENV, SettingsError, load_settings
    from optimodel.operator.validation import validate_file

    settings = None
    if settings_file is not None:
        try:
            settings = load_settings({SETTINGS_FILE_ENV: str(settings_file)})
        except SettingsError as error:
            err_console.print(f"[red]{escape(str(error))}[/red]")
            raise typer.Exit(2) from None
    invalid = 0
    checked = 0
    warned = 0
    for path in files:
        for result in validate_file(path, settings, namespace):
            if result.kind != "OptimizedModel" and result.valid:
                console.print(f"[dim]- {escape(result.origin)}: {result.kind} (not checked)[/dim]")
                continue
            checked += 1
            label = escape(f"{result.origin}" + (f" ({result.name})" if result.name else ""))
            if result.valid and not result.warnings:
                console.print(f"[green]✓[/green] {label}")
                continue
            if result.valid:
                warned += 1
                noun = "warning" if len(result.warnings) == 1 else "warnings"
                console.print(
                    f"[yellow]![/yellow] {label}: valid, {len(result.warnings)} {noun} "
                    "(it cannot work as written)"
                )
                print_problems(console, result.warnings, label="warning")
                continue
            invalid += 1
            noun = "problem" if len(result.problems) == 1 else "problems"
            console.print(f"[red]✗[/red] {label}: {len(result.problems)} {noun}")
            print_problems(console, result.problems)
    summary = f"{checked - invalid} valid, {invalid} invalid"
    console.print(summary + (f", {warned} with warnings" if warned else ""))
    if invalid:
        raise typer.Exit(1)


@app.command()
def build(
    manifest: Annotated[Path, typer.Argument(help="An OptimizedModel manifest (YAML).")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder of the Triton model repository.")
    ] = Path("build"),
    benchmark: Annotated[
        bool, typer.Option("--benchmark/--no-benchmark", help="Time original vs optimized.")
    ] = True,
) -> None:
    """Build a manifest's model locally: prune, export, quantize, gate, benchmark, publish.

    Exit codes: 0 built, 2 invalid manifest, 3 accuracy gate failed, 4 a source could not be
    fetched (not found, access denied, unreachable, adapter for another base), 1 other failure.
    """
    from optimodel.build_console import build_and_show

    code = build_and_show(
        manifest, out, benchmark=benchmark, console=console, err_console=err_console
    )
    if code:
        raise typer.Exit(code)


@app.command()
def render(
    manifest: Annotated[Path, typer.Argument(help="An OptimizedModel manifest (YAML).")],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="A build's report.json (optimodel build writes one): render the serving "
            "children of that build too. Without it only the builder Job is rendered, as "
            "the operator creates nothing else before a build passes.",
        ),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option("--settings", help="The operator's settings file (default: built-in)."),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Namespace (default: metadata.namespace, else default)."
        ),
    ] = None,
) -> None:
    """Print, as YAML, the children the operator would create for a manifest (and a build
    report): builder Job, ConfigMap, Service, Deployment(s), PodDisruptionBudget, autoscaler,
    through the operator's own renderers. What was rendered is said on stderr.

    Exit codes: 0 rendered, 1 invalid manifest or refused by the settings' policy, 2 bad
    settings or report file.
    """
    import json

    import yaml
    from pydantic import ValidationError

    from optimodel.manifest import one_manifest, print_problems
    from optimodel.model_builder.report import BuildReport
    from optimodel.operator.preview import render_model
    from optimodel.operator.settings import (
        SETTINGS_FILE_ENV,
        OperatorSettings,
        SettingsError,
        load_settings,
    )
    from optimodel.operator.validation import ManifestError

    try:
        settings = (
            load_settings({SETTINGS_FILE_ENV: str(settings_file)})
            if settings_file is not None
            else OperatorSettings()
        )
    except SettingsError as error:
        err_console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(2) from None
    build_report = None
    if report is not None:
        try:
            build_report = BuildReport.model_validate(json.loads(report.read_text()))
        except (OSError, ValueError, ValidationError) as error:
            err_console.print(f"[red]--report {escape(str(report))}: {escape(str(error))}[/red]")
            raise typer.Exit(2) from None
    try:
        rendered = render_model(one_manifest(manifest), settings, build_report, namespace)
    except ManifestError as error:
        err_console.print(f"[red]✗[/red] {escape(str(manifest))}: cannot be rendered")
        print_problems(err_console, error.problems)
        raise typer.Exit(1) from None
    err_console.print(f"[dim]{escape(rendered.note)}[/dim]")
    typer.echo(yaml.safe_dump_all(rendered.manifests, sort_keys=False), nl=False)


@app.command()
def plan(
    manifest: Annotated[Path, typer.Argument(help="An OptimizedModel manifest (YAML).")],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="The build's report.json (optimodel build writes OUT/<name>/)."
        ),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option(
            "--settings",
            help="The operator's settings file (hardware catalog, measured profiles, policy).",
        ),
    ] = None,
    png: Annotated[
        Path | None, typer.Option("--png", help="Where to write the plot (<name>-plan.png).")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", "-n", help="Namespace whose policy caps apply."),
    ] = None,
) -> None:
    """Compare the hardware for a manifest's serving.target as the operator does: throughput,
    p99, replicas and $ per 1M inferences per type (measured or estimated), the chosen type
    and the runner-up; a table and a PNG, no cluster.

    Exit codes: 0 the target is met, 1 out of reach (the best option is shown), 2 invalid input.
    """
    from optimodel.operator.settings import (
        SETTINGS_FILE_ENV,
        OperatorSettings,
        SettingsError,
        load_settings,
    )
    from optimodel.plan_console import plan_and_show

    settings = OperatorSettings()
    if settings_file is not None:
        try:
            settings = load_settings({SETTINGS_FILE_ENV: str(settings_file)})
        except SettingsError as error:
            err_console.print(f"[red]{escape(str(error))}[/red]")
            raise typer.Exit(2) from None
    code = plan_and_show(
        manifest, report, settings, png, namespace, console=console, err_console=err_console
    )
    if code:
        raise typer.Exit(code)


@app.command("operator")
def operator_command() -> None:
    """Run the Kubernetes operator (settings: OPTIMODEL_SETTINGS_FILE and OPTIMODEL_* env)."""
    from optimodel.operator.main import main as run_operator

    raise typer.Exit(run_operator())


def _concurrencies(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise typer.BadParameter(
            f"{text!r}: give positive integers separated by commas, e.g. 1,8,64"
        )
    return levels


def _length_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        bounds = (0, 0)
    if not 1 <= bounds[0] <= bounds[1]:
        raise typer.BadParameter(f"{text!r}: give LOW-HIGH token counts, e.g. 5-120")
    return bounds


HttpPort = Annotated[int, typer.Option("--http-port", help="HTTP (KServe v2) port.")]
GrpcPort = Annotated[int, typer.Option("--grpc-port", help="gRPC port.")]
MetricsPort = Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")]


@app.command()
def serve(
    repository: Annotated[
        Path, typer.Argument(help="A built model folder (OUT/<name>) or the OUT folder.")
    ],
    http_port: HttpPort = 8000,
    grpc_port: GrpcPort = 8001,
    metrics_port: MetricsPort = 8002,
    with_unbatched: Annotated[
        bool, typer.Option(help="Also serve <name>-unbatched (dynamic batching off).")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="onnxruntime intra-op threads per instance (0: its default).")
    ] = 0,
) -> None:
    """Serve a built repository on the real Triton server (127.0.0.1) until Ctrl-C.

    Exit codes: 0 stopped, 1 server failed, 2 invalid repository, 3 port taken.
    """
    from optimodel.local.server import ServerPorts
    from optimodel.local.terminal import serve_until_stopped

    code = serve_until_stopped(
        repository,
        ServerPorts(http_port, grpc_port, metrics_port),
        with_unbatched=with_unbatched,
        intra_op_threads=threads,
        console=console,
        err_console=err_console,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def loadtest(
    repository: Annotated[
        Path, typer.Argument(help="A built model folder (OUT/<name>) or the OUT folder.")
    ],
    concurrency: Annotated[
        str, typer.Option(help="Concurrency levels, comma-separated.")
    ] = "1,8,32,64",
    duration: Annotated[float, typer.Option(help="Seconds measured per level.")] = 5.0,
    tokens: Annotated[
        int | None, typer.Option(help="Tokens per request (default: mixed, see --lengths).")
    ] = None,
    lengths: Annotated[
        str, typer.Option(help="Token lengths of the mixed texts, LOW-HIGH.")
    ] = "5-120",
    compare_unbatched: Annotated[
        bool, typer.Option(help="Also measure a twin with dynamic batching off.")
    ] = True,
    tool: Annotated[
        str, typer.Option(help="auto (perf_analyzer if it runs), perf_analyzer or tritonclient.")
    ] = "auto",
    url: Annotated[
        str | None, typer.Option(help="gRPC host:port of a running server (else start one).")
    ] = None,
    metrics_url: Annotated[
        str | None, typer.Option(help="Metrics URL of that server (for the average batch).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name on that server.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG plot here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the numbers here.")] = None,
    http_port: HttpPort = 8000,
    grpc_port: GrpcPort = 8001,
    metrics_port: MetricsPort = 8002,
) -> None:
    """Concurrency sweep on the real Triton server: throughput, p50/p99, average batch.

    Sends texts to the text-in ensemble (`--model <name>-model`: token ids to the raw model).
    """
    from optimodel.local.server import ServerPorts
    from optimodel.local.terminal import loadtest_and_show

    if tool not in ("auto", "perf_analyzer", "tritonclient"):
        raise typer.BadParameter(f"--tool {tool!r}: use auto, perf_analyzer or tritonclient")
    code = loadtest_and_show(
        repository,
        ports=ServerPorts(http_port, grpc_port, metrics_port),
        concurrencies=_concurrencies(concurrency),
        duration_s=duration,
        sequence_length=tokens,
        compare_unbatched=compare_unbatched,
        tool=tool,
        grpc_url=url,
        metrics_url=metrics_url,
        model_name=model,
        plot=plot,
        json_path=json_out,
        console=console,
        err_console=err_console,
        lengths=_length_range(lengths),
    )
    if code:
        raise typer.Exit(code)


@app.command()
def query(
    target: Annotated[
        str,
        typer.Argument(
            help="A built repository (OUT/<name>, served here for the query) or a running "
            "server's URL: http://host:port or grpc://host:port."
        ),
    ],
    texts: Annotated[list[str], typer.Argument(help="Texts to send (one request, one row each).")],
    model: Annotated[
        str | None, typer.Option(help="Text-in model name (default: the only one served).")
    ] = None,
    grpc: Annotated[
        bool, typer.Option("--grpc", help="Query a built repository over gRPC (default HTTP).")
    ] = False,
) -> None:
    """Send texts to the text-in model; print embedding shape and norm, or label and score.

    Exit codes: 0 answered, 1 server failed or refused, 2 invalid repository or URL.
    """
    from rich.markup import escape

    from optimodel.local.query import QueryError, describe_answers, query_target
    from optimodel.local.terminal import report_startup_error

    try:
        name, outputs = query_target(target, texts, model, "grpc" if grpc else "http")
    except ValueError as error:  # a bad URL, an invalid repository
        err_console.print(f"[red]✗ {escape(str(error))}[/red]")
        raise typer.Exit(2) from error
    except QueryError as error:
        err_console.print(f"[red]✗ query failed:[/red] {escape(str(error))}")
        raise typer.Exit(1) from error
    except (RuntimeError, OSError) as error:
        raise typer.Exit(report_startup_error(error, err_console)) from error
    console.print(f"[bold]{escape(name)}[/bold]: {len(texts)} text(s)")
    for line in describe_answers(texts, outputs):
        console.print(f"  {escape(line)}")


@app.command()
def demo(
    manifest: Annotated[
        Path, typer.Option(help="The OptimizedModel manifest to build and serve.")
    ] = Path("examples/minilm-int8.yaml"),
    out: Annotated[Path, typer.Option(help="Where the build, plot and numbers go.")] = Path(
        "build/demo"
    ),
    rebuild: Annotated[bool, typer.Option(help="Build even if a matching build exists.")] = False,
    concurrency: Annotated[
        str, typer.Option(help="Load-test concurrency levels, comma-separated.")
    ] = "1,8,64",
    duration: Annotated[float, typer.Option(help="Seconds measured per load level.")] = 3.0,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (default: a free one).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (default: a free one).")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Metrics port (default: a free one).")
    ] = None,
) -> None:
    """Build → serve on Triton → query over HTTP and gRPC → load test → table and plot."""
    from optimodel.local.demo import DemoOptions, run_demo
    from optimodel.local.server import ServerPorts, free_ports

    free = iter(free_ports(3))
    options = DemoOptions(
        manifest=manifest,
        out=out,
        ports=ServerPorts(
            http_port or next(free), grpc_port or next(free), metrics_port or next(free)
        ),
        concurrencies=_concurrencies(concurrency),
        duration_s=duration,
        rebuild=rebuild,
    )
    code = run_demo(options, console, err_console)
    if code:
        raise typer.Exit(code)


@app.command()
def tune(
    artifact: Annotated[
        Path, typer.Argument(help="A built model folder (OUT/<name>) from `optimodel build`.")
    ],
    p99_target_ms: Annotated[
        float, typer.Option("--p99-target-ms", help="Highest acceptable p99 latency (ms).")
    ],
    concurrency: Annotated[
        str, typer.Option(help="Concurrency levels of the sweep, comma-separated.")
    ] = "1,2,4,8,16,32,64",
    duration: Annotated[float, typer.Option(help="Seconds measured per point.")] = 3.0,
    apply: Annotated[
        bool, typer.Option("--apply", help="Also rewrite the artifact's config.pbtxt.")
    ] = False,
) -> None:
    """Pick batching delay and instances for a p99 target from a sweep on the real Triton server.

    Records the choice in the artifact's report.json (servingChoice). Exit 3: no
    configuration met the target (the closest one is recorded).
    """
    from optimodel.local.tuning import tune_and_show

    if p99_target_ms <= 0:
        raise typer.BadParameter(f"{p99_target_ms}: give a positive number of milliseconds")
    code = tune_and_show(
        artifact,
        p99_target_ms,
        concurrencies=_concurrencies(concurrency),
        duration_s=duration,
        rewrite_config=apply,
        console=console,
    )
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
