"""GPU recipes: the candidates `recipe: auto` tries for serving.gpu.count > 0.

onnxruntime's CUDA provider runs none of the int8-dynamic kernels on the GPU (serving_target.py),
so GPU artifacts are fp16 (weights and compute; fp32 inputs and outputs kept, so the served
signature does not change) or fused fp32. Every GPU recipe's graph holds zero
DynamicQuantizeLinear / MatMulInteger / QDQ nodes; the search checks it on each artifact.
"""

from __future__ import annotations

from pathlib import Path

from optimodel.model_builder.fusion import fuse_transformer
from optimodel.model_builder.quantize import quantize_fp16
from optimodel.model_builder.recipe import Recipe, RecipeInputs


def fp16_fused(inputs: RecipeInputs, target: Path) -> str:
    ops = fuse_transformer(inputs.exported, target, inputs.attention, gpu=True, fp16=True)
    fused = ", ".join(f"{count} {op}" for op, count in ops.items()) or "nothing fused"
    return f"fp16 (fp32 inputs/outputs), fused with the GPU options ({fused})"


def fp16_plain(inputs: RecipeInputs, target: Path) -> str:
    return quantize_fp16(inputs.exported, target)


def fp32_fused(inputs: RecipeInputs, target: Path) -> str:
    ops = fuse_transformer(inputs.exported, target, inputs.attention, gpu=True)
    fused = ", ".join(f"{count} {op}" for op, count in ops.items()) or "nothing fused"
    return f"fp32, fused with the GPU options ({fused})"


GPU_RECIPES: tuple[Recipe, ...] = (
    Recipe("fp16-fused", "gpu", "transformer fusion (GPU), then fp16", fp16_fused, "fp16"),
    Recipe("fp16", "gpu", "fp16 weights and compute, unfused", fp16_plain, "fp16"),
    Recipe("fp32-fused", "gpu", "fp32, transformer fusion (GPU)", fp32_fused),
)
