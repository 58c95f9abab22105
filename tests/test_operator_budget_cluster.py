"""Autoscaling inside a budget, end to end: the operator against the API emulator.

The HPA and KEDA controllers are not emulated (nothing scales by itself); the tests play them
where needed by setting the Deployment's replicas, as they play the Deployment controller.
"""

from __future__ import annotations

import copy
import urllib.request
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client import REGISTRY

from optimodel.operator import api, naming
from optimodel.operator.autoscaling import KEDA_PAUSED_REPLICAS, PrometheusSource
from optimodel.operator.capacity import serving_deployments_pattern
from optimodel.operator.hardware import DEFAULT_GPUS
from optimodel.operator.metrics import serve_metrics
from tests.cluster import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    HPAS,
    MODELS,
    SCALED_OBJECTS,
    SERVICES,
    Body,
    OperatorThread,
    rollout,
    wait_until,
)
from tests.test_operator_cluster import NS, Cluster, manifest, quiet_period
from tests.test_prometheus import PrometheusServer, vector

pytestmark = pytest.mark.cluster

HOURLY = api.BUDGET_USD_PER_HOUR
MONTHLY = api.BUDGET_USD_PER_MONTH
L4 = 0.70


def annotate(cluster: Cluster, name: str, annotations: dict[str, str | None]) -> None:
    cluster.http.patch(MODELS, NS, name, {"metadata": {"annotations": annotations}})


def ready(cluster: Cluster, name: str, annotations: dict[str, str], **spec: Any) -> Body:
    """Create a model with these annotations (replacing the default budget) and take it to
    Ready on artifact g1."""
    body = manifest(name, **spec)
    body["metadata"]["annotations"] = annotations
    cluster.http.create(MODELS, NS, body)
    [job] = cluster.wait_jobs(name, 1)
    cluster.succeed(job)
    cluster.rollout_when(name, 1)
    cluster.wait_condition(name, "Ready", "True")
    return cluster.http.model(NS, name)


def condition(cluster: Cluster, name: str, kind: str) -> tuple[str, str] | None:
    found = cluster.http.condition(NS, name, kind)
    return None if found is None else (found["status"], found["reason"])


def cost_of(cluster: Cluster, name: str) -> Body:
    cost: Body = cluster.http.model(NS, name)["status"]["cost"]
    return cost


def operator_writes(cluster: Cluster, since: int, plural: str) -> list[Any]:
    """The operator's writes (POST/PATCH/PUT/DELETE) to one resource since request `since`."""
    return [
        request
        for request in cluster.server.requests()[since:]
        if request.headers.get("User-Agent", "").startswith("optimodel-operator")
        and request.method.value in ("POST", "PATCH", "PUT", "DELETE")
        and request.resource is not None
        and request.resource.plural == plural
    ]


