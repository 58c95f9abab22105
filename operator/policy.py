"""The admin policy: what a spec may choose beyond the platform's own images and store. Pure.

One check, `policy_violations`, shared by the operator (a refused spec gets Ready=False,
reason PolicyViolation, and nothing is created or changed) and `optimodel validate
--settings FILE`. Every violation names the spec field, the settings rule that refuses it
(`policy.…`), and the fix. The rules close the confused-deputy paths of a shared cluster:
an image the operator would run, a claim its build pods would mount, and Secret keys it would
send to an endpoint, each chosen by whoever may create an OptimizedModel.

`resolved_storage` applies the platform's side of an allowed S3 target: the endpoint and the
credentials Secret come from the policy, never from the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from optimodel.model_builder.spec import AUTO_GPU_TYPE, SpecProblem
from optimodel.operator import api
from optimodel.operator.settings import AdminPolicy, OperatorSettings, S3Target

REASON = "PolicyViolation"
ASK = "ask the platform team to allow it"


@dataclass(frozen=True)
class PolicyViolation:
    """One choice of a spec the admin policy refuses."""

    rule: str  # the settings field that refuses it, e.g. policy.servingImages
    path: str  # the spec field, e.g. spec.serving.image
    message: str
    fix: str

    def problem(self) -> SpecProblem:
        """As a problem of the manifest, shown the way validation problems are."""
        return SpecProblem(self.path, f"{self.message} (policy rule {self.rule})", self.fix)


def matches(value: str, patterns: list[str]) -> bool:
    """Whether `value` matches one of the glob patterns (case-sensitive)."""
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def _allowed(patterns: list[str]) -> str:
    """The second half of a fix: what the policy allows instead, if anything."""
    if not patterns:
        return ASK
    return f"use one matching {', '.join(patterns)}, or {ASK}"


def s3_bucket(uri: str) -> str:
    return urlsplit(uri).netloc


def _endpoint(value: str | None) -> str | None:
    return value.rstrip("/") if value else None


def s3_target(s3: api.S3Storage, policy: AdminPolicy) -> tuple[int, S3Target] | None:
    """The first policy target whose bucket pattern matches the spec's bucket."""
    bucket = s3_bucket(s3.uri)
    for index, target in enumerate(policy.storage.s3):
        if fnmatchcase(bucket, target.bucket):
            return index, target
    return None


def resolved_storage(storage: api.Storage | None, policy: AdminPolicy) -> api.Storage | None:
    """spec.storage with the platform's endpoint and credentials for an allowed S3 target."""
    if storage is None or storage.s3 is None:
        return storage
    found = s3_target(storage.s3, policy)
    if found is None:
        return storage
    _, target = found
    s3 = storage.s3.model_copy(
        update={"endpoint": target.endpoint, "credentials_secret": target.credentials_secret}
    )
    return storage.model_copy(update={"s3": s3})


def _image_violations(
    spec: api.OptimizedModelSpec, policy: AdminPolicy
) -> Iterator[PolicyViolation]:
    image = spec.serving.image
    if image is not None and not matches(image, policy.serving_images):
        yield PolicyViolation(
            "policy.servingImages",
            "spec.serving.image",
            f"{image!r} is not an allowed serving image",
            "remove spec.serving.image to serve on the platform's Triton image, or "
            + _allowed(policy.serving_images),
        )


