"""The tuner's glue: served names per configuration, and recording a choice in an artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimodel.local.repository import read_built_model
from optimodel.local.tuning import (
    apply_serving_choice,
    best_of,
    config_model_name,
    configured_variant,
)
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.serving_choice import ServingChoice, ServingConfig, SweepPoint
from optimodel.model_builder.spec import Serving
from tests.triton_models import write_built_repository


def built_folder(root: Path) -> Path:
    """A served repository `m` (placeholder model.onnx, never loaded here)."""
    placeholder = root / "placeholder.onnx"
    placeholder.write_bytes(b"not read by this test")
    serving = Serving(max_batch_size=16, max_queue_delay_microseconds=100, instances=1)
    return write_built_repository(root / "out", "m", placeholder, serving)


def choice(config: ServingConfig) -> ServingChoice:
    return ServingChoice(
        config=config,
        p99_target_ms=50,
        met_target=True,
        concurrency=8,
        throughput=100,
        latency_p99_ms=40,
        points_considered=4,
        reason="test",
    )


@pytest.mark.parametrize(
    ("config", "name"),
    [
        (ServingConfig(dynamic_batching=False, instances=1), "m-nb-i1"),
        (ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=2),
         "m-b500-i2"),
    ],
)  # fmt: skip
def test_each_configuration_is_served_under_its_own_name(
    tmp_path: Path, config: ServingConfig, name: str
) -> None:
    assert config_model_name("m", config) == name
    variant = configured_variant(read_built_model(built_folder(tmp_path)), config)
    assert variant.name == name
    assert variant.serving.dynamic_batching == config.dynamic_batching
    assert variant.serving.instances == config.instances
    assert variant.serving.max_batch_size == 16  # everything else as built


@pytest.mark.parametrize(
    "config",
    [
        ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=2000, instances=2),
        ServingConfig(dynamic_batching=False, instances=3),
    ],
)
@pytest.mark.parametrize("rewrite", [True, False])
def test_choice_is_recorded_and_optionally_applied(
    tmp_path: Path, config: ServingConfig, rewrite: bool
) -> None:
    folder = built_folder(tmp_path)
    apply_serving_choice(folder, choice(config), rewrite_config=rewrite)
    report = BuildReport.read(folder / "report.json")
    assert report.serving_choice is not None
    assert report.serving_choice.config == config
    served = read_built_model(folder).serving
    if rewrite:
        assert (served.dynamic_batching, served.instances) == (
            config.dynamic_batching,
            config.instances,
        )
        if config.dynamic_batching:
            assert served.max_queue_delay_microseconds == 2000
    else:
        assert (served.dynamic_batching, served.instances) == (True, 1)
    assert served.max_batch_size == 16
    model_step = (folder / "m-model" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in model_step and "KIND_GPU" in model_step  # kept as built
    # Every step of the text path follows the choice, not only the model step.
    tokenize = (folder / "m-tokenize" / "config.pbtxt").read_text()
    assert ("dynamic_batching" in tokenize) == (config.dynamic_batching or not rewrite)


def sweep_point(throughput: float, p99: float, errors: int = 0) -> SweepPoint:
    return SweepPoint(
        config=ServingConfig(dynamic_batching=True),
        concurrency=8,
        throughput=throughput,
        latency_p50_ms=p99 / 2,
        latency_p99_ms=p99,
        errors=errors,
    )


@pytest.mark.parametrize(
    ("measurements", "expected"),
    [
        ([(100, 50)], 0),
        ([(100, 50), (140, 40)], 1),  # the second pass was less disturbed
        ([(140, 60), (140, 40)], 1),  # equal throughput: the lower p99
        ([(300, 10, 2), (100, 50)], 1),  # a pass with errors loses
    ],
)
def test_best_of_passes(measurements: list[tuple[float, ...]], expected: int) -> None:
    points = [sweep_point(*m) for m in measurements]  # type: ignore[arg-type]
    assert best_of(points) is points[expected]
