"""`optimodel plan` on a terminal: the hardware comparison the operator makes for a manifest,
as a table and a PNG, without a cluster.

The command in cli.py is a thin shell around `plan_and_show`; the comparison is the
operator's own (operator/hardware_choice.py over operator/performance.py), fed the build's
report.json instead of status.build, and the operator's settings file instead of its ConfigMap.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimodel.model_builder.report import BuildReport
from optimodel.operator import api
from optimodel.operator.hardware_choice import compare_hardware, is_auto
from optimodel.operator.performance import HardwareChoice, HardwareChoiceError, rated_candidates
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.validation import parse_spec, validate_file

EXIT_UNREACHABLE, EXIT_INVALID = 1, 2


def choice_table(choice: HardwareChoice, served: str | None) -> Table:
    """Every candidate sized for the target, cheapest that meets it first."""
    target = choice.target
    rate = target.inferences_per_second
    latency = f" at p99 ≤ {target.latency_p99_ms:g} ms" if target.latency_p99_ms else ""
    table = Table(title=f"Hardware for {rate:g} inferences/s{latency}")
    for column in ("type", "basis", "bound", "inf/s per replica", "replicas", "p99 ms"):
        table.add_column(column, justify="left" if column in ("type", "basis") else "right")
    for column in ("$/h", "$/1M on-demand", "$/1M spot", "meets target"):
        table.add_column(column, justify="right" if column.startswith("$") else "left")
    for option in choice.options:
        mark = " ← chosen" if option is choice.chosen else ""
        if served is not None and option.hardware == served and option is not choice.chosen:
            mark = " ← the spec's type"
        per_second = option.served_per_second or rate
        table.add_row(
            f"{option.hardware}{mark}",
            option.basis,
            option.estimate.bound,
            f"{option.estimate.inferences_per_second:,.0f}",
            str(option.replicas),
            f"{option.latency_p99_ms:.1f}",
            f"{option.usd_per_hour:.2f}",
            f"{option.usd_per_million(per_second):.3f}",
            f"{option.usd_per_million(per_second, 'spot'):.3f}",
            "[green]yes[/green]" if option.meets_target else f"[red]no[/red]: {option.shortfall}",
        )
    for name, why in choice.unavailable.items():
        table.add_row(name, "–", "–", "–", "–", "–", "–", "–", "–", f"not rated: {why}")
    return table


def save_choice_plot(choice: HardwareChoice, path: Path, title: str) -> Path:
    """$ per 1M inferences by type, on-demand and spot; the chosen type highlighted (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    options = list(choice.options)
    rate = choice.target.inferences_per_second
    names = [option.hardware for option in options]
    on_demand = [option.usd_per_million(option.served_per_second or rate) for option in options]
    spot = [option.usd_per_million(option.served_per_second or rate, "spot") for option in options]
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(options) + 2), 4))
    positions = range(len(options))
    bars = axis.bar([p - 0.2 for p in positions], on_demand, 0.4, label="on-demand")
    axis.bar([p + 0.2 for p in positions], spot, 0.4, label="spot", alpha=0.7)
    for bar, option in zip(bars, options, strict=True):
        if not option.meets_target:
            bar.set_hatch("//")
        if option is choice.chosen:
            bar.set_edgecolor("black")
            bar.set_linewidth(2)
    axis.set_xticks(list(positions))
    axis.set_xticklabels(
        [f"{n}\n×{o.replicas} ({o.basis[0]})" for n, o in zip(names, options, strict=True)],
        fontsize=8,
    )
    axis.set_ylabel("USD per 1M inferences")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    figure.text(
        0.01,
        0.01,
        "outlined: chosen; hatched: misses the target; (e) estimated, (m) measured",
        fontsize=7,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plan_and_show(
    manifest: Path,
    report_path: Path | None,
    settings: OperatorSettings,
    png: Path | None,
    namespace: str | None,
    *,
    console: Console,
    err_console: Console,
) -> int:
    """Compare the hardware for `manifest`; returns the exit code (1: target out of reach)."""
    from optimodel.manifest import print_problems

    results = [r for r in validate_file(manifest, settings, namespace) if r.kind == api.KIND]
    problems = [problem for result in results for problem in result.problems]
    if problems or len(results) != 1:
        err_console.print(f"[red]✗ {escape(str(manifest))} cannot be planned[/red]")
        if problems:
            print_problems(err_console, problems)
        else:
            err_console.print(f"  the file must hold exactly one {api.KIND}")
        return EXIT_INVALID
    document = results[0].document
    spec = parse_spec(document)
    metadata = document.get("metadata") or {}
    name = str(metadata.get("name"))
    where = namespace or str(metadata.get("namespace") or "default")
    if spec.serving.target is None:
        err_console.print(
            "[red]✗ spec.serving.target is not set[/red]; fix: set "
            "serving.target.inferencesPerSecond (and latencyP99Ms) to plan for"
        )
        return EXIT_INVALID
    work = None
    if report_path is not None:
        try:
            work = BuildReport.read(report_path).work
        except (OSError, ValidationError) as error:
            err_console.print(f"[red]✗ --report {escape(str(report_path))}: {escape(str(error))}")
            return EXIT_INVALID
    # A fixed type is compared with every other the replica could use: the plan explains it.
    candidates = None
    if not is_auto(spec):
        candidates = rated_candidates(settings.hardware_catalog, spec.serving.gpu.count)
    try:
        choice = compare_hardware(
            spec,
            work,
            model=name,
            namespace=where,
            annotations=dict(metadata.get("annotations") or {}),
            settings=settings,
            candidates=candidates,
        )
    except HardwareChoiceError as error:
        hint = "" if report_path else " (pass --report OUT/<name>/report.json from optimodel build)"
        err_console.print(f"[red]✗ {escape(str(error))}[/red]{hint}")
        return EXIT_INVALID
    served = None if is_auto(spec) or spec.serving.gpu.count == 0 else spec.serving.gpu.type
    console.print(choice_table(choice, served))
    console.print(choice.summary())
    path = png or Path(f"{name}-plan.png")
    reached = "meets the target" if choice.reachable else "best effort, target out of reach"
    title = f"{name}: {choice.chosen.hardware} x {choice.chosen.replicas} ({reached})"
    save_choice_plot(choice, path, title)
    console.print(f"plot: {escape(str(path))}")
    return 0 if choice.reachable else EXIT_UNREACHABLE
