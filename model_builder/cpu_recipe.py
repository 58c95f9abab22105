"""CPU recipes: the candidates `recipe: auto` tries for serving.gpu.count 0.

Measured on MiniLM-L6 (DESIGN.md): per-channel dynamic int8 keeps cosine ~0.991 (worst ~0.95)
where per-tensor drops to ~0.96; reduce-range costs little speed; int8 on the fused graph
(QAttention) is about as fast at batch 32 and faster at batch 1; keeping the most sensitive
MatMuls in fp32 buys back fidelity for some speed. Which is fastest depends on the ISA (AVX2,
AVX-512, VNNI), so the search measures them on the build machine instead of guessing.
"""

from __future__ import annotations

from pathlib import Path

from optimodel.model_builder.fusion import fuse_transformer
from optimodel.model_builder.quantize import quantize_int8_dynamic
from optimodel.model_builder.recipe import Recipe, RecipeInputs
from optimodel.model_builder.serving_target import RecipeName

KEEP_FP32_LADDER: dict[int, RecipeName] = {
    2: "int8-keep-fp32-2",
    4: "int8-keep-fp32-4",
    8: "int8-keep-fp32-8",
}


def int8_per_channel(inputs: RecipeInputs, target: Path) -> str:
    return quantize_int8_dynamic(inputs.exported, target, per_channel=True)


def int8_reduce_range(inputs: RecipeInputs, target: Path) -> str:
    return quantize_int8_dynamic(inputs.exported, target, per_channel=True, reduce_range=True)


def int8_fused(inputs: RecipeInputs, target: Path) -> str:
    fused = inputs.scratch("cpu-fused.onnx")
    ops = fuse_transformer(inputs.exported, fused, inputs.attention, gpu=False)
    done = quantize_int8_dynamic(fused, target, per_channel=True, op_types=("MatMul", "Attention"))
    return f"fused ({_ops(ops)}), then {done}"


def fp32_fused(inputs: RecipeInputs, target: Path) -> str:
    ops = fuse_transformer(inputs.exported, target, inputs.attention, gpu=False)
    return f"fp32, fused for the CPU provider ({_ops(ops)})"


def _keep_fp32(count: int) -> Recipe:
    def make(inputs: RecipeInputs, target: Path) -> str:
        keep = inputs.most_sensitive(count)
        return quantize_int8_dynamic(inputs.exported, target, per_channel=True, keep_fp32=keep)

    summary = f"int8 per-channel, the {count} most sensitive MatMuls kept fp32"
    return Recipe(KEEP_FP32_LADDER[count], "cpu", summary, make)


def _ops(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {op}" for op, count in counts.items()) or "nothing fused"


CPU_RECIPES: tuple[Recipe, ...] = (
    Recipe("int8-per-channel", "cpu", "int8 dynamic, per-channel weights", int8_per_channel),
    Recipe(
        "int8-reduce-range", "cpu", "int8 dynamic, per-channel 7-bit weights", int8_reduce_range
    ),
    Recipe("int8-fused", "cpu", "transformer fusion, then int8 (QAttention)", int8_fused),
    *(_keep_fp32(count) for count in KEEP_FP32_LADDER),
    Recipe("fp32-fused", "cpu", "fp32, transformer fusion", fp32_fused),
)
