"""What a builder pod needs to fetch its model sources: Hub endpoint and token, S3 access for
s3:// inputs, and the download cache volume reused across builds (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optimodel.model_builder.sources.base import MODEL_CACHE_ENV
from optimodel.model_builder.spec import BuildSpec
from optimodel.operator.artifacts import ARTIFACTS_MOUNT, ArtifactStore
from optimodel.operator.settings import OperatorSettings

CACHE_MOUNT = "/cache"
CACHE_VOLUME = "model-cache"
CACHE_FOLDER = ".model-cache"


def input_uris(spec: BuildSpec) -> list[str]:
    """Every URI a build fetches: the model, its adapter, calibration and evaluation data."""
    optimize = spec.optimize
    refs = [optimize.calibration_data, optimize.eval_data]
    adapter = spec.source.adapter
    return [
        spec.source.uri,
        *([adapter.uri] if adapter is not None else []),
        *(ref.uri for ref in refs if ref is not None),
    ]


@dataclass
class SourceAccess:
    """Environment, volumes and mounts the builder container gets for its sources."""

    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def _cache(store: ArtifactStore, settings: OperatorSettings, access: SourceAccess) -> str:
    """The cache folder: the configured claim, else the PVC artifact store, else an emptyDir."""
    cache = settings.sources.cache
    if cache.claim_name is not None:
        access.volumes.append(
            {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}
        )
        sub_path = cache.sub_path.strip("/")
        mount: dict[str, Any] = {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT}
        if sub_path:
            mount["subPath"] = sub_path
        access.mounts.append(mount)
        return CACHE_MOUNT
    if store.pvc is not None:  # mounted at ARTIFACTS_MOUNT by the Job already
        sub_path = store.pvc.sub_path.strip("/")
        base = f"{ARTIFACTS_MOUNT}/{sub_path}" if sub_path else ARTIFACTS_MOUNT
        return f"{base}/{CACHE_FOLDER}"
    access.volumes.append({"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": cache.size_limit}})
    access.mounts.append({"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT})
    return CACHE_MOUNT


def _secret_env(variable: str, name: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def source_access(
    spec: BuildSpec, store: ArtifactStore, settings: OperatorSettings
) -> SourceAccess:
    """Hub and S3 access for exactly the schemes the spec uses, and the cache."""
    access = SourceAccess()
    cache = _cache(store, settings, access)
    access.env += [
        {"name": MODEL_CACHE_ENV, "value": cache},
        {"name": "HF_HUB_CACHE", "value": f"{cache}/huggingface/hub"},
    ]
    uris = input_uris(spec)
    hub = settings.sources.hub
    if any(uri.startswith("hf://") for uri in uris):
        if hub.endpoint:
            access.env.append({"name": "HF_ENDPOINT", "value": hub.endpoint})
        if hub.token_secret is not None:
            access.env.append(_secret_env("HF_TOKEN", hub.token_secret.name, hub.token_secret.key))
    s3 = settings.sources.s3
    if any(uri.startswith("s3://") for uri in uris):
        if s3.region:
            access.env += [
                {"name": "AWS_REGION", "value": s3.region},
                {"name": "AWS_DEFAULT_REGION", "value": s3.region},
            ]
        if s3.endpoint:
            access.env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
        secret = s3.credentials_secret
        if secret is not None:
            access.env += [
                _secret_env("AWS_ACCESS_KEY_ID", secret.name, secret.access_key_id_key),
                _secret_env("AWS_SECRET_ACCESS_KEY", secret.name, secret.secret_access_key_key),
            ]
    return access
