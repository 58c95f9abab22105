"""Tiny built repositories for the real-Triton tests: a 2-layer BERT (hidden 32) exported to
ONNX with the builder's signature, built from a config (nothing is downloaded)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from optimodel.model_builder.report import (
    CONFIG_FILE,
    MODEL_FILE,
    REPORT_FILE,
    BuildReport,
    InputLimits,
    Measurement,
)
from optimodel.model_builder.spec import Serving
from optimodel.model_builder.triton_config import (
    ModelSignature,
    TensorSpec,
    render_triton_config,
)

HIDDEN = 32
VOCAB = 1000


def tiny_signature() -> ModelSignature:
    token = [-1]
    return ModelSignature(
        inputs=[
            TensorSpec(name="input_ids", data_type="TYPE_INT64", dims=token),
            TensorSpec(name="attention_mask", data_type="TYPE_INT64", dims=token),
        ],
        outputs=[TensorSpec(name="embeddings", data_type="TYPE_FP32", dims=[HIDDEN])],
    )


def export_tiny_bert(path: Path) -> None:
    """A random-weight 2-layer BERT with mean pooling, exported like the builder does."""
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

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled: torch.Tensor = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return pooled

    ids = torch.randint(1, VOCAB, (2, 8))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        MeanPooled(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["embeddings"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "embeddings": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def write_built_repository(
    out: Path,
    name: str,
    onnx_file: Path,
    serving: Serving,
    *,
    input_limits: InputLimits | None = None,
) -> Path:
    """OUT/<name>/ as the builder lays it out: config.pbtxt, 1/model.onnx, report.json."""
    model_dir = out / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    target = model_dir / "1" / MODEL_FILE
    target.unlink(missing_ok=True)
    target.symlink_to(onnx_file.resolve())
    signature = tiny_signature()
    (model_dir / CONFIG_FILE).write_text(render_triton_config(name, signature, serving))
    BuildReport(
        name=name,
        spec_hash="test",
        passed=True,
        source_uri="file:///tiny-bert",
        task="feature-extraction",
        optimized=Measurement(size_bytes=onnx_file.stat().st_size),
        signature=signature,
        created_at=datetime.now(UTC),
        input_limits=input_limits,
    ).write(model_dir / REPORT_FILE)
    return model_dir
