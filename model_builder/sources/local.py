"""Local sources: file:///path, a plain path, or pvc://claim/path (the claim mounted under
$OPTIMODEL_PVC_ROOT, as the builder Job mounts it). Nothing is copied."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from optimodel.model_builder.errors import SourceNotFoundError
from optimodel.model_builder.sources.base import (
    DEFAULT_PVC_ROOT,
    PVC_ROOT_ENV,
    Fetched,
    FetchSettings,
    SourceRequest,
)
from optimodel.model_builder.sources.files import (
    ADAPTER_CONFIG_FILE,
    CONFIG_FILE,
    missing_files,
)

LOCAL_SCHEMES = ("", "file", "pvc")


def resolve_local_uri(uri: str, *, field: str, pvc_root: Path | None = None) -> Path:
    """The local path behind a file://, pvc:// or plain-path URI (other schemes are refused)."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if uri.startswith("pvc://"):
        root = pvc_root or Path(os.environ.get(PVC_ROOT_ENV, str(DEFAULT_PVC_ROOT)))
        return root / uri.removeprefix("pvc://")
    if urlsplit(uri).scheme not in LOCAL_SCHEMES:
        raise SourceNotFoundError(
            f"{uri!r}: not a local path",
            field=field,
            fix="use file:///path or pvc://claim/path here (hf:// and s3:// are fetched first)",
        )
    return Path(uri)


class LocalSource:
    """A folder or file already on this machine (or on a mounted volume)."""

    def fetch(self, request: SourceRequest, settings: FetchSettings) -> Fetched:
        path = resolve_local_uri(request.uri, field=request.field, pvc_root=settings.pvc_root)
        if request.kind == "data":
            return Fetched(path, request.uri, origin=f"local file {path}")
        if not path.is_dir():
            raise SourceNotFoundError(
                f"{request.uri!r}: {path} does not exist",
                field=request.field,
                fix="point at a Hugging Face model folder (config.json, weights, tokenizer)"
                if request.kind == "model"
                else "point at a PEFT adapter folder (adapter_config.json, adapter weights)",
            )
        # Only what tells the folder's kind: the loader checks weights and tokenizer itself,
        # with errors naming the broken file.
        names = [p.name for p in path.iterdir() if p.name in (CONFIG_FILE, ADAPTER_CONFIG_FILE)]
        names += ["model.safetensors", "adapter_model.safetensors"]
        missing = missing_files(names, request.kind)
        if missing is not None:
            raise SourceNotFoundError(
                f"{request.uri!r}: {path} has {missing}",
                field=request.field,
                fix="point at a Hugging Face model folder (config.json, weights, tokenizer)"
                if request.kind == "model"
                else "point at a PEFT adapter folder (adapter_config.json, adapter weights)",
            )
        return Fetched(path, request.uri, origin=f"local folder {path}")
