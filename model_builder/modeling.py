"""The served computation as one torch module: token ids in, embeddings or logits out.

The same module is the reference the gate compares against, the PyTorch baseline the
benchmark times, and what the exporter traces, so all three always compute the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from optimodel.model_builder.spec import Task

Pooling = Literal["mean", "cls"]
Int64Array = NDArray[np.int64]
FloatArray = NDArray[np.float32]
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME_BY_TASK: dict[str, str] = {
    "feature-extraction": "embeddings",
    "text-classification": "logits",
}


class TaskModel(nn.Module):
    """A Hugging Face encoder plus its task head (pooling, or the classifier's logits)."""

    def __init__(
        self, model: Any, task: Task, pooling: Pooling = "mean", normalize: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.pooling = pooling
        self.normalize = normalize

    @property
    def output_name(self) -> str:
        return OUTPUT_NAME_BY_TASK[self.task]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # transformers 5 models take keyword arguments only (positional order varies by model).
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(outputs, attention_mask)

    def head(self, outputs: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        """The task output from the encoder's outputs: pooled embeddings or logits."""
        if self.task == "text-classification":
            logits: torch.Tensor = outputs.logits
            return logits
        hidden: torch.Tensor = outputs.last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


@dataclass(frozen=True)
class TokenBatch:
    """Tokenized texts as the exported graph takes them (int64, padded to the longest)."""

    input_ids: Int64Array
    attention_mask: Int64Array

    def feeds(self) -> dict[str, Int64Array]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.input_ids), torch.from_numpy(self.attention_mask)


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> TokenBatch:
    """Tokenize one batch, padded to its longest text and truncated at max_length."""
    encoded = tokenizer(
        texts, padding="longest", truncation=True, max_length=max_length, return_tensors="np"
    )
    return TokenBatch(
        input_ids=np.ascontiguousarray(encoded["input_ids"], dtype=np.int64),
        attention_mask=np.ascontiguousarray(encoded["attention_mask"], dtype=np.int64),
    )


def length_sorted_batches(
    tokenizer: Any, texts: list[str], max_length: int, batch_size: int
) -> list[tuple[list[int], TokenBatch]]:
    """Batches of similar length (little padding), with the original index of each text."""
    lengths = [
        len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    ]
    order = sorted(range(len(texts)), key=lambda index: lengths[index])
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batches.append((indices, tokenize(tokenizer, [texts[i] for i in indices], max_length)))
    return batches


def torch_outputs(
    task_model: TaskModel, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32
) -> FloatArray:
    """The module's outputs for `texts`, in order, as float32 numpy."""
    results: list[FloatArray | None] = [None] * len(texts)
    task_model.eval()
    with torch.inference_mode():
        for indices, batch in length_sorted_batches(tokenizer, texts, max_length, batch_size):
            output = task_model(*batch.tensors()).float().numpy()
            for row, index in enumerate(indices):
                results[index] = output[row]
    return np.stack([r for r in results if r is not None])
