"""Where built artifacts live: the store (PVC or S3) and the versioned path of each build.

Layout: `<store>/<namespace>/<name>/g<generation>/<name>/`, the served repository of the
build (a Triton model repository: the text-in ensemble and its steps, model_builder/served).
A new build never overwrites the folder being served, so the previous version keeps serving
until the new one passes its gate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from optimodel.operator import api
from optimodel.operator.policy import resolved_storage
from optimodel.operator.settings import OperatorSettings

# Mount points inside builder and serving pods.
ARTIFACTS_MOUNT = "/artifacts"
OUT_MOUNT = "/out"
SOURCES_MOUNT = "/mnt/sources"


@dataclass(frozen=True)
class ArtifactStore:
    """The store a model's builds go to: spec.storage, else the operator's default."""

    pvc: api.PvcStorage | None = None
    s3: api.S3Storage | None = None

    @classmethod
    def for_model(cls, storage: api.Storage | None, settings: OperatorSettings) -> ArtifactStore:
        """spec.storage (an S3 one with the policy's endpoint and credentials), else the
        operator's default store."""
        storage = resolved_storage(storage, settings.policy)
        chosen = storage if storage is not None and (storage.pvc or storage.s3) else None
        chosen = chosen or settings.artifact_store
        return cls(pvc=chosen.pvc if not chosen.s3 else None, s3=chosen.s3)

    @property
    def root_uri(self) -> str:
        if self.s3 is not None:
            return self.s3.uri.rstrip("/")
        assert self.pvc is not None
        sub_path = self.pvc.sub_path.strip("/")
        return f"pvc://{self.pvc.claim_name}" + (f"/{sub_path}" if sub_path else "")

    def artifact_uri(self, namespace: str, model: str, generation: int) -> str:
        """URI of the model repository built for `generation`."""
        return f"{self.root_uri}/{namespace}/{model}/g{generation}"

    def holds(self, artifact_uri: str) -> bool:
        return artifact_uri.startswith(self.root_uri + "/")


def pvc_location(uri: str) -> tuple[str, str]:
    """(claim, path inside the volume) of a pvc://claim/path URI."""
    parts = urlsplit(uri)
    if parts.scheme != "pvc" or not parts.netloc:
        raise ValueError(f"{uri!r} is not a pvc://claim/path URI")
    return parts.netloc, parts.path.strip("/")


def build_key(spec_hash: str, store: ArtifactStore) -> str:
    """What identifies a build: its inputs (source, optimize) and where it is written.

    Serving settings are deliberately out, so a batching change never rebuilds."""
    text = f"{spec_hash}|{store.root_uri}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
