"""The serving target decides the recipe: what hardware serves the artifact, and what it can run.

`serving.gpu.count > 0` serves on GPUs through onnxruntime's CUDA provider (optionally its
TensorRT accelerator); `0` serves on CPUs. A quantize mode the target cannot run well, or at
all, is refused here, once, for `optimodel validate`, the operator's InvalidSpec check and the
builder alike (all three call `target_problems` through `build_spec_problems`).

Facts the rules rest on (onnxruntime source and docs; DESIGN.md):
- CUDA provider: no DynamicQuantizeLinear kernel, MatMulInteger int8 x int8 only while dynamic
  quantization feeds uint8, so int8-dynamic MatMuls run on the CPU with copies around them
  (onnxruntime#7745, #10267); QDQ int8 is dequantize + fp32 there.
- MatMulNBits: 4-bit kernels on CPU and CUDA from onnxruntime 1.17 (PR #17890); 8-bit ones
  from 1.22 (CPU PR #24384, CUDA PR #24509); before that the kernel refuses bits != 4.
- The cluster's Triton image: SERVED_ONNXRUNTIME below is the onnxruntime inside TRITON_IMAGE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Target = Literal["cpu", "gpu"]
# Candidate recipes (model_builder/cpu_recipe.py, gpu_recipe.py), in the search's order.
RecipeName = Literal[
    "int8-per-channel",
    "int8-reduce-range",
    "int8-fused",
    "int8-keep-fp32-2",
    "int8-keep-fp32-4",
    "int8-keep-fp32-8",
    "fp32-fused",
    "fp16-fused",
    "fp16",
]
RECIPES_BY_TARGET: dict[Target, tuple[RecipeName, ...]] = {
    "cpu": (
        "int8-per-channel",
        "int8-reduce-range",
        "int8-fused",
        "int8-keep-fp32-2",
        "int8-keep-fp32-4",
        "int8-keep-fp32-8",
        "fp32-fused",
    ),
    "gpu": ("fp16-fused", "fp16", "fp32-fused"),
}

# The operator's default Triton image and the onnxruntime its onnxruntime backend links
# (Triton 24.10 = 2.51.0, the same server as the local nvidia-pytriton wheel). Change both
# together: the quantize-mode rules read SERVED_ONNXRUNTIME.
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
SERVED_ONNXRUNTIME = "1.19.2"

# First onnxruntime release with a MatMulNBits kernel for (provider, bits).
MATMUL_NBITS_SINCE: dict[tuple[Target, int], str] = {
    ("cpu", 4): "1.17.0",
    ("gpu", 4): "1.17.0",
    ("cpu", 8): "1.22.0",
    ("gpu", 8): "1.22.0",
}
WEIGHT_ONLY_BITS = {"int8-weight-only": 8, "int4-weight-only": 4}
# Quantize modes whose int8 compute the CUDA provider does not run on the GPU.
CPU_ONLY_MODES = ("int8-dynamic", "int8-static")


def serving_target(gpu_count: int) -> Target:
    """gpu for one or more GPUs per replica, else cpu."""
    return "gpu" if gpu_count > 0 else "cpu"


def version_tuple(version: str) -> tuple[int, ...]:
    """'1.19.2' -> (1, 19, 2); a suffix such as '1.22.0rc1' or '+cu12' is ignored."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@dataclass(frozen=True)
class ModeRefusal:
    """Why the target cannot run a quantize mode, in one line, and what to use instead."""

    reason: str
    fix: str


def mode_refusal(
    mode: str, target: Target, served_onnxruntime: str = SERVED_ONNXRUNTIME
) -> ModeRefusal | None:
    """None when `target` runs `mode` well with the served onnxruntime; else why not."""
    if target == "gpu" and mode in CPU_ONLY_MODES:
        return ModeRefusal(
            f"{mode} does not run on GPU serving: onnxruntime's CUDA provider has no "
            "DynamicQuantizeLinear / uint8 MatMulInteger kernels (QDQ is dequantized to fp32), "
            "so the MatMuls fall back to the CPU and the GPU idles",
            "remove quantize.mode (recipe auto picks fp16 for GPUs), use fp16, or set "
            "serving.gpu.count: 0 to serve int8 on CPUs",
        )
    bits = WEIGHT_ONLY_BITS.get(mode)
    if bits is None:
        return None
    since = MATMUL_NBITS_SINCE[(target, bits)]
    if version_tuple(served_onnxruntime) >= version_tuple(since):
        return None
    provider = "CUDA" if target == "gpu" else "CPU"
    alternative = "fp16" if target == "gpu" else "int8-dynamic"
    return ModeRefusal(
        f"{mode} needs {bits}-bit MatMulNBits on the {provider} provider (onnxruntime >= "
        f"{since}); the served Triton image ({TRITON_IMAGE}) has onnxruntime "
        f"{served_onnxruntime}, so the model would fail to load",
        f"remove quantize.mode (recipe auto), or use {alternative}",
    )
