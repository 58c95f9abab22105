"""Pruning on tiny models: what shrinks, what is zeroed, and that distillation recovers."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from optimodel.model_builder.data import DEFAULT_CALIBRATION_DATA, load_text_set
from optimodel.model_builder.evaluate import cosine_similarities
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.modeling import torch_outputs
from optimodel.model_builder.prune import encoder_layers, prune_magnitude, prune_structured
from optimodel.model_builder.recover import distill
from optimodel.model_builder.spec import Source, Task
from tests.builder_models import (
    FFN,
    HEADS,
    HIDDEN,
    LAYERS,
    TinyKind,
    single_torch_thread,
    tiny_model_dir,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


TEXTS = load_text_set(DEFAULT_CALIBRATION_DATA, field="calibrationData").texts[:64]


def _load(kind: TinyKind, task: Task = "feature-extraction") -> LoadedModel:
    return load_model(Source(uri=f"file://{tiny_model_dir(kind)}", task=task))


def test_magnitude_pruning_zeroes_the_share_asked_and_keeps_shapes() -> None:
    model = _load("bert").task_model
    detail = prune_magnitude(model, 0.5)
    for layer in encoder_layers(model):
        ffn_in = layer.linear("ffn_in").weight
        assert ffn_in.shape == (FFN, HIDDEN)
        assert float((ffn_in == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert "no speed-up" in detail


@pytest.mark.parametrize(
    ("kind", "task"),
    [("bert", "feature-extraction"), ("distilbert-classifier", "text-classification")],
)
def test_structured_ffn_pruning_slices_both_ffn_matrices(kind: TinyKind, task: Task) -> None:
    loaded = _load(kind, task)
    model = loaded.task_model
    detail = prune_structured(
        model, loaded.tokenizer, TEXTS, sparsity=0.5, target="ffn", max_length=64
    )
    for layer in encoder_layers(model):
        assert layer.linear("ffn_in").weight.shape == (FFN // 2, HIDDEN)
        assert layer.linear("ffn_out").weight.shape == (HIDDEN, FFN // 2)
        assert layer.linear("ffn_in").bias is not None
        assert layer.linear("ffn_in").bias.shape == (FFN // 2,)
    assert f"FFN neurons {FFN * LAYERS}→{FFN * LAYERS // 2}" in detail
    outputs = torch_outputs(model, loaded.tokenizer, TEXTS[:4], 64)
    assert outputs.shape[0] == 4 and np.isfinite(outputs).all()


@pytest.mark.parametrize("kind", ["bert", "distilbert-classifier"])
def test_structured_head_pruning_slices_qkv_rows_and_output_columns(kind: TinyKind) -> None:
    task: Task = "text-classification" if "classifier" in kind else "feature-extraction"
    loaded = _load(kind, task)
    model = loaded.task_model
    head_size = HIDDEN // HEADS
    prune_structured(model, loaded.tokenizer, TEXTS, sparsity=0.5, target="heads", max_length=64)
    for layer in encoder_layers(model):
        assert layer.heads == HEADS // 2
        for role in ("query", "key", "value"):
            assert layer.linear(role).weight.shape == (HEADS // 2 * head_size, HIDDEN)
        assert layer.linear("attention_output").weight.shape == (HIDDEN, HEADS // 2 * head_size)
        assert layer.linear("ffn_in").weight.shape == (FFN, HIDDEN)  # FFN untouched
    outputs = torch_outputs(model, loaded.tokenizer, TEXTS[:4], 64)
    assert np.isfinite(outputs).all()


def test_pruning_keeps_the_most_important_neurons() -> None:
    loaded = _load("bert")
    original = loaded.task_model
    reference = torch_outputs(original, loaded.tokenizer, TEXTS, 64)
    informed = copy.deepcopy(original)
    prune_structured(informed, loaded.tokenizer, TEXTS, sparsity=0.5, target="ffn", max_length=64)
    # The same share removed at random, for comparison.
    generator = torch.Generator().manual_seed(0)
    random_pruned = copy.deepcopy(original)
    with torch.no_grad():
        for layer in encoder_layers(random_pruned):
            drop = torch.randperm(FFN, generator=generator)[: FFN // 2]
            layer.linear("ffn_out").weight[:, drop] = 0.0
    informed_cos = cosine_similarities(
        reference, torch_outputs(informed, loaded.tokenizer, TEXTS, 64)
    )
    random_cos = cosine_similarities(
        reference, torch_outputs(random_pruned, loaded.tokenizer, TEXTS, 64)
    )
    assert informed_cos.mean() > random_cos.mean()


def test_distillation_brings_the_pruned_model_closer_to_the_original() -> None:
    loaded = _load("bert")
    teacher = loaded.task_model
    student = copy.deepcopy(teacher)
    prune_structured(
        student, loaded.tokenizer, TEXTS, sparsity=0.75, target="ffn-and-heads", max_length=64
    )
    held_out = load_text_set(DEFAULT_CALIBRATION_DATA, field="calibrationData").texts[64:128]
    reference = torch_outputs(teacher, loaded.tokenizer, held_out, 64)
    before = cosine_similarities(
        reference, torch_outputs(student, loaded.tokenizer, held_out, 64)
    ).mean()
    losses: list[float] = []
    detail = distill(
        student,
        teacher,
        loaded.tokenizer,
        TEXTS,
        steps=30,
        max_length=64,
        learning_rate=1e-3,
        on_step=lambda _step, loss: losses.append(loss),
    )
    after = cosine_similarities(
        reference, torch_outputs(student, loaded.tokenizer, held_out, 64)
    ).mean()
    assert len(losses) == 30
    assert after > before
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert "30 steps" in detail
    assert not any(p.requires_grad for p in student.parameters())
