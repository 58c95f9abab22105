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


def label_groups(
    points: list[tuple[float, float]], radius: float = 0.03
) -> list[tuple[float, float, list[int]]]:
    """Points close together (in axis-range units) share one label: (x, y, indices)."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width = (max(xs) - min(xs)) or 1.0
    height = (max(ys) - min(ys)) or 1.0
    groups: list[tuple[float, float, list[int]]] = []
    for index, (x, y) in enumerate(points):
        for gx, gy, members in groups:
            if abs(gx - x) / width < radius and abs(gy - y) / height < radius:
                members.append(index)
                break
        else:
            groups.append((x, y, [index]))
    return groups


def throughput_vs_fidelity(results: dict[str, Any], out_dir: Path) -> Path:
    """One panel per model: throughput (× baseline) against the fidelity metric.

    Points are numbered (close points share a label); the key beside each panel names them.
    """
    plt = _pyplot()
    models = results["models"]
    figure, axes = plt.subplots(1, len(models), figsize=(8 * len(models), 5.5), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        key = "cosine_mean" if model["task"] == "feature-extraction" else "agreement"
        shown = [
            (number, row)
            for number, row in enumerate(model["contenders"], start=1)
            if row["fidelity"].get(key) is not None and row["ratios"].get("throughput")
        ]
        points = [(row["fidelity"][key], row["ratios"]["throughput"]) for _, row in shown]
        for (_, row), (x, y) in zip(shown, points, strict=True):
            color, marker = FAMILY_STYLE[row["family"]]
            axis.scatter([x], [y], color=color, marker=marker, s=60, zorder=3)
        for x, y, members in label_groups(points):
            text = ",".join(str(shown[i][0]) for i in members)
            axis.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        key_text = "\n".join(f"{number:>2}  {row['name']}" for number, row in shown)
        axis.text(
            1.02, 1.0, key_text, transform=axis.transAxes, fontsize=7.5, va="top",
            family="monospace",
        )  # fmt: skip
        axis.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        axis.margins(x=0.08, y=0.08)
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
    figure.savefig(path, dpi=110, bbox_inches="tight")
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
