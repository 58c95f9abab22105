"""Export and quantization on tiny models, asserting on the produced graphs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from optimodel.model_builder.data import DEFAULT_EVAL_DATA, load_text_set
from optimodel.model_builder.evaluate import cosine_similarities, onnx_outputs
from optimodel.model_builder.export import export_onnx, graph_input_dims
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.modeling import length_sorted_batches, torch_outputs
from optimodel.model_builder.quantize import (
    matmul_sensitivity,
    model_size_bytes,
    op_counts,
    quantize_embedding_rows,
    quantize_fp16,
    quantize_int8_dynamic,
    quantize_int8_static,
    quantize_weight_only,
    weight_matmuls,
)
from optimodel.model_builder.spec import Source, Task
from tests.builder_models import HIDDEN, LAYERS, TinyKind, single_torch_thread, tiny_model_dir

TEXTS = load_text_set(DEFAULT_EVAL_DATA, field="evalData").texts[:48]
WEIGHT_MATMULS = LAYERS * 6  # query, key, value, attention output, FFN in, FFN out


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _load(kind: TinyKind, task: Task = "feature-extraction") -> LoadedModel:
    return load_model(Source(uri=f"file://{tiny_model_dir(kind)}", task=task))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path]:
    with single_torch_thread():
        loaded = _load("bert")
        path = tmp_path_factory.mktemp("export") / "model.onnx"
        export_onnx(loaded.task_model, loaded.tokenizer, path, max_length=64)
    return loaded, path


@pytest.mark.parametrize(
    ("kind", "task", "output", "width"),
    [
        ("bert", "feature-extraction", "embeddings", HIDDEN),
        ("roberta", "feature-extraction", "embeddings", HIDDEN),
        ("bert-classifier", "text-classification", "logits", 2),
        ("distilbert-classifier", "text-classification", "logits", 2),
    ],
)
def test_export_has_dynamic_axes_and_matches_pytorch(
    tmp_path: Path, kind: TinyKind, task: Task, output: str, width: int
) -> None:
    loaded = _load(kind, task)
    path = tmp_path / "model.onnx"
    signature = export_onnx(loaded.task_model, loaded.tokenizer, path, max_length=64)

    assert graph_input_dims(path) == {
        "input_ids": ["batch", "sequence"],
        "attention_mask": ["batch", "sequence"],
    }
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == [output]
    assert [t.name for t in signature.inputs] == ["input_ids", "attention_mask"]
    assert signature.outputs[0].name == output and signature.outputs[0].dims == [width]
    # Batches of other sizes and lengths than the traced sample give PyTorch's numbers.
    expected = torch_outputs(loaded.task_model, loaded.tokenizer, TEXTS, 64, batch_size=7)
    actual = onnx_outputs(path, loaded.tokenizer, TEXTS, 64, batch_size=5)
    assert actual.shape == (len(TEXTS), width)
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-4)


def test_export_leaves_the_original_attention_implementation(tmp_path: Path) -> None:
    loaded = _load("bert")
    model = loaded.task_model.model
    assert model.config._attn_implementation == "sdpa"  # the baseline runs as users run it
    export_onnx(loaded.task_model, loaded.tokenizer, tmp_path / "m.onnx", max_length=64)
    assert model.config._attn_implementation == "sdpa"
    assert op_counts(tmp_path / "m.onnx")["IsNaN"] == 0  # traced sdpa guards softmax with IsNaN


def test_pooling_ignores_padding(exported: tuple[LoadedModel, Path]) -> None:
    loaded, path = exported
    alone = onnx_outputs(path, loaded.tokenizer, ["short"], 64)
    # Batched with a long text, "short" is padded; mean pooling must not see the padding.
    padded = onnx_outputs(path, loaded.tokenizer, ["short", TEXTS[-1] * 3], 64, batch_size=2)
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-4, atol=1e-5)


def test_int8_dynamic_quantizes_every_weight_matmul_and_the_embedding_table(
    exported: tuple[LoadedModel, Path], tmp_path: Path
) -> None:
    loaded, source = exported
    target = tmp_path / "int8.onnx"
    detail = quantize_int8_dynamic(source, target, per_channel=True)

    counts = op_counts(target)
    assert counts["MatMulInteger"] == WEIGHT_MATMULS
    assert counts["DynamicQuantizeLinear"] >= LAYERS * 4  # one per distinct MatMul input
    model = onnx.load(str(target))
    initializers = {init.name: init for init in model.graph.initializer}
    int8_tables = [
        init
        for init in initializers.values()
        if init.data_type == TensorProto.INT8 and list(init.dims) == [len(loaded.tokenizer), HIDDEN]
    ]
    assert len(int8_tables) == 1, "the word-embedding table is stored int8"
    # Per-channel: one weight scale per output column of each quantized MatMul.
    scales = [init for name, init in initializers.items() if name.endswith("_scale")]
    assert any(list(init.dims) == [HIDDEN] for init in scales)
    assert model_size_bytes(target) < model_size_bytes(source) / 3
    assert f"{WEIGHT_MATMULS} MatMuls int8" in detail

    reference = torch_outputs(loaded.task_model, loaded.tokenizer, TEXTS, 64)
    cosine = cosine_similarities(reference, onnx_outputs(target, loaded.tokenizer, TEXTS, 64))
    assert cosine.mean() > 0.98


def test_keep_fp32_leaves_the_named_matmuls_alone(
    exported: tuple[LoadedModel, Path], tmp_path: Path
) -> None:
    _, source = exported
    names = weight_matmuls(onnx.load(str(source)))
    keep = names[:3]
    target = tmp_path / "int8.onnx"
    quantize_int8_dynamic(source, target, per_channel=False, keep_fp32=keep)
    nodes = {node.name: node.op_type for node in onnx.load(str(target)).graph.node}
    assert all(nodes[name] == "MatMul" for name in keep)
    assert op_counts(target)["MatMulInteger"] == WEIGHT_MATMULS - 3


def test_sensitivity_ranks_every_weight_matmul(exported: tuple[LoadedModel, Path]) -> None:
    loaded, source = exported
    batches = [b for _, b in length_sorted_batches(loaded.tokenizer, TEXTS, 64, 16)]
    ranked = matmul_sensitivity(source, batches, per_channel=True)
    assert sorted(name for name, _ in ranked) == sorted(weight_matmuls(onnx.load(str(source))))
    errors = [error for _, error in ranked]
    assert errors == sorted(errors, reverse=True)
    assert 0 < errors[-1] <= errors[0] < 0.2


def test_embedding_rows_round_trip_within_a_fraction_of_their_range() -> None:
    table = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    table[3] = 0.0  # an all-zero row must not divide by zero
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "input_ids"], ["out"])],
        "g",
        [onnx.helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [onnx.helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", 8])],
        [onnx.numpy_helper.from_array(table, "table")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert quantize_embedding_rows(model) == 1
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString())
    ids = np.arange(50, dtype=np.int64).reshape(5, 10)
    (out,) = session.run(None, {"input_ids": ids})
    restored = out.reshape(50, 8)
    row_range = np.abs(table).max(axis=1, keepdims=True)
    assert np.all(np.abs(restored - table) <= row_range / 254 + 1e-7)
    assert [init.name for init in model.graph.initializer if init.name == "table"] == []


def test_int8_static_inserts_quantize_dequantize_pairs(
    exported: tuple[LoadedModel, Path], tmp_path: Path
) -> None:
    loaded, source = exported
    target = tmp_path / "static.onnx"
    batches = [b for _, b in length_sorted_batches(loaded.tokenizer, TEXTS, 64, 16)]
    detail = quantize_int8_static(source, target, calibration=batches, per_channel=True)
    counts = op_counts(target)
    assert counts["QuantizeLinear"] >= WEIGHT_MATMULS // 2
    assert counts["DequantizeLinear"] >= WEIGHT_MATMULS
    assert "MinMax calibration" in detail


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_only_uses_matmulnbits(
    exported: tuple[LoadedModel, Path], tmp_path: Path, bits: int
) -> None:
    loaded, source = exported
    target = tmp_path / f"int{bits}.onnx"
    quantize_weight_only(source, target, bits=4 if bits == 4 else 8)
    counts = op_counts(target)
    assert counts["MatMulNBits"] == WEIGHT_MATMULS
    nodes = [n for n in onnx.load(str(target)).graph.node if n.op_type == "MatMulNBits"]
    assert {a.i for n in nodes for a in n.attribute if a.name == "bits"} == {bits}
    reference = torch_outputs(loaded.task_model, loaded.tokenizer, TEXTS, 64)
    cosine = cosine_similarities(reference, onnx_outputs(target, loaded.tokenizer, TEXTS, 64))
    assert cosine.mean() > 0.95


def test_fp16_converts_weights_but_keeps_io_types(
    exported: tuple[LoadedModel, Path], tmp_path: Path
) -> None:
    _, source = exported
    target = tmp_path / "fp16.onnx"
    quantize_fp16(source, target)
    model = onnx.load(str(target))
    types = {init.data_type for init in model.graph.initializer if len(init.dims) == 2}
    assert types == {TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.INT64] * 2
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model_size_bytes(target) < model_size_bytes(source) * 0.6
