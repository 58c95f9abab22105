"""Quantization of the exported ONNX graph.

Modes (measured on MiniLM-L6 here; DESIGN.md has the numbers):
- int8 dynamic: weights int8 (per-channel scales by default: cosine ~0.993 vs ~0.96 per
  tensor), activations quantized at run time. The fastest CPU artifact.
- int8 static: activation ranges calibrated on texts; MatMuls with constant weights only
  (quantizing every op destroyed the model).
- fp16: halves the file; a GPU format (onnxruntime on CPU computes it in fp32).
- int8/int4 weight-only: MatMulNBits, blocks of 32; accurate, no CPU speed-up at batch 32.

In the int8 modes the word-embedding table (half of MiniLM's bytes) is stored int8 with one
scale per row, so the file really shrinks ~4x: MatMul-only quantization leaves it fp32.
`keep_fp32` names MatMuls left in fp32: the ones whose int8 error is largest (see
`matmul_sensitivity`), Intel Neural Compressor's "fallback" idea.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optimodel.model_builder.modeling import FloatArray, Int64Array, TokenBatch

WEIGHT_ONLY_BLOCK_SIZE = 32
EMBEDDING_SUFFIX = "_int8_rows"


def model_size_bytes(path: Path) -> int:
    """Bytes of an ONNX model on disk, external data files included."""
    extra = sum(f.stat().st_size for f in path.parent.glob(f"{path.name}.data"))
    return path.stat().st_size + extra


def op_counts(path: Path) -> Counter[str]:
    """How many nodes of each op type the graph holds (what the tests assert on)."""
    model = onnx.load(str(path), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


# Ops that say what a graph computes in: int8 (dynamic or QDQ), weight-only, fused, fp32 MatMul.
INT8_OPS = (
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QAttention",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeMatMul",
)
NOTABLE_OPS = (
    *INT8_OPS,
    "MatMulNBits",
    "MatMul",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "Cast",
)


def op_summary(path: Path) -> dict[str, int]:
    """Counts of the ops in NOTABLE_OPS the graph holds (what a trial's row shows)."""
    counts = op_counts(path)
    return {op: counts[op] for op in NOTABLE_OPS if counts[op]}


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D constant weight."""
    weights = {init.name for init in model.graph.initializer if len(init.dims) == 2}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
    ]


def _quiet_onnxruntime_logging() -> None:
    # The quantizer logs a "consider pre-processing" warning on every call; it does not apply
    # to transformer exports (pre-processing's symbolic shape inference fails on them).
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))


def quantize_embedding_rows(model: onnx.ModelProto) -> int:
    """Store the word-embedding tables (Gathers indexed by input_ids) int8, one scale a row.

    Gather(int8 table) -> Cast -> Mul(Gather(row scales)) uses standard ONNX ops only, so
    every runtime runs it; per-row scales keep each token's vector within 0.4% of its range.
    Returns how many tables were rewritten (in place).
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    inputs = {tensor.name for tensor in graph.input}
    rewritten = 0
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        if (
            table is None
            or node.input[1] not in inputs
            or table.data_type != TensorProto.FLOAT
            or len(table.dims) != 2
            or any(attr.name == "axis" and attr.i != 0 for attr in node.attribute)
        ):
            new_nodes.append(node)
            continue
        values = numpy_helper.to_array(table)
        scales = np.abs(values).max(axis=1, keepdims=True) / 127.0
        scales[scales == 0] = 1.0
        quantized = np.clip(np.round(values / scales), -127, 127).astype(np.int8)
        base = table.name + EMBEDDING_SUFFIX
        graph.initializer.append(numpy_helper.from_array(quantized, base))
        graph.initializer.append(
            numpy_helper.from_array(scales.astype(np.float32), base + "_scale")
        )
        ids = node.input[1]
        output = node.output[0]
        new_nodes.extend(
            [
                helper.make_node("Gather", [base, ids], [base + "_rows"], name=base + "_gather"),
                helper.make_node(
                    "Gather", [base + "_scale", ids], [base + "_scales"], name=base + "_scales"
                ),
                helper.make_node(
                    "Cast",
                    [base + "_rows"],
                    [base + "_float"],
                    to=TensorProto.FLOAT,
                    name=base + "_cast",
                ),
                helper.make_node(
                    "Mul", [base + "_float", base + "_scales"], [output], name=base + "_dequant"
                ),
            ]
        )
        rewritten += 1
    if rewritten:
        used = {name for node in new_nodes for name in node.input}
        del graph.node[:]
        graph.node.extend(new_nodes)
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:
            graph.initializer.remove(init)
    return rewritten


def _quantize_embeddings_in_file(path: Path) -> int:
    model = onnx.load(str(path))
    count = quantize_embedding_rows(model)
    if count:
        onnx.save(model, str(path))
    return count


def quantize_int8_dynamic(
    source: Path,
    target: Path,
    *,
    per_channel: bool,
    keep_fp32: Sequence[str] = (),
    embeddings: bool = True,
    reduce_range: bool = False,
    op_types: Sequence[str] = ("MatMul",),
) -> str:
    """int8 weights, activations quantized at run time; returns what was done, in words.

    `reduce_range` stores 7-bit weights (avoids the u8s8 saturation of AVX2/AVX-512 kernels
    without VNNI); `op_types` adds fused ops such as Attention (QAttention) to MatMul.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet_onnxruntime_logging()
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=list(op_types),
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(keep_fp32),
        # DefaultTensorType: graphs with fused contrib ops lack some type info the quantizer
        # wants; every tensor it cannot type here is fp32.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    tables = _quantize_embeddings_in_file(target) if embeddings else 0
    counts = op_counts(target)
    fused = f", {counts['QAttention']} attentions int8" if counts["QAttention"] else ""
    return (
        f"int8-dynamic ({'per-channel' if per_channel else 'per-tensor'}"
        f"{', reduce-range' if reduce_range else ''}): "
        f"{counts['MatMulInteger']} MatMuls int8{fused}, {len(keep_fp32)} kept fp32, "
        f"{tables} embedding table(s) int8 per row"
    )


class _TextBatches:
    """onnxruntime's CalibrationDataReader over tokenized text batches."""

    def __init__(self, batches: Iterable[TokenBatch]) -> None:
        self._batches: Iterator[TokenBatch] = iter(batches)

    def get_next(self) -> dict[str, Int64Array] | None:
        batch = next(self._batches, None)
        return None if batch is None else batch.feeds()


def quantize_int8_static(
    source: Path,
    target: Path,
    *,
    calibration: Iterable[TokenBatch],
    per_channel: bool,
    keep_fp32: Sequence[str] = (),
) -> str:
    """int8 weights and activations with ranges calibrated on texts (QDQ, weight MatMuls)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = _TextBatches(calibration)

        def get_next(self) -> dict[str, Int64Array] | None:
            return self.batches.get_next()

    _quiet_onnxruntime_logging()
    model = onnx.load(str(source))
    excluded = set(keep_fp32)
    targets = [name for name in weight_matmuls(model) if name not in excluded]
    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=targets,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"MatMulConstBOnly": True},
    )
    tables = _quantize_embeddings_in_file(target)
    return (
        f"int8-static ({'per-channel' if per_channel else 'per-tensor'}, MinMax calibration): "
        f"{len(targets)} MatMuls int8, {len(excluded)} kept fp32, "
        f"{tables} embedding table(s) int8 per row"
    )


def quantize_fp16(source: Path, target: Path) -> str:
    """fp16 weights and compute; inputs and outputs keep their types (int64 in, fp32 out)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(target))
    return "fp16: weights and compute in half precision (inputs/outputs unchanged); for GPUs"


