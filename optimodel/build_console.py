"""`optimodel build` on a terminal: a progress bar per stage, then the results as tables.

The command in cli.py is a thin shell around `build_and_show`; the builder itself lives in
model_builder/pipeline.py and knows nothing of terminals.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimodel.model_builder.errors import AccuracyGateError, BuildError
from optimodel.model_builder.pipeline import BuildProgress
from optimodel.model_builder.report import BuildReport, RecipeTrial
from optimodel.operator.validation import ManifestError

STAGES = ("load", "prune", "recover", "export", "quantize", "evaluate", "benchmark")
EXIT_FAILED, EXIT_INVALID_SPEC = 1, 2


class StageBars:
    """A BuildProgress callback drawing one rich progress bar per stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {
            stage: progress.add_task(f"[dim]{stage}[/dim]", total=1.0, start=False)
            for stage in STAGES
        }

    def __call__(self, event: BuildProgress) -> None:
        task = self.tasks[event.step]
        if event.state == "started":
            self.progress.start_task(task)
            self.progress.update(task, description=f"[bold]{event.step}[/bold]")
        elif event.state == "advanced":
            self.progress.update(
                task,
                total=event.total,
                completed=event.completed,
                description=f"[bold]{event.step}[/bold] {escape(event.detail)}",
            )
        elif event.state == "finished":
            total = self.progress.tasks[task].total or 1.0
            self.progress.update(
                task, completed=total, description=f"[green]✓ {event.step}[/green]"
            )
            self.progress.stop_task(task)
        else:
            # Started and completed at once, so the bar reads as done rather than pending.
            self.progress.start_task(task)
            self.progress.update(
                task,
                completed=1.0,
                description=f"[dim]– {event.step} ({escape(event.detail)})[/dim]",
            )
            self.progress.stop_task(task)


def _megabytes(size: int | None) -> str:
    return "–" if size is None else f"{size / 1e6:.1f} MB"


