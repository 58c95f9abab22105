"""Which files of a model or adapter repository a build needs (pure).

A Hub repository often holds the same weights several times (safetensors, PyTorch, ONNX,
TensorFlow, OpenVINO…); the builder loads one copy, so only that one is fetched: safetensors
when present, else PyTorch pickles, plus the config, the tokenizer and the small
sentence-transformers files that say how embeddings are pooled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

FetchKind = Literal["model", "adapter", "data"]

CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "spm.model",
)
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)
_POOLING_CONFIG = re.compile(r"^[0-9]+_Pooling/config\.json$")
# Weight layouts in order of preference: (single file, shard index, shard pattern).
_WEIGHTS = (
    (
        "model.safetensors",
        "model.safetensors.index.json",
        re.compile(r"^model-[0-9-of]+\.safetensors$"),
    ),
    (
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        re.compile(r"^pytorch_model-[0-9-of]+\.bin$"),
    ),
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _weights(names: set[str]) -> list[str]:
    for single, index, shard in _WEIGHTS:
        if single in names:
            return [single]
        if index in names:
            return [index, *sorted(name for name in names if shard.match(name))]
    return []


def select_files(names: Iterable[str], kind: FetchKind) -> list[str]:
    """The subset of a repository's files (relative paths) that a build of `kind` reads."""
    available = set(names)
    if kind == "adapter":
        chosen = [ADAPTER_CONFIG_FILE] if ADAPTER_CONFIG_FILE in available else []
        weights = next((name for name in _ADAPTER_WEIGHTS if name in available), None)
        return chosen + ([weights] if weights else [])
    if kind == "data":
        return sorted(available)
    chosen = [name for name in (CONFIG_FILE, *TOKENIZER_FILES) if name in available]
    chosen += [name for name in SENTENCE_TRANSFORMERS_FILES if name in available]
    chosen += sorted(name for name in available if _POOLING_CONFIG.match(name))
    return chosen + _weights(available)


def missing_files(selected: Iterable[str], kind: FetchKind) -> str | None:
    """What a selection lacks to be loadable, in words; None when it is complete."""
    chosen = set(selected)
    if kind == "adapter":
        if ADAPTER_CONFIG_FILE not in chosen:
            return f"no {ADAPTER_CONFIG_FILE} (not a PEFT adapter)"
        if not chosen & set(_ADAPTER_WEIGHTS):
            return f"no adapter weights ({' or '.join(_ADAPTER_WEIGHTS)})"
        return None
    if kind == "data":
        return None
    if CONFIG_FILE not in chosen:
        return f"no {CONFIG_FILE} (not a Hugging Face model folder)"
    if not _weights(chosen):
        return "no weights (model.safetensors or pytorch_model.bin, single or sharded)"
    return None
