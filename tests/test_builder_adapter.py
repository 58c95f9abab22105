"""LoRA adapters: a tiny adapter trained here on a tiny model, merged by the builder before
export; the artifact computes base + adapter (not the base), and an adapter for another base
is refused with the field named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimodel.model_builder.errors import AdapterMismatchError
from optimodel.model_builder.evaluate import onnx_outputs
from optimodel.model_builder.load import load_model
from optimodel.model_builder.modeling import TaskModel, torch_outputs
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.spec import BuildSpec, Source
from tests.builder_models import (
    ADAPTER_TEXTS,
    minilm_tokenizer,
    single_torch_thread,
    tiny_adapter_dir,
    tiny_model_dir,
    train_lora_adapter,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)  # type: ignore[no-any-return]


def _source(adapter: Path, uri: str | None = None) -> Source:
    return Source.model_validate(
        {
            "uri": uri or f"file://{tiny_model_dir('bert')}",
            "task": "feature-extraction",
            "adapter": {"uri": f"file://{adapter}"},
        }
    )


def test_the_artifact_computes_base_plus_adapter(tmp_path: Path) -> None:
    import peft
    import transformers

    spec = BuildSpec.model_validate(
        {
            "name": "tiny",
            "source": _source(tiny_adapter_dir()).model_dump(by_alias=True),
            "optimize": {"quantize": {"mode": "none"}, "accuracy": {"min": 0.999}},
        }
    )
    report = run_build(spec, tmp_path, benchmark=False)
    assert report.passed and report.adapter_uri == spec.source.adapter.uri  # type: ignore[union-attr]
    assert "LoRA adapter" in next(s.detail for s in report.steps if s.name == "load")

    tokenizer = minilm_tokenizer()
    [model_file] = (tmp_path / "tiny").rglob("model.onnx")
    artifact = onnx_outputs(model_file, tokenizer, ADAPTER_TEXTS, 128)
    base = transformers.AutoModel.from_pretrained(tiny_model_dir("bert")).eval()
    base_only = torch_outputs(TaskModel(base, "feature-extraction"), tokenizer, ADAPTER_TEXTS, 128)
    with_adapter = peft.PeftModel.from_pretrained(
        transformers.AutoModel.from_pretrained(tiny_model_dir("bert")), str(tiny_adapter_dir())
    ).eval()
    unmerged = TaskModel(with_adapter.base_model.model, "feature-extraction")
    expected = torch_outputs(unmerged, tokenizer, ADAPTER_TEXTS, 128)
    assert _cosines(artifact, expected).min() > 0.9999  # base + adapter, unmerged, by peft
    assert _cosines(artifact, base_only).mean() < 0.99  # the adapter changed the model


def test_an_adapter_for_other_shapes_names_the_field(tmp_path: Path) -> None:
    import transformers

    config = transformers.BertConfig(
        vocab_size=len(minilm_tokenizer()),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    other = train_lora_adapter(transformers.BertModel(config), tmp_path / "wider-lora", steps=1)
    with pytest.raises(AdapterMismatchError) as caught:
        load_model(_source(other))
    assert caught.value.field == "spec.source.adapter.uri"
    assert "size mismatch" in caught.value.message and caught.value.reason == "AdapterMismatch"


def test_an_adapter_declared_for_another_hub_model_is_refused(tmp_path: Path) -> None:
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir(), adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "acme/some-other-model"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="trained for 'acme/some-other-model'") as caught:
        load_model(_source(adapter, "hf://sentence-transformers/all-MiniLM-L6-v2"))
    assert caught.value.fix is not None and "base_model_name_or_path" in caught.value.fix


def test_a_folder_that_is_no_adapter_is_not_found(tmp_path: Path) -> None:
    from optimodel.model_builder.errors import SourceNotFoundError

    with pytest.raises(SourceNotFoundError, match=r"adapter_config\.json") as caught:
        load_model(_source(tiny_model_dir("bert")))
    assert caught.value.field == "spec.source.adapter.uri"
