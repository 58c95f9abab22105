"""Rendered autoscalers: HPAs valid for the API server, ScaledObjects shaped as KEDA reads."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from optimodel.operator.api import Autoscaling
from optimodel.operator.autoscaling import (
    GPU_UTILIZATION_METRIC,
    HPA,
    KEDA_PAUSED_REPLICAS,
    QUEUE_TIME_METRIC,
    SCALED_OBJECT,
    PrometheusSource,
    ScalingBehavior,
    autoscaler_cap_patch,
    autoscaler_kind,
    is_autoscaler,
    live_cap,
    render_autoscaler,
    without_cap,
)

OWNER = {
    "apiVersion": "optimodel.io/v1alpha1",
    "kind": "OptimizedModel",
    "name": "minilm",
    "uid": "7f1c3a52-0000-4000-8000-000000000001",
    "controller": True,
    "blockOwnerDeletion": True,
}
KUBERNETES_VERSIONS = ("1.30", "1.33")


def render(autoscaling: Autoscaling, cap: int, **extra: Any) -> dict[str, Any]:
    return render_autoscaler(
        name="minilm",
        namespace="ml",
        owner_reference=OWNER,
        autoscaling=autoscaling,
        max_replicas=cap,
        **extra,
    )


def metric_targets(hpa: dict[str, Any]) -> dict[str, str]:
    return {
        m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
        for m in hpa["spec"]["metrics"]
    }


@pytest.mark.parametrize(
    ("spec", "cap", "metrics"),
    [
        ({}, 8, {GPU_UTILIZATION_METRIC: "70"}),
        ({"targetGPUUtilization": 55, "maxReplicas": 20}, 3, {GPU_UTILIZATION_METRIC: "55"}),
        (
            {"targetQueueTimeMicroseconds": 2000},
            8,
            {GPU_UTILIZATION_METRIC: "70", QUEUE_TIME_METRIC: "2000"},
        ),
        ({"minReplicas": 2, "maxReplicas": 2}, 2, {GPU_UTILIZATION_METRIC: "70"}),
    ],
)
def test_hpa_is_valid_and_capped(spec: dict[str, Any], cap: int, metrics: dict[str, str]) -> None:
    autoscaling = Autoscaling.model_validate(spec)
    hpa = render(autoscaling, cap)
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(hpa, version, strict=True)
    assert (hpa["apiVersion"], hpa["kind"]) == (HPA.api_version, HPA.kind)
    assert hpa["spec"]["maxReplicas"] == cap
    assert hpa["spec"]["minReplicas"] == autoscaling.min_replicas
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "minilm",
    }
    assert metric_targets(hpa) == metrics
    assert all(m["pods"]["target"]["type"] == "AverageValue" for m in hpa["spec"]["metrics"])
    assert hpa["metadata"]["ownerReferences"] == [OWNER]
    assert hpa["metadata"]["labels"]["app.kubernetes.io/instance"] == "minilm"


def test_strict_validation_would_catch_a_bad_hpa() -> None:
    # The check above can fail: a field the API server does not know is rejected.
    hpa = render(Autoscaling(), 4)
    hpa["spec"]["maxReplicaCount"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, "1.30", strict=True)


def test_behavior_scales_up_fast_and_down_slowly() -> None:
    behavior = render(Autoscaling(), 4)["spec"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] < down["stabilizationWindowSeconds"]
    assert down["stabilizationWindowSeconds"] >= 300
    assert {p["type"] for p in up["policies"]} == {"Percent", "Pods"}
    custom = ScalingBehavior(scale_down_stabilization_seconds=900, scale_up_pods=4)
    tuned = render(Autoscaling(), 4, behavior=custom)
    kubernetes_validate.validate(tuned, "1.30", strict=True)
    assert tuned["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    assert {"type": "Pods", "value": 4, "periodSeconds": 60} in tuned["spec"]["behavior"][
        "scaleUp"
    ]["policies"]


def test_labels_and_target_name_can_be_given() -> None:
    hpa = render(
        Autoscaling(),
        4,
        target_name="minilm-triton",
        labels={"app.kubernetes.io/component": "serving", "team": "search"},
    )
    kubernetes_validate.validate(hpa, "1.30", strict=True)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "minilm-triton"
    assert hpa["metadata"]["labels"]["team"] == "search"
    assert hpa["metadata"]["labels"]["app.kubernetes.io/component"] == "serving"
    assert hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "optimodel-operator"


@pytest.mark.parametrize(
    ("spec", "cap", "message"),
    [
        ({"enabled": False}, 4, "enabled is false"),
        ({"minReplicas": 3}, 2, "below minReplicas"),
        ({"minReplicas": 0}, 4, "needs engine keda"),
    ],
)
def test_render_refuses_what_cannot_work(spec: dict[str, Any], cap: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(Autoscaling.model_validate(spec), cap)


def keda(spec: dict[str, Any], cap: int, **extra: Any) -> dict[str, Any]:
    return render(Autoscaling.model_validate({"engine": "keda", **spec}), cap, **extra)


def test_scaled_object_structure() -> None:
    source = PrometheusSource(server_address="http://prom.monitoring:9090")
    so = keda({"minReplicas": 1, "targetGPUUtilization": 60}, 5, prometheus=source)
    assert (so["apiVersion"], so["kind"]) == (SCALED_OBJECT.api_version, SCALED_OBJECT.kind)
    assert so["metadata"]["name"] == "minilm"
    assert so["metadata"]["namespace"] == "ml"
    assert so["metadata"]["ownerReferences"] == [OWNER]
    assert "annotations" not in so["metadata"]
    spec = so["spec"]
    assert set(spec) == {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "minReplicaCount",
        "maxReplicaCount",
        "advanced",
        "triggers",
    }
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "minilm",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    # KEDA passes the behavior to the HPA it creates: the same block as our own HPA.
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == (
        ScalingBehavior().render()
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert set(metadata) == {"serverAddress", "query", "threshold"}
    assert metadata["serverAddress"] == "http://prom.monitoring:9090"
    assert metadata["threshold"] == "60"  # strings, as KEDA's metadata requires
    assert metadata["query"] == (
        "sum(avg by (exported_pod) (DCGM_FI_DEV_GPU_UTIL"
        '{exported_namespace="ml",exported_pod=~"minilm-[a-z0-9]+-[a-z0-9]+"}))'
    )
    assert all(isinstance(v, str) for t in spec["triggers"] for v in t["metadata"].values())


def test_scaled_object_queue_trigger_and_labels() -> None:
    source = PrometheusSource(dcgm_namespace_label="namespace", dcgm_pod_label="pod")
    so = keda({"targetQueueTimeMicroseconds": 1500}, 6, prometheus=source)
    gpu, queue = so["spec"]["triggers"]
    assert 'namespace="ml",pod=~"minilm-' in gpu["metadata"]["query"]
    assert queue["name"] == "queue-time"
    assert queue["metricType"] == "Value"  # already an average per request
    assert queue["metadata"]["threshold"] == "1500"
    query = queue["metadata"]["query"]
    assert "rate(nv_inference_queue_duration_us{" in query
    assert "rate(nv_inference_request_success{" in query
    assert query.count('namespace="ml"') == 2


def test_scaled_object_pauses_when_nothing_is_affordable() -> None:
    so = keda({"minReplicas": 0}, 0)
    assert so["metadata"]["annotations"] == {KEDA_PAUSED_REPLICAS: "0"}
    assert so["spec"]["minReplicaCount"] == 0
    assert so["spec"]["maxReplicaCount"] == 1  # KEDA's HPA needs at least 1


@pytest.mark.parametrize(
    ("engine", "cap", "patch"),
    [
        ("hpa", 3, {"spec": {"maxReplicas": 3}}),
        (
            "keda",
            3,
            {
                "metadata": {"annotations": {KEDA_PAUSED_REPLICAS: None}},
                "spec": {"maxReplicaCount": 3},
            },
        ),
        (
            "keda",
            0,
            {
                "metadata": {"annotations": {KEDA_PAUSED_REPLICAS: "0"}},
                "spec": {"maxReplicaCount": 1},
            },
        ),
    ],
)
def test_cap_patch_touches_only_the_maximum(engine: str, cap: int, patch: dict[str, Any]) -> None:
    assert autoscaler_cap_patch(engine, cap) == patch  # type: ignore[arg-type]


def test_cap_patch_matches_a_fresh_render() -> None:
    # Patching a rendered HPA gives what rendering with the new cap gives: no drift.
    before = render(Autoscaling(), 8)
    before["spec"].update(autoscaler_cap_patch("hpa", 3)["spec"])
    assert before == render(Autoscaling(), 3)
    kubernetes_validate.validate(before, "1.30", strict=True)


def test_autoscaler_kind() -> None:
    assert autoscaler_kind("hpa").plural == "horizontalpodautoscalers"
    assert autoscaler_kind("keda").api_version == "keda.sh/v1alpha1"


# --- the budget's fields on a live autoscaler (operator/children.py compares without them) --


@pytest.mark.parametrize(
    ("engine", "cap"),
    [("hpa", 3), ("hpa", 8), ("keda", 4), ("keda", 0)],
)
def test_the_cap_is_read_back_and_stripped(engine: str, cap: int) -> None:
    autoscaling = Autoscaling.model_validate(
        {"engine": engine, "minReplicas": 0 if cap == 0 else 1}
    )
    rendered = render(autoscaling, cap)
    assert live_cap(rendered) == cap
    bare = without_cap(rendered)
    assert live_cap(bare) is None
    assert KEDA_PAUSED_REPLICAS not in (bare["metadata"].get("annotations") or {})
    # Everything else is kept, and two caps strip to the same manifest.
    assert bare["spec"]["scaleTargetRef"] == rendered["spec"]["scaleTargetRef"]
    assert without_cap(render(autoscaling, cap + 1)) == bare


@pytest.mark.parametrize(("engine", "cap"), [("hpa", 2), ("keda", 0), ("keda", 5)])
def test_the_cap_patch_gives_a_live_autoscaler_the_cap(engine: str, cap: int) -> None:
    autoscaling = Autoscaling.model_validate(
        {"engine": engine, "minReplicas": 0 if engine == "keda" else 1}
    )
    live = render(autoscaling, 6)
    patched = merge(live, autoscaler_cap_patch(autoscaling.engine, cap))
    assert live_cap(patched) == cap
    assert without_cap(patched) == without_cap(live)


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


def test_only_rendered_kinds_are_autoscalers() -> None:
    assert is_autoscaler(render(Autoscaling(), 3))
    assert is_autoscaler(render(Autoscaling.model_validate({"engine": "keda"}), 3))
    assert not is_autoscaler({"apiVersion": "apps/v1", "kind": "Deployment"})
    assert not is_autoscaler({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler"})
