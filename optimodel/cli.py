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
) -> None:
    """Validate OptimizedModel manifests offline: schema plus cross-field rules."""
    from optimodel.operator.validation import validate_file

    invalid = 0
    checked = 0
    for path in files:
        for result in validate_file(path):
            if result.kind != "OptimizedModel" and result.valid:
                console.print(f"[dim]- {escape(result.origin)}: {result.kind} (not checked)[/dim]")
                continue
            checked += 1
            label = escape(f"{result.origin}" + (f" ({result.name})" if result.name else ""))
            if result.valid:
                console.print(f"[green]✓[/green] {label}")
                continue
            invalid += 1
            noun = "problem" if len(result.problems) == 1 else "problems"
            console.print(f"[red]✗[/red] {label}: {len(result.problems)} {noun}")
            for problem in result.problems:
                console.print(f"    [bold]{escape(problem.path)}[/bold]: {escape(problem.message)}")
                console.print(f"      fix: {escape(problem.fix)}")
    console.print(f"{checked - invalid} valid, {invalid} invalid")
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

    Exit codes: 0 built, 2 invalid manifest, 3 accuracy gate failed, 1 other failure.
    """
    from optimodel.build_console import build_and_show

    code = build_and_show(
        manifest, out, benchmark=benchmark, console=console, err_console=err_console
    )
    if code:
        raise typer.Exit(code)


@app.command("operator")
def operator_command() -> None:
    """Run the Kubernetes operator (settings: OPTIMODEL_SETTINGS_FILE and OPTIMODEL_* env)."""
    from optimodel.operator.main import main as run_operator

    raise typer.Exit(run_operator())


if __name__ == "__main__":
    app()
