"""The operator's own lifecycle end to end: deletion without the operator, and a failed build
that stays failed when its Job is gone (operator on the API emulator)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client as k8s

from optimodel.operator import api, naming
from optimodel.operator.kube import KubeApi
from optimodel.operator.peering import PeeringGate
from tests.cluster import CONFIG_MAPS, DEPLOYMENTS, JOBS, MODELS, SERVICES, wait_until
from tests.test_operator_cluster import NS, Cluster, manifest, quiet_period

pytestmark = pytest.mark.cluster

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
GATE = json.dumps({"reason": "AccuracyBelowThreshold", "message": "cosine 0.91 < 0.99"})


def test_a_model_is_deleted_at_once_while_the_operator_is_down(cluster: Cluster) -> None:
    # Timers on (short budget and resync intervals): they must not bring Kopf's finalizer.
    with cluster.operator(resyncSeconds=1, budgetIntervalSeconds=1):
        cluster.ready("minilm")
        budget_ticked = cluster.http.model(NS, "minilm")["status"]["cost"]["accountedAt"]

        def accounted_again() -> bool:
            status = cluster.http.model(NS, "minilm")["status"]
            return bool(status["cost"]["accountedAt"] != budget_ticked)

        wait_until(accounted_again, timeout=15, what="a budget tick")  # the loop runs
        assert not cluster.http.model(NS, "minilm")["metadata"].get("finalizers")
    # The operator is gone: the model is deleted at once and its children follow (GC).
    cluster.http.delete(MODELS, NS, "minilm")
    assert cluster.http.get(MODELS, NS, "minilm") is None
    children = (
        (DEPLOYMENTS, "minilm"),
        (SERVICES, "minilm"),
        (CONFIG_MAPS, "minilm-triton-config"),
    )
    wait_until(
        lambda: all(cluster.http.get(r, NS, n) is None for r, n in children),
        what="the children garbage-collected",
    )


def test_the_finalizer_an_older_operator_left_is_removed(cluster: Cluster) -> None:
    old = manifest("legacy")
    old["metadata"]["finalizers"] = [KOPF_FINALIZER]
    cluster.http.create(MODELS, NS, old)
    with cluster.operator(resyncSeconds=1, budgetIntervalSeconds=1):
        wait_until(
            lambda: not cluster.http.model(NS, "legacy")["metadata"].get("finalizers"),
            what="Kopf's finalizer removed",
        )
        cluster.wait_jobs("legacy", 1)
    cluster.http.delete(MODELS, NS, "legacy")
    assert cluster.http.get(MODELS, NS, "legacy") is None


def _retry(cluster: Cluster, value: str) -> None:
    annotations: dict[str, Any] = {api.RETRY_BUILD: value}
    cluster.http.patch(MODELS, NS, "minilm", {"metadata": {"annotations": annotations}})


def test_a_failed_build_is_not_rebuilt_when_its_job_is_gone(cluster: Cluster) -> None:
    with cluster.operator(resyncSeconds=1):
        cluster.create("minilm")
        [job] = cluster.wait_jobs("minilm", 1)
        cluster.jobs.fail(job, 3, GATE)
        failed = cluster.wait_condition("minilm", "Built", "False", "AccuracyBelowThreshold")
        assert api.RETRY_BUILD in failed["message"]  # says how to build it again
        # The TTL controller deletes the finished Job (a day later by default).
        cluster.http.delete(JOBS, NS, job["metadata"]["name"])
        wait_until(lambda: cluster.http.jobs(NS, "minilm") == [], what="the Job gone")
        assert quiet_period(cluster, 2.5) == []  # resyncs neither rebuild nor write
        assert cluster.http.jobs(NS, "minilm") == []
        still = cluster.wait_condition("minilm", "Built", "False", "AccuracyBelowThreshold")
        assert still == failed  # unchanged: no new Event, no status write
    with cluster.operator(resyncSeconds=1):  # nor after a restart
        assert quiet_period(cluster, 2.5) == []
        assert cluster.http.jobs(NS, "minilm") == []

        # The user asks for another try: one new Job, for the same generation.
        _retry(cluster, "1")
        [again] = cluster.wait_jobs("minilm", 1)
        assert again["metadata"]["uid"] != job["metadata"]["uid"]
        assert again["metadata"]["annotations"][api.RETRY_BUILD] == "1"
        assert again["metadata"]["labels"][naming.GENERATION] == "1"
        cluster.wait_condition("minilm", "Built", "False", "Building")
        cluster.jobs.fail(again, 3, GATE)
        cluster.wait_condition("minilm", "Built", "False", "AccuracyBelowThreshold")
        cluster.http.delete(JOBS, NS, again["metadata"]["name"])
        wait_until(lambda: cluster.http.jobs(NS, "minilm") == [], what="the retry's Job gone")
        _retry(cluster, "1")  # the same value again is no new request
        assert quiet_period(cluster, 2.0) == []
        assert cluster.http.jobs(NS, "minilm") == []

        # A spec change builds the new spec.
        cluster.patch_spec("minilm", {"optimize": {"accuracy": {"min": 0.9}}})
        [fresh] = cluster.wait_jobs("minilm", 1)
        assert fresh["metadata"]["labels"][naming.GENERATION] == "2"
        cluster.succeed(fresh)
        cluster.rollout_when("minilm", 2)
        cluster.wait_condition("minilm", "Ready", "True", generation=2)
        assert "failedBuild" not in cluster.http.model(NS, "minilm")["status"]


def test_the_peering_gate_reads_the_peering_objects(cluster: Cluster) -> None:
    configuration = k8s.Configuration()
    configuration.host = cluster.server.url
    kube = KubeApi(configuration)
    now = datetime.now(UTC).isoformat()

    def peering(kind: str, namespace: str | None, peers: dict[str, int]) -> None:
        path = "/apis/kopf.dev/v1/" + (f"namespaces/{namespace}/" if namespace else "")
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": kind,
            "metadata": {"name": "optimodel"},
            "status": {
                peer: {"priority": priority, "lifetime": 60, "lastseen": now}
                for peer, priority in peers.items()
            },
        }
        plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
        existing = cluster.http.call("GET", path + plural)["items"]
        if existing:
            cluster.http.call("DELETE", path + f"{plural}/optimodel")
        cluster.http.call("POST", path + plural, body)

    def acting(namespaces: tuple[str, ...] = (), standalone: bool = False) -> bool:
        gate = PeeringGate(kube, "me", 10, "optimodel", standalone, namespaces)
        return asyncio.run(gate.acting())

    try:
        assert acting(standalone=True)
        assert not acting()  # no peering object: wait, as Kopf does
        peering("ClusterKopfPeering", None, {"me": 10, "standby": 5})
        assert acting()
        peering("ClusterKopfPeering", None, {"me": 10, "other": 20})
        assert not acting()
        peering("KopfPeering", NS, {"me": 10})
        peering("KopfPeering", "other", {"me": 10, "rival": 10})
        assert acting((NS,)) and not acting((NS, "other"))
    finally:
        kube.close()
