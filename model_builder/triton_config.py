"""Render Triton `config.pbtxt`: the one function used by the builder, the operator's
ConfigMap and local serving, so the batching a cluster runs is the batching tested locally.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimodel.model_builder.spec import Serving, SpecModel

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


def _warmup_block(signature: ModelSignature, sequence_length: int) -> str:
    inputs = []
    for tensor in signature.inputs:
        dims = [sequence_length if d == -1 else d for d in tensor.dims]
        inputs.append(
            f'    inputs {{ key: "{tensor.name}" value: {{ data_type: {tensor.data_type} '
            f"dims: [ {', '.join(map(str, dims))} ] zero_data: true }} }}"
        )
    body = "\n".join(inputs)
    return f'model_warmup [\n  {{\n    name: "warmup"\n    batch_size: 1\n{body}\n  }}\n]'


def render_triton_config(
    name: str,
    signature: ModelSignature,
    serving: Serving,
    backend: Backend = "onnxruntime",
    instance_kind: InstanceKind | None = None,
    warmup_sequence_length: int | None = 16,
) -> str:
    """The `config.pbtxt` text of one model (protobuf text format, stable order).

    `instance_kind` defaults to KIND_GPU when the spec asks for GPUs and the backend is
    onnxruntime (the cluster image), else KIND_CPU (the local python-backend server). Inputs
    are never `allow_ragged_batch`: the onnxruntime backend merges only equal shapes, and the
    text-in ensemble's tokenizer step pads length groups so that they batch (served/).
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
    parts.append(f"instance_group [\n  {{ count: {serving.instances} kind: {kind} }}\n]")
    if serving.response_cache:
        parts.append("response_cache { enable: true }")
    if warmup_sequence_length is not None:
        parts.append(_warmup_block(signature, warmup_sequence_length))
    return "\n".join(parts) + "\n"