def steps_table(report: BuildReport) -> Table:
    table = Table(title=f"{report.name}: steps", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("size", justify="right")
    table.add_column(report.accuracy.metric if report.accuracy else "accuracy", justify="right")
    table.add_column("what it did")
    for step in report.steps:
        table.add_row(
            step.name,
            f"{step.seconds:.1f}",
            _megabytes(step.size_bytes),
            "–" if step.accuracy is None else f"{step.accuracy:.4f}",
            escape(step.detail),
        )
    return table


# How the trial table names the ops that say what a graph computes in (others are left out).
SHORT_OPS = {
    "MatMulInteger": "int8 MatMul",
    "QAttention": "int8 Attention",
    "QuantizeLinear": "QDQ",
    "MatMulNBits": "MatMulNBits",
    "MatMul": "MatMul",
    "Attention": "Attention",
    "MultiHeadAttention": "MHA",
    "SkipLayerNormalization": "SkipLN",
    "BiasGelu": "BiasGelu",
}


def _ops(op_summary: dict[str, int]) -> str:
    return ", ".join(
        f"{op_summary[op]} {short}" for op, short in SHORT_OPS.items() if op_summary.get(op)
    )


def _outcome(trial: RecipeTrial, winner: RecipeTrial | None) -> str:
    if trial.chosen:
        return "[green]published[/green]"
    if trial.passed and winner is not None and winner.throughput and trial.throughput:
        slower = 1.0 - trial.throughput / winner.throughput
        return f"passed, {slower:.0%} slower" if slower > 0 else "passed, within noise"
    return escape(trial.rejected or "")


def trials_table(report: BuildReport) -> Table:
    """recipe auto's candidates: what each made, how it scored and ran, why it lost."""
    machine = f" on {report.machine.label}" if report.machine else ""
    table = Table(
        title=f"{report.name}: recipe trials for {(report.target or '?').upper()} serving"
        f"{escape(machine)}",
        title_justify="left",
    )
    metric = report.accuracy.metric if report.accuracy else "fidelity"
    for column, justify in (
        ("recipe", "left"),
        ("ops", "left"),
        ("size", "right"),
        ("b32 inf/s", "right"),
        ("b1 p50 ms", "right"),
        (f"{metric} mean / worst", "right"),
        ("build s", "right"),
        ("outcome", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    winner = next((trial for trial in report.trials if trial.chosen), None)
    for trial in report.trials:
        ops = _ops(trial.op_summary)
        fidelity = "–"
        if trial.fidelity_mean is not None:
            fidelity = f"{trial.fidelity_mean:.4f}" + (
                f" / {trial.fidelity_worst:.4f}" if trial.fidelity_worst is not None else ""
            )
        outcome = _outcome(trial, winner)
        table.add_row(
            ("[bold]" + trial.recipe + "[/bold]") if trial.chosen else trial.recipe,
            escape(ops) or "–",
            _megabytes(trial.size_bytes),
            "–" if trial.throughput is None else f"{trial.throughput:.1f}",
            "–" if trial.latency_p50_ms is None else f"{trial.latency_p50_ms:.2f}",
            fidelity,
            f"{trial.build_seconds:.1f}",
            outcome,
        )
    scored = {trial.scored_on for trial in report.trials if trial.scored_on}
    if scored:
        table.caption = "scored on: " + escape("; ".join(sorted(scored)))
    return table


def results_table(report: BuildReport) -> Table:
    table = Table(title=f"{report.name}: original vs optimized", title_justify="left")
    table.add_column("")
    table.add_column("PyTorch fp32 (original)", justify="right")
    table.add_column(f"optimized ONNX ({report.recipe or 'fp32'})", justify="right")
    table.add_column("ratio", justify="right")
    original, optimized = report.original, report.optimized
    if original is None or optimized is None:
        return table
    reduction = report.size_reduction
    table.add_row(
        "size",
        _megabytes(original.size_bytes),
        _megabytes(optimized.size_bytes),
        f"{reduction:.2f}x smaller" if reduction else "–",
    )
    if original.throughput and optimized.throughput:
        shape = f"batch {optimized.batch_size} x {optimized.sequence_length} tokens"
        table.add_row(
            f"throughput ({shape}, {optimized.threads} threads)",
            f"{original.throughput:.1f}/s",
            f"{optimized.throughput:.1f}/s",
            f"{optimized.throughput / original.throughput:.2f}x faster",
        )
    for label, before, after in (
        ("latency p50 (batch 1)", original.latency_p50_ms, optimized.latency_p50_ms),
        ("latency p95 (batch 1)", original.latency_p95_ms, optimized.latency_p95_ms),
    ):
        if before is not None and after is not None:
            table.add_row(label, f"{before:.2f} ms", f"{after:.2f} ms", f"{before / after:.2f}x")
    accuracy = report.accuracy
    if accuracy is not None:
        worst = f", worst {accuracy.min:.4f}" if accuracy.min is not None else ""
        gate = f"≥ {accuracy.threshold}" + (
            f", worst ≥ {accuracy.worst_case_threshold}"
            if accuracy.worst_case_threshold is not None
            else ""
        )
        table.add_row(
            f"{accuracy.metric} vs original ({accuracy.samples} texts)",
            "1.0" if accuracy.metric != "accuracy" else "–",
            f"{accuracy.mean:.4f}{worst}",
            f"gate {gate}: {'passed' if accuracy.passed else 'FAILED'}",
        )
    return table


def build_and_show(
    manifest: Path, out: Path, *, benchmark: bool, console: Console, err_console: Console
) -> int:
    """Build `manifest` into `out`, showing progress and results; returns the exit code."""
    from optimodel.manifest import build_spec_from_manifest, print_problems
    from optimodel.model_builder.pipeline import run_build

    try:
        spec = build_spec_from_manifest(manifest)
    except ManifestError as error:
        err_console.print(f"[red]✗ {escape(str(manifest))} is invalid[/red]")
        print_problems(err_console, error.problems)
        return EXIT_INVALID_SPEC
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            report = run_build(spec, out, progress=StageBars(progress), benchmark=benchmark)
    except AccuracyGateError as error:
        console.print(steps_table(error.report))
        if error.report.trials:
            console.print(trials_table(error.report))
        err_console.print(
            f"[red]✗ accuracy gate failed, nothing published:[/red] {escape(error.message)}"
        )
        if error.fix:
            err_console.print(f"  fix: {escape(error.fix)}")
        return error.exit_code
    except BuildError as error:
        err_console.print(f"[red]✗ build failed:[/red] {escape(str(error))}")
        return error.exit_code
    console.print(steps_table(report))
    if report.trials:
        console.print(trials_table(report))
    console.print(results_table(report))
    console.print(
        f"[green]✓[/green] Triton model repository: {escape(str(out))} (model {spec.name})"
    )
    return 0
