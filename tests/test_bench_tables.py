"""Markdown rendering of the benchmark results and its place in README.md."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare.plots import label_groups
from benchmarks.compare.tables import (
    END_MARKER,
    START_MARKER,
    MarkersNotFoundError,
    contender_table,
    headline_lines,
    render_markdown,
    replace_between_markers,
    sweep_table,
)


def spread(value: float) -> dict[str, float]:
    return {"median": value, "min": value, "max": value, "n": 4}


def row(
    name: str, family: str, size: int, p50: float, throughput: float, **fidelity: float
) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.replace("-", " "),
        "family": family,
        "size_bytes": size,
        "latency_p50_ms": spread(p50),
        "latency_p95_ms": spread(p50 * 1.5),
        "throughput": spread(throughput),
        "ratios": {"size": 90e6 / size, "latency_p50": 20.0 / p50, "throughput": throughput / 90},
        "fidelity": fidelity,
    }


RESULTS: dict[str, Any] = {
    "command": "python -m benchmarks.compare",
    "mode": "full",
    "wall_seconds": 840.0,
    "machine": {
        "cpu_model": "Test CPU",
        "cpus": 2,
        "cpus_used": 2,
        "load_average": {"start": [1.0, 1, 1], "end": [2.5, 2, 2]},
        "other_load": "quiet: no sign of other load",
    },
    "settings": {"batch_size": 32, "sequence_length": 64, "threads": 2, "repeats": 4},
    "optimum": {"available": False, "detail": "skipped: --no-optimum", "venv": "build/x"},
    "models": [
        {
            "key": "minilm",
            "title": "MiniLM",
            "description": "embeddings",
            "task": "feature-extraction",
            "fidelity_texts": 256,
            "labelled_texts": 0,
            "contenders": [
                row(
                    "pytorch-fp32",
                    "baseline",
                    90_000_000,
                    20.0,
                    90.0,
                    cosine_mean=1.0,
                    cosine_min=1.0,
                ),
                row(
                    "optimodel-int8",
                    "optimodel",
                    23_000_000,
                    5.0,
                    450.0,
                    cosine_mean=0.9931,
                    cosine_min=0.957,
                ),
            ],
        },
        {
            "key": "reviews",
            "title": "Reviews",
            "description": "classifier",
            "task": "text-classification",
            "fidelity_texts": 336,
            "labelled_texts": 80,
            "contenders": [
                row(
                    "pytorch-fp32",
                    "baseline",
                    90_000_000,
                    20.0,
                    90.0,
                    agreement=1.0,
                    accuracy=0.875,
                ),
                row(
                    "torch-ao-int8", "peer", 30_000_000, 10.0, 300.0, agreement=0.97, accuracy=0.85
                ),
            ],
        },
    ],
    "serving": {
        "model": "minilm-int8",
        "tool": "perf_analyzer",
        "sequence_length": 64,
        "duration_s": 2.0,
        "points": [
            {
                "label": "no batching, 1 inst.",
                "concurrency": 1,
                "throughput": 150.4,
                "latency_p99_ms": 9.6,
            },
            {
                "label": "no batching, 1 inst.",
                "concurrency": 8,
                "throughput": 170.0,
                "latency_p99_ms": 60.2,
            },
            {
                "label": "batching 500 us, 1 inst.",
                "concurrency": 8,
                "throughput": 400.0,
                "latency_p99_ms": 30.0,
            },
        ],
        "choices": [
            {"p99_target_ms": 50.0, "met_target": True, "reason": "batching 500 us wins"},
            {"p99_target_ms": 1.0, "met_target": False, "reason": "nothing fits"},
        ],
    },
    "plots": ["a.png", "b.png"],
}


def test_contender_table_shows_units_ratios_and_fidelity() -> None:
    lines = contender_table(RESULTS["models"][0]).splitlines()
    assert lines[0].startswith("| contender | size MB | × smaller | p50 ms (b1) |")
    assert lines[0].rstrip(" |").endswith("cosine mean | cosine min")
    assert len(lines) == 4
    assert {line.count("|") for line in lines} == {11}  # 10 columns in every row
    assert lines[2] == (
        "| pytorch fp32 | 90.0 | 1.00× | 20.00 | 30.00 | 90.0 | 1.00× | 1.00× | 1.0000 | 1.0000 |"
    )
    # optimodel rows are bold; 90/23 = 3.91x smaller, 450/90 = 5x, 20/5 = 4x.
    assert lines[3] == (
        "| **optimodel int8** | 23.0 | 3.91× | 5.00 | 7.50 | 450.0 | 5.00× | 4.00× | 0.9931 | "
        "0.9570 |"
    )


def test_classifier_table_has_agreement_and_accuracy() -> None:
    lines = contender_table(RESULTS["models"][1]).splitlines()
    assert "agreement | accuracy" in lines[0]
    assert lines[3].endswith("| 0.970 | 0.850 |")


def test_missing_ratio_renders_as_dash() -> None:
    model = copy.deepcopy(RESULTS["models"][0])
    model["contenders"][1]["ratios"]["throughput"] = None
    assert "| – |" in contender_table(model).splitlines()[3]


def test_sweep_table_is_configurations_by_concurrency() -> None:
    lines = sweep_table(RESULTS["serving"]).splitlines()
    assert {line.count("|") for line in lines} == {4}
    assert lines[0] == "| configuration | c=1 | c=8 |"
    assert lines[2] == "| no batching, 1 inst. | 150 / 10 | 170 / 60 |"
    assert lines[3] == "| batching 500 us, 1 inst. | – | 400 / 30 |"


def test_headlines_name_the_default_and_the_peer() -> None:
    lines = headline_lines(RESULTS)
    assert lines == [
        "- MiniLM, optimodel int8: 5.00× throughput, 4.00× faster p50, 3.91× smaller, "
        "cosine 0.9931 (worst 0.957)",
        "- Reviews, torch ao int8: 3.33× throughput, 2.00× faster p50, 3.00× smaller, "
        "agreement 0.970, accuracy 0.850",
    ]


def test_render_markdown_has_every_part() -> None:
    text = render_markdown(RESULTS)
    assert text.startswith("_Generated by `python -m benchmarks.compare` (full run, 14.0 min)")
    for needed in (
        "#### MiniLM",
        "#### Reviews",
        "over 256 texts",
        "labels of the 80 test reviews",
        "Optimum: not measured (skipped: --no-optimum).",
        "#### Serving sweep on the real Triton server (minilm-int8)",
        "- p99 ≤ 50 ms: batching 500 us wins",
        "- p99 ≤ 1 ms (target not met): nothing fits",
        "![a.png](benchmarks/results/a.png) ![b.png](benchmarks/results/b.png)",
    ):
        assert needed in text


def test_render_markdown_without_serving() -> None:
    results = {**RESULTS, "serving": None, "plots": []}
    text = render_markdown(results)
    assert "Serving sweep" not in text
    assert "![" not in text


README = f"""# Project

