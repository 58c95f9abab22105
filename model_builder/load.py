"""Load the original model: fetch source.uri (and source.adapter), check the architecture
fits the task, merge the adapter.

Fetching is the job of `model_builder.sources` (hf://, s3://, pvc://, file://); this module
only loads what was fetched, from local disk (transformers never goes online here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimodel.model_builder.errors import ModelFilesError, UnsupportedModelError
from optimodel.model_builder.modeling import Pooling, TaskModel
from optimodel.model_builder.sources import Fetched, FetchSettings, SourceRequest, fetch
from optimodel.model_builder.sources.base import DEFAULT_PVC_ROOT, PVC_ROOT_ENV
from optimodel.model_builder.sources.hub import SHIPPED_MODELS
from optimodel.model_builder.sources.local import resolve_local_uri
from optimodel.model_builder.spec import Source, Task

__all__ = [
    "DEFAULT_PVC_ROOT",
    "PVC_ROOT_ENV",
    "SHIPPED_MODELS",
    "LoadedModel",
    "load_model",
    "resolve_local_uri",
    "resolve_source_dir",
]

# Encoder families the exporter and the structured pruner are tested on.
SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")
# What a saved tokenizer consists of (fast, WordPiece, BPE, SentencePiece). Without any of
# them transformers builds a tokenizer of its special tokens alone: every word is [UNK] on
# both sides of the gate, which then passes, and a useless artifact would be published.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "spm.model",
)
# Tokenizers fill their model's embedding table but for padding (to a multiple of 8..128).
MIN_VOCABULARY_COVERAGE = 0.9


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
    vocab_size: int = 0  # rows of the word-embedding table
    max_positions: int = 0  # most tokens the position table holds
    fetched: Fetched | None = None
    adapter: Fetched | None = None
    adapter_detail: str = ""

    @property
    def config(self) -> Any:
        return self.task_model.model.config


def _offline() -> None:
    # Belt and braces: everything is on local disk once fetched, and every call below is
    # local-only, but a library deep down must not reach for the hub either.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def fetch_source(
    source: Source, *, field: str = "spec.source", settings: FetchSettings | None = None
) -> Fetched:
    """The source model's folder on local disk (downloaded into the cache when remote)."""
    return fetch(
        SourceRequest(
            source.uri,
            "model",
            f"{field}.uri",
            revision=source.revision,
            revision_field=f"{field}.revision",
        ),
        settings,
    )


def fetch_adapter(
    source: Source, *, field: str = "spec.source", settings: FetchSettings | None = None
) -> Fetched | None:
    """source.adapter's folder on local disk, or None without an adapter."""
    if source.adapter is None:
        return None
    return fetch(
        SourceRequest(
            source.adapter.uri,
            "adapter",
            f"{field}.adapter.uri",
            revision=source.adapter.revision,
            revision_field=f"{field}.adapter.revision",
        ),
        settings,
    )


def resolve_source_dir(source: Source, *, field: str = "spec.source.uri") -> Path:
    """The local directory holding the source model's config, weights and tokenizer."""
    return fetch_source(source, field=field.removesuffix(".uri")).path


def _json_file(path: Path, field: str) -> Any:
    from optimodel.model_builder.documents import DocumentError, read_data_file

    try:
        return read_data_file(path)
    except DocumentError as error:
        raise ModelFilesError(
            f"{path} is not a valid JSON file: {error}",
            field=field,
            fix="restore the model folder's files (re-download or re-save the model)",
        ) from None