def quantize_weight_only(source: Path, target: Path, *, bits: Literal[4, 8]) -> str:
    """MatMulNBits: weights in `bits` bits, blocks of 32 along the input axis, fp32 compute."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet_onnxruntime_logging()
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)),
        bits=bits,
        block_size=WEIGHT_ONLY_BLOCK_SIZE,
        is_symmetric=True,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target))
    tables = _quantize_embeddings_in_file(target)
    counts = op_counts(target)
    return (
        f"int{bits}-weight-only: {counts['MatMulNBits']} MatMuls as MatMulNBits "
        f"(block {WEIGHT_ONLY_BLOCK_SIZE}), {tables} embedding table(s) int8 per row"
    )


def copy_unquantized(source: Path, target: Path) -> str:
    shutil.copyfile(source, target)
    return "none: fp32 graph as exported"


def _fake_dynamic_int8(activations: FloatArray) -> FloatArray:
    """What DynamicQuantizeLinear (uint8, asymmetric, per tensor) makes of `activations`."""
    low = min(0.0, float(activations.min()))
    high = max(0.0, float(activations.max()))
    scale = (high - low) / 255.0 or 1.0
    zero_point = np.clip(np.round(-low / scale), 0, 255)
    quantized = np.clip(np.round(activations / scale) + zero_point, 0, 255)
    restored: FloatArray = ((quantized - zero_point) * scale).astype(np.float32)
    return restored


def _fake_int8_weight(weight: FloatArray, per_channel: bool) -> FloatArray:
    """Symmetric int8 weight, one scale per output column (or per tensor)."""
    peak = np.abs(weight).max(axis=0, keepdims=True) if per_channel else np.abs(weight).max()
    scale = np.where(peak == 0, 1.0, peak / 127.0)
    restored: FloatArray = (np.clip(np.round(weight / scale), -127, 127) * scale).astype(np.float32)
    return restored


def matmul_sensitivity(
    source: Path, batches: Sequence[TokenBatch], *, per_channel: bool
) -> list[tuple[str, float]]:
    """Each weight MatMul's relative output error under int8, largest first.

    Runs the fp32 graph once on `batches` to capture every MatMul's real input, then
    simulates int8 on that node alone: ||XW - Q(X)Q(W)|| / ||XW||. A local measure (no
    propagation), but cheap: one inference pass instead of one quantized build per node.
    """
    import onnxruntime

    model = onnx.load(str(source))
    names = weight_matmuls(model)
    nodes = {node.name: node for node in model.graph.node}
    weights = {init.name: init for init in model.graph.initializer}
    inputs = [nodes[name].input[0] for name in names]
    existing = {output.name for output in model.graph.output}
    for tensor in dict.fromkeys(inputs):
        if tensor not in existing:
            model.graph.output.append(
                helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None)
            )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    errors = dict.fromkeys(names, 0.0)
    norms = dict.fromkeys(names, 0.0)
    fake_weights = {
        name: (
            numpy_helper.to_array(weights[nodes[name].input[1]]),
            _fake_int8_weight(numpy_helper.to_array(weights[nodes[name].input[1]]), per_channel),
        )
        for name in names
    }
    for batch in batches:
        captured = dict(
            zip(
                list(dict.fromkeys(inputs)),
                session.run(list(dict.fromkeys(inputs)), batch.feeds()),
                strict=True,
            )
        )
        for name, tensor in zip(names, inputs, strict=True):
            activations = captured[tensor]
            activations = activations.reshape(-1, activations.shape[-1])
            weight, fake_weight = fake_weights[name]
            exact = activations @ weight
            approximate = _fake_dynamic_int8(activations) @ fake_weight
            errors[name] += float(np.square(exact - approximate).sum())
            norms[name] += float(np.square(exact).sum())
    ranked = [(name, (errors[name] / norms[name]) ** 0.5 if norms[name] else 0.0) for name in names]
    return sorted(ranked, key=lambda item: item[1], reverse=True)
