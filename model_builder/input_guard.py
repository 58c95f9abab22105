"""A guard inside the served graph: no request's token ids can fail, or poison, its batch.

Triton's onnxruntime backend runs one `session.run` over a whole dynamic batch. An id past the
embedding table fails that run for every request in it (onnxruntime CPU), or reads memory it
should not (a GPU gather has no bounds check); a sequence longer than the position table
fails it too. The builder therefore adds, in front of the model:

- ids outside 0..vocab-1 (where the attention mask is set) are replaced by 0, so the gathers
  stay in bounds, and that request's output rows become NaN, so its client cannot mistake
  them for a result; the other rows are computed exactly as without the guard;
- inputs longer than the model's positions are cut to them (what the tokenizer does).

Text requests through the served tokenizer always carry valid ids; the guard is for clients
that send token ids themselves. Valid inputs take the same values through the guarded graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from optimodel.model_builder.modeling import INPUT_NAMES
from optimodel.model_builder.report import InputLimits

GUARD_PREFIX = "optimodel_input_guard/"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def guard_inputs(model: onnx.ModelProto, limits: InputLimits) -> None:
    """Insert the guard in front of `model` (in place); outputs keep their names and types."""
    graph = model.graph
    ids_name, mask_name = INPUT_NAMES
    names = {tensor.name for tensor in graph.input}
    if ids_name not in names or mask_name not in names:
        raise ValueError(f"the graph has no inputs {INPUT_NAMES}; got {sorted(names)}")
    if any(node.name.startswith(GUARD_PREFIX) for node in graph.node):
        return
    p = GUARD_PREFIX
    ids, mask = p + "input_ids", p + "attention_mask"
    for node in graph.node:
        node.input[:] = [{ids_name: ids, mask_name: mask}.get(name, name) for name in node.input]
    outputs = [tensor.name for tensor in graph.output]
    for node in graph.node:
        node.output[:] = [p + name + "_raw" if name in outputs else name for name in node.output]
        node.input[:] = [p + name + "_raw" if name in outputs else name for name in node.input]

    def const(name: str, value: npt.NDArray[Any]) -> str:
        graph.initializer.append(numpy_helper.from_array(value, p + name))
        return p + name

    zero = const("zero", np.array(0, dtype=np.int64))
    vocab = const("vocab", np.array(limits.vocab_size, dtype=np.int64))
    starts = const("starts", np.array([0], dtype=np.int64))
    ends = const("ends", np.array([limits.max_sequence_length], dtype=np.int64))
    axis = const("axis", np.array([1], dtype=np.int64))
    nan = const("nan", np.array(np.nan, dtype=np.float32))
    node = helper.make_node
    guard = [
        node("Slice", [ids_name, starts, ends, axis], [p + "ids_cut"], name=p + "cut_ids"),
        node("Slice", [mask_name, starts, ends, axis], [mask], name=p + "cut_mask"),
        node("GreaterOrEqual", [p + "ids_cut", zero], [p + "not_negative"], name=p + "ge"),
        node("Less", [p + "ids_cut", vocab], [p + "below_vocab"], name=p + "lt"),
        node("And", [p + "not_negative", p + "below_vocab"], [p + "in_vocab"], name=p + "and"),
        node("Equal", [mask, zero], [p + "masked"], name=p + "masked"),
        node("Or", [p + "in_vocab", p + "masked"], [p + "token_ok"], name=p + "or"),
        node("Where", [p + "in_vocab", p + "ids_cut", zero], [ids], name=p + "safe_ids"),
        node("Not", [p + "token_ok"], [p + "token_bad"], name=p + "not"),
        node("Cast", [p + "token_bad"], [p + "bad_count_in"], to=TensorProto.INT64,
             name=p + "cast"),
    ]  # fmt: skip
    if _opset(model) >= 13:
        guard.append(
            node("ReduceSum", [p + "bad_count_in", axis], [p + "bad_count"], keepdims=1,
                 name=p + "count")
        )  # fmt: skip
    else:  # pragma: no cover - the exporter writes opset 17
        guard.append(
            node("ReduceSum", [p + "bad_count_in"], [p + "bad_count"], axes=[1], keepdims=1,
                 name=p + "count")
        )  # fmt: skip
    guard.append(node("Greater", [p + "bad_count", zero], [p + "row_bad"], name=p + "row_bad"))
    tail = []
    for output in graph.output:
        if output.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"output {output.name} is not float32; cannot mark bad rows")
        rank = len(output.type.tensor_type.shape.dim)
        row_bad = p + "row_bad"
        if rank > 2:
            row_bad = p + f"row_bad_{output.name}"
            extra = const(f"axes_{output.name}", np.arange(2, rank, dtype=np.int64))
            tail.append(
                node("Unsqueeze", [p + "row_bad", extra], [row_bad], name=row_bad + "_unsqueeze")
            )
        tail.append(
            node("Where", [row_bad, nan, p + output.name + "_raw"], [output.name],
                 name=p + "mark_" + output.name)
        )  # fmt: skip
    nodes = [*guard, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)


def guard_model_file(path: Path, limits: InputLimits) -> None:
    """`guard_inputs` on a model file, rewritten in place."""
    model = onnx.load(str(path))
    guard_inputs(model, limits)
    onnx.save(model, str(path))
