"""The Argo CD health check (charts/optimodel/argocd/health.lua), run in a real Lua 5.1
interpreter (lupa; Argo CD's gopher-lua implements Lua 5.1) against status fixtures, plus the
argocd-cm snippet and the example Applications that ship with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from optimodel.operator.api import OptimizedModelStatus
from tests.conftest import REPO

ARGOCD = REPO / "charts" / "optimodel" / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
HEALTH_KEY = "resource.customizations.health.optimodel.io_OptimizedModel"
T = "2026-11-22T10:00:00Z"

Obj = dict[str, Any]


def condition(kind: str, status: str, reason: str, message: str = "", gen: int | None = 3) -> Obj:
    found: Obj = {"type": kind, "status": status, "reason": reason, "lastTransitionTime": T}
    if message:
        found["message"] = message
    if gen is not None:
        found["observedGeneration"] = gen
    return found


def model(generation: int = 3, status: Obj | None = None) -> Obj:
    obj: Obj = {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "minilm", "namespace": "ml", "generation": generation},
        "spec": {"source": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def failed_with(reason: str, message: str) -> Obj:
    """A model whose build the operator failed for `reason`: Built and Ready say so."""
    return model(
        3,
        status(
            "Failed",
            condition("Built", "False", reason, message),
            condition("Ready", "False", reason, message),
        ),
    )


def status(phase: str, *conditions: Obj, observed: int | None = 3) -> Obj:
    found: Obj = {"phase": phase, "conditions": list(conditions)}
    if observed is not None:
        found["observedGeneration"] = observed
    return found


BUILT = condition("Built", "True", "BuildSucceeded", "size 22.9 MB (3.9x smaller), cosine 0.996")
DEPLOYED = condition("Deployed", "True", "DeploymentAvailable", "2/2 replicas available")
READY = condition("Ready", "True", "Ready", "serving http://minilm.ml.svc:8000")
BUILDING = condition("Built", "False", "Building", "builder Job minilm-build-3 running")

# (case, object, expected hs.status, a phrase hs.message must contain)
CASES: list[tuple[str, Obj, str, str]] = [
    ("new-without-status", model(1), "Progressing", "Waiting for the optimodel operator"),
    (
        "status-without-observed-generation",
        model(1, {"phase": "Pending", "conditions": []}),
        "Progressing",
        "Waiting for the optimodel operator",
    ),
    (
        "building",
        model(3, status("Building", BUILDING, condition("Ready", "False", "Building", "build"))),
        "Progressing",
        "Building: Building: build",
    ),
    (
        "built-not-deployed",
        model(
            3,
            status(
                "Deploying",
                BUILT,
                condition("Deployed", "False", "Rollout", "0/2 replicas available"),
                condition("Ready", "False", "Deploying", "waiting for Triton to be ready"),
            ),
        ),
        "Progressing",
        "Deploying: Deploying: waiting for Triton",
    ),
    (
        "ready-current-generation",
        model(3, status("Ready", BUILT, DEPLOYED, READY)),
        "Healthy",
        "Ready: serving http://minilm.ml.svc:8000",
    ),
    (
        "ready-conditions-without-observed-generation",
        model(3, status("Ready", condition("Ready", "True", "Ready", gen=None))),
        "Healthy",
        "Ready",
    ),
    (
        "ready-but-status-stale",
        model(4, status("Ready", BUILT, DEPLOYED, READY, observed=3)),
        "Progressing",
        "generation 4 (status describes generation 3)",
    ),
    (
        "ready-condition-stale",
        model(
            4,
            status("Building", BUILDING, condition("Ready", "True", "Ready", gen=3), observed=4),
        ),
        "Progressing",
        "Building: Building: builder Job",
    ),
    (
        "ready-condition-stale-only",
        model(4, status("Ready", condition("Ready", "True", "Ready", gen=3), observed=4)),
        "Progressing",
        "Ready",
    ),
    (
        "gate-failed",
        model(
            3,
            status(
                "Failed",
                condition("Built", "False", "AccuracyBelowThreshold", "cosine 0.94 < min 0.99"),
                condition("Ready", "False", "AccuracyBelowThreshold", "nothing deployed"),
            ),
        ),
        "Degraded",
        "AccuracyBelowThreshold: cosine 0.94 < min 0.99",
    ),
    (
        "gate-failed-old-version-still-serving",
        model(
            3,
            status(
                "Ready",
                condition("Built", "False", "AccuracyBelowThreshold", "cosine 0.94 < min 0.99"),
                DEPLOYED,
                condition("Ready", "True", "Ready", "serving generation 2", gen=2),
            ),
        ),
        "Degraded",
        "AccuracyBelowThreshold",
    ),
    (
        "build-failed",
        model(
            3,
            status(
                "Failed",
                condition("Built", "False", "BuildFailed", "OOMKilled after 3 attempts"),
                condition("Ready", "False", "BuildFailed"),
            ),
        ),
        "Degraded",
        "BuildFailed: OOMKilled",
    ),
    (
        "gate-failed-for-previous-generation",
        model(
            4,
            status(
                "Failed",
                condition("Built", "False", "AccuracyBelowThreshold", "cosine 0.94", gen=3),
                observed=3,
            ),
        ),
        "Progressing",
        "generation 4",
    ),
    (
        "invalid-spec",
        model(
            3,
            status(
                "Failed",
                condition(
                    "Ready", "False", "InvalidSpec", "spec.serving.maxBatchSize: must be >= 1"
                ),
            ),
        ),
        "Degraded",
        "InvalidSpec: spec.serving.maxBatchSize",
    ),
    (
        # What the operator writes when the admin policy refuses a spec (planning.py).
        "policy-violation",
        failed_with("PolicyViolation", "spec.serving.image: not allowed"),
        "Degraded",
        "PolicyViolation: spec.serving.image",
    ),
    (
        # A model source the builder cannot reach (exit 4, not retried).
        "source-not-found",
        failed_with("SourceNotFound", "source.uri: no such repository"),
        "Degraded",
        "SourceNotFound: source.uri",
    ),
    (
        "failed-phase-other-reason",
        model(3, status("Failed", condition("Ready", "False", "DeploymentFailed", "quota"))),
        "Degraded",
        "DeploymentFailed: quota",
    ),
    (
        "ready-over-budget-stays-healthy",
        model(
            3,
            status(
                "Ready",
                BUILT,
                DEPLOYED,
                READY,
                condition("WithinBudget", "False", "BudgetBelowMinimum", "1 replica costs $11/h"),
            ),
        ),
        "Healthy",
        "over budget: BudgetBelowMinimum",
    ),
]


def run_health_check(obj: Obj) -> dict[str, str]:
    """What Argo CD does: a fresh interpreter, the object as global `obj`, the script's table."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    return {str(key): str(value) for key, value in result.items()}


