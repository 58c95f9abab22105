"""The in-loop Model Analyzer: best throughput within a p99 target, cheapest among ties."""

from __future__ import annotations

import pytest

from optimodel.model_builder.serving_choice import (
    EmptySweepError,
    ServingConfig,
    SweepPoint,
    choose_serving_config,
)

OFF1 = ServingConfig(dynamic_batching=False, instances=1)
OFF2 = ServingConfig(dynamic_batching=False, instances=2)
ON1 = ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=1)
ON1_LONG = ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=5000, instances=1)
ON2 = ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=2)


def point(
    config: ServingConfig, concurrency: int, throughput: float, p99: float, errors: int = 0
) -> SweepPoint:
    return SweepPoint(
        config=config,
        concurrency=concurrency,
        throughput=throughput,
        latency_p50_ms=p99 / 2,
        latency_p99_ms=p99,
        errors=errors,
    )


# A sweep shaped like a real one: batching wins at high concurrency, at a latency cost.
SWEEP = [
    point(OFF1, 1, 100, 12),
    point(OFF1, 8, 130, 70),
    point(OFF1, 64, 130, 520),
    point(OFF2, 1, 95, 13),
    point(OFF2, 8, 140, 65),
    point(OFF2, 64, 141, 480),
    point(ON1, 1, 98, 13),
    point(ON1, 8, 260, 40),
    point(ON1, 64, 400, 190),
    point(ON1_LONG, 64, 410, 230),
    point(ON2, 8, 250, 45),
    point(ON2, 64, 405, 210),
]


@pytest.mark.parametrize(
    ("target", "config", "concurrency", "met"),
    [
        # Generous target: ON1, ON1_LONG and ON2 tie within 5% at c=64; ON1 is the cheapest.
        (250.0, ON1, 64, True),
        # 200 ms excludes ON1_LONG and ON2 at c=64, ON1 still fits.
        (200.0, ON1, 64, True),
        # 50 ms: only the c<=8 points; ON1 (260) beats ON2 (250, tied but costlier).
        (50.0, ON1, 8, True),
        # 12.5 ms: only OFF1 at c=1 fits.
        (12.5, OFF1, 1, True),
        # Nothing fits 5 ms: the lowest p99 (OFF1, c=1) is returned, flagged.
        (5.0, OFF1, 1, False),
    ],
)
def test_choice_per_target(
    target: float, config: ServingConfig, concurrency: int, met: bool
) -> None:
    choice = choose_serving_config(SWEEP, target)
    assert (choice.config, choice.concurrency, choice.met_target) == (config, concurrency, met)
    assert choice.p99_target_ms == target
    assert choice.points_considered == len(SWEEP)
    if met:
        assert choice.latency_p99_ms <= target
        assert f"{target:g} ms" in choice.reason


def test_clear_winner_beats_cheaper_configuration() -> None:
    sweep = [point(ON1, 64, 300, 100), point(ON2, 64, 400, 100)]  # 33% better: not a tie
    assert choose_serving_config(sweep, 150).config == ON2


def test_tie_prefers_fewer_instances_then_shorter_delay() -> None:
    sweep = [point(ON1_LONG, 64, 400, 100), point(ON2, 64, 410, 100), point(ON1, 64, 395, 100)]
    choice = choose_serving_config(sweep, 150)
    assert choice.config == ON1
    assert "2 other configuration(s)" in choice.reason


def test_points_with_errors_are_ignored() -> None:
    sweep = [point(ON2, 64, 900, 10, errors=3), point(OFF1, 1, 100, 10)]
    assert choose_serving_config(sweep, 50).config == OFF1


@pytest.mark.parametrize(
    "sweep", [[], [point(ON1, 8, 100, 10, errors=1)], [point(ON1, 8, 0.0, 10)]]
)
def test_no_usable_point_is_an_error(sweep: list[SweepPoint]) -> None:
    with pytest.raises(EmptySweepError, match="re-run the sweep"):
        choose_serving_config(sweep, 50)


@pytest.mark.parametrize("target", [0.0, -1.0])
def test_target_must_be_positive(target: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        choose_serving_config(SWEEP, target)


def test_unmet_target_says_what_to_do() -> None:
    choice = choose_serving_config(SWEEP, 1.0)
    assert not choice.met_target
    assert "raise the target or add replicas" in choice.reason
    assert choice.latency_p99_ms == 12


def test_choice_round_trips_through_the_build_report() -> None:
    from datetime import UTC, datetime

    from optimodel.model_builder.report import BuildReport

    report = BuildReport(
        name="m",
        spec_hash="h",
        passed=True,
        source_uri="hf://x/y",
        task="feature-extraction",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        serving_choice=choose_serving_config(SWEEP, 200),
    )
    again = BuildReport.model_validate_json(report.model_dump_json(by_alias=True))
    assert again.serving_choice is not None
    assert again.serving_choice.config == ON1
