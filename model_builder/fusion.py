"""onnxruntime's offline transformer fusion: Attention, SkipLayerNormalization, BiasGelu.

The optimizer is always told the attention shape: called with num_heads=0 / hidden_size=0
(auto-detect) it silently skips Attention fusion on our export, whose Reshape shapes are
computed at run time. The shape comes from the (possibly pruned) PyTorch model, whose every
layer keeps the same head count (structured pruning removes the same share per layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optimodel.model_builder.errors import UnsupportedModelError
from optimodel.model_builder.modeling import TaskModel
from optimodel.model_builder.prune import encoder_layers


@dataclass(frozen=True)
class AttentionShape:
    """What the fusion needs to know about the encoder's attention."""

    num_heads: int
    hidden_size: int  # num_heads x head size: the query projection's width


class FusionNotApplicableError(ValueError):
    """The model has no encoder attention the transformer optimizer can fuse."""


def attention_shape(task_model: TaskModel) -> AttentionShape | None:
    """The encoder's attention shape; None for other architectures or uneven head counts."""
    try:
        layers = encoder_layers(task_model)
    except UnsupportedModelError:
        return None
    shapes = {(layer.heads, layer.heads * layer.head_size) for layer in layers}
    if len(shapes) != 1:
        return None
    heads, hidden = shapes.pop()
    return AttentionShape(num_heads=heads, hidden_size=hidden) if heads > 0 else None


def fuse_transformer(
    source: Path, target: Path, shape: AttentionShape | None, *, gpu: bool, fp16: bool = False
) -> dict[str, int]:
    """Write the fused graph of `source` to `target`; returns the fused op counts.

    `gpu` selects the optimizer's GPU options (kernels the CUDA provider has); `fp16` then
    converts weights and compute to half precision, keeping fp32 inputs and outputs. The
    word-embedding Gather stays unfused, so int8 recipes can still store it per row.
    """
    if shape is None:
        raise FusionNotApplicableError(
            "no BERT-family encoder with one head count per layer to fuse"
        )
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    fused = optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=shape.num_heads,
        hidden_size=shape.hidden_size,
        optimization_options=options,
        opt_level=0,
        use_gpu=gpu,
    )
    if fp16:
        fused.convert_float_to_float16(keep_io_types=True)
    fused.save_model_to_file(str(target))
    counts: dict[str, int] = fused.get_fused_operator_statistics()
    return {op: count for op, count in counts.items() if count}
