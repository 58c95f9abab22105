"""PNG plots from the results JSON: throughput vs fidelity, and serving concurrency curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FAMILY_STYLE = {
    "baseline": ("black", "s"),
    "peer": ("tab:orange", "^"),
    "optimum": ("tab:purple", "D"),
    "optimodel": ("tab:blue", "o"),
}
SCATTER_FILE = "peers_throughput_vs_fidelity.png"
CURVES_FILE = "serving_concurrency.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_fidelity(results: dict[str, Any], out_dir: Path) -> Path:
    """One panel per model: throughput (× baseline) against the fidelity metric."""
    plt = _pyplot()
    models = results["models"]
    figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        key = "cosine_mean" if model["task"] == "feature-extraction" else "agreement"
        for row in model["contenders"]:
            x = row["fidelity"].get(key)
            y = row["ratios"].get("throughput")
            if x is None or y is None:
                continue
            color, marker = FAMILY_STYLE[row["family"]]
            axis.scatter([x], [y], color=color, marker=marker, s=60, zorder=3)
            axis.annotate(
                row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7
            )
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axis.margins(x=0.25, y=0.08)  # room for the labels right of the points
        axis.set_xlabel("cosine to fp32 (mean)" if key == "cosine_mean" else "top-1 agreement")
        axis.set_ylabel("throughput × PyTorch fp32 (batch 32)")
        axis.set_title(model["title"])
        axis.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], color=color, marker=marker, linestyle="", label=family)
        for family, (color, marker) in FAMILY_STYLE.items()
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    path = out_dir / SCATTER_FILE
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def concurrency_curves(serving: dict[str, Any], out_dir: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per configuration."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels: list[str] = []
    for point in serving["points"]:
        if point["label"] not in labels:
            labels.append(point["label"])
    for label in labels:
        points = sorted(
            (p for p in serving["points"] if p["label"] == label), key=lambda p: p["concurrency"]
        )
        levels = [p["concurrency"] for p in points]
        style = "-" if "no batching" not in label else "--"
        left.plot(levels, [p["throughput"] for p in points], style, marker="o", label=label)
        right.plot(levels, [p["latency_p99_ms"] for p in points], style, marker="o", label=label)
    for choice in serving["choices"]:
        right.axhline(choice["p99_target_ms"], color="grey", linewidth=0.8, linestyle=":")
    for axis, title in ((left, "throughput (inf/s)"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests (batch 1)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    figure.suptitle(f"{serving['model']} on the real Triton server ({serving['tool']})")
    figure.tight_layout()
    path = out_dir / CURVES_FILE
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
