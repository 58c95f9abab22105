"""Markdown tables from the results JSON, and their place in README.md.

Pure functions of the results dictionary (as written to benchmarks/results/peers.json), so
the README's performance section is always regenerated from the committed JSON.
"""

from __future__ import annotations

from typing import Any

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
MB = 1_000_000


class MarkersNotFoundError(ValueError):
    """README.md lacks the bench markers (or has them out of order)."""


def replace_between_markers(
    text: str, body: str, start: str = START_MARKER, end: str = END_MARKER
) -> str:
    """`text` with everything between the markers replaced by `body` (markers kept)."""
    first = text.find(start)
    last = text.find(end)
    if first < 0 or last < 0 or last < first or text.count(start) != 1 or text.count(end) != 1:
        raise MarkersNotFoundError(
            f"expected exactly one {start!r} followed by one {end!r}; add them where the "
            f"table belongs"
        )
    return text[: first + len(start)] + "\n" + body.strip("\n") + "\n" + text[last:]


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _fidelity_columns(task: str) -> list[str]:
    if task == "feature-extraction":
        return ["cosine mean", "cosine min"]
    return ["agreement", "accuracy"]


def _fidelity_cells(task: str, fidelity: dict[str, float]) -> list[str]:
    if task == "feature-extraction":
        return [_number(fidelity.get("cosine_mean"), 4), _number(fidelity.get("cosine_min"), 4)]
    return [_number(fidelity.get("agreement"), 3), _number(fidelity.get("accuracy"), 3)]


