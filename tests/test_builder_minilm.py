"""The real thing: the default example (MiniLM-L6, int8) built end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimodel.local.repository import parse_config_text
from optimodel.manifest import build_spec_from_manifest
from optimodel.model_builder.benchmark import BenchmarkSettings
from optimodel.model_builder.evaluate import cosine_similarities, onnx_outputs
from optimodel.model_builder.modeling import torch_outputs
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.quantize import INT8_OPS, op_counts
from optimodel.model_builder.served.layout import ServedRepository
from optimodel.model_builder.spec import DataRef

TEXTS = ["A man is playing a guitar.", "Quantized models should agree with the original."]


@pytest.mark.slow
def test_default_example_builds_a_small_accurate_artifact(repo: Path, tmp_path: Path) -> None:
    spec = build_spec_from_manifest(repo / "examples" / "minilm-int8.yaml")
    report = run_build(spec, tmp_path, benchmark=False)

    assert report.passed
    assert report.accuracy is not None
    assert report.accuracy.mean >= 0.99
    assert report.accuracy.min is not None and report.accuracy.min >= 0.95
    assert report.size_reduction is not None and report.size_reduction >= 3.5
    assert report.signature is not None
    assert report.signature.outputs[0].name == "embeddings"
    assert report.signature.outputs[0].dims == [384]
    model = tmp_path / "minilm" / "minilm-model" / "1" / "model.onnx"
    assert op_counts(model)["MatMulInteger"] == 36  # 6 layers x (Q, K, V, O, FFN in, FFN out)

    # The served embeddings are sentence-transformers' (mean pooled, L2 normalized).
    from optimodel.model_builder.load import load_model

    loaded = load_model(spec.source)
    served = onnx_outputs(model, loaded.tokenizer, TEXTS, 128)
    original = torch_outputs(loaded.task_model, loaded.tokenizer, TEXTS, 128)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)
    assert cosine_similarities(original, served).min() > 0.98


SHORT_SEARCH = BenchmarkSettings(
    batch_size=8, sequence_length=32, rounds=1, seconds_per_round=0.3, latency_calls_per_round=3
)


@pytest.mark.slow
def test_gpu_example_publishes_fp16_without_int8_ops(repo: Path, tmp_path: Path) -> None:
    spec = build_spec_from_manifest(repo / "examples" / "minilm-gpu.yaml")
    spec.optimize.eval_data = DataRef(uri="builtin://eval-texts", max_samples=96)
    report = run_build(spec, tmp_path, benchmark=False, search_benchmark=SHORT_SEARCH)

    assert report.passed and report.target == "gpu"
    assert report.recipe in ("fp16-fused", "fp16", "fp32-fused")
    fp16 = next(t for t in report.trials if t.recipe == "fp16-fused")
    assert fp16.passed and fp16.op_summary["Attention"] == 6  # fused: one per layer
    assert (fp16.fidelity_mean or 0) >= 0.999 and (fp16.fidelity_worst or 0) >= 0.99
    served = ServedRepository.at(tmp_path / "minilm-gpu")
    assert not set(op_counts(served.onnx)) & set(INT8_OPS)
    config = parse_config_text(served.config(served.names.model).read_text())
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["trt_profile_max_shapes"].startswith("input_ids:32x128")


@pytest.mark.slow
def test_cpu_example_searches_within_a_small_budget(repo: Path, tmp_path: Path) -> None:
    spec = build_spec_from_manifest(repo / "examples" / "minilm-cpu.yaml")
    spec.optimize.search_seconds = 30  # a few candidates, then the rest is skipped
    report = run_build(spec, tmp_path, benchmark=False, search_benchmark=SHORT_SEARCH)

    assert report.passed and report.target == "cpu"
    assert report.trials[0].recipe == "int8-per-channel" and report.trials[0].passed
    chosen = next(t for t in report.trials if t.chosen)
    assert chosen.recipe == report.recipe and chosen.passed
    assert report.accuracy is not None and report.accuracy.min is not None
    assert report.accuracy.mean >= 0.99 and report.accuracy.min >= 0.95
