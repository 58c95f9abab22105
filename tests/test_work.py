"""The artifact's work per inference, counted from real exported graphs of a tiny BERT (fp32,
int8 dynamic, fp16, fused fp16) and from hand-made graphs with known products."""

from __future__ import annotations

import functools
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimodel.model_builder.work import InferenceWork, count_work
from tests.builder_models import FFN, HIDDEN, LAYERS, tiny_model_dir

SEQUENCE = 64
# Per token and layer: Q, K, V, output (H x H each) and the FFN (H x F twice), 2 ops per
# multiply-add; per layer Q.K^T and softmax.V add 2 x 2 x H x sequence per token.
LINEAR = LAYERS * 2 * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) * SEQUENCE
ATTENTION = LAYERS * 4 * HIDDEN * SEQUENCE * SEQUENCE


@functools.cache
def tiny_artifacts(folder: Path) -> dict[str, Path]:
    """The tiny BERT exported, then int8-dynamic, fp16 and fused-fp16 as the recipes make them."""
    from optimodel.model_builder.export import export_onnx
    from optimodel.model_builder.fusion import attention_shape, fuse_transformer
    from optimodel.model_builder.load import load_model
    from optimodel.model_builder.quantize import quantize_fp16, quantize_int8_dynamic
    from optimodel.model_builder.spec import Source

    loaded = load_model(Source(uri=f"file://{tiny_model_dir('bert')}", task="feature-extraction"))
    paths = {kind: folder / f"{kind}.onnx" for kind in ("fp32", "int8", "fp16", "fused-fp16")}
    export_onnx(loaded.task_model, loaded.tokenizer, paths["fp32"], max_length=128)
    quantize_int8_dynamic(paths["fp32"], paths["int8"], per_channel=True)
    quantize_fp16(paths["fp32"], paths["fp16"])
    shape = attention_shape(loaded.task_model)
    fuse_transformer(paths["fp32"], paths["fused-fp16"], shape, gpu=True, fp16=True)
    return paths


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_artifacts(tmp_path_factory.mktemp("work"))


def work_of(path: Path, sequence: int = SEQUENCE) -> InferenceWork:
    return count_work(onnx.load(str(path)), sequence_length=sequence, batch_size=32)


def test_fp32_export_counts_every_product(artifacts: dict[str, Path]) -> None:
    work = work_of(artifacts["fp32"])
    assert work.method == "graph-shapes"
    assert work.fp32_flops == LINEAR + ATTENTION
    assert work.fp16_flops == 0 and work.int8_ops == 0
    weights = LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) * 4
    # Biases and layer norms on top of the matrices; the embedding tables are not per batch.
    assert weights < work.weight_bytes < 1.2 * weights
    assert work.activation_bytes > 0


def test_precisions_follow_the_recipe(artifacts: dict[str, Path]) -> None:
    fp32, int8, fp16 = (work_of(artifacts[kind]) for kind in ("fp32", "int8", "fp16"))
    # int8 dynamic quantizes the weight MatMuls; the score products stay fp32.
    assert int8.int8_ops == LINEAR and int8.fp32_flops == ATTENTION
    assert fp16.fp16_flops == LINEAR + ATTENTION and fp16.fp32_flops == 0
    assert int8.weight_bytes < 0.4 * fp32.weight_bytes
    assert 0.45 * fp32.weight_bytes < fp16.weight_bytes < 0.6 * fp32.weight_bytes


def test_fused_attention_is_counted_from_its_weights(artifacts: dict[str, Path]) -> None:
    fused = work_of(artifacts["fused-fp16"])
    assert fused.method == "weights-per-token"  # Attention has no ONNX shape function
    assert fused.fp16_flops == pytest.approx(LINEAR + ATTENTION, rel=0.01)


def test_work_grows_with_the_sequence(artifacts: dict[str, Path]) -> None:
    short, long = work_of(artifacts["fp32"], 32), work_of(artifacts["fp32"], 128)
    assert long.fp32_flops > 4 * short.fp32_flops  # linear part x4, attention x16


def _graph(nodes: list[onnx.NodeProto], weights: list[onnx.TensorProto]) -> onnx.ModelProto:
    tokens = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 16])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [tokens], [out], initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_matmul_counts_2_k_n_per_token() -> None:
    import numpy as np

    weight = numpy_helper.from_array(np.zeros((16, 8), dtype=np.float32), "w")
    model = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [weight])
    work = count_work(model, sequence_length=10, batch_size=4)
    assert work.fp32_flops == 2 * 16 * 8 * 10
    assert work.weight_bytes == 16 * 8 * 4
    assert work.activation_bytes == 2 * 10 * 8 * 4  # the output, written and read


def test_a_qdq_weight_counts_as_int8() -> None:
    import numpy as np

    weight = numpy_helper.from_array(np.zeros((16, 8), dtype=np.int8), "w")
    scale = numpy_helper.from_array(np.ones((), dtype=np.float32), "s")
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s"], ["wf"]),
        helper.make_node("MatMul", ["x", "wf"], ["y"]),
    ]
    work = count_work(_graph(nodes, [weight, scale]), sequence_length=10, batch_size=1)
    assert work.int8_ops == 2 * 16 * 8 * 10 and work.fp32_flops == 0
    assert work.weight_bytes == 16 * 8 + 4


def test_bad_lengths_are_refused() -> None:
    model = _graph([helper.make_node("Identity", ["x"], ["y"])], [])
    with pytest.raises(ValueError, match="at least 1"):
        count_work(model, sequence_length=0, batch_size=1)


def test_weight_only_matmulnbits_counts_its_k_and_n() -> None:
    import numpy as np

    blob = numpy_helper.from_array(np.zeros((8, 1, 16), dtype=np.uint8), "packed")
    scales = numpy_helper.from_array(np.ones((8,), dtype=np.float32), "scales")
    node = helper.make_node(
        "MatMulNBits", ["x", "packed", "scales"], ["y"], domain="com.microsoft",
        K=16, N=8, bits=8, block_size=16,
    )  # fmt: skip
    model = _graph([node], [blob, scales])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    work = count_work(model, sequence_length=10, batch_size=1)
    assert work.fp32_flops == 2 * 16 * 8 * 10
    assert work.weight_bytes == 8 * 16 + 8 * 4
