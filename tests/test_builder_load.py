"""Loading the source model: URI resolution offline, task and architecture checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from optimodel.model_builder.errors import SourceNotFoundError, UnsupportedModelError
from optimodel.model_builder.load import load_model, resolve_source_dir, weights_size_bytes
from optimodel.model_builder.spec import Source
from tests.builder_models import minilm_dir, tiny_model_dir


def _use_hf_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_hf_uri_of_the_shipped_minilm_resolves_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_hf_cache(tmp_path / "empty-cache", monkeypatch)
    source = Source(uri="hf://sentence-transformers/all-MiniLM-L6-v2", task="feature-extraction")
    assert resolve_source_dir(source) == minilm_dir()


def test_hf_uri_missing_from_cache_names_the_field_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_hf_cache(tmp_path / "empty-cache", monkeypatch)
    source = Source(uri="hf://no-such-org/no-such-model", task="feature-extraction")
    with pytest.raises(SourceNotFoundError) as caught:
        resolve_source_dir(source)
    assert caught.value.field == "spec.source.uri"
    assert "hf://no-such-org/no-such-model" in str(caught.value)
    assert caught.value.fix is not None and "file://" in caught.value.fix


def test_hf_uri_resolves_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/}.
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_model_dir("bert"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    _use_hf_cache(cache, monkeypatch)
    source = Source(uri="hf://acme/tiny", task="feature-extraction")
    assert resolve_source_dir(source) == snapshot


def test_file_uri_and_pvc_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model_dir("bert")
    file_source = Source(uri=f"file://{model}", task="feature-extraction")
    assert resolve_source_dir(file_source) == model

    claim = tmp_path / "models-claim" / "tiny"
    shutil.copytree(model, claim)
    monkeypatch.setenv("OPTIMODEL_PVC_ROOT", str(tmp_path))
    pvc_source = Source(uri="pvc://models-claim/tiny", task="feature-extraction")
    assert resolve_source_dir(pvc_source) == claim


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///nonexistent/model", "does not exist"),
    ],
)
def test_unreachable_sources_say_why(uri: str, expected: str) -> None:
    with pytest.raises(SourceNotFoundError, match=expected) as caught:
        resolve_source_dir(Source(uri=uri, task="feature-extraction"))
    assert caught.value.field == "spec.source.uri"
    assert caught.value.fix


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"has no config\.json"):
        resolve_source_dir(Source(uri=f"file://{tmp_path}", task="feature-extraction"))


def test_unsupported_architecture_names_the_type() -> None:
    source = Source(uri=f"file://{tiny_model_dir('gpt2')}", task="feature-extraction")
    with pytest.raises(UnsupportedModelError, match="'gpt2'") as caught:
        load_model(source)
    assert caught.value.field == "spec.source.uri"
    assert caught.value.exit_code == 2


def test_classification_needs_a_classifier_head() -> None:
    source = Source(uri=f"file://{tiny_model_dir('bert')}", task="text-classification")
    with pytest.raises(UnsupportedModelError, match="no sequence-classification head") as caught:
        load_model(source)
    assert caught.value.field == "spec.source.task"


def test_loaded_model_runs_its_task() -> None:
    import torch

    loaded = load_model(
        Source(uri=f"file://{tiny_model_dir('bert-classifier')}", task="text-classification")
    )
    batch = loaded.tokenizer(["good", "bad movie"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = loaded.task_model(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, 2)
    assert loaded.size_bytes == weights_size_bytes(loaded.source_dir) > 0


def test_sentence_transformers_head_is_honoured() -> None:
    loaded = load_model(
        Source(uri="hf://sentence-transformers/all-MiniLM-L6-v2", task="feature-extraction")
    )
    # all-MiniLM-L6-v2 declares mean pooling then L2 normalization (modules.json).
    assert loaded.task_model.pooling == "mean"
    assert loaded.task_model.normalize
    assert loaded.max_sequence_length == 128
