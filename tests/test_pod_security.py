"""Every pod the system creates runs at the Pod Security "restricted" level and is bounded.

Pods are found by walking every manifest the operator renders (the builder Job the reconcile
decides to create, every serving child of `render_children`) for representative specs under
the settings each chart value set renders, plus the chart's own objects. Anything holding a
pod spec is checked, so a renderer or a Deployment added later is covered without touching
this file; the checks are the restricted profile's, plus read-only root filesystems,
requests and limits on every container, a sizeLimit on every emptyDir and no API token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from optimodel.model_builder.triton_config import ModelSignature
from optimodel.operator import api
from optimodel.operator.artifacts import ArtifactStore
from optimodel.operator.planning import decide_build
from optimodel.operator.render import ModelRef, ServingInputs, render_children
from optimodel.operator.settings import AdminPolicy, CapacitySettings, OperatorSettings
from tests.test_chart import CHART, VALUE_SETS, render

K8S_VERSION = "1.30"
Obj = dict[str, Any]
MODEL = ModelRef(name="minilm", namespace="ml", uid="11111111-2222-3333-4444-555555555555")
SIGNATURE = ModelSignature.model_validate(
    {
        "inputs": [{"name": "input_ids", "dataType": "TYPE_INT64", "dims": [-1]}],
        "outputs": [{"name": "embeddings", "dataType": "TYPE_FP32", "dims": [384]}],
    }
)
SOURCE = {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "task": "feature-extraction"}
S3 = {"s3": {"uri": "s3://ml-artifacts/optimodel", "region": "eu-west-1"}}
# The admin policy is not under test here: allow every choice, so every branch renders.
ALLOW_ALL = AdminPolicy.model_validate(
    {
        "servingImages": ["*"],
        "storage": {
            "pvcClaims": ["*"],
            "inputClaims": ["*"],
            "s3": [{"bucket": "*", "credentialsSecret": {"name": "keys"}}],
        },
    }
)

# Specs that take every branch of the renderers: both store kinds (the default and a
# per-model one), pvc:// inputs (extra volumes), CPU and GPU serving, both autoscalers, none.
SPECS: dict[str, Obj] = {
    "default": {},
    "spec-pvc": {"storage": {"pvc": {"claimName": "models", "subPath": "builds"}}},
    "spec-s3": {"storage": S3},
    "pvc-inputs": {
        "source": {"uri": "pvc://datasets/minilm", "task": "feature-extraction"},
        "optimize": {"evalData": {"uri": "pvc://eval/texts.jsonl"}},
    },
    "cpu-keda": {"serving": {"gpu": {"count": 0}}, "autoscaling": {"engine": "keda"}},
    "image-override": {"serving": {"image": "registry.team/triton:24.10"}},
    "fixed": {"autoscaling": {"enabled": False}, "replicas": 2},
    # The on-demand base and the spot tier (two Deployments).
    "spot": {"serving": {"capacity": "spot-with-fallback"}},
}
# Settings beyond the chart's value sets: every optional pod feature turned on.
EXTRA_SETTINGS: dict[str, Obj] = {
    "operator-defaults": {},
    "all-features": {
        "serving": {
            "serviceAccountName": "triton",
            "gpuNodeLabel": "cloud.google.com/gke-accelerator",
            "networkPolicy": {"enabled": True},
        },
        "build": {"serviceAccountName": "builder"},
    },
}
# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def pod_specs(manifest: Any, where: str = "") -> Iterator[tuple[str, Obj]]:
    """Every pod spec inside a manifest (a Deployment's template, a Job's, a CronJob's...)."""
    if isinstance(manifest, Mapping):
        if isinstance(manifest.get("containers"), list):
            yield where, dict(manifest)
            return
        for key, value in manifest.items():
            yield from pod_specs(value, f"{where}.{key}" if where else key)
    elif isinstance(manifest, list):
        for index, item in enumerate(manifest):
            yield from pod_specs(item, f"{where}[{index}]")


def pod_problems(pod: Obj, *, api_token: bool = False) -> list[str]:
    """What keeps `pod` from the restricted profile, or from being bounded."""
    problems: list[str] = []
    context = pod.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            problems.append(f"{host} is on")
    if api_token != (pod.get("automountServiceAccountToken") is not False):
        problems.append(
            f"automountServiceAccountToken is {pod.get('automountServiceAccountToken')}"
        )
    if context.get("runAsUser") == 0:
        problems.append("the pod runs as root")
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    for name, volume in volumes.items():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {name}: {sorted(kinds)} is not allowed")
        if "emptyDir" in volume and not (volume["emptyDir"] or {}).get("sizeLimit"):
            problems.append(f"emptyDir {name} has no sizeLimit")
    containers = [
        *(pod.get("initContainers") or []),
        *pod["containers"],
        *(pod.get("ephemeralContainers") or []),
    ]
    for container in containers:
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: the root filesystem is writable")
        if not security.get("runAsNonRoot", context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not set")
        if security.get("runAsUser") == 0:
            problems.append(f"{name}: runs as root")
        seccomp = security.get("seccompProfile", context.get("seccompProfile")) or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp or 'unset'}")
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(section) or {})
            if missing:
                problems.append(f"{name}: no {section} of {', '.join(sorted(missing))}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                problems.append(f"{name}: mounts undeclared volume {mount['name']}")
    return problems


def manifest(spec: Obj) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": MODEL.name,
            "namespace": MODEL.namespace,
            "uid": MODEL.uid,
            "generation": 2,
        },
        "spec": {"source": SOURCE, **spec},
    }


