"""The served repository's config renderers: one per kind, parsed as Triton's own protobuf."""

from __future__ import annotations

from typing import Any

import pytest

from optimodel.local.repository import parse_config_text
from optimodel.model_builder.served.configs import (
    CPU_GROUP_OVERHEAD_TOKENS,
    CPU_LENGTH_BUCKET_TOKENS,
    GPU_GROUP_OVERHEAD_TOKENS,
    GPU_LENGTH_BUCKET_TOKENS,
    render_served_configs,
    response_cache_arguments,
)
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.spec import Gpu, Serving, Task
from tests.triton_models import tiny_signature

KIND_CPU, KIND_GPU = 2, 1  # ModelInstanceGroup.Kind


def configs(task: Task, serving: Serving) -> dict[str, Any]:
    texts = render_served_configs("m", task, tiny_signature(task), serving)
    return {name: parse_config_text(text) for name, text in texts.items()}


def test_ensemble_chains_tokenize_model_postprocess_with_matching_tensors() -> None:
    parsed = configs("feature-extraction", Serving())
    names = ServedNames.of("m")
    assert list(parsed) == names.all()
    ensemble = parsed["m"]
    assert ensemble.platform == "ensemble"
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [("text", 13, [1])]
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [names.tokenize, names.model, names.postprocess]
    # Every tensor a step consumes is produced by the ensemble input or an earlier step,
    # under the names the step's own config declares.
    available = {"text"}
    for step in steps:
        config = parsed[step.model_name]
        assert set(step.input_map) == {t.name for t in config.input}
        assert set(step.input_map.values()) <= available
        assert set(step.output_map) <= {t.name for t in config.output}
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available
    assert [t.name for t in parsed[names.tokenize].output] == ["input_ids", "attention_mask"]


@pytest.mark.parametrize(
    ("task", "outputs"),
    [
        ("feature-extraction", [("embeddings", 11, [32])]),
        ("text-classification", [("logits", 11, [2]), ("label", 13, [1]), ("score", 11, [1])]),
    ],
)
def test_the_text_path_answers_per_task(
    task: Task, outputs: list[tuple[str, int, list[int]]]
) -> None:
    parsed = configs(task, Serving())
    for config in (parsed["m"], parsed["m-postprocess"]):
        assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == outputs


@pytest.mark.parametrize(
    ("serving", "kind", "overhead", "bucket"),
    [
        (Serving(gpu=Gpu(count=1)), KIND_GPU, GPU_GROUP_OVERHEAD_TOKENS, GPU_LENGTH_BUCKET_TOKENS),
        (Serving(gpu=Gpu(count=0)), KIND_CPU, CPU_GROUP_OVERHEAD_TOKENS, CPU_LENGTH_BUCKET_TOKENS),
    ],
)
def test_text_steps_run_on_the_cpu_and_group_lengths_for_the_hardware(
    serving: Serving, kind: int, overhead: int, bucket: int
) -> None:
    parsed = configs("feature-extraction", serving)
    assert parsed["m-model"].backend == "onnxruntime"
    assert [g.kind for g in parsed["m-model"].instance_group] == [kind]
    for step in ("m-tokenize", "m-postprocess"):
        assert parsed[step].backend == "python"
        assert [(g.count, g.kind) for g in parsed[step].instance_group] == [(1, KIND_CPU)]
    parameters = parsed["m-tokenize"].parameters
    assert int(parameters["group_overhead_tokens"].string_value) == overhead
    assert int(parameters["length_bucket_tokens"].string_value) == bucket


@pytest.mark.parametrize("batching", [True, False])
def test_every_step_batches_like_the_model_step(batching: bool) -> None:
    serving = Serving(
        max_batch_size=48, dynamic_batching=batching, max_queue_delay_microseconds=700
    )
    parsed = configs("feature-extraction", serving)
    for name, config in parsed.items():
        assert config.max_batch_size == 48, name
        if name == "m":
            continue  # an ensemble has no scheduler of its own
        assert config.HasField("dynamic_batching") == batching, name
        if batching:
            assert config.dynamic_batching.max_queue_delay_microseconds == 700
    assert not any(t.allow_ragged_batch for c in parsed.values() for t in c.input)


@pytest.mark.parametrize("cache", [True, False])
def test_the_response_cache_sits_on_the_ensemble_only(cache: bool) -> None:
    parsed = configs("feature-extraction", Serving(response_cache=cache))
    assert parsed["m"].response_cache.enable == cache
    assert not any(parsed[n].response_cache.enable for n in ("m-tokenize", "m-model"))
    assert not parsed["m-postprocess"].response_cache.enable


def test_cache_flag_carries_its_size() -> None:
    assert response_cache_arguments(1 << 20) == ["--cache-config=local,size=1048576"]
    with pytest.raises(ValueError, match=">= 1 byte"):
        response_cache_arguments(0)
