"""The operator end to end: Kopf and the handlers against the API emulator over real HTTP.

Each test gets a fresh emulator and operator. The Job and Deployment controllers are played
by the test (JobController, rollout) through /status patches, as DESIGN.md allows; every
wait is a bounded poll (wait_until).
"""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes_validate
import pytest
from prometheus_client import REGISTRY

from optimodel.operator import naming, permissions
from optimodel.operator.metrics import serve_metrics
from optimodel.operator.settings import OperatorSettings
from tests.cluster import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    DISRUPTION_BUDGETS,
    HPAS,
    MODELS,
    NETWORK_POLICIES,
    PODS,
    SCALED_OBJECTS,
    SERVICES,
    Body,
    JobController,
    KubeHttp,
    OperatorThread,
    RecordedEvents,
    built_report,
    rollout,
    wait_until,
)
from tests.emulator import EmulatorServer, ResourceDecl

pytestmark = pytest.mark.cluster

MODEL_STEP_KEY = naming.config_key("minilm-model")  # the raw-tensor model's config
NS = "ml"
SOURCE = {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "task": "feature-extraction"}


def manifest(name: str, **spec: Any) -> Body:
    return {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name, "annotations": {"optimodel.io/budget-usd-per-hour": "6"}},
        "spec": {
            "source": SOURCE,
            "serving": {"gpu": {"type": "nvidia-l4", "count": 1}, "maxBatchSize": 32},
            **spec,
        },
    }


@dataclass
class Cluster:
    server: EmulatorServer
    http: KubeHttp
    jobs: JobController

    def operator(self, events: RecordedEvents | None = None, **settings: Any) -> OperatorThread:
        document = {"metricsPort": 0, "healthPort": 0, "peering": {"standalone": True}, **settings}
        return OperatorThread(self.server.url, OperatorSettings.model_validate(document), events)

    def create(self, name: str, **spec: Any) -> Body:
        return self.http.create(MODELS, NS, manifest(name, **spec))

    def patch_spec(self, name: str, spec: Body) -> Body:
        return self.http.patch(MODELS, NS, name, {"spec": spec})

    def wait_jobs(self, name: str, count: int) -> list[Body]:
        def jobs() -> list[Body] | None:
            found = self.http.jobs(NS, name)
            return found if len(found) >= count else None

        found = wait_until(jobs, what=f"{count} builder Job(s) of {name}")
        assert len(found) == count, [j["metadata"]["name"] for j in found]
        return sorted(found, key=lambda j: int(j["metadata"]["labels"][naming.GENERATION]))

    def wait_condition(
        self,
        name: str,
        kind: str,
        status: str,
        reason: str | None = None,
        generation: int | None = None,
    ) -> Body:
        def matches() -> Body | None:
            model = self.http.model(NS, name)
            condition = next(
                (c for c in (model.get("status") or {}).get("conditions", []) if c["type"] == kind),
                None,
            )
            if condition is None or condition["status"] != status:
                return None
            if reason is not None and condition["reason"] != reason:
                return None
            wanted = generation or model["metadata"]["generation"]
            if condition.get("observedGeneration") != wanted:
                return None
            found: Body = condition
            return found

        return wait_until(matches, what=f"{name} {kind}={status} {reason or ''}")

    def succeed(self, job: Body, accuracy: float = 0.995) -> None:
        spec_hash = job["metadata"]["annotations"][naming.SPEC_HASH]
        self.jobs.succeed(job, built_report(spec_hash, accuracy))

    def rollout_when(self, name: str, artifact_generation: int) -> Body:
        """Wait for the Deployment to ask for the artifact, then play its rollout."""

        def switched() -> Body | None:
            found = self.http.get(DEPLOYMENTS, NS, name)
            artifact = (
                (found or {}).get("metadata", {}).get("annotations", {}).get(naming.ARTIFACT, "")
            )
            return found if artifact.endswith(f"/g{artifact_generation}") else None

        wait_until(switched, what=f"Deployment {name} on artifact g{artifact_generation}")
        return rollout(self.http, NS, name)

    def ready(self, name: str, **spec: Any) -> Body:
        """Create a model and take it to Ready on artifact g1."""
        self.create(name, **spec)
        [job] = self.wait_jobs(name, 1)
        self.succeed(job)
        self.rollout_when(name, 1)
        self.wait_condition(name, "Ready", "True")
        return self.http.model(NS, name)

    def wait_object(
        self, resource: tuple[str, str], name: str, check: Callable[[Body], bool], what: str
    ) -> Body:
        """Wait until the object exists and `check` holds for it."""

        def probe() -> Body | None:
            found = self.http.get(resource, NS, name)
            return found if found is not None and check(found) else None

        return wait_until(probe, what=what)

    def reasons(self, name: str, *expected: str) -> list[str]:
        """The reasons of the model's Events, once at least `expected` have arrived (Kopf
        posts Events from a queue, a moment after the status shows the change)."""

        def arrived() -> list[str] | None:
            reasons = [event["reason"] for event in self.http.events(NS, name)]
            missing = list(reasons)
            for reason in expected:
                if reason not in missing:
                    return None
                missing.remove(reason)
            return reasons

        return wait_until(arrived, what=f"Events {expected} of {name}")


