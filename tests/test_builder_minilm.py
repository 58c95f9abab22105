"""The real thing: the default example (MiniLM-L6, int8) built end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimodel.manifest import build_spec_from_manifest
from optimodel.model_builder.evaluate import cosine_similarities, onnx_outputs
from optimodel.model_builder.modeling import torch_outputs
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.quantize import op_counts

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