def contender_table(model: dict[str, Any]) -> str:
    """One model's comparison: size, latency, throughput, ratios, fidelity."""
    header = [
        "contender",
        "size MB",
        "× smaller",
        "p50 ms (b1)",
        "p95 ms (b1)",
        "inf/s (b32)",
        "× throughput",
        "× p50",
        *_fidelity_columns(model["task"]),
    ]
    rule = "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for row in model["contenders"]:
        ratios = row["ratios"]
        name = f"**{row['label']}**" if row["family"] == "optimodel" else row["label"]
        cells = [
            name,
            _number(row["size_bytes"] / MB),
            _times(ratios.get("size")),
            _number(row["latency_p50_ms"]["median"], 2),
            _number(row["latency_p95_ms"]["median"], 2),
            _number(row["throughput"]["median"]),
            _times(ratios.get("throughput")),
            _times(ratios.get("latency_p50")),
            *_fidelity_cells(model["task"], row["fidelity"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fidelity_note(model: dict[str, Any]) -> str:
    if model["task"] == "feature-extraction":
        return (
            f"cosine: per-text cosine similarity to the PyTorch fp32 embeddings over "
            f"{model['fidelity_texts']} texts (mean and worst)."
        )
    return (
        f"agreement: share of {model['fidelity_texts']} texts where the top class equals "
        f"PyTorch fp32's; accuracy: vs the labels of the {model['labelled_texts']} test "
        f"reviews."
    )


def sweep_table(serving: dict[str, Any]) -> str:
    """Rows: configurations; columns: concurrency; cells: inf/s and p99 ms."""
    points = serving["points"]
    levels = sorted({p["concurrency"] for p in points})
    labels: list[str] = []
    for point in points:
        if point["label"] not in labels:
            labels.append(point["label"])
    header = ["configuration", *(f"c={level}" for level in levels)]
    rule = "|" + "|".join(["---"] + ["--:"] * len(levels)) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    for label in labels:
        cells = [label]
        for level in levels:
            match = [p for p in points if p["label"] == label and p["concurrency"] == level]
            cells.append(
                f"{match[0]['throughput']:.0f} / {match[0]['latency_p99_ms']:.0f}" if match else "–"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def choice_lines(serving: dict[str, Any]) -> list[str]:
    lines = []
    for choice in serving["choices"]:
        verdict = "" if choice["met_target"] else " (target not met)"
        lines.append(f"- p99 ≤ {choice['p99_target_ms']:g} ms{verdict}: {choice['reason']}")
    return lines


def _headline(model: dict[str, Any], name: str) -> str | None:
    row = next((r for r in model["contenders"] if r["name"] == name), None)
    if row is None:
        return None
    ratios = row["ratios"]
    fidelity = row["fidelity"]
    quality = (
        f"cosine {fidelity['cosine_mean']:.4f} (worst {fidelity['cosine_min']:.3f})"
        if model["task"] == "feature-extraction"
        else f"agreement {fidelity['agreement']:.3f}, accuracy {fidelity['accuracy']:.3f}"
    )
    return (
        f"{row['label']}: {_times(ratios.get('throughput'))} throughput, "
        f"{_times(ratios.get('latency_p50'))} faster p50, {_times(ratios.get('size'))} smaller, "
        f"{quality}"
    )


HEADLINE_CONTENDERS = (
    "optimodel-auto",
    "optimodel-int8",
    "optimodel-pruned-recovered-int8",
    "torch-ao-int8",
)


def headline_lines(results: dict[str, Any]) -> list[str]:
    """One line per model and headline contender, ratios vs PyTorch eager fp32."""
    lines = []
    for model in results["models"]:
        for name in HEADLINE_CONTENDERS:
            text = _headline(model, name)
            if text is not None:
                lines.append(f"- {model['title']}, {text}")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The whole performance section body (what goes between the README markers)."""
    machine = results["machine"]
    settings = results["settings"]
    load = machine["load_average"]
    parts = [
        f"_Generated by `{results['command']}` ({results['mode']} run, "
        f"{results['wall_seconds'] / 60:.1f} min) on {machine['cpu_model']} "
        f"({' '.join(machine.get('cpu_flags') or []) or 'ISA flags not recorded'}), "
        f"{machine['cpus_used']} of {machine['cpus']} cores; load average "
        f"{load['start'][0]:.1f} at start, {load['end'][0]:.1f} at end "
        f"({machine['other_load']}). Source: `benchmarks/results/peers.json`._",
        "",
        f"Latency: batch 1 × {settings['sequence_length']} tokens; throughput: batch "
        f"{settings['batch_size']} × {settings['sequence_length']} tokens; "
        f"{settings['threads']} threads. Contenders run in alternating order (A B C … C B A), "
        f"{settings['repeats']} rounds; each figure is the median over rounds. Ratios are vs "
        f"PyTorch eager fp32 (> 1 is better).",
        "",
        "Headline ratios:",
        "",
        *headline_lines(results),
    ]
    for model in results["models"]:
        parts += [
            "",
            f"#### {model['title']}",
            "",
            model["description"],
            "",
            contender_table(model),
            "",
            fidelity_note(model),
        ]
    optimum = results["optimum"]
    parts += [
        "",
        "Optimum: "
        + (
            f"presets quantized with optimum {optimum['versions'].get('optimum', '?')} / "
            f"optimum-onnx {optimum['versions'].get('optimum-onnx', '?')} (transformers "
            f"{optimum['versions'].get('transformers', '?')}) in the separate venv "
            f"`{optimum['venv']}`, timed here with the same onnxruntime."
            if optimum["available"]
            else f"not measured ({optimum['detail']})."
        ),
    ]
    serving = results.get("serving")
    if serving:
        parts += [
            "",
            f"#### Serving sweep on the real Triton server ({serving['model']})",
            "",
            (
                f"Batch-1 texts of {serving['sequence_length']} tokens through the text-in "
                "ensemble, "
                if serving.get("path") == "text"
                else f"Batch-1 requests of {serving['sequence_length']} tokens, "
            )
            + f"{serving['duration_s']:g} s per point, load by {serving['tool']}"
            + (
                f", best of {serving['passes']} passes (up, then down the concurrency levels)"
                if serving.get("passes", 1) > 1
                else ""
            )
            + "; each cell is inferences/s / p99 ms.",
            "",
            sweep_table(serving),
            "",
            "The builder's tuner (`optimodel tune`) picks, from such a sweep:",
            "",
            *choice_lines(serving),
        ]
    plots = results.get("plots", [])
    if plots:
        parts += ["", " ".join(f"![{name}](benchmarks/results/{name})" for name in plots)]
    return "\n".join(parts) + "\n"
