"""The builder Job: runs `python -m optimodel.model_builder` on one generation's spec.

PVC store: one container writes straight into the claim. S3 store: the builder runs as an
init container writing to an emptyDir, then an upload container (the builder image running
`python -m optimodel.model_builder.publish`) uploads the repository with the store's
credentials, which the build container never sees.

The builder fetches its sources itself (model_builder/sources): hf:// through the operator's
Hub endpoint and token Secret, s3:// with the operator's source credentials, into a download
cache reused across builds (render/sources.py).

Retries are bounded twice: `backoffLimit` for unexpected failures (exit 1, OOM, eviction),
and a pod failure policy that fails the Job at once on exit 2 (invalid spec), 3 (accuracy
gate) and 4 (a source or the store refused for good: not found, access denied, unreachable
after the builder's own retries): running the same build again cannot change its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from optimodel.model_builder.spec import BuildSpec, DataRef, Optimize, Source
from optimodel.operator import api, naming
from optimodel.operator.artifacts import (
    ARTIFACTS_MOUNT,
    OUT_MOUNT,
    SOURCES_MOUNT,
    ArtifactStore,
    pvc_location,
)
from optimodel.operator.builds import EXIT_ACCURACY_GATE, EXIT_INVALID_SPEC, EXIT_SOURCE_FAILED
from optimodel.operator.render.common import (
    Manifest,
    ModelRef,
    container_resources,
    empty_dir,
    metadata,
    pod_identity,
    restricted_container_security,
    restricted_pod_security,
)
from optimodel.operator.render.sources import source_access
from optimodel.operator.render.storage import s3_env
from optimodel.operator.settings import OperatorSettings

BUILD_SPEC_ENV = "OPTIMODEL_BUILD_SPEC"
OUTPUT_DIR_ENV = "OPTIMODEL_OUTPUT_DIR"


@dataclass(frozen=True)
class BuildRequest:
    """Everything one builder Job is rendered from."""

    model: ModelRef
    spec: api.OptimizedModelSpec
    generation: int
    key: str
    spec_hash: str
    store: ArtifactStore
    job_name: str
    # The model's optimodel.io/retry-build annotation when the Job was created ("" unset).
    retry: str = ""

    @property
    def artifact_uri(self) -> str:
        return self.store.artifact_uri(self.model.namespace, self.model.name, self.generation)


@dataclass
class _SourceMounts:
    """pvc:// inputs (source, calibration, eval data) mounted read-only into the builder."""

    artifact_claim: str | None
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]

    def local_uri(self, uri: str) -> str:
        if urlsplit(uri).scheme != "pvc":
            return uri
        claim, path = pvc_location(uri)
        if claim == self.artifact_claim:
            return f"file://{ARTIFACTS_MOUNT}/{path}"
        volume = f"source-{len(self.volumes)}"
        known = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in self.volumes}
        if claim not in known:
            self.volumes.append(
                {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            )
            self.mounts.append(
                {"name": volume, "mountPath": f"{SOURCES_MOUNT}/{claim}", "readOnly": True}
            )
        return f"file://{SOURCES_MOUNT}/{claim}/{path}"


def _data(ref: DataRef | None, mounts: _SourceMounts) -> DataRef | None:
    return None if ref is None else ref.model_copy(update={"uri": mounts.local_uri(ref.uri)})


def builder_spec(request: BuildRequest, mounts: _SourceMounts) -> BuildSpec:
    """The BuildSpec the builder gets: the model's spec with pvc:// inputs as local paths."""
    spec = request.spec
    adapter = spec.source.adapter
    if adapter is not None:
        adapter = adapter.model_copy(update={"uri": mounts.local_uri(adapter.uri)})
    source: Source = spec.source.model_copy(
        update={"uri": mounts.local_uri(spec.source.uri), "adapter": adapter}
    )
    optimize: Optimize = spec.optimize.model_copy(
        update={
            "calibration_data": _data(spec.optimize.calibration_data, mounts),
            "eval_data": _data(spec.optimize.eval_data, mounts),
        }
    )
    return BuildSpec(
        name=request.model.name, source=source, optimize=optimize, serving=spec.serving
    )


def render_build_job(request: BuildRequest, settings: OperatorSettings) -> Manifest:
    """The batch/v1 Job building `request.generation` of the model."""
    store = request.store
    artifact_claim = store.pvc.claim_name if store.pvc else None
    mounts = _SourceMounts(artifact_claim, [], [])
    build_spec = builder_spec(request, mounts)
    sizes = settings.build.volumes
    tmp = empty_dir("tmp", sizes.tmp)
    volumes: list[dict[str, Any]] = [tmp, *mounts.volumes]
    builder_mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, *mounts.mounts]
    if store.pvc is not None:
        sub_path = store.pvc.sub_path.strip("/")
        base = f"{ARTIFACTS_MOUNT}/{sub_path}" if sub_path else ARTIFACTS_MOUNT
        out_dir = f"{base}/{request.model.namespace}/{request.model.name}/g{request.generation}"
        volumes.append(
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": store.pvc.claim_name}}
        )
        builder_mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT})
    else:
        out_dir = f"{OUT_MOUNT}/g{request.generation}"
        volumes.append(empty_dir("out", sizes.out))
        builder_mounts.append({"name": "out", "mountPath": OUT_MOUNT})
    access = source_access(build_spec, store, settings)
    volumes += access.volumes
    builder_mounts += access.mounts

    builder: dict[str, Any] = {
        "name": naming.BUILDER_CONTAINER,
        "image": settings.builder_image,
        "command": ["python", "-m", "optimodel.model_builder"],
        "args": ["--out", out_dir],
        "env": [
            {"name": BUILD_SPEC_ENV, "value": build_spec.model_dump_json(by_alias=True)},
            {"name": OUTPUT_DIR_ENV, "value": out_dir},
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/huggingface"},
            *access.env,
        ],
        "resources": container_resources(settings.build.resources),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container_security(),
        "volumeMounts": builder_mounts,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        **pod_identity(
            settings.build.service_account_name, settings.build.automount_service_account_token
        ),
        "securityContext": restricted_pod_security(),
        "volumes": volumes,
    }
    if store.s3 is None:
        pod_spec["containers"] = [builder]
    else:
        assert store.s3 is not None
        from_spec = request.spec.storage is not None and request.spec.storage.s3 is not None
        storage_field = "spec.storage.s3.uri" if from_spec else "operator setting artifactStore.s3"
        upload = {
            "name": naming.UPLOAD_CONTAINER,
            "image": settings.builder_image,
            "command": ["python", "-m", "optimodel.model_builder.publish"],
            "args": ["--from", out_dir, "--to", request.artifact_uri, "--field", storage_field],
            "env": [
                {"name": "OUT_DIR", "value": out_dir},
                {"name": "ARTIFACT_URI", "value": request.artifact_uri},
                {"name": "HOME", "value": "/tmp"},
                *s3_env(store.s3),
            ],
            "resources": container_resources(settings.build.upload_resources),
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": restricted_container_security(),
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "out", "mountPath": OUT_MOUNT, "readOnly": True},
            ],
        }
        pod_spec["initContainers"] = [builder]
        pod_spec["containers"] = [upload]

    build_labels = {naming.BUILD_KEY: request.key, naming.GENERATION: str(request.generation)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(
            request.model,
            request.job_name,
            naming.BUILDER,
            extra_labels=build_labels,
            annotations={
                naming.ARTIFACT: request.artifact_uri,
                naming.SPEC_HASH: request.spec_hash,
                **({api.RETRY_BUILD: request.retry} if request.retry else {}),
            },
        ),
        "spec": {
            "backoffLimit": settings.build.backoff_limit,
            "activeDeadlineSeconds": settings.build.active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.build.ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": naming.BUILDER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_INVALID_SPEC, EXIT_ACCURACY_GATE],
                        },
                    },
                    # A source or the store refused after the builder's own bounded retries
                    # (any container: the build's fetch, or the upload).
                    {
                        "action": "FailJob",
                        "onExitCodes": {"operator": "In", "values": [EXIT_SOURCE_FAILED]},
                    },
                    # Evictions and node drains are not the build's fault: retry them freely.
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {
                    "labels": {**naming.labels(request.model.name, naming.BUILDER), **build_labels}
                },
                "spec": pod_spec,
            },
        },
    }