def _sentence_transformers_head(model_dir: Path, field: str) -> tuple[Pooling, bool]:
    """Pooling and normalization a sentence-transformers model declares (mean, none)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return "mean", False
    modules = _json_file(modules_file, field)
    pooling: Pooling = "mean"
    normalize = False
    for module in modules if isinstance(modules, list) else []:
        if not isinstance(module, dict):
            continue
        kind = str(module.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            config_file = model_dir / str(module.get("path", "")) / "config.json"
            if config_file.is_file():
                config = _json_file(config_file, field)
                if (
                    isinstance(config, dict)
                    and config.get("pooling_mode_cls_token")
                    and not config.get("pooling_mode_mean_tokens")
                ):
                    pooling = "cls"
    return pooling, normalize


def _unusable(what: str, path: Path, error: BaseException, field: str) -> ModelFilesError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelFilesError(
        f"cannot load the model's {what} from {path}: {detail[:300]}",
        field=field,
        fix="restore the model folder (re-download or re-save it with save_pretrained), "
        "or point source.uri at an intact copy",
    )


def check_tokenizer(tokenizer: Any, vocab_size: int, model_dir: Path, field: str) -> None:
    """Refuse a tokenizer whose ids do not span the model's vocabulary (or overrun it)."""
    size = len(tokenizer)
    if size > vocab_size:
        raise ModelFilesError(
            f"the tokenizer in {model_dir} has {size} tokens but the model's embedding table "
            f"only {vocab_size}: ids past it would fail or read the wrong rows",
            field=field,
            fix="ship the tokenizer the model was trained with",
        )
    if size < MIN_VOCABULARY_COVERAGE * vocab_size:
        raise ModelFilesError(
            f"the tokenizer in {model_dir} has {size} tokens for a model vocabulary of "
            f"{vocab_size}: most words would become unknown tokens and the accuracy gate "
            "would compare meaningless outputs",
            field=field,
            fix="ship the tokenizer the model was trained with",
        )


def load_tokenizer(model_dir: Path, vocab_size: int, field: str) -> Any:
    """The model's own tokenizer, refused when missing or not covering the vocabulary."""
    import transformers

    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFilesError(
            f"{model_dir} has no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
            field=field,
            fix="save the tokenizer beside the model (tokenizer.save_pretrained(folder))",
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as error:  # any corrupt tokenizer file; transformers raises many kinds
        raise _unusable("tokenizer", model_dir, error, field) from None
    check_tokenizer(tokenizer, vocab_size, model_dir, field)
    return tokenizer


def weights_size_bytes(model_dir: Path) -> int:
    """Bytes of the weight files on disk (safetensors preferred, as loading prefers them)."""
    for pattern in WEIGHT_PATTERNS:
        files = sorted(model_dir.glob(pattern))
        if files:
            return sum(file.stat().st_size for file in files)
    return 0


def load_model(source: Source, *, field: str = "spec.source") -> LoadedModel:
    """Load the model and tokenizer named by `source` for its task, in eval mode, fp32, with
    source.adapter merged in."""
    fetched = fetch_source(source, field=field)
    adapter = fetch_adapter(source, field=field)
    model_dir = fetched.path
    _offline()
    import transformers

    # The builder reports its own progress; per-shard "Loading weights" bars are noise there.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    uri_field = f"{field}.uri"
    _json_file(model_dir / "config.json", uri_field)  # names the bad line, unlike transformers
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except Exception as error:  # an unknown model_type, a bad value: transformers' many kinds
        raise _unusable("config.json", model_dir, error, uri_field) from None
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
    vocab_size = int(getattr(config, "vocab_size", 0) or 0)
    tokenizer = load_tokenizer(model_dir, vocab_size, uri_field) if vocab_size else None
    if weights_size_bytes(model_dir) == 0:
        raise ModelFilesError(
            f"{model_dir} has no weights ({' or '.join(WEIGHT_PATTERNS)})",
            field=uri_field,
            fix="save the model with save_pretrained, or point source.uri at a full copy",
        )
    try:
        model = auto_class.from_pretrained(model_dir, local_files_only=True).eval()
    except Exception as error:  # truncated safetensors, a shape mismatch, a pickle error...
        raise _unusable("weights", model_dir, error, uri_field) from None
    adapter_detail = ""
    if adapter is not None:
        from optimodel.model_builder.adapters import merge_lora_adapter

        model, adapter_detail = merge_lora_adapter(
            model,
            adapter.path,
            base_uri=source.uri,
            adapter_uri=adapter.uri,
            field=f"{field}.adapter.uri",
        )
    if tokenizer is None:
        rows = int(model.get_input_embeddings().num_embeddings)
        tokenizer = load_tokenizer(model_dir, rows, uri_field)
    pooling, normalize = _sentence_transformers_head(model_dir, uri_field)
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
        vocab_size=int(model.get_input_embeddings().num_embeddings),
        max_positions=positions,
        fetched=fetched,
        adapter=adapter,
        adapter_detail=adapter_detail,
    )