PEERINGS = (
    ResourceDecl(
        "kopf.dev/v1",
        "clusterkopfpeerings",
        "ClusterKopfPeering",
        namespaced=False,
        subresources=(),
    ),
    ResourceDecl("kopf.dev/v1", "kopfpeerings", "KopfPeering", subresources=()),
)


def quiet_period(cluster: Cluster, seconds: float) -> list[Any]:
    """Operator writes during a bounded observation window (after things settled)."""
    start = len(cluster.server.requests())
    time.sleep(seconds)
    return [
        request
        for request in cluster.server.requests()[start:]
        if request.headers.get("User-Agent", "").startswith(("optimodel-operator", "kopf"))
        and request.method.value in ("POST", "PATCH", "PUT", "DELETE")
        and not (request.resource is not None and request.resource.plural == "events")
    ]


# --- happy path ---------------------------------------------------------------------------


def test_happy_path_to_ready(cluster: Cluster, operator: OperatorThread) -> None:
    cluster.create("minilm")
    [job] = cluster.wait_jobs("minilm", 1)
    assert job["metadata"]["name"] == "minilm-build-g1"
    building = cluster.wait_condition("minilm", "Built", "False", "Building")
    assert "minilm-build-g1" in building["message"]
    assert cluster.http.model(NS, "minilm")["status"]["phase"] == "Building"
    assert cluster.http.get(DEPLOYMENTS, NS, "minilm") is None  # nothing served before the gate

    cluster.succeed(job)
    deployment = cluster.rollout_when("minilm", 1)
    ready = cluster.wait_condition("minilm", "Ready", "True", "Ready")
    assert "http://minilm.ml.svc:8000" in ready["message"]

    status = cluster.http.model(NS, "minilm")["status"]
    assert status["phase"] == "Ready" and status["observedGeneration"] == 1
    assert status["replicas"] == 1 and status["endpoint"] == "http://minilm.ml.svc:8000"
    assert status["selector"] == "app.kubernetes.io/component=server,optimodel.io/model=minilm"
    build = status["build"]
    assert build["artifact"] == "pvc://optimodel-artifacts/ml/minilm/g1"
    assert build["sizeReduction"] == pytest.approx(90 / 23, abs=1e-3)
    assert (build["accuracy"], build["latencyP50Ms"]) == (0.995, 4.2)
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Built": "True",
        "Deployed": "True",
        "Ready": "True",
        "WithinBudget": "True",
    }
    assert status["cost"]["replicaUSDPerHour"] == 0.7  # nvidia-l4 from the built-in catalog
    assert status["cost"]["currentUSDPerHour"] == 0.7 and status["cost"]["monthToDateUSD"] >= 0
    # What reached the API server is valid Kubernetes, as the cluster would see it.
    for resource, name in (
        (SERVICES, "minilm"),
        (CONFIG_MAPS, "minilm-triton-config"),
        (HPAS, "minilm"),
    ):
        child = cluster.http.get(resource, NS, name)
        assert child is not None
        kubernetes_validate.validate(child, "1.30", strict=True)
    kubernetes_validate.validate(deployment, "1.30", strict=True)
    kubernetes_validate.validate(job, "1.30", strict=True)
    expected = ["BuildStarted", "Created", "BuildSucceeded", "Ready"]
    assert cluster.reasons("minilm", *expected) == expected


