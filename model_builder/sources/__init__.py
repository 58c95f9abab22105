"""Model sources: where a model, a LoRA adapter or a data file is fetched from.

One small interface (`ModelSource.fetch(request, settings) -> Fetched`) with one
implementation per URI scheme:

    file:///path, /path, pvc://claim/path   local.py  (nothing copied)
    hf://org/name                           hub.py    (huggingface_hub; HF_ENDPOINT mirrors)
    s3://bucket/prefix                      s3.py     (boto3; AWS_ENDPOINT_URL stores)

Only the files a build reads are fetched (files.py), into caches reused across builds.
Failures raise the SourceError subclasses of errors.py naming the spec field; transient ones
(network, 429, 5xx) are retried with backoff first (retry.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from optimodel.model_builder.errors import SourceNotFoundError
from optimodel.model_builder.sources.base import (
    Fetched,
    FetchSettings,
    ModelSource,
    SourceRequest,
)
from optimodel.model_builder.sources.files import FetchKind
from optimodel.model_builder.sources.local import LOCAL_SCHEMES, LocalSource

__all__ = ["FetchKind", "FetchSettings", "Fetched", "ModelSource", "SourceRequest", "fetch"]

SCHEMES = ("hf", "s3", *LOCAL_SCHEMES)


def source_for(uri: str, *, field: str) -> ModelSource:
    """The source implementing `uri`'s scheme (the heavy clients are imported on demand)."""
    scheme = urlsplit(uri).scheme
    if scheme == "hf":
        from optimodel.model_builder.sources.hub import HubSource

        return HubSource()
    if scheme == "s3":
        from optimodel.model_builder.sources.s3 import S3Source

        return S3Source()
    if scheme in LOCAL_SCHEMES:
        return LocalSource()
    raise SourceNotFoundError(
        f"{uri!r}: unknown URI scheme {scheme!r}",
        field=field,
        fix="use hf://org/name, s3://bucket/prefix, file:///path or pvc://claim/path",
    )


def fetch(request: SourceRequest, settings: FetchSettings | None = None) -> Fetched:
    """The files `request` names, on local disk (downloaded or reused from the cache)."""
    source = source_for(request.uri, field=request.field)
    return source.fetch(request, settings or FetchSettings.from_env())
