"""Render Triton `config.pbtxt`: the one function used by the builder, the operator's
ConfigMap and local serving, so the batching a cluster runs is the batching tested locally.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimodel.model_builder.spec import Serving, SpecModel

# The TensorRT engine cache lives in the pod's writable /tmp emptyDir (the model repository is
# mounted read-only); engines are rebuilt once per pod start, then reused by every instance.
TENSORRT_ENGINE_CACHE = "/tmp"
TENSORRT_WORKSPACE_BYTES = 1 << 30

TritonDataType = Literal["TYPE_INT64", "TYPE_INT32", "TYPE_FP32", "TYPE_FP16", "TYPE_STRING"]
Backend = Literal["onnxruntime", "python"]
InstanceKind = Literal["KIND_GPU", "KIND_CPU"]


class TensorSpec(SpecModel):
    """One input or output tensor, without the batch dimension (-1 marks a dynamic axis)."""

    name: str = Field(min_length=1)
    data_type: TritonDataType
    dims: list[int] = Field(min_length=1)


class ModelSignature(SpecModel):
    """The tensors a built model takes and returns."""

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)


def _tensor_block(tensors: list[TensorSpec]) -> str:
    rows = [
        f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
        for t in tensors
    ]
    return "[\n" + ",\n".join(rows) + "\n]"


def _warmup_entry(name: str, signature: ModelSignature, batch_size: int, length: int) -> str:
    inputs = []
    for tensor in signature.inputs:
        dims = [length if d == -1 else d for d in tensor.dims]
        inputs.append(
            f'    inputs {{ key: "{tensor.name}" value: {{ data_type: {tensor.data_type} '
            f"dims: [ {', '.join(map(str, dims))} ] zero_data: true }} }}"
        )
    body = "\n".join(inputs)
    return f'  {{\n    name: "{name}"\n    batch_size: {batch_size}\n{body}\n  }}'


def _warmup_block(
    signature: ModelSignature, sequence_length: int, largest: tuple[int, int] | None = None
) -> str:
    entries = [_warmup_entry("warmup", signature, 1, sequence_length)]
    if largest is not None:
        # TensorRT builds its engine on the first request of a profile: warm the largest
        # shape up before the server reports ready, not on a user's request.
        entries.append(_warmup_entry("warmup-largest-profile", signature, *largest))
    return "model_warmup [\n" + ",\n".join(entries) + "\n]"


def tensorrt_profile_shapes(signature: ModelSignature, batch: int, length: int) -> str:
    """`trt_profile_*_shapes` text: "input_ids:BxL,attention_mask:BxL" (batch axis first)."""
    shapes = []
    for tensor in signature.inputs:
        dims = [batch, *(length if d == -1 else d for d in tensor.dims)]
        shapes.append(f"{tensor.name}:{'x'.join(map(str, dims))}")
    return ",".join(shapes)


def tensorrt_parameters(
    signature: ModelSignature, serving: Serving, max_sequence_length: int
) -> dict[str, str]:
    """The onnxruntime backend's TensorRT accelerator parameters (onnxruntime_backend README)."""
    opt_batch = max(serving.preferred_batch_sizes, default=serving.max_batch_size)
    return {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(TENSORRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": TENSORRT_ENGINE_CACHE,
        "trt_profile_min_shapes": tensorrt_profile_shapes(signature, 1, 1),
        "trt_profile_opt_shapes": tensorrt_profile_shapes(
            signature, opt_batch, max_sequence_length
        ),
        "trt_profile_max_shapes": tensorrt_profile_shapes(
            signature, serving.max_batch_size, max_sequence_length
        ),
    }


def _tensorrt_block(parameters: dict[str, str]) -> str:
    rows = "\n".join(
        f'        parameters {{ key: "{key}" value: "{value}" }}'
        for key, value in parameters.items()
    )
    return (
        "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
        f'      {{\n        name: "tensorrt"\n{rows}\n      }}\n    ]\n  }}\n}}'
    )


def _instance_group(serving: Serving, kind: InstanceKind) -> str:
    # Triton places `count` instances on each GPU listed in `gpus` (on every visible GPU when
    # `gpus` is absent): a replica with gpu.count N runs N x instances, one set per GPU.
    gpus = ""
    if kind == "KIND_GPU" and serving.gpu.count > 0:
        gpus = f" gpus: [ {', '.join(map(str, range(serving.gpu.count)))} ]"
    return f"instance_group [\n  {{ count: {serving.instances} kind: {kind}{gpus} }}\n]"


def render_triton_config(
    name: str,
    signature: ModelSignature,
    serving: Serving,
    backend: Backend = "onnxruntime",
    instance_kind: InstanceKind | None = None,
    warmup_sequence_length: int | None = 16,
    max_sequence_length: int | None = None,
) -> str:
    """The `config.pbtxt` text of one model (protobuf text format, stable order).

    `instance_kind` defaults to KIND_GPU when the spec asks for GPUs and the backend is
    onnxruntime (the cluster image), else KIND_CPU (the local python-backend server). Inputs
    are never `allow_ragged_batch`: the onnxruntime backend merges only equal shapes, and the
    text-in ensemble's tokenizer step pads length groups so that they batch (served/).

    With `serving.accelerator: tensorrt` on GPU instances of the onnxruntime backend, an
    `optimization` block enables Triton's TensorRT accelerator (FP16, engine cache, profile
    shapes up to maxBatchSize x `max_sequence_length`, which it then needs) and the warmup
    covers the largest profile shape; elsewhere (CPU, the local python backend) it is absent.
    """
    kind = instance_kind or (
        "KIND_GPU" if serving.gpu.count > 0 and backend == "onnxruntime" else "KIND_CPU"
    )
    parts = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {serving.max_batch_size}",
        f"input {_tensor_block(signature.inputs)}",
        f"output {_tensor_block(signature.outputs)}",
    ]
    if serving.dynamic_batching:
        batching = []
        if serving.preferred_batch_sizes:
            sizes = ", ".join(map(str, serving.preferred_batch_sizes))
            batching.append(f"  preferred_batch_size: [ {sizes} ]")
        batching.append(f"  max_queue_delay_microseconds: {serving.max_queue_delay_microseconds}")
        parts.append("dynamic_batching {\n" + "\n".join(batching) + "\n}")
    parts.append(_instance_group(serving, kind))
    largest: tuple[int, int] | None = None
    if serving.accelerator == "tensorrt" and backend == "onnxruntime" and kind == "KIND_GPU":
        if max_sequence_length is None:
            raise ValueError("the tensorrt accelerator needs max_sequence_length (profile shapes)")
        parts.append(_tensorrt_block(tensorrt_parameters(signature, serving, max_sequence_length)))
        largest = (serving.max_batch_size, max_sequence_length)
    if serving.response_cache:
        parts.append("response_cache { enable: true }")
    if warmup_sequence_length is not None:
        parts.append(_warmup_block(signature, warmup_sequence_length, largest))
    return "\n".join(parts) + "\n"
