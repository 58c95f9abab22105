"""The artifact's work per inference, counted from its ONNX graph. Pure functions over the graph.

What the cost model (`operator/performance.py`) places on a roofline: the arithmetic of one
inference by the precision it runs in (MatMul/Gemm/MatMulInteger/MatMulNBits, fused Attention
with its score and value products), the weight bytes one batch execution reads (by their stored
precision: an int8 or fp16 artifact reads a quarter or half of fp32's), and the activation
bytes one inference writes and reads back. Counted at the served sequence length (the longest
input, source.maxSequenceLength: what a batch is padded up to at worst) with ONNX shape
inference on concrete input shapes; nodes whose shapes stay unknown (contrib ops of fused
graphs have no shape functions) are counted from their weights, per token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import onnx
from onnx import TensorProto
from pydantic import Field

from optimodel.model_builder.spec import SpecModel

Precision = Literal["fp32", "fp16", "int8"]
CountMethod = Literal["graph-shapes", "weights-per-token"]

# Bytes per element of the tensor types a served graph holds.
_ITEM_BYTES: Mapping[int, int] = {
    TensorProto.FLOAT: 4,
    TensorProto.FLOAT16: 2,
    TensorProto.BFLOAT16: 2,
    TensorProto.DOUBLE: 8,
    TensorProto.INT8: 1,
    TensorProto.UINT8: 1,
    TensorProto.INT16: 2,
    TensorProto.UINT16: 2,
    TensorProto.INT32: 4,
    TensorProto.INT64: 8,
    TensorProto.BOOL: 1,
}
# Ops whose arithmetic is int8 x int8 (dynamic and static int8 recipes).
_INT8_MATMULS = frozenset({"MatMulInteger", "QAttention", "DynamicQuantizeMatMul", "QLinearMatMul"})
# Ops whose outputs count as activation traffic (see count_work).
_COUNTED_OUTPUTS = frozenset(
    {"MatMul", "MatMulInteger", "Gemm", "MatMulNBits", "Attention", "QAttention", "Gather"}
)
# Ops a weight passes through on its way into a MatMul (QDQ dequantize, fp16 casts, layouts).
_WEIGHT_PASSTHROUGH = frozenset({"DequantizeLinear", "Cast", "Transpose", "Identity"})


class InferenceWork(SpecModel):
    """One inference of the artifact at `sequenceLength` tokens: arithmetic and bytes moved."""

    sequence_length: int = Field(ge=1, description="Tokens per input it was counted at.")
    batch_size: int = Field(ge=1, description="The served maxBatchSize when it was counted.")
    fp32_flops: float = Field(default=0.0, ge=0, alias="fp32FLOPs")
    fp16_flops: float = Field(default=0.0, ge=0, alias="fp16FLOPs")
    int8_ops: float = Field(default=0.0, ge=0, alias="int8Ops")
    weight_bytes: int = Field(
        ge=0, description="Weights one batch execution reads (embedding tables excluded)."
    )
    activation_bytes: int = Field(
        ge=0, description="Activations (and embedding rows) one inference writes and reads."
    )
    method: CountMethod = Field(
        default="graph-shapes",
        description="graph-shapes: every product from inferred shapes; weights-per-token: some "
        "nodes (fused ops) counted from their weights alone.",
    )

    @property
    def total_ops(self) -> float:
        return self.fp32_flops + self.fp16_flops + self.int8_ops

    def ops(self, precision: Precision) -> float:
        """Operations of one inference that run in `precision`."""
        return {"fp32": self.fp32_flops, "fp16": self.fp16_flops, "int8": self.int8_ops}[precision]


@dataclass(frozen=True)
class _Tensor:
    dims: tuple[int, ...] | None  # None: unknown (or symbolic) shape
    elem_type: int


# Shapes are inferred at this batch and divided by it. Not 1: shape inference cannot tell a
# batch of 1 from a broadcast dimension and leaves it unknown.
_SHAPE_BATCH = 2


def _concrete_inputs(model: onnx.ModelProto, sequence_length: int) -> onnx.ModelProto:
    """A copy whose graph inputs are [_SHAPE_BATCH, sequence_length]."""
    shaped = onnx.ModelProto()
    shaped.CopyFrom(model)
    for tensor in shaped.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        for index, value in enumerate((_SHAPE_BATCH, sequence_length)):
            if index < len(dims) and not dims[index].HasField("dim_value"):
                dims[index].dim_value = value
    return shaped


def _tensors(model: onnx.ModelProto) -> dict[str, _Tensor]:
    """Every named tensor's shape (when fully known) and element type."""
    found: dict[str, _Tensor] = {}
    graph = model.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        kind = info.type.tensor_type
        dims: tuple[int, ...] | None = None
        if kind.HasField("shape"):
            values = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
            dims = None if any(v < 0 for v in values) else tuple(values)
        found[info.name] = _Tensor(dims, kind.elem_type)
    for init in graph.initializer:
        found[init.name] = _Tensor(tuple(init.dims), init.data_type)
    return found