## Performance

{START_MARKER}
_old table_
{END_MARKER}

## Next section
"""


def test_marker_replacement_changes_only_the_inside() -> None:
    updated = replace_between_markers(README, "| new | table |\n")
    assert updated == README.replace("_old table_", "| new | table |")
    # Idempotent: rendering the same body again changes nothing.
    assert replace_between_markers(updated, "| new | table |") == updated


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all",
        f"{END_MARKER}\nx\n{START_MARKER}\n",
        f"{START_MARKER}\nonly a start\n",
        f"{START_MARKER}\n{END_MARKER}\n{START_MARKER}\n{END_MARKER}\n",
    ],
)
def test_marker_problems_are_reported(text: str) -> None:
    with pytest.raises(MarkersNotFoundError, match="add them where the table belongs"):
        replace_between_markers(text, "body")


def test_the_real_readme_has_the_markers(repo: Path) -> None:
    text = (repo / "README.md").read_text()
    assert replace_between_markers(text, "x").count(START_MARKER) == 1


@pytest.mark.parametrize(
    ("points", "groups"),
    [
        ([], []),
        ([(1.0, 1.0)], [[0]]),
        # The x range is 0.3 and the y range 3: points within 3% of both share a label.
        ([(0.7, 4.0), (1.0, 1.0), (0.999, 1.05), (0.99, 2.8)], [[0], [1, 2], [3]]),
        ([(0.7, 4.0), (1.0, 1.0), (1.0, 1.2)], [[0], [1], [2]]),
    ],
)
def test_close_points_share_a_plot_label(
    points: list[tuple[float, float]], groups: list[list[int]]
) -> None:
    assert [members for _, _, members in label_groups(points)] == groups