# --- failures -------------------------------------------------------------------------------


def test_build_failure_reports_the_builders_error_with_bounded_retries(cluster: Cluster) -> None:
    with cluster.operator(resyncSeconds=1, build={"backoffLimit": 2}):
        cluster.create("minilm")
        [job] = cluster.wait_jobs("minilm", 1)
        assert job["spec"]["backoffLimit"] == 2
        attempts = cluster.jobs.fail(
            job,
            1,
            '{"reason": "BuildFailed", "message": "onnx export failed: Unsupported op aten::foo"}',
        )
        assert attempts == 3  # backoffLimit 2: three pods, then the Job fails
        built = cluster.wait_condition("minilm", "Built", "False", "BuildFailed")
        assert "onnx export failed: Unsupported op aten::foo" in built["message"]
        cluster.wait_condition("minilm", "Ready", "False", "BuildFailed")
        assert cluster.http.model(NS, "minilm")["status"]["phase"] == "Failed"
        cluster.reasons("minilm", "BuildStarted", "BuildFailed")
        warnings = [e for e in cluster.http.events(NS, "minilm") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["BuildFailed"]
        # Several resyncs later: no new Job, no status rewrites, no repeated Events.
        assert quiet_period(cluster, 2.5) == []
        assert len(cluster.http.jobs(NS, "minilm")) == 1
        assert len(cluster.http.events(NS, "minilm")) == 2  # BuildStarted, BuildFailed
        assert cluster.http.get(DEPLOYMENTS, NS, "minilm") is None


def test_gate_failure_keeps_the_old_version_serving(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.ready("minilm")
    before = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert before is not None

    cluster.patch_spec("minilm", {"optimize": {"accuracy": {"min": 0.999}}})
    _, job = cluster.wait_jobs("minilm", 2)
    assert job["metadata"]["name"] == "minilm-build-g2"
    message = json.dumps(
        {
            "reason": "AccuracyBelowThreshold",
            "message": "cosine 0.9950 is below min 0.999",
            "accuracy": 0.995,
        }
    )
    assert cluster.jobs.fail(job, 3, message) == 1  # the pod failure policy: no retry
    built = cluster.wait_condition(
        "minilm", "Built", "False", "AccuracyBelowThreshold", generation=2
    )
    assert "cosine 0.9950 is below min 0.999" in built["message"]
    assert "artifact g1 keeps serving" in built["message"]
    ready = cluster.wait_condition(
        "minilm", "Ready", "False", "AccuracyBelowThreshold", generation=2
    )
    assert "previous artifact g1" in ready["message"]
    cluster.wait_condition("minilm", "Deployed", "True", generation=2)

    after = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    status = cluster.http.model(NS, "minilm")["status"]
    assert status["build"]["generation"] == 1 and status["phase"] == "Failed"
    cluster.reasons("minilm", "AccuracyBelowThreshold")


def test_invalid_spec_bypassing_the_crd_gets_invalid_spec_and_no_children(cluster: Cluster) -> None:
    with cluster.operator(resyncSeconds=1):
        cluster.create(
            "broken", autoscaling={"minReplicas": 4, "maxReplicas": 2}, serving={"maxBatchsize": 8}
        )
        ready = cluster.wait_condition("broken", "Ready", "False", "InvalidSpec")
        assert "spec.serving.maxBatchsize: unknown field" in ready["message"]
        assert "did you mean 'maxBatchSize'" in ready["message"]
        built = cluster.wait_condition("broken", "Built", "False", "InvalidSpec")
        assert built["message"] == ready["message"]
        assert cluster.http.model(NS, "broken")["status"]["phase"] == "Failed"
        assert quiet_period(cluster, 2.5) == []  # resyncs write nothing: no retry storm
        assert cluster.http.jobs(NS, "broken") == []
        for resource in (DEPLOYMENTS, SERVICES, CONFIG_MAPS):
            assert cluster.http.list_objects(resource, NS) == []
        assert cluster.reasons("broken", "InvalidSpec") == ["InvalidSpec"]

        # Fixing the spec recovers without operator help.
        cluster.http.patch(
            MODELS,
            NS,
            "broken",
            {"spec": {"autoscaling": {"minReplicas": 1}, "serving": {"maxBatchsize": None}}},
        )
        cluster.wait_jobs("broken", 1)
        cluster.wait_condition("broken", "Built", "False", "Building", generation=2)


# --- changes ----------------------------------------------------------------------------------


def test_serving_only_change_rolls_pods_without_a_rebuild(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.ready("minilm")
    old = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert old is not None
    old_hash = old["spec"]["template"]["metadata"]["annotations"][naming.CONFIG_HASH]

    cluster.patch_spec(
        "minilm", {"serving": {"maxBatchSize": 64, "maxQueueDelayMicroseconds": 2000}}
    )

    def reconfigured() -> Body | None:
        config = cluster.http.get(CONFIG_MAPS, NS, "minilm-triton-config")
        text = (config or {}).get("data", {}).get(MODEL_STEP_KEY, "")
        return config if "max_batch_size: 64" in text else None

    config = wait_until(reconfigured, what="the new config.pbtxt")
    assert "max_queue_delay_microseconds: 2000" in config["data"][MODEL_STEP_KEY]
    deployment = cluster.wait_object(
        DEPLOYMENTS,
        "minilm",
        lambda d: d["spec"]["template"]["metadata"]["annotations"][naming.CONFIG_HASH] != old_hash,
        "a new config hash in the pod template",
    )
    assert deployment["metadata"]["annotations"][naming.ARTIFACT].endswith("/g1")  # same artifact
    cluster.wait_condition("minilm", "Deployed", "False", "RollingOut", generation=2)
    rollout(cluster.http, NS, "minilm")
    cluster.wait_condition("minilm", "Ready", "True", generation=2)
    assert len(cluster.http.jobs(NS, "minilm")) == 1  # no rebuild
    cluster.reasons("minilm", "Reconfiguring")


def test_source_change_rebuilds_and_switches_only_after_success(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.ready("minilm")
    cluster.patch_spec("minilm", {"optimize": {"quantize": {"mode": "int4-weight-only"}}})
    _, job = cluster.wait_jobs("minilm", 2)
    assert job["metadata"]["annotations"][naming.ARTIFACT].endswith("/ml/minilm/g2")
    cluster.wait_condition("minilm", "Built", "False", "Building", generation=2)
    ready = cluster.wait_condition("minilm", "Ready", "False", "Building", generation=2)
    assert "previous artifact g1" in ready["message"]
    serving = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert serving is not None and serving["metadata"]["annotations"][naming.ARTIFACT].endswith(
        "/g1"
    )

    cluster.succeed(job, accuracy=0.9991)
    cluster.rollout_when("minilm", 2)
    cluster.wait_condition("minilm", "Ready", "True", generation=2)
    status = cluster.http.model(NS, "minilm")["status"]
    assert status["build"]["generation"] == 2 and status["build"]["accuracy"] == 0.9991
    cluster.reasons("minilm", "Deploying")


# --- self-healing -----------------------------------------------------------------------------


def test_children_edited_or_deleted_by_hand_are_restored(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.ready("minilm")
    deployment = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert deployment is not None
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    edited = copy.deepcopy(deployment["spec"]["template"]["spec"]["containers"])
    edited[0]["image"] = "attacker/triton:latest"
    cluster.http.patch(
        DEPLOYMENTS, NS, "minilm", {"spec": {"template": {"spec": {"containers": edited}}}}
    )
    cluster.wait_object(
        DEPLOYMENTS,
        "minilm",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == image,
        "the Triton image restored",
    )

    cluster.http.delete(SERVICES, NS, "minilm")
    wait_until(lambda: cluster.http.get(SERVICES, NS, "minilm"), what="the Service recreated")

    cluster.http.patch(
        CONFIG_MAPS, NS, "minilm-triton-config", {"data": {MODEL_STEP_KEY: "garbage"}}
    )
    cluster.wait_object(
        CONFIG_MAPS,
        "minilm-triton-config",
        lambda c: "max_batch_size: 32" in c["data"][MODEL_STEP_KEY],
        "config.pbtxt restored",
    )

    cluster.http.delete(DEPLOYMENTS, NS, "minilm")
    recreated = wait_until(
        lambda: cluster.http.get(DEPLOYMENTS, NS, "minilm"), what="the Deployment recreated"
    )
    assert recreated["metadata"]["uid"] != deployment["metadata"]["uid"]
    cluster.wait_condition("minilm", "Ready", "False", "RollingOut")
    rollout(cluster.http, NS, "minilm")
    cluster.wait_condition("minilm", "Ready", "True")
    reasons = cluster.reasons("minilm", *["DriftRepaired"] * 2, *["Created"] * 3)
    assert reasons.count("DriftRepaired") == 2  # image and config.pbtxt
    assert reasons.count("Created") == 3  # first time, the Service, the Deployment


def test_delete_removes_owned_children_only(cluster: Cluster, operator: OperatorThread) -> None:
    cluster.ready("minilm")
    labels = naming.labels("minilm", naming.SERVER)
    bystander = cluster.http.create(
        CONFIG_MAPS,
        NS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "notes", "labels": labels},
            "data": {"a": "b"},
        },
    )
    cluster.http.delete(MODELS, NS, "minilm")

    def collected() -> bool:
        children = (
            (DEPLOYMENTS, "minilm"),
            (SERVICES, "minilm"),
            (CONFIG_MAPS, "minilm-triton-config"),
        )
        return all(cluster.http.get(resource, NS, name) is None for resource, name in children)

    wait_until(collected, what="the children garbage-collected")
    assert cluster.http.jobs(NS, "minilm") == []
    assert cluster.http.list_objects(PODS, NS) == []  # the build pods went with their Job
    still = cluster.http.get(CONFIG_MAPS, NS, "notes")
    assert (
        still is not None
        and still["metadata"]["resourceVersion"] == bystander["metadata"]["resourceVersion"]
    )


def test_an_object_it_does_not_own_is_never_touched(
    cluster: Cluster, operator: OperatorThread
) -> None:
    theirs = cluster.http.create(
        DEPLOYMENTS,
        NS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "minilm"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "x", "image": "x"}]},
                },
            },
        },
    )
    cluster.create("minilm")
    [job] = cluster.wait_jobs("minilm", 1)
    cluster.succeed(job)
    deployed = cluster.wait_condition("minilm", "Deployed", "False", "NameConflict")
    assert "Deployment minilm" in deployed["message"]
    cluster.reasons("minilm", "NameConflict")
    assert quiet_period(cluster, 0.5) == []
    after = cluster.http.get(DEPLOYMENTS, NS, "minilm")
    assert (
        after is not None
        and after["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    )
    # Its own Service and ConfigMap are still made; the conflict is only the Deployment.
    assert cluster.http.get(SERVICES, NS, "minilm") is not None


def test_operator_restart_mid_build_creates_nothing_twice(cluster: Cluster) -> None:
    with cluster.operator():
        cluster.create("minilm")
        [job] = cluster.wait_jobs("minilm", 1)
        cluster.wait_condition("minilm", "Built", "False", "Building")
    # While the operator is down, the build finishes.
    cluster.succeed(job)
    with cluster.operator():
        cluster.rollout_when("minilm", 1)
        cluster.wait_condition("minilm", "Ready", "True")
    with cluster.operator():
        # And a third start finds everything in place: nothing to create or patch.
        cluster.wait_condition("minilm", "Ready", "True")
        assert quiet_period(cluster, 0.5) == []
    assert [j["metadata"]["name"] for j in cluster.http.jobs(NS, "minilm")] == ["minilm-build-g1"]
    assert len(cluster.http.list_objects(DEPLOYMENTS, NS)) == 1
    assert cluster.reasons("minilm", "BuildStarted").count("BuildStarted") == 1


def test_scale_subresource_fields_and_fixed_replicas(
    cluster: Cluster, operator: OperatorThread
) -> None:
    cluster.ready("fixed", autoscaling={"enabled": False}, replicas=2)
    deployment = cluster.http.get(DEPLOYMENTS, NS, "fixed")
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    cluster.patch_spec("fixed", {"replicas": 3})  # what `kubectl scale om fixed --replicas 3` does
    cluster.wait_object(DEPLOYMENTS, "fixed", lambda d: d["spec"]["replicas"] == 3, "3 replicas")
    rollout(cluster.http, NS, "fixed")
    cluster.wait_condition("fixed", "Ready", "True", generation=2)
    status = cluster.http.model(NS, "fixed")["status"]
    assert status["replicas"] == 3
    assert status["selector"] == naming.selector_string(naming.server_selector("fixed"))
    assert len(cluster.http.jobs(NS, "fixed")) == 1


def test_of_two_peered_operators_only_the_higher_priority_one_acts(cluster: Cluster) -> None:
    cluster.http.call(
        "POST",
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "optimodel"},
        },
    )
    standby, active = RecordedEvents(), RecordedEvents()

    def peered(priority: int) -> dict[str, Any]:
        # Budget ticks every second: the periodic loop asks the peering (get) who acts.
        peering = {"name": "optimodel", "standalone": False, "priority": priority}
        return {"peering": peering, "budgetIntervalSeconds": 1}

    def priorities() -> set[int]:
        peering = cluster.http.call("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/optimodel")
        return {peer["priority"] for peer in (peering.get("status") or {}).values()}

    high = cluster.operator(active, **peered(20))
    with cluster.operator(standby, **peered(10)):
        high.__enter__()
        try:
            wait_until(lambda: priorities() == {10, 20}, what="both peers")
            cluster.create("first")
            cluster.wait_jobs("first", 1)
            cluster.wait_condition("first", "Built", "False", "Building")
            assert active.reasons("first") == ["BuildStarted"] and standby.events == []
        finally:
            high.stop()  # leaves the peering on the way out
        cluster.create("second")
        cluster.wait_jobs("second", 1)
        wait_until(
            lambda: standby.reasons("second") == ["BuildStarted"], what="the standby takes over"
        )
        # Its periodic loop asks the peering who acts before each round of budget ticks.
        wait_until(lambda: ("kopf.dev", "clusterkopfpeerings", "get") in used_permissions(cluster))
    assert len(cluster.http.jobs(NS, "first")) == 1
    peering = {used for used in used_permissions(cluster) if used[0] == "kopf.dev"}
    granted = {(p.api_group, p.resource, verb) for p in permissions.CLUSTER for verb in p.verbs}
    assert peering == {grant for grant in granted if grant[0] == "kopf.dev"}


