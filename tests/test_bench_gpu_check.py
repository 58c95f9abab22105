"""benchmarks/gpu_check.py with --cpu on a tiny BERT: the code paths a GPU run takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.gpu_check import main
from optimodel.operator.settings import OperatorSettings
from tests.builder_models import single_torch_thread, tiny_model_dir


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_with_a_flag(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    with single_torch_thread():
        code = main(
            ["--cpu", "--quick", "--source", f"file://{tiny_model_dir('bert')}", "--out", str(out),
             "--profile", "cpu"]
        )  # fmt: skip
    assert code == 0
    results = json.loads(out.read_text())
    assert results["device"] == "cpu"
    assert set(results["variants"]) == {
        "PyTorch fp32",
        "PyTorch fp16",
        "PyTorch bf16",
        "ONNX fp16-fused (CPUExecutionProvider)",
    }
    for name, variant in results["variants"].items():
        assert variant["throughput_b32"] > 0 and variant["latency_p50_ms_b1"] > 0, name
    assert results["variants"]["PyTorch fp16"]["cosine_mean"] > 0.99
    assert results["variants"]["PyTorch bf16"]["cosine_mean"] > 0.95  # 8 mantissa bits
    onnx = results["onnx"]
    assert onnx["ops"]["Attention"] == 2 and not {"MatMulInteger", "DynamicQuantizeLinear"} & set(
        onnx["ops"]
    )
    assert results["machine"]["cores"] >= 1 and "isa" in results["machine"]
    assert results["ratios_vs_fp32"]["PyTorch fp32"] == 1.0
    # The measured profile the operator's settings take (validated as they would be).
    profile = results["hardware_profile"]
    settings = OperatorSettings.model_validate({"hardwareProfiles": [profile]})
    assert settings.hardware_profiles[0].inferences_per_second > 0
    assert settings.hardware_profiles[0].latency_p99_ms > 0
