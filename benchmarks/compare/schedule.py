"""Timing schedule and summary statistics: alternate, repeat, take medians.

Contenders are timed in rounds whose order snakes back and forth (A B C, C B A, A B C, ...):
over an even number of rounds every contender has the same mean position in time, so a
linear drift of the machine's speed (thermal, another job ramping up) cancels in the ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def serpentine_schedule(names: Sequence[str], repeats: int) -> list[list[str]]:
    """`repeats` rounds over `names`, every other round reversed."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique, got {list(names)}")
    return [list(names) if r % 2 == 0 else list(reversed(names)) for r in range(repeats)]


def mean_positions(schedule: list[list[str]]) -> dict[str, float]:
    """Each contender's mean slot index over the whole schedule (flattened)."""
    slots: dict[str, list[int]] = {}
    index = 0
    for round_ in schedule:
        for name in round_:
            slots.setdefault(name, []).append(index)
            index += 1
    return {name: statistics.fmean(values) for name, values in slots.items()}


@dataclass(frozen=True)
class Spread:
    """Median of repeated measurements, with their extremes."""

    median: float
    low: float
    high: float
    samples: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("no measurements to summarize")
        return cls(
            median=float(statistics.median(values)),
            low=float(min(values)),
            high=float(max(values)),
            samples=len(values),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.samples}


def ratio(value: float | None, baseline: float | None, *, lower_is_better: bool) -> float | None:
    """How many times better `value` is than `baseline` (> 1 is better), None if undefined.

    Throughput: value / baseline. Latency and size: baseline / value.
    """
    if value is None or baseline is None or value <= 0 or baseline <= 0:
        return None
    return baseline / value if lower_is_better else value / baseline
