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


def test_tensorrt_accelerator_block_as_triton_parses_it() -> None:
    serving = Serving(accelerator="tensorrt", max_batch_size=16, preferred_batch_sizes=[8, 16])
    config = parsed(serving, max_sequence_length=128)

    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert parameters["precision_mode"] == "FP16"
    assert parameters["trt_engine_cache_enable"] == "1"
    assert parameters["trt_engine_cache_path"] == "/tmp"  # the pod's writable emptyDir
    # Every input of the signature, batch first; fixed dims stay, dynamic ones get the bounds.
    assert parameters["trt_profile_min_shapes"] == (
        "input_ids:1x1,attention_mask:1x1,pixel_row:1x8"
    )
    assert parameters["trt_profile_opt_shapes"] == (
        "input_ids:16x128,attention_mask:16x128,pixel_row:16x8"
    )
    assert parameters["trt_profile_max_shapes"] == (
        "input_ids:16x128,attention_mask:16x128,pixel_row:16x8"
    )
    # The warmup builds the engine for the largest profile shape before the model is ready.
    largest = config.model_warmup[-1]
    assert largest.batch_size == 16
    assert list(largest.inputs["input_ids"].dims) == [128]
    assert list(config.model_warmup[0].inputs["input_ids"].dims) == [16]


@pytest.mark.parametrize(
    ("serving", "backend"),
    [
        (Serving(accelerator="none"), "onnxruntime"),
        (Serving(accelerator="tensorrt"), "python"),  # local serving: no GPU, no TensorRT
    ],
)
def test_no_optimization_block_without_tensorrt_on_gpu(serving: Serving, backend: Backend) -> None:
    config = parsed(serving, backend, max_sequence_length=128)
    assert not config.HasField("optimization")
    assert len(config.model_warmup) == 1


def test_tensorrt_needs_the_sequence_bound() -> None:
    with pytest.raises(ValueError, match="max_sequence_length"):
        render_triton_config("m", SIGNATURE, Serving(accelerator="tensorrt"))


@pytest.mark.parametrize(("gpus", "placed"), [(1, [0]), (2, [0, 1]), (4, [0, 1, 2, 3])])
def test_instances_are_placed_on_every_gpu_of_the_replica(gpus: int, placed: list[int]) -> None:
    config = parsed(Serving(gpu=Gpu(count=gpus), instances=2))
    (group,) = config.instance_group
    assert group.count == 2 and list(group.gpus) == placed  # 2 instances on each listed GPU
    assert not parsed(Serving(gpu=Gpu(count=0))).instance_group[0].gpus