@pytest.mark.parametrize(
    ("obj", "expected", "phrase"),
    [pytest.param(o, e, p, id=case) for case, o, e, p in CASES],
)
def test_health(obj: Obj, expected: str, phrase: str) -> None:
    health = run_health_check(obj)
    assert set(health) == {"status", "message"}
    assert health["status"] == expected, health
    assert phrase in health["message"], health


@pytest.mark.parametrize("obj", [pytest.param(o, id=case) for case, o, _, _ in CASES])
def test_fixtures_are_statuses_the_api_allows(obj: Obj) -> None:
    """The fixtures use the real status field names, so the Lua reads what the operator writes."""
    if "status" in obj:
        OptimizedModelStatus.model_validate(obj["status"])


def test_every_argocd_health_state_is_covered() -> None:
    assert {expected for _, _, expected, _ in CASES} == {"Healthy", "Progressing", "Degraded"}


def test_argocd_cm_patch_carries_the_script_verbatim() -> None:
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"]["name"] == "argocd-cm"
    assert set(patch["data"]) == {HEALTH_KEY}
    assert patch["data"][HEALTH_KEY] == HEALTH_LUA.read_text(), (
        "argocd-cm-patch.yaml and health.lua differ: paste health.lua into the patch"
    )


# --- The example Applications ------------------------------------------------------------------


def applications() -> dict[str, Obj]:
    path = REPO / "examples" / "argocd" / "optimodel.yaml"
    return {a["metadata"]["name"]: a for a in yaml.safe_load_all(path.read_text()) if a}


def source_folder(app: Obj) -> Path:
    return REPO / str(app["spec"]["source"]["path"])


def test_example_applications_point_at_this_repository() -> None:
    apps = applications()
    assert set(apps) == {"optimodel-operator", "optimodel-models"}
    operator, models = apps["optimodel-operator"], apps["optimodel-models"]
    for app in apps.values():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    assert (source_folder(operator) / "Chart.yaml").is_file()
    manifests = sorted(source_folder(models).glob(models["spec"]["source"]["directory"]["include"]))
    assert manifests, "the models Application syncs no manifests"
    for manifest in manifests:
        assert yaml.safe_load(manifest.read_text())["kind"] == "OptimizedModel", manifest
    assert models["spec"]["source"]["directory"]["recurse"] is False  # never syncs examples/argocd


def test_example_operator_values_pass_the_chart_schema() -> None:
    import helm_python as helm

    values = applications()["optimodel-operator"]["spec"]["source"]["helm"]["valuesObject"]
    with helm.Chart.load(REPO / "charts" / "optimodel") as chart:
        chart.validate_schema(values)


def test_sync_waves_put_the_operator_and_its_crds_before_the_models() -> None:
    apps = applications()

    def wave(name: str) -> int:
        return int(apps[name]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])

    assert wave("optimodel-operator") < wave("optimodel-models")
    models_sync = apps["optimodel-models"]["spec"]["syncPolicy"]["syncOptions"]
    assert "SkipDryRunOnMissingResource=true" in models_sync