def gauge(name: str, model: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": NS, "name": model})


# --- re-capping ---------------------------------------------------------------------------


def test_annotation_change_recaps_the_hpa_without_a_rebuild_or_a_pod_restart(
    cluster: Cluster, operator: OperatorThread
) -> None:
    model = ready(cluster, "capped", {HOURLY: "6"})
    hpa = cluster.http.get(HPAS, NS, "capped")
    assert hpa is not None
    kubernetes_validate.validate(hpa, "1.30", strict=True)
    assert hpa["spec"]["maxReplicas"] == 8 and hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "capped",
    }
    [owner] = hpa["metadata"]["ownerReferences"]
    assert owner["uid"] == model["metadata"]["uid"] and owner["controller"] is True
    assert condition(cluster, "capped", "WithinBudget") == ("True", "BudgetAllowsMaximum")
    deployment = cluster.http.get(DEPLOYMENTS, NS, "capped")
    assert deployment is not None
    start = len(cluster.server.requests())

    annotate(cluster, "capped", {HOURLY: "2.1"})  # affords 3 replicas at $0.70/h
    cluster.wait_object(HPAS, "capped", lambda h: h["spec"]["maxReplicas"] == 3, "HPA cap 3")
    capped = cluster.wait_condition("capped", "WithinBudget", "True", "CappedByHourlyBudget")
    assert "$2.1/h affords 3 replicas" in capped["message"]
    assert cost_of(cluster, "capped")["maxAffordableReplicas"] == 3
    reasons = cluster.reasons("capped", "BudgetCapChanged")
    assert reasons.count("BudgetCapChanged") == 1

    # Exactly one write to the HPA: a merge patch of maxReplicas (with its resourceVersion).
    [patch] = operator_writes(cluster, start, "horizontalpodautoscalers")
    assert patch.method.value == "PATCH"
    assert patch.headers["Content-Type"].startswith("application/merge-patch+json")
    assert patch.data["spec"] == {"maxReplicas": 3}
    assert set(patch.data) == {"metadata", "spec"} and set(patch.data["metadata"]) == {
        "resourceVersion"
    }
    # No rebuild, no pod restart: no Job, and nothing written to the other children at all.
    assert len(cluster.http.jobs(NS, "capped")) == 1
    for plural in ("jobs", "deployments", "services", "configmaps"):
        assert operator_writes(cluster, start, plural) == [], plural
    after = cluster.http.get(DEPLOYMENTS, NS, "capped")
    assert after is not None
    assert after["spec"]["template"] == deployment["spec"]["template"]
    assert after["metadata"]["resourceVersion"] == deployment["metadata"]["resourceVersion"]

    # The cost gauges of this model are on the operator's /metrics, and go with the model.
    assert gauge("optimodel_max_affordable_replicas", "capped") == 3
    assert gauge("optimodel_budget_usd_per_hour", "capped") == 2.1
    assert gauge("optimodel_cost_usd_per_hour", "capped") == pytest.approx(L4)
    assert gauge("optimodel_within_budget", "capped") == 1
    port = serve_metrics(0, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'optimodel_month_to_date_spend_usd{name="capped",namespace="ml"}' in text
    cluster.http.delete(MODELS, NS, "capped")
    wait_until(
        lambda: gauge("optimodel_cost_usd_per_hour", "capped") is None,
        what="the model's cost series removed",
    )
    assert gauge("optimodel_within_budget", "capped") is None


def test_hand_edits_of_the_hpa_are_repaired(cluster: Cluster, operator: OperatorThread) -> None:
    ready(cluster, "minilm", {HOURLY: "6"})
    hpa = cluster.http.get(HPAS, NS, "minilm")
    assert hpa is not None
    metrics = copy.deepcopy(hpa["spec"]["metrics"])
    metrics[0]["pods"]["target"]["averageValue"] = "99"
    cluster.http.patch(HPAS, NS, "minilm", {"spec": {"metrics": metrics}})
    cluster.wait_object(
        HPAS,
        "minilm",
        lambda h: h["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "70",
        "the GPU utilization target restored",
    )
    cluster.http.patch(HPAS, NS, "minilm", {"spec": {"maxReplicas": 50}})
    cluster.wait_object(
        HPAS, "minilm", lambda h: h["spec"]["maxReplicas"] == 8, "the budget's cap restored"
    )
    cluster.http.delete(HPAS, NS, "minilm")
    recreated = wait_until(lambda: cluster.http.get(HPAS, NS, "minilm"), what="HPA recreated")
    assert recreated["metadata"]["uid"] != hpa["metadata"]["uid"]
    assert recreated["spec"]["maxReplicas"] == 8
    reasons = cluster.reasons("minilm", "DriftRepaired", "DriftRepaired", "Created", "Created")
    assert reasons.count("DriftRepaired") == 2


# --- budget exhaustion ------------------------------------------------------------------------


def test_budget_below_minimum_keeps_the_minimum_and_says_what_to_change(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ready(cluster, "small", {HOURLY: "6"}, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    cluster.wait_object(HPAS, "small", lambda h: h["spec"]["maxReplicas"] == 4, "HPA cap 4")
    annotate(cluster, "small", {HOURLY: "1"})  # 2 replicas cost $1.40/h
    below = cluster.wait_condition("small", "WithinBudget", "False", "BudgetBelowMinimum")
    assert "keeping 2 running, never more" in below["message"]
    assert "raise the hourly budget or lower spec.autoscaling.minReplicas" in below["message"]
    cluster.wait_object(HPAS, "small", lambda h: h["spec"]["maxReplicas"] == 2, "HPA at min")
    cluster.reasons("small", "BudgetBelowMinimum")
    warnings = [e for e in cluster.http.events(NS, "small") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["BudgetBelowMinimum"]
    # Serving goes on: minReplicas is the availability the user asked for.
    assert condition(cluster, "small", "Ready") == ("True", "Ready")
    assert gauge("optimodel_within_budget", "small") == 0


def test_monthly_budget_exhausted_lowers_the_cap_and_alerts_once(cluster: Cluster) -> None:
    with cluster.operator(budgetIntervalSeconds=1):
        ready(cluster, "monthly", {HOURLY: "6", MONTHLY: "3000"})
        cluster.wait_object(HPAS, "monthly", lambda h: h["spec"]["maxReplicas"] == 8, "cap 8")
        # A previous operator accounted the month up to the whole budget (status is where the
        # month-to-date lives across restarts).
        now = datetime.now(UTC)
        spent = {
            **cost_of(cluster, "monthly"),
            "monthToDateUSD": 3000.0,
            "month": f"{now.year:04d}-{now.month:02d}",
            "accountedAt": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "monthlyBudgetAlerts": [],
        }
        cluster.http.patch(MODELS, NS, "monthly", {"status": {"cost": spent}}, "status")

        below = cluster.wait_condition("monthly", "WithinBudget", "False", "BudgetBelowMinimum")
        assert "left this month affords 0 replicas" in below["message"]
        cluster.wait_object(HPAS, "monthly", lambda h: h["spec"]["maxReplicas"] == 1, "cap 1")
        expected = ("MonthlyBudgetAlert", "MonthlyBudgetReached", "BudgetBelowMinimum")
        cluster.reasons("monthly", *expected, "BudgetCapChanged")
        cost = cost_of(cluster, "monthly")
        assert cost["monthToDateUSD"] >= 3000 and cost["monthlyBudgetAlerts"] == [80, 100]
        assert cost["maxAffordableReplicas"] == 0

        # Ticks go on accounting from the stored month-to-date; nothing is announced twice.
        accounted = cost["accountedAt"]
        wait_until(
            lambda: cost_of(cluster, "monthly")["accountedAt"] > accounted,
            what="another accounting tick",
        )
        assert cost_of(cluster, "monthly")["monthToDateUSD"] > cost["monthToDateUSD"]
        reasons = [e["reason"] for e in cluster.http.events(NS, "monthly")]
        assert [reasons.count(reason) for reason in expected] == [1, 1, 1]


# --- spend accounting -------------------------------------------------------------------------


def test_spend_follows_the_deployments_replicas_and_survives_a_restart(
    cluster: Cluster, prometheus: PrometheusServer
) -> None:
    query = PrometheusSource().inference_rate(NS, serving_deployments_pattern("metered"))
    prometheus.answers[query] = (200, vector("10"))  # 36,000 inferences per hour
    settings: dict[str, Any] = {"budgetIntervalSeconds": 1, "prometheus": {"url": prometheus.url}}
    with cluster.operator(**settings):
        ready(cluster, "metered", {HOURLY: "6"})
        metered = wait_until(
            lambda: (c := cost_of(cluster, "metered")).get("usdPerMillionInferences") and c,
            what="cost per million inferences from Prometheus",
        )
        assert metered["usdPerMillionInferences"] == pytest.approx(L4 / 36_000 * 1e6)
        assert query in prometheus.queries

        # The HPA scales the Deployment to 3 (played here): the cost follows its replicas.
        cluster.http.patch(DEPLOYMENTS, NS, "metered", {"spec": {"replicas": 3}})
        rollout(cluster.http, NS, "metered")
        scaled = wait_until(
            lambda: (c := cost_of(cluster, "metered"))["currentUSDPerHour"] > 2 and c,
            what="the cost of 3 replicas",
        )
        assert scaled["currentUSDPerHour"] == pytest.approx(3 * L4)
        assert cluster.http.model(NS, "metered")["status"]["replicas"] == 3
        before = cost_of(cluster, "metered")

    # Another operator continues the month from the status, charging the gap at 3 replicas.
    with cluster.operator(**settings):
        after = wait_until(
            lambda: (c := cost_of(cluster, "metered"))["accountedAt"] > before["accountedAt"] and c,
            what="the next operator's accounting",
        )
    hours = (seconds(after["accountedAt"]) - seconds(before["accountedAt"])) / 3600
    assert after["monthToDateUSD"] == pytest.approx(
        before["monthToDateUSD"] + 3 * L4 * hours, rel=1e-6
    )


def seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


# --- engines and fixed replicas ---------------------------------------------------------------


def test_keda_engine_renders_a_scaled_object_paused_when_nothing_is_affordable(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ready(cluster, "keda", {HOURLY: "6"}, autoscaling={"engine": "keda", "minReplicas": 0})
    scaled = cluster.http.get(SCALED_OBJECTS, NS, "keda")
    assert scaled is not None and cluster.http.get(HPAS, NS, "keda") is None
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "keda"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 8)
    assert [t["name"] for t in spec["triggers"]] == ["gpu-utilization"]
    assert 'exported_pod=~"keda-' in spec["triggers"][0]["metadata"]["query"]

    annotate(cluster, "keda", {HOURLY: "0.5"})  # not even one replica: pause at zero
    paused = cluster.wait_object(
        SCALED_OBJECTS,
        "keda",
        lambda o: (o["metadata"].get("annotations") or {}).get(KEDA_PAUSED_REPLICAS) == "0",
        "the ScaledObject paused at zero",
    )
    assert paused["spec"]["maxReplicaCount"] == 1  # KEDA's HPA needs >= 1
    cluster.wait_condition("keda", "WithinBudget", "True", "CappedByHourlyBudget")

    annotate(cluster, "keda", {HOURLY: None})  # no budget: the spec's maximum, unpaused
    resumed = cluster.wait_object(
        SCALED_OBJECTS, "keda", lambda o: o["spec"]["maxReplicaCount"] == 8, "unpaused"
    )
    assert KEDA_PAUSED_REPLICAS not in (resumed["metadata"].get("annotations") or {})
    assert naming.RENDERED_HASH in resumed["metadata"]["annotations"]
    cluster.wait_condition("keda", "WithinBudget", "True", "NoBudget")


def test_autoscaling_off_removes_the_hpa_and_kubectl_scale_sets_the_replicas(
    cluster: Cluster, operator: OperatorThread
) -> None:
    ready(cluster, "fixed", {HOURLY: "6"})
    assert cluster.http.get(HPAS, NS, "fixed") is not None
    cluster.patch_spec("fixed", {"autoscaling": {"enabled": False}, "replicas": 2})
    wait_until(lambda: cluster.http.get(HPAS, NS, "fixed") is None, what="the HPA deleted")
    cluster.wait_object(DEPLOYMENTS, "fixed", lambda d: d["spec"]["replicas"] == 2, "2 replicas")
    cluster.reasons("fixed", "Removed")

    # `kubectl scale optimizedmodel fixed --replicas 3`: a PATCH of the scale subresource.
    scale = cluster.http.patch(MODELS, NS, "fixed", {"spec": {"replicas": 3}}, "scale")
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 3)
    cluster.wait_object(DEPLOYMENTS, "fixed", lambda d: d["spec"]["replicas"] == 3, "3 replicas")
    rollout(cluster.http, NS, "fixed")
    cluster.wait_condition("fixed", "Ready", "True", generation=3)
    read = cluster.http.call(
        "GET", f"/apis/optimodel.io/v1alpha1/namespaces/{NS}/optimizedmodels/fixed/scale"
    )
    assert read["status"] == {
        "replicas": 3,
        "selector": naming.selector_string(naming.server_selector("fixed")),
    }
    assert cluster.http.get(HPAS, NS, "fixed") is None
    assert cost_of(cluster, "fixed")["currentUSDPerHour"] == pytest.approx(3 * L4)
    assert len(cluster.http.jobs(NS, "fixed")) == 1


# --- unusable budget input --------------------------------------------------------------------


def test_a_bad_budget_annotation_is_a_condition_with_the_fix_and_no_retry_storm(
    cluster: Cluster,
) -> None:
    with cluster.operator(resyncSeconds=1):
        body = manifest("typo")
        body["metadata"]["annotations"] = {HOURLY: "six"}
        cluster.http.create(MODELS, NS, body)
        cluster.wait_jobs("typo", 1)  # the build goes on: a budget typo is not an invalid spec
        bad = cluster.wait_condition("typo", "WithinBudget", "False", "InvalidBudgetAnnotation")
        assert f"metadata.annotations[{HOURLY}]: 'six' is not a number" in bad["message"]
        assert 'fix: write a positive number of US dollars as a string, e.g. "6"' in bad["message"]
        assert "keeps maxReplicas 1 until this is fixed" in bad["message"]
        wait_until(
            lambda: (
                "is running"
                in (cluster.http.condition(NS, "typo", "Built") or {}).get("message", "")
            ),
            what="the build seen running (the last status change before things settle)",
        )
        assert quiet_period(cluster, 2.5) == []  # resyncs write nothing, post nothing
        warnings = [e for e in cluster.http.events(NS, "typo") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["InvalidBudgetAnnotation"]

        annotate(cluster, "typo", {HOURLY: "6"})
        cluster.wait_condition("typo", "WithinBudget", "True", "BudgetAllowsMaximum")
    for resource in (SERVICES, CONFIG_MAPS):
        assert cluster.http.list_objects(resource, NS) == []  # nothing was built yet


def test_without_keda_a_keda_model_serves_and_says_so_once(cluster: Cluster) -> None:
    cluster.server.emulator.undeclare("keda.sh/v1alpha1")
    with cluster.operator(resyncSeconds=1):
        ready(cluster, "nokeda", {HOURLY: "6"}, autoscaling={"engine": "keda"})
        cluster.reasons("nokeda", "AutoscalerUnavailable")
        # Each resync tries to create it again (KEDA may have been installed), and nothing
        # else: no status writes, no more Events.
        attempts = quiet_period(cluster, 2.5)
        assert attempts and {(r.method.value, r.resource.plural) for r in attempts} == {
            ("POST", "scaledobjects")
        }
        warnings = [e for e in cluster.http.events(NS, "nokeda") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["AutoscalerUnavailable"]
        assert "install KEDA, or set spec.autoscaling.engine: hpa" in warnings[0]["message"]
        assert cluster.http.get(DEPLOYMENTS, NS, "nokeda") is not None


# --- spend priced per pod -----------------------------------------------------------------------

PODS = ("v1", "pods")
GKE_SPOT = "cloud.google.com/gke-spot"
GKE_GPU = "cloud.google.com/gke-accelerator"


def node(cluster: Cluster, name: str, labels: dict[str, str]) -> None:
    cluster.http.call(
        "POST",
        "/api/v1/nodes",
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}},
    )


def serving_pod(cluster: Cluster, name: str, deployment: Body, node_name: str) -> None:
    """A running Triton pod of `deployment` on `node_name`, as the scheduler and kubelet
    would leave it."""
    template = deployment["spec"]["template"]
    cluster.http.create(
        PODS,
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": {**template["spec"], "nodeName": node_name},
        },
    )
    cluster.http.patch(PODS, NS, name, {"status": {"phase": "Running"}}, "status")


def test_spot_and_on_demand_pods_are_priced_by_their_nodes(cluster: Cluster) -> None:
    """The base pod on an on-demand L4 node, the spot tier's on a spot L4 node and on a spot
    node of another GPU type: each at its own catalog price, split by capacity type."""
    node(cluster, "od-l4", {GKE_GPU: "nvidia-l4"})
    node(cluster, "spot-l4", {GKE_GPU: "nvidia-l4", GKE_SPOT: "true"})
    node(cluster, "spot-t4", {GKE_GPU: "nvidia-t4", GKE_SPOT: "true"})
    settings: dict[str, Any] = {
        "budgetIntervalSeconds": 1,
        "serving": {"capacity": {"provider": "gke"}, "gpuNodeLabel": GKE_GPU},
    }
    with cluster.operator(**settings):
        spec = {
            "serving": {
                "gpu": {"type": "nvidia-l4", "count": 1},
                "capacity": "spot-with-fallback",
                "onDemandReplicas": 1,
            },
            "autoscaling": {"minReplicas": 1, "engine": "keda"},
        }
        body = manifest("spotty", **spec)
        body["metadata"]["annotations"] = {MONTHLY: "1000"}
        cluster.http.create(MODELS, NS, body)
        [job] = cluster.wait_jobs("spotty", 1)
        cluster.succeed(job)
        base = cluster.rollout_when("spotty", 1)
        spot = cluster.wait_object(DEPLOYMENTS, "spotty-spot", lambda d: True, "the spot tier")
        # The autoscaler (played here) scales the spot tier to two.
        cluster.http.patch(DEPLOYMENTS, NS, "spotty-spot", {"spec": {"replicas": 2}})
        rollout(cluster.http, NS, "spotty-spot")
        cluster.wait_condition("spotty", "Ready", "True")
        serving_pod(cluster, "spotty-base-1", base, "od-l4")
        serving_pod(cluster, "spotty-spot-1", spot, "spot-l4")
        serving_pod(cluster, "spotty-spot-2", spot, "spot-t4")

        l4, t4 = DEFAULT_GPUS["nvidia-l4"], DEFAULT_GPUS["nvidia-t4"]
        spot_rate = l4.price("spot") + t4.price("spot")
        cost = wait_until(
            lambda: (c := cost_of(cluster, "spotty")).get("spot", {}).get("replicas") == 2 and c,
            what="spend priced per pod",
        )
        assert cost["onDemand"]["replicas"] == 1
        assert cost["onDemand"]["currentUSDPerHour"] == pytest.approx(l4.on_demand_usd_per_hour)
        assert cost["spot"]["currentUSDPerHour"] == pytest.approx(spot_rate)
        assert cost["currentUSDPerHour"] == pytest.approx(l4.on_demand_usd_per_hour + spot_rate)
        # The cap still prices every replica on-demand: it can never be exceeded, wherever the
        # spot tier falls back to. The month-to-date is the sum of the split.
        assert cost["replicaUSDPerHour"] == pytest.approx(l4.on_demand_usd_per_hour)
        later = wait_until(
            lambda: (c := cost_of(cluster, "spotty"))["spot"]["monthToDateUSD"] > 0 and c,
            what="spot spend accrued",
        )
        assert later["monthToDateUSD"] == pytest.approx(
            later["onDemand"]["monthToDateUSD"] + later["spot"]["monthToDateUSD"]
        )
        # The cost gauges split the same way.
        labels = {"namespace": NS, "name": "spotty"}
        spot_gauge = REGISTRY.get_sample_value(
            "optimodel_capacity_cost_usd_per_hour", {**labels, "capacity": "spot"}
        )
        assert spot_gauge == pytest.approx(spot_rate)
        replicas = REGISTRY.get_sample_value(
            "optimodel_capacity_replicas", {**labels, "capacity": "on-demand"}
        )
        assert replicas == 1