def operator_children(settings: OperatorSettings, spec: Obj) -> list[Obj]:
    """What the operator renders for `spec`: the build Job a reconcile creates, and the
    serving children once that build is served."""
    body = manifest(spec)
    settings = settings.model_copy(update={"policy": ALLOW_ALL})
    if settings.serving.capacity.provider is None:  # spot specs need one
        capacity = CapacitySettings(provider="aks")
        serving = settings.serving.model_copy(update={"capacity": capacity})
        settings = settings.model_copy(update={"serving": serving})
    decision = decide_build(body, api.OptimizedModelStatus(), [], [], settings)
    assert not decision.problems, decision.problems
    assert decision.job_to_create is not None and decision.spec is not None
    store = ArtifactStore.for_model(decision.spec.storage, settings)
    served = api.BuildStatus(
        artifact=store.artifact_uri(MODEL.namespace, MODEL.name, 1),
        generation=1,
        size_bytes=23,
        original_size_bytes=90,
        size_reduction=3.9,
        accuracy_metric="cosine",
        accuracy=0.995,
        spec_hash="abc",
        signature=SIGNATURE,
    )
    inputs = ServingInputs(
        model=MODEL,
        spec=decision.spec,
        build=served,
        store=store,
        settings=settings,
        now=datetime.now(UTC),
    )
    return [dict(decision.job_to_create), *render_children(inputs)]


@pytest.fixture(scope="module")
def chart_renderings() -> dict[str, list[Obj]]:
    with helm.Chart.load(CHART) as chart:
        return {name: render(chart, values).objects for name, values in VALUE_SETS.items()}


def settings_cases(chart_renderings: dict[str, list[Obj]]) -> dict[str, OperatorSettings]:
    cases = {
        name: OperatorSettings.model_validate(document) for name, document in EXTRA_SETTINGS.items()
    }
    for name, objects in chart_renderings.items():
        [config] = [o for o in objects if o["kind"] == "ConfigMap" and "settings.yaml" in o["data"]]
        document = yaml.safe_load(config["data"]["settings.yaml"])
        cases[f"chart-{name}"] = OperatorSettings.model_validate(document)
    return cases


def test_every_pod_the_operator_creates_is_restricted_and_bounded(
    chart_renderings: dict[str, list[Obj]],
) -> None:
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for settings_name, settings in settings_cases(chart_renderings).items():
        for spec_name, spec in SPECS.items():
            for child in operator_children(settings, spec):
                # Strict schema validation once per spec (it is slow); keda.sh has no schema.
                if settings_name == "all-features" and child["apiVersion"] != "keda.sh/v1alpha1":
                    kubernetes_validate.validate(child, K8S_VERSION, strict=True)
                for where, pod in pod_specs(child):
                    seen.add((child["kind"], where))
                    for problem in pod_problems(pod):
                        label = f"{settings_name}/{spec_name}: {child['kind']} {where}"
                        problems.append(f"{label}: {problem}")
    assert problems == []
    # The walk found the pods it must (a broken walk would check nothing).
    assert {kind for kind, _ in seen} >= {"Job", "Deployment"}


def test_the_charts_own_pods_are_restricted_and_bounded(
    chart_renderings: dict[str, list[Obj]],
) -> None:
    problems: list[str] = []
    pods = 0
    for name, objects in chart_renderings.items():
        for obj in objects:
            for where, pod in pod_specs(obj.get("spec")):
                pods += 1
                # The operator talks to the API server: its pod is the one that needs a token.
                for problem in pod_problems(pod, api_token=True):
                    problems.append(f"{name}: {obj['kind']} {where}: {problem}")
    assert problems == []
    assert pods >= len(VALUE_SETS)


def test_the_check_catches_each_weakening() -> None:
    """Each rule of pod_problems fires on a pod that breaks it (the checks can fail)."""
    settings = OperatorSettings()
    job = operator_children(settings, SPECS["spec-s3"])[0]
    [(_, good)] = list(pod_specs(job))
    assert pod_problems(good) == []

    def broken(change: Any) -> list[str]:
        pod = yaml.safe_load(yaml.safe_dump(good))
        change(pod)
        return pod_problems(pod)

    def first(pod: Obj) -> Obj:
        container: Obj = pod["containers"][0]
        return container

    assert broken(lambda p: first(p)["securityContext"].pop("readOnlyRootFilesystem"))
    assert broken(lambda p: first(p)["resources"]["limits"].pop("cpu"))
    assert broken(lambda p: p["volumes"][0]["emptyDir"].pop("sizeLimit"))
    assert broken(lambda p: p.pop("automountServiceAccountToken"))
    assert broken(lambda p: first(p)["securityContext"].update(allowPrivilegeEscalation=True))
    assert broken(lambda p: first(p)["securityContext"]["capabilities"].update(drop=[]))
    assert broken(lambda p: p["securityContext"].pop("seccompProfile"))
    assert broken(lambda p: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}))
    assert broken(lambda p: p.update(hostNetwork=True))
