"""render_triton_config: the one config.pbtxt renderer, parsed back with Triton's own schema."""

from __future__ import annotations

from typing import Any

import pytest

from optimodel.local.repository import parse_config_text
from optimodel.model_builder.spec import Gpu, Serving
from optimodel.model_builder.triton_config import (
    Backend,
    ModelSignature,
    TensorSpec,
    render_triton_config,
)

SIGNATURE = ModelSignature(
    inputs=[
        TensorSpec(name="input_ids", data_type="TYPE_INT64", dims=[-1]),
        TensorSpec(name="attention_mask", data_type="TYPE_INT64", dims=[-1]),
        TensorSpec(name="pixel_row", data_type="TYPE_FP32", dims=[8]),
    ],
    outputs=[TensorSpec(name="embeddings", data_type="TYPE_FP32", dims=[384])],
)


def parsed(serving: Serving, backend: Backend = "onnxruntime", **options: Any) -> Any:
    return parse_config_text(
        render_triton_config("minilm", SIGNATURE, serving, backend=backend, **options)
    )


@pytest.mark.parametrize(
    ("serving", "backend", "kind"),
    [
        (Serving(), "onnxruntime", "KIND_GPU"),
        (Serving(gpu=Gpu(count=0)), "onnxruntime", "KIND_CPU"),
        (Serving(), "python", "KIND_CPU"),
    ],
)
def test_instance_kind_follows_gpus_and_backend(
    serving: Serving, backend: Backend, kind: str
) -> None:
    from tritonclient.grpc import model_config_pb2

    config = parsed(serving, backend)
    assert config.backend == backend
    assert [
        model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group
    ] == [kind]


def test_batching_instances_cache_and_warmup() -> None:
    serving = Serving(
        max_batch_size=64,
        preferred_batch_sizes=[16, 64],
        max_queue_delay_microseconds=750,
        instances=3,
        response_cache=True,
    )
    config = parsed(serving, warmup_sequence_length=24)
    assert config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 64]
    assert config.dynamic_batching.max_queue_delay_microseconds == 750
    assert config.instance_group[0].count == 3
    assert config.response_cache.enable
    assert list(config.model_warmup[0].inputs["input_ids"].dims) == [24]
    assert list(config.model_warmup[0].inputs["pixel_row"].dims) == [8]
    assert [t.name for t in config.output] == ["embeddings"]


def test_no_batching_block_when_batching_is_off() -> None:
    config = parsed(Serving(dynamic_batching=False), warmup_sequence_length=None)
    assert not config.HasField("dynamic_batching")
    assert len(config.model_warmup) == 0


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_no_input_is_ragged_on_any_backend(backend: Backend) -> None:
    # The onnxruntime backend merges only equal shapes; the local shim must batch alike.
    assert not any(t.allow_ragged_batch for t in parsed(Serving(), backend).input)