def _infer(model: onnx.ModelProto, sequence_length: int) -> onnx.ModelProto:
    shaped = _concrete_inputs(model, sequence_length)
    try:
        return onnx.shape_inference.infer_shapes(shaped, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        # Contrib ops or an odd exporter: every product is then counted from its weights.
        return shaped


def _bytes(tensor: _Tensor) -> int:
    if tensor.dims is None:
        return 0
    return math.prod(tensor.dims) * _ITEM_BYTES.get(tensor.elem_type, 4)


class _Graph:
    """The inferred graph with lookups the counting needs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = list(model.graph.node)
        self.tensors = _tensors(model)
        self.initializers = {init.name: init for init in model.graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output}

    def weight(self, name: str) -> tuple[onnx.TensorProto, bool] | None:
        """The initializer `name` comes from through dequantize/cast/transpose steps, and
        whether a DequantizeLinear is on the way (a QDQ int8 weight)."""
        dequantized = False
        for _ in range(8):
            if name in self.initializers:
                return self.initializers[name], dequantized
            node = self.producer.get(name)
            if node is None or node.op_type not in _WEIGHT_PASSTHROUGH or not node.input:
                return None
            dequantized = dequantized or node.op_type == "DequantizeLinear"
            name = node.input[0]
        return None

    def dims(self, name: str) -> tuple[int, ...] | None:
        tensor = self.tensors.get(name)
        return None if tensor is None else tensor.dims

    def elem_type(self, name: str) -> int:
        tensor = self.tensors.get(name)
        return TensorProto.FLOAT if tensor is None else tensor.elem_type


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


@dataclass
class _Tally:
    ops: dict[str, float]
    weight_names: set[str]
    estimated: bool = False
    unshaped_output_bytes: int = 0

    def add(self, precision: Precision, amount: float) -> None:
        self.ops[precision] += amount


def _float_precision(graph: _Graph, names: Iterable[str]) -> Precision:
    types = {graph.elem_type(name) for name in names if name}
    return "fp16" if TensorProto.FLOAT16 in types or TensorProto.BFLOAT16 in types else "fp32"


def _matmul(graph: _Graph, node: onnx.NodeProto, tally: _Tally, sequence: int) -> None:
    """MatMul / MatMulInteger / Gemm: 2 x M x K x N, from shapes or from the weight per token."""
    a, b = node.input[0], node.input[1]
    found = graph.weight(b)
    if found is not None:
        tally.weight_names.add(found[0].name)
    if node.op_type in _INT8_MATMULS or (found is not None and found[1]):
        precision: Precision = "int8"
    else:
        precision = _float_precision(graph, (a, b, node.output[0]))
    a_dims, out_dims = graph.dims(a), graph.dims(node.output[0])
    if a_dims and out_dims:
        transposed = node.op_type == "Gemm" and _attribute(node, "transA", 0) == 1
        k = a_dims[-2] if transposed else a_dims[-1]
        tally.add(precision, 2.0 * math.prod(out_dims) * k / _SHAPE_BATCH)
        return
    if found is None or len(found[0].dims) != 2:
        return  # two activations without shapes: nothing to count them from
    k, n = found[0].dims
    if node.op_type == "Gemm" and _attribute(node, "transB", 0) == 1:
        k, n = n, k
    tally.estimated = True
    tally.unshaped_output_bytes += sequence * n * 4
    tally.add(precision, 2.0 * k * n * sequence)


def _matmul_nbits(graph: _Graph, node: onnx.NodeProto, tally: _Tally, sequence: int) -> None:
    """Weight-only MatMulNBits: dequantized on the fly, computed in the activations' type."""
    for name in node.input[1:]:
        if name in graph.initializers:
            tally.weight_names.add(name)
    k, n = _attribute(node, "K", 0), _attribute(node, "N", 0)
    rows = sequence
    a_dims = graph.dims(node.input[0])
    if a_dims:
        rows = math.prod(a_dims[:-1]) // _SHAPE_BATCH
    else:
        tally.estimated = True
        tally.unshaped_output_bytes += sequence * n * 4
    tally.add(_float_precision(graph, node.input[:1]), 2.0 * rows * k * n)


def _attention(graph: _Graph, node: onnx.NodeProto, tally: _Tally, sequence: int) -> None:
    """Fused (Q)Attention: the packed QKV projection, then Q.K^T and softmax.V over the
    sequence (4 x hidden x sequence^2); QAttention runs the projection in int8 only."""
    found = graph.weight(node.input[1])
    if found is None or len(found[0].dims) != 2:
        return
    weight = found[0]
    tally.weight_names.add(weight.name)
    k, qkv = weight.dims
    hidden = qkv // 3
    float_precision = _float_precision(graph, (node.input[0], node.input[1]))
    projection: Precision = "int8" if node.op_type == "QAttention" else float_precision
    tally.add(projection, 2.0 * sequence * k * qkv)
    tally.add(float_precision, 4.0 * hidden * sequence * sequence)
    if graph.dims(node.output[0]) is None:
        tally.estimated = True
        tally.unshaped_output_bytes += sequence * hidden * 4


def count_work(model: onnx.ModelProto, *, sequence_length: int, batch_size: int) -> InferenceWork:
    """The work of one inference of `model` at `sequence_length` tokens (see module doc)."""
    if sequence_length < 1 or batch_size < 1:
        raise ValueError("sequence_length and batch_size must be at least 1")
    graph = _Graph(_infer(model, sequence_length))
    tally = _Tally({"fp32": 0.0, "fp16": 0.0, "int8": 0.0}, set())
    embedding_tables: set[str] = set()
    for node in graph.nodes:
        op = node.op_type
        if op in ("MatMul", "MatMulInteger", "Gemm", "DynamicQuantizeMatMul"):
            _matmul(graph, node, tally, sequence_length)
        elif op == "MatMulNBits":
            _matmul_nbits(graph, node, tally, sequence_length)
        elif op in ("Attention", "QAttention"):
            _attention(graph, node, tally, sequence_length)
        elif op == "Gather" and node.input and graph.weight(node.input[0]) is not None:
            found = graph.weight(node.input[0])
            assert found is not None
            embedding_tables.add(found[0].name)
    weights = sum(
        _bytes(_Tensor(tuple(init.dims), init.data_type))
        for name, init in graph.initializers.items()
        if name not in embedding_tables
    )
    # The products' outputs and the embedding rows, each written once and read once. The
    # elementwise ops between products are left out on purpose: the serving runtimes fuse
    # them into their neighbours (onnxruntime's graph optimizer, TensorRT), so an unfused
    # export would otherwise be charged for traffic the served graph never makes.
    outputs = sum(
        _bytes(graph.tensors[node.output[0]])
        for node in graph.nodes
        if node.op_type in _COUNTED_OUTPUTS and node.output and node.output[0] in graph.tensors
    )
    activations = 2 * (outputs // _SHAPE_BATCH + tally.unshaped_output_bytes)
    return InferenceWork(
        sequence_length=sequence_length,
        batch_size=batch_size,
        fp32_flops=tally.ops["fp32"],
        fp16_flops=tally.ops["fp16"],
        int8_ops=tally.ops["int8"],
        weight_bytes=weights,
        activation_bytes=activations,
        method="weights-per-token" if tally.estimated else "graph-shapes",
    )
