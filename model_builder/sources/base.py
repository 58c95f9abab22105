"""The one interface every model source implements, and the settings they read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from optimodel.model_builder.sources.files import FetchKind
from optimodel.model_builder.sources.retry import RetryPolicy

MODEL_CACHE_ENV = "OPTIMODEL_MODEL_CACHE"
PVC_ROOT_ENV = "OPTIMODEL_PVC_ROOT"
DEFAULT_PVC_ROOT = Path("/mnt/pvc")
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class SourceRequest:
    """What to fetch: a URI of a model, a LoRA adapter or a data file, and the spec field."""

    uri: str
    kind: FetchKind
    field: str
    revision: str | None = None
    revision_field: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A fetched source on local disk: a folder (model, adapter) or a file (data)."""

    path: Path
    uri: str
    origin: str = ""
    commit: str | None = None
    files: tuple[str, ...] = ()
    downloaded: int = 0
    reused: int = 0


@dataclass(frozen=True)
class FetchSettings:
    """Where sources are fetched from and cached, read from the environment at fetch time.

    The builder Job sets these from the operator's settings (`sources`): HF_ENDPOINT (a
    company mirror), HF_TOKEN (from a Secret), HF_HUB_CACHE and OPTIMODEL_MODEL_CACHE (a
    volume reused across builds), AWS_* for s3:// inputs.
    """

    cache_dir: Path
    hub_cache_dir: Path
    hub_endpoint: str = DEFAULT_HUB_ENDPOINT
    hub_token: str | None = None
    hub_offline: bool = False
    s3_endpoint: str | None = None
    s3_region: str | None = None
    pvc_root: Path = DEFAULT_PVC_ROOT
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FetchSettings:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())
        cache = Path(env.get(MODEL_CACHE_ENV) or home / ".cache" / "optimodel")
        if env.get("HF_HUB_CACHE"):
            hub_cache = Path(env["HF_HUB_CACHE"])
        elif env.get("HF_HOME"):
            hub_cache = Path(env["HF_HOME"]) / "hub"
        else:  # huggingface_hub's own default (it also honours XDG_CACHE_HOME)
            from huggingface_hub import constants

            hub_cache = Path(constants.HF_HUB_CACHE)
        return cls(
            cache_dir=cache,
            hub_cache_dir=hub_cache,
            hub_endpoint=(env.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/"),
            hub_token=env.get("HF_TOKEN") or _stored_hub_token(),
            hub_offline=_truthy(env.get("HF_HUB_OFFLINE")),
            s3_endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            pvc_root=Path(env.get(PVC_ROOT_ENV) or DEFAULT_PVC_ROOT),
            retry=RetryPolicy.from_env(env),
        )


def _stored_hub_token() -> str | None:
    """The token `hf auth login` stored on this machine, if any (never in a builder Job)."""
    from huggingface_hub import get_token

    return get_token()


class ModelSource(Protocol):
    """A place models, adapters and data come from (one per URI scheme)."""

    def fetch(self, request: SourceRequest, settings: FetchSettings) -> Fetched:
        """The requested files on local disk; raises SourceError subclasses naming the field."""
        ...