def test_namespaced_mode_serves_only_its_namespaces(cluster: Cluster) -> None:
    for namespace in (NS, "other"):
        cluster.http.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
    cluster.http.call(
        "POST",
        f"/apis/kopf.dev/v1/namespaces/{NS}/kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "optimodel"}},
    )
    peering = {"name": "optimodel", "standalone": False, "priority": 1}
    with cluster.operator(namespaces=[NS], peering=peering, budgetIntervalSeconds=1):
        cluster.http.create(MODELS, "other", manifest("elsewhere"))
        cluster.ready("minilm")
        assert cluster.http.jobs("other", "elsewhere") == []
        assert "status" not in cluster.http.model("other", "elsewhere")
        wait_until(lambda: ("kopf.dev", "kopfpeerings", "get") in used_permissions(cluster))
    used = used_permissions(cluster)
    namespaced_only = {
        (p.api_group, p.resource, verb)
        for p in permissions.NAMESPACED + permissions.CLUSTER
        for verb in p.verbs
        if p.resource in ("namespaces", "kopfpeerings")
    }
    assert {u for u in used if u[1] in ("namespaces", "kopfpeerings")} == namespaced_only


# --- what the operator asks of the API ----------------------------------------------------------


def used_permissions(cluster: Cluster) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every request the operator (or Kopf) made."""
    used: set[tuple[str, str, str]] = set()
    for request in cluster.server.requests():
        agent = request.headers.get("User-Agent", "")
        if request.resource is None or request.resource.plural is None:
            continue
        if not agent.startswith(("optimodel-operator", "kopf")):
            continue
        method = request.method.value
        if method == "GET":
            watch = request.params.get("watch", "").lower() in ("true", "1")
            verb = "watch" if watch else ("get" if request.name else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
        plural = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        used.add((str(request.resource.group), plural, verb))
    return used


def test_the_operator_uses_exactly_the_permissions_table(cluster: Cluster) -> None:
    serving = {"networkPolicy": {"enabled": True}, "capacity": {"provider": "karpenter"}}
    with cluster.operator(serving=serving):
        cluster.ready("minilm")
        # A serving pod on a node: the node is read to price the pod.
        cluster.http.call(
            "POST",
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}},
        )
        deployment = cluster.http.get(DEPLOYMENTS, NS, "minilm")
        assert deployment is not None
        template = deployment["spec"]["template"]
        cluster.http.create(
            PODS,
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "minilm-1", "labels": template["metadata"]["labels"]},
                "spec": {**template["spec"], "nodeName": "n1"},
            },
        )
        # The PodDisruptionBudget: restored after a hand edit (a reconcile that also prices
        # the pod, reading its node).
        cluster.http.patch(DISRUPTION_BUDGETS, NS, "minilm", {"spec": {"maxUnavailable": 5}})
        cluster.wait_object(
            DISRUPTION_BUDGETS,
            "minilm",
            lambda b: b["spec"]["maxUnavailable"] == 1,
            "the PodDisruptionBudget restored",
        )
        wait_until(lambda: ("", "nodes", "get") in used_permissions(cluster), what="node read")
        # Spot capacity adds the spot tier's Deployment; back to on-demand deletes it.
        cluster.patch_spec("minilm", {"serving": {"capacity": "spot-with-fallback"}})
        cluster.wait_object(DEPLOYMENTS, "minilm-spot", lambda d: True, "the spot tier")
        cluster.patch_spec("minilm", {"serving": {"capacity": "on-demand"}})
        wait_until(
            lambda: cluster.http.get(DEPLOYMENTS, NS, "minilm-spot") is None,
            what="the spot tier deleted",
        )
        # The NetworkPolicy (serving.networkPolicy): created, restored after a hand edit.
        policy = naming.network_policy_name("minilm")
        cluster.wait_object(NETWORK_POLICIES, policy, lambda p: True, "the NetworkPolicy")
        cluster.http.patch(NETWORK_POLICIES, NS, policy, {"spec": {"ingress": [{}]}})
        cluster.wait_object(
            NETWORK_POLICIES,
            policy,
            lambda p: p["spec"]["ingress"][0].get("ports"),
            "the NetworkPolicy restored",
        )
        cluster.http.delete(SERVICES, NS, "minilm")
        wait_until(lambda: cluster.http.get(SERVICES, NS, "minilm"), what="the Service recreated")
        cluster.http.patch(SERVICES, NS, "minilm", {"spec": {"selector": {"app": "other"}}})
        cluster.wait_object(
            SERVICES,
            "minilm",
            lambda s: "app" not in s["spec"]["selector"],
            "the Service selector restored",
        )
        cluster.patch_spec("minilm", {"serving": {"maxBatchSize": 16}})
        cluster.wait_condition("minilm", "Deployed", "False", "RollingOut", generation=4)
        # The autoscaler's whole life: re-capped, swapped for a KEDA ScaledObject, re-capped,
        # then removed when autoscaling is turned off.
        budget = "optimodel.io/budget-usd-per-hour"
        cluster.http.patch(MODELS, NS, "minilm", {"metadata": {"annotations": {budget: "2.1"}}})
        cluster.wait_object(HPAS, "minilm", lambda h: h["spec"]["maxReplicas"] == 3, "HPA cap 3")
        cluster.patch_spec("minilm", {"autoscaling": {"engine": "keda"}})
        wait_until(lambda: cluster.http.get(HPAS, NS, "minilm") is None, what="the HPA deleted")
        cluster.wait_object(
            SCALED_OBJECTS, "minilm", lambda o: o["spec"]["maxReplicaCount"] == 3, "a ScaledObject"
        )
        cluster.http.patch(MODELS, NS, "minilm", {"metadata": {"annotations": {budget: "1.4"}}})
        cluster.wait_object(
            SCALED_OBJECTS, "minilm", lambda o: o["spec"]["maxReplicaCount"] == 2, "KEDA cap 2"
        )
        cluster.patch_spec("minilm", {"autoscaling": {"enabled": False}})
        wait_until(
            lambda: cluster.http.get(SCALED_OBJECTS, NS, "minilm") is None,
            what="the ScaledObject deleted",
        )
    # The platform turns the NetworkPolicy off: the next operator removes it.
    with cluster.operator():
        wait_until(
            lambda: cluster.http.get(NETWORK_POLICIES, NS, policy) is None,
            what="the NetworkPolicy deleted",
        )
    table = {
        (p.api_group, p.resource, verb)
        for p in permissions.NAMESPACED + permissions.CLUSTER
        for verb in p.verbs
    }
    used = used_permissions(cluster)
    assert used <= table, f"used but not granted: {sorted(used - table)}"
    # Granted but not exercised here (cluster-wide, standalone): peering and namespace
    # watching, checked by the peering and namespaced-mode tests. Everything else is used.
    unexercised = {
        (group, resource, verb)
        for group, resource in (
            ("kopf.dev", "kopfpeerings"),
            ("kopf.dev", "clusterkopfpeerings"),
            ("", "namespaces"),
        )
        for verb in ("get", "list", "watch", "patch")
        if (group, resource, verb) in table
    }
    assert table - used == unexercised


# --- metrics ------------------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_count_reconciles_and_builds(cluster: Cluster, operator: OperatorThread) -> None:
    before = {
        "ok": sample("optimodel_reconciles_total", result="ok"),
        "started": sample("optimodel_builds_started_total"),
        "succeeded": sample("optimodel_builds_succeeded_total"),
        "failed": sample("optimodel_builds_failed_total", reason="AccuracyBelowThreshold"),
        "timed": sample("optimodel_build_duration_seconds_count"),
    }
    cluster.ready("minilm")
    cluster.patch_spec("minilm", {"optimize": {"accuracy": {"min": 0.999}}})
    _, job = cluster.wait_jobs("minilm", 2)
    cluster.jobs.fail(job, 3, json.dumps({"reason": "AccuracyBelowThreshold", "message": "low"}))
    cluster.wait_condition("minilm", "Built", "False", "AccuracyBelowThreshold", generation=2)
    assert sample("optimodel_builds_started_total") - before["started"] == 2
    assert sample("optimodel_builds_succeeded_total") - before["succeeded"] == 1
    assert sample("optimodel_build_duration_seconds_count") - before["timed"] == 1
    failed = sample("optimodel_builds_failed_total", reason="AccuracyBelowThreshold")
    assert failed - before["failed"] == 1
    assert sample("optimodel_reconciles_total", result="ok") > before["ok"]
    assert sample("optimodel_models", phase="Failed") == 1

    port = serve_metrics(0, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "optimodel_reconcile_duration_seconds_bucket" in text
    assert 'optimodel_builds_failed_total{reason="AccuracyBelowThreshold"}' in text