def _s3_violations(s3: api.S3Storage, policy: AdminPolicy) -> Iterator[PolicyViolation]:
    found = s3_target(s3, policy)
    if found is None:
        buckets = [target.bucket for target in policy.storage.s3]
        yield PolicyViolation(
            "policy.storage.s3",
            "spec.storage.s3.uri",
            f"bucket {s3_bucket(s3.uri)!r} is not an allowed artifact store",
            "remove spec.storage to use the platform's store, or " + _allowed(buckets),
        )
        return
    index, target = found
    rule = f"policy.storage.s3[{index}]"
    if s3.endpoint is not None and _endpoint(s3.endpoint) != _endpoint(target.endpoint):
        where = target.endpoint or "AWS S3"
        yield PolicyViolation(
            f"{rule}.endpoint",
            "spec.storage.s3.endpoint",
            f"bucket {target.bucket!r} is reached through {where}, not {s3.endpoint!r}",
            "remove spec.storage.s3.endpoint: the platform sets it",
        )
    secret = s3.credentials_secret
    if secret is not None and secret != target.credentials_secret:
        chosen = target.credentials_secret
        yield PolicyViolation(
            f"{rule}.credentialsSecret",
            "spec.storage.s3.credentialsSecret",
            f"Secret {secret.name!r} (keys {secret.access_key_id_key}, "
            f"{secret.secret_access_key_key}) is not the credentials the platform chose "
            f"({'Secret ' + repr(chosen.name) if chosen else 'workload identity'})",
            "remove spec.storage.s3.credentialsSecret: the platform sets it",
        )


def _storage_violations(
    spec: api.OptimizedModelSpec, settings: OperatorSettings
) -> Iterator[PolicyViolation]:
    storage = spec.storage
    if storage is None or storage == settings.artifact_store:
        return
    policy = settings.policy
    if storage.pvc is not None:
        claim = storage.pvc.claim_name
        if not matches(claim, policy.storage.pvc_claims):
            yield PolicyViolation(
                "policy.storage.pvcClaims",
                "spec.storage.pvc.claimName",
                f"claim {claim!r} is not an allowed artifact store (build pods mount it "
                "read-write)",
                "remove spec.storage to use the platform's store, or "
                + _allowed(policy.storage.pvc_claims),
            )
    if storage.s3 is not None:
        yield from _s3_violations(storage.s3, policy)


def _input_uris(spec: api.OptimizedModelSpec) -> Iterator[tuple[str, str]]:
    yield "spec.source.uri", spec.source.uri
    if spec.source.adapter is not None:  # a pvc:// adapter is mounted like a pvc:// source
        yield "spec.source.adapter.uri", spec.source.adapter.uri
    for field, ref in (
        ("calibrationData", spec.optimize.calibration_data),
        ("evalData", spec.optimize.eval_data),
    ):
        if ref is not None:
            yield f"spec.optimize.{field}.uri", ref.uri


def _input_violations(
    spec: api.OptimizedModelSpec, settings: OperatorSettings
) -> Iterator[PolicyViolation]:
    store = spec.storage if spec.storage is not None else settings.artifact_store
    # The model's own store claim is mounted by its builds anyway.
    store_claim = store.pvc.claim_name if store.pvc is not None else None
    patterns = settings.policy.storage.input_claims
    for path, uri in _input_uris(spec):
        parts = urlsplit(uri)
        if parts.scheme != "pvc" or parts.netloc == store_claim:
            continue
        if not matches(parts.netloc, patterns):
            yield PolicyViolation(
                "policy.storage.inputClaims",
                path,
                f"claim {parts.netloc!r} is not an allowed input (build pods mount it read-only)",
                "read the input from an hf:// or builtin:// location, or " + _allowed(patterns),
            )


