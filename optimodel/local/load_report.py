"""Load-test results as people compare them: a rich table (with cost per 1M inferences at the
manifest's GPU price) and a PNG plot of throughput and p99 latency against concurrency."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from optimodel.local.loadtest import LoadResult
from optimodel.local.repository import UNBATCHED_SUFFIX
from optimodel.model_builder.spec import Serving


def replica_usd_per_hour(serving: Serving, price_override: float | None = None) -> float:
    """USD per replica-hour from the operator's price catalog (the one source of prices)."""
    from optimodel.operator.cost import PriceCatalog, replica_cost_per_hour

    return replica_cost_per_hour(serving, PriceCatalog(), price_override)


def usd_per_million(usd_per_hour: float, throughput: float) -> float | None:
    """What a million inferences cost at THROUGHPUT inferences/s on one replica."""
    from optimodel.operator.cost import usd_per_million_inferences

    return usd_per_million_inferences(usd_per_hour, throughput)


def batching_label(result: LoadResult) -> str:
    return "off" if result.model.endswith(UNBATCHED_SUFFIX) else "on"


def load_table(
    results: Sequence[LoadResult], usd_per_hour: float | None, price_label: str = ""
) -> Table:
    """One row per load level: throughput, latency, batch formed, cost per 1M inferences."""
    title = "Triton load test on this machine's CPU"
    if usd_per_hour is not None:
        title += f"; cost at ${usd_per_hour:.2f}/replica-hour {price_label}".rstrip()
    table = Table(
        title=title,
        title_justify="left",
        caption=f"<name>{UNBATCHED_SUFFIX}: the same model.onnx with dynamic batching off",
        caption_justify="left",
    )
    table.add_column("model", overflow="fold")
    for name in ("conc.", "tokens", "inf/s", "p50 ms", "p99 ms", "avg batch", "$ / 1M"):
        table.add_column(name, justify="right", min_width=5)
    for r in results:
        cost = usd_per_million(usd_per_hour, r.throughput) if usd_per_hour is not None else None
        table.add_row(
            r.model,
            str(r.concurrency),
            f"≤{r.sequence_length}" if r.mixed_lengths else str(r.sequence_length),
            f"{r.throughput:,.1f}",
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p99_ms:.1f}",
            f"{r.average_batch:.1f}" if r.average_batch is not None else "–",
            f"{cost:.2f}" if cost is not None else "–",
        )
    return table


def save_load_plot(results: Sequence[LoadResult], path: Path, title: str) -> Path:
    """Throughput and p99 latency against concurrency, one line per model (PNG)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in dict.fromkeys(r.model for r in results):
        rows = sorted((r for r in results if r.model == model), key=lambda r: r.concurrency)
        label = f"{model} (batching {batching_label(rows[0])})"
        x = [r.concurrency for r in rows]
        left.plot(x, [r.throughput for r in rows], marker="o", label=label)
        right.plot(x, [r.latency_p99_ms for r in rows], marker="o", label=label)
    levels = sorted({r.concurrency for r in results})
    for axis, ylabel in ((left, "inferences / s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        # Tick exactly the measured concurrency levels, as whole numbers.
        axis.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(levels))
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
        axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
