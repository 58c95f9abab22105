"""The benchmark's timing schedule and summary math: alternation, medians, ratios."""

from __future__ import annotations

import pytest

from benchmarks.compare.run import other_load_verdict
from benchmarks.compare.schedule import Spread, mean_positions, ratio, serpentine_schedule


@pytest.mark.parametrize(
    ("names", "repeats", "expected"),
    [
        (["a"], 1, [["a"]]),
        (["a", "b"], 2, [["a", "b"], ["b", "a"]]),
        (["a", "b", "c"], 3, [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]),
    ],
)
def test_serpentine_schedule_alternates(
    names: list[str], repeats: int, expected: list[list[str]]
) -> None:
    assert serpentine_schedule(names, repeats) == expected


@pytest.mark.parametrize("count", [2, 3, 5, 12])
@pytest.mark.parametrize("repeats", [2, 4, 6])
def test_even_rounds_give_every_contender_the_same_mean_time(count: int, repeats: int) -> None:
    names = [f"c{i}" for i in range(count)]
    schedule = serpentine_schedule(names, repeats)
    positions = mean_positions(schedule)
    assert all(sum(r.count(n) for r in schedule) == repeats for n in names)
    assert max(positions.values()) - min(positions.values()) == pytest.approx(0.0)


def test_plain_round_robin_would_not_cancel_drift() -> None:
    # The property above is not trivial: A B C, A B C favours A by a full slot.
    positions = mean_positions([["a", "b", "c"], ["a", "b", "c"]])
    assert positions["c"] - positions["a"] == pytest.approx(2.0)


@pytest.mark.parametrize(("names", "repeats"), [(["a", "a"], 2), (["a"], 0)])
def test_schedule_rejects_bad_input(names: list[str], repeats: int) -> None:
    with pytest.raises(ValueError):
        serpentine_schedule(names, repeats)


@pytest.mark.parametrize(
    ("values", "median", "low", "high"),
    [
        ([3.0], 3.0, 3.0, 3.0),
        ([1.0, 9.0, 2.0], 2.0, 1.0, 9.0),
        ([4.0, 1.0, 3.0, 2.0], 2.5, 1.0, 4.0),
        ([5.0, 5.0, 100.0, 5.0], 5.0, 5.0, 100.0),  # one disturbed round does not move it
    ],
)
def test_spread_is_median_and_extremes(
    values: list[float], median: float, low: float, high: float
) -> None:
    spread = Spread.of(values)
    assert (spread.median, spread.low, spread.high, spread.samples) == (
        median,
        low,
        high,
        len(values),
    )
    assert spread.as_dict() == {"median": median, "min": low, "max": high, "n": len(values)}


def test_spread_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no measurements"):
        Spread.of([])


@pytest.mark.parametrize(
    ("value", "baseline", "lower_is_better", "expected"),
    [
        (200.0, 100.0, False, 2.0),  # throughput doubled
        (50.0, 100.0, False, 0.5),
        (5.0, 20.0, True, 4.0),  # latency a quarter
        (90.0, 30.0, True, 1 / 3),  # size tripled
        (None, 1.0, False, None),
        (1.0, None, True, None),
        (0.0, 1.0, True, None),
        (1.0, 0.0, False, None),
    ],
)
def test_ratio_is_greater_than_one_when_better(
    value: float | None, baseline: float | None, lower_is_better: bool, expected: float | None
) -> None:
    result = ratio(value, baseline, lower_is_better=lower_is_better)
    assert result == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("samples", "cores", "word"),
    [([0.5, 1.9, 2.4], 2, "quiet"), ([1.0, 3.5], 2, "busy"), ([], 2, "quiet"), ([7.0], 8, "quiet")],
)
def test_other_load_verdict(samples: list[float], cores: int, word: str) -> None:
    assert other_load_verdict(samples, cores).startswith(word)