def _cap_violations(
    spec: api.OptimizedModelSpec, namespace: str, policy: AdminPolicy
) -> Iterator[PolicyViolation]:
    caps = policy.caps_for(namespace)
    where = (
        f"policy.namespaceCaps.{namespace}"
        if namespace in policy.namespace_caps
        else "policy.defaultCaps"
    )
    if caps.max_replicas is not None:
        scaling = spec.autoscaling
        if scaling.enabled:
            asked, path = scaling.max_replicas, "spec.autoscaling.maxReplicas"
        else:
            asked = spec.replicas if spec.replicas is not None else 1
            path = "spec.replicas"
        if asked > caps.max_replicas:
            yield PolicyViolation(
                f"{where}.maxReplicas",
                path,
                f"{asked} replicas exceed the cap of namespace {namespace!r}",
                f"set {path.removeprefix('spec.')} <= {caps.max_replicas}",
            )
    gpu = spec.serving.gpu
    auto = gpu.type == AUTO_GPU_TYPE
    if gpu.count and caps.gpu_types and not auto and gpu.type not in caps.gpu_types:
        yield PolicyViolation(
            f"{where}.gpuTypes",
            "spec.serving.gpu.type",
            f"GPU type {gpu.type!r} is not allowed in namespace {namespace!r}",
            f"use one of: {', '.join(caps.gpu_types)}",
        )
    for index, name in enumerate(gpu.types if gpu.count and auto else []):
        if caps.gpu_types and name not in caps.gpu_types:
            yield PolicyViolation(
                f"{where}.gpuTypes",
                f"spec.serving.gpu.types[{index}]",
                f"GPU type {name!r} is not allowed in namespace {namespace!r}",
                f"remove it; allowed: {', '.join(caps.gpu_types)}",
            )


def _catalog_violations(
    spec: api.OptimizedModelSpec, settings: OperatorSettings
) -> Iterator[PolicyViolation]:
    """gpu.types entries the operator's hardware catalog does not know: auto cannot price or
    rate them."""
    gpu = spec.serving.gpu
    if not gpu.count or gpu.type != AUTO_GPU_TYPE:
        return
    known = settings.hardware_catalog.gpus
    for index, name in enumerate(gpu.types):
        if name not in known:
            yield PolicyViolation(
                "hardware",
                f"spec.serving.gpu.types[{index}]",
                f"{name!r} is not in the operator's hardware catalog (known: "
                f"{', '.join(sorted(known))})",
                "list known types, or ask the platform team to add it to the hardware setting",
            )


def _capacity_violations(
    spec: api.OptimizedModelSpec, settings: OperatorSettings
) -> Iterator[PolicyViolation]:
    capacity = spec.serving.capacity
    if capacity != "on-demand" and settings.serving.capacity.provider is None:
        yield PolicyViolation(
            "serving.capacity.provider",
            "spec.serving.capacity",
            f"capacity {capacity} needs to know how this cluster marks spot nodes, and the "
            "operator's serving.capacity.provider setting is unset",
            "use capacity on-demand, or ask the platform team to set serving.capacity."
            "provider (gke, eks, aks or karpenter; Helm value serving.capacity.provider)",
        )


def policy_violations(
    spec: api.OptimizedModelSpec, namespace: str, settings: OperatorSettings
) -> list[PolicyViolation]:
    """Every choice of `spec` (a model in `namespace`) that the admin policy refuses."""
    policy = settings.policy
    return [
        *_image_violations(spec, policy),
        *_storage_violations(spec, settings),
        *_input_violations(spec, settings),
        *_cap_violations(spec, namespace, policy),
        *_capacity_violations(spec, settings),
        *_catalog_violations(spec, settings),
        *_auto_violations(spec, namespace, settings),
    ]


def _auto_violations(
    spec: api.OptimizedModelSpec, namespace: str, settings: OperatorSettings
) -> Iterator[PolicyViolation]:
    """gpu.type auto with no candidate left once the namespace's caps are applied."""
    gpu = spec.serving.gpu
    caps = settings.policy.caps_for(namespace)
    if not gpu.count or gpu.type != AUTO_GPU_TYPE or not caps.gpu_types or gpu.types:
        return
    if not any(name in caps.gpu_types for name in settings.hardware_catalog.gpus):
        yield PolicyViolation(
            "policy.gpuTypes",
            "spec.serving.gpu.type",
            f"auto has no GPU type to choose: none of the catalog's types is allowed in "
            f"namespace {namespace!r} (allowed: {', '.join(caps.gpu_types)})",
            "ask the platform team to add the allowed types to the hardware catalog",
        )
