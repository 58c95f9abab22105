"""Accuracy recovery after structured pruning: distillation from the original model.

The pruned student learns to reproduce the teacher (the unpruned original) on unlabelled
text: every layer's hidden states (pruning removes FFN neurons and heads, never the hidden
size, so the shapes match) plus the task output (embedding cosine, or softened logits).
It trains on the calibration texts, never the evaluation texts, so the gate stays honest.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optimodel.model_builder.modeling import TaskModel, tokenize

TEMPERATURE = 2.0  # softens logits so the student learns the teacher's whole ranking


def _training_texts(texts: list[str], batch_size: int, rng: random.Random) -> list[str]:
    # Joining two texts half of the time gives longer and more varied inputs than the
    # (small) calibration set alone, at no cost.
    batch = []
    for _ in range(batch_size):
        text = rng.choice(texts)
        if rng.random() < 0.5:
            text = f"{text} {rng.choice(texts)}"
        batch.append(text)
    return batch


def _hidden_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(student_states[-1].dtype)
    losses = []
    for student, teacher in zip(student_states[1:], teacher_states[1:], strict=True):
        error = ((student - teacher) ** 2 * weights).sum() / weights.sum() / student.shape[-1]
        scale = (teacher**2 * weights).sum() / weights.sum() / teacher.shape[-1]
        losses.append(error / scale.clamp(min=1e-6))
    return torch.stack(losses).mean()


def _task_loss(task: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if task == "text-classification":
        return nn.functional.kl_div(
            nn.functional.log_softmax(student / TEMPERATURE, dim=-1),
            nn.functional.softmax(teacher / TEMPERATURE, dim=-1),
            reduction="batchmean",
        ) * (TEMPERATURE**2)
    return (1.0 - nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()


def distill(
    student: TaskModel,
    teacher: TaskModel,
    tokenizer: Any,
    texts: list[str],
    *,
    steps: int,
    max_length: int,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> str:
    """Train `student` in place to match `teacher`; returns what was done, in words."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    embeddings = getattr(student.model.base_model, "embeddings", None)
    frozen = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    trainable = [p for p in student.parameters() if id(p) not in frozen]
    for parameter in student.parameters():
        parameter.requires_grad_(id(parameter) not in frozen)
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * max(0.0, 1.0 - step / steps)
    )
    # eval(): no dropout, so the student learns the teacher's deterministic function.
    student.eval()
    teacher.eval()
    first = last = 0.0
    for step in range(steps):
        batch = tokenize(tokenizer, _training_texts(texts, batch_size, rng), max_length)
        input_ids, attention_mask = batch.tensors()
        with torch.no_grad():
            teacher_out = teacher.model(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            )
            teacher_task = teacher.head(teacher_out, attention_mask)
        student_out = student.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        loss = _task_loss(
            student.task, student.head(student_out, attention_mask), teacher_task
        ) + _hidden_loss(student_out.hidden_states, teacher_out.hidden_states, attention_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        first = value if step == 0 else first
        last = value
        if on_step is not None:
            on_step(step + 1, value)
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    return (
        f"distillation: {steps} steps of {batch_size} on {len(texts)} texts, "
        f"loss {first:.4f}→{last:.4f}"
    )
