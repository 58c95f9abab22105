"""Pruning: magnitude (unstructured) and structured (FFN neurons, attention heads).

Magnitude pruning zeroes weights: the file compresses better, but dense kernels do the same
work, so it is neither faster nor smaller on disk. Structured pruning removes whole FFN
neurons and attention heads by slicing weight matrices, so every matmul really shrinks.
transformers 5 has no `prune_heads`: heads go by slicing the query/key/value output rows and
the attention-output input columns; FFN neurons by slicing the FFN-in rows and FFN-out columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from optimodel.model_builder.errors import UnsupportedModelError
from optimodel.model_builder.modeling import TaskModel, length_sorted_batches
from optimodel.model_builder.spec import PruneTarget


@dataclass
class EncoderLayer:
    """The prunable linear layers of one transformer encoder block, whatever the family."""

    owner_attention: nn.Module  # holds query/key/value and the head count attribute
    owner_attention_output: nn.Module  # holds the attention-output projection
    owner_ffn_in: nn.Module
    owner_ffn_out: nn.Module
    names: dict[str, str] = field(default_factory=dict)
    head_count_attribute: str = "num_attention_heads"
    head_size: int = 0

    def linear(self, role: str) -> nn.Linear:
        owner = self._owner(role)
        module = getattr(owner, self.names[role])
        assert isinstance(module, nn.Linear)
        return module

    def replace(self, role: str, module: nn.Linear) -> None:
        setattr(self._owner(role), self.names[role], module)

    def _owner(self, role: str) -> nn.Module:
        if role in ("query", "key", "value"):
            return self.owner_attention
        if role == "attention_output":
            return self.owner_attention_output
        return self.owner_ffn_in if role == "ffn_in" else self.owner_ffn_out

    @property
    def heads(self) -> int:
        return int(getattr(self.owner_attention, self.head_count_attribute))

    def set_heads(self, count: int) -> None:
        setattr(self.owner_attention, self.head_count_attribute, count)
        if hasattr(self.owner_attention, "all_head_size"):
            setattr(self.owner_attention, "all_head_size", count * self.head_size)  # noqa: B010

    def linears(self) -> Iterator[nn.Linear]:
        for role in self.names:
            yield self.linear(role)


def encoder_layers(task_model: TaskModel) -> list[EncoderLayer]:
    """The encoder blocks of a BERT-family or DistilBERT model."""
    base: Any = task_model.model.base_model
    layers: list[EncoderLayer] = []
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        for block in base.encoder.layer:
            attention = block.attention.self
            layers.append(
                EncoderLayer(
                    owner_attention=attention,
                    owner_attention_output=block.attention.output,
                    owner_ffn_in=block.intermediate,
                    owner_ffn_out=block.output,
                    names={
                        "query": "query",
                        "key": "key",
                        "value": "value",
                        "attention_output": "dense",
                        "ffn_in": "dense",
                        "ffn_out": "dense",
                    },
                    head_count_attribute="num_attention_heads",
                    head_size=int(attention.attention_head_size),
                )
            )
        return layers
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):
        for block in base.transformer.layer:
            attention = block.attention
            layers.append(
                EncoderLayer(
                    owner_attention=attention,
                    owner_attention_output=attention,
                    owner_ffn_in=block.ffn,
                    owner_ffn_out=block.ffn,
                    names={
                        "query": "q_lin",
                        "key": "k_lin",
                        "value": "v_lin",
                        "attention_output": "out_lin",
                        "ffn_in": "lin1",
                        "ffn_out": "lin2",
                    },
                    head_count_attribute="n_heads",
                    head_size=int(attention.attention_head_size),
                )
            )
        return layers
    raise UnsupportedModelError(
        f"cannot find the encoder blocks of a {type(task_model.model).__name__}",
        field="spec.optimize.prune.method",
        fix="use prune.method: none for this architecture, or a BERT-family/DistilBERT model",
    )


def prune_magnitude(task_model: TaskModel, sparsity: float) -> str:
    """Zero the smallest-magnitude fraction `sparsity` of every encoder linear weight."""
    zeroed = 0
    total = 0
    with torch.no_grad():
        for layer in encoder_layers(task_model):
            for linear in layer.linears():
                weight = linear.weight
                count = int(weight.numel() * sparsity)
                if count == 0:
                    continue
                threshold = weight.abs().flatten().kthvalue(count).values
                mask = weight.abs() > threshold
                weight.mul_(mask)
                zeroed += int((~mask).sum())
                total += weight.numel()
    share = zeroed / total if total else 0.0
    return (
        f"magnitude: zeroed {share:.0%} of encoder linear weights "
        "(dense kernels do the same work: no speed-up; smaller only when compressed)"
    )


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping output rows (dim 0) or input columns (dim 1) `keep`."""
    weight = linear.weight.detach().index_select(dim, keep).clone()
    has_bias = linear.bias is not None
    out_features, in_features = weight.shape
    sliced = nn.Linear(in_features, out_features, bias=has_bias)
    sliced.weight = nn.Parameter(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        sliced.bias = nn.Parameter((bias.index_select(0, keep) if dim == 0 else bias).clone())
    return sliced


def channel_importance(
    task_model: TaskModel,
    tokenizer: Any,
    texts: list[str],
    max_length: int,
) -> list[dict[str, torch.Tensor]]:
    """Per layer, the importance of each input channel of the two output projections.

    importance_j = E|x_j| * ||W[:, j]||: how much channel j contributes to the block's
    output on real text (padding excluded). A first-order proxy, cheap and data-aware.
    """
    layers = encoder_layers(task_model)
    sums: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    tokens = torch.zeros(())
    current_mask: list[torch.Tensor] = []

    def recorder(index: int, role: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            mask = current_mask[0].unsqueeze(-1).to(inputs[0].dtype)
            total = (inputs[0].abs() * mask).sum(dim=(0, 1))
            sums[index][role] = sums[index].get(role, torch.zeros_like(total)) + total

        return hook

    handles = []
    for index, layer in enumerate(layers):
        for role in ("attention_output", "ffn_out"):
            handles.append(layer.linear(role).register_forward_pre_hook(recorder(index, role)))
    try:
        with torch.inference_mode():
            for _, batch in length_sorted_batches(tokenizer, texts, max_length, 32):
                input_ids, attention_mask = batch.tensors()
                current_mask[:] = [attention_mask]
                tokens = tokens + attention_mask.sum()
                task_model(input_ids, attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    importance = []
    for index, layer in enumerate(layers):
        scores = {}
        for role in ("attention_output", "ffn_out"):
            column_norms = layer.linear(role).weight.detach().norm(dim=0)
            scores[role] = sums[index][role] / tokens.clamp(min=1) * column_norms
        importance.append(scores)
    return importance


def _kept(count: int, sparsity: float) -> int:
    return max(1, round(count * (1.0 - sparsity)))


def prune_structured(
    task_model: TaskModel,
    tokenizer: Any,
    texts: list[str],
    *,
    sparsity: float,
    target: PruneTarget,
    max_length: int,
) -> str:
    """Remove the least important `sparsity` share of FFN neurons and/or heads, per layer."""
    layers = encoder_layers(task_model)
    importance = channel_importance(task_model, tokenizer, texts, max_length)
    ffn_before = ffn_after = heads_before = heads_after = 0
    for layer, scores in zip(layers, importance, strict=True):
        if target in ("ffn", "ffn-and-heads"):
            neurons = scores["ffn_out"]
            keep = torch.topk(neurons, _kept(neurons.numel(), sparsity)).indices.sort().values
            layer.replace("ffn_in", _slice_linear(layer.linear("ffn_in"), keep, 0))
            layer.replace("ffn_out", _slice_linear(layer.linear("ffn_out"), keep, 1))
            ffn_before += neurons.numel()
            ffn_after += keep.numel()
        if target in ("heads", "ffn-and-heads"):
            heads = layer.heads
            per_head = scores["attention_output"].view(heads, layer.head_size).sum(dim=1)
            kept_heads = torch.topk(per_head, _kept(heads, sparsity)).indices.sort().values
            channels = (
                kept_heads.unsqueeze(1) * layer.head_size + torch.arange(layer.head_size)
            ).flatten()
            for role in ("query", "key", "value"):
                layer.replace(role, _slice_linear(layer.linear(role), channels, 0))
            layer.replace(
                "attention_output", _slice_linear(layer.linear("attention_output"), channels, 1)
            )
            layer.set_heads(int(kept_heads.numel()))
            heads_before += heads
            heads_after += int(kept_heads.numel())
    parts = []
    if ffn_before:
        parts.append(f"FFN neurons {ffn_before}→{ffn_after}")
    if heads_before:
        parts.append(f"attention heads {heads_before}→{heads_after}")
    return f"structured ({target}, sparsity {sparsity:g}): " + ", ".join(parts)
