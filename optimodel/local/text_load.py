"""Text workloads for the load tests and benchmarks: real sentences cut to chosen token counts.

Lengths are counted as the served tokenizer step counts them (the model's own tokenizer.json,
special tokens included), so "5-120 tokens" means what the model step actually receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimodel.local.loadtest import SAMPLE_TEXTS, Payload
from optimodel.model_builder.served.tokenize_model import TEXT_INPUT, TOKENIZER_FILE

MIXED_LENGTHS = (5, 120)  # tokens: the mixed-length trace of the benchmarks


@dataclass(frozen=True)
class TextWorkload:
    """Batch-1 text requests and the token length of each."""

    texts: list[str]
    token_lengths: list[int]

    def payloads(self) -> list[Payload]:
        return text_payloads(self.texts)

    @property
    def longest(self) -> int:
        return max(self.token_lengths)

    @property
    def mixed(self) -> bool:
        return len(set(self.token_lengths)) > 1


def text_payloads(texts: Sequence[str]) -> list[Payload]:
    """One batch-1 request (`text`, [1, 1] BYTES) per text."""
    return [{TEXT_INPUT: np.array([[text.encode()]], dtype=np.object_)} for text in texts]


def load_counting_tokenizer(tokenizer_dir: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def text_of_tokens(tokenizer: Any, words: Sequence[str], tokens: int) -> tuple[str, int]:
    """The longest prefix of WORDS that tokenizes to at most TOKENS (at least one word)."""
    low, high = 1, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if len(tokenizer.encode(" ".join(words[:middle])).ids) <= tokens:
            low = middle
        else:
            high = middle - 1
    text = " ".join(words[:low])
    return text, len(tokenizer.encode(text).ids)


def texts_of_lengths(
    tokenizer_dir: Path, lengths: Sequence[int], sources: Sequence[str] = SAMPLE_TEXTS
) -> TextWorkload:
    """One text per requested token length, each a different rotation of the sentences."""
    tokenizer = load_counting_tokenizer(tokenizer_dir)
    corpus = list(sources)
    texts, counts = [], []
    for index, length in enumerate(lengths):
        start = index % len(corpus)
        words = " ".join(corpus[start:] + corpus[:start]).split()
        while len(words) < 4 * length:
            words += words
        text, count = text_of_tokens(tokenizer, words, length)
        texts.append(text)
        counts.append(count)
    return TextWorkload(texts, counts)


def mixed_lengths(count: int, low: int, high: int, seed: int = 0) -> list[int]:
    """COUNT token lengths drawn uniformly from [LOW, HIGH]."""
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high, got {low}-{high}")
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(low, high + 1, size=count)]


def sample_sentences(tokenizer_dir: Path, count: int) -> TextWorkload:
    """COUNT requests cycling through the sample sentences as they are (short texts)."""
    tokenizer = load_counting_tokenizer(tokenizer_dir)
    texts = [SAMPLE_TEXTS[index % len(SAMPLE_TEXTS)] for index in range(count)]
    return TextWorkload(texts, [len(tokenizer.encode(text).ids) for text in texts])


def repeating_trace(workload: TextWorkload, repeat_share: float, seed: int = 0) -> TextWorkload:
    """The workload with REPEAT_SHARE of its requests replaced by repeats of earlier texts."""
    rng = np.random.default_rng(seed)
    texts, counts = list(workload.texts), list(workload.token_lengths)
    for index in range(1, len(texts)):
        if rng.random() < repeat_share:
            earlier = int(rng.integers(0, index))
            texts[index], counts[index] = texts[earlier], counts[earlier]
    return TextWorkload(texts, counts)
