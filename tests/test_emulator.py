"""The API emulator behaves like the API server where the operator and Kopf depend on it.

Exercised through plain HTTP and through the real `kubernetes` client."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from tests.cluster import CONFIG_MAPS, DEPLOYMENTS, MODELS, Body, HttpError, KubeHttp, wait_until
from tests.emulator import EmulatorServer

NS = "ns"


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as running:
        yield running


@pytest.fixture
def http(server: EmulatorServer) -> KubeHttp:
    return KubeHttp(server.url)


def model(name: str = "m") -> Body:
    return {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name, "labels": {"team": "search"}},
        "spec": {"x": 1},
        "status": {"phase": "Ready"},
    }


def config_map(name: str, owner: Body | None = None, **labels: str) -> Body:
    meta: Body = {"name": name, "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}


def test_create_fills_in_server_fields_and_drops_status(http: KubeHttp) -> None:
    created = http.create(MODELS, NS, model())
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["generation"] == 1
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert "status" not in created  # the status subresource is written separately
    with pytest.raises(HttpError) as taken:
        http.create(MODELS, NS, model())
    assert taken.value.status == 409 and taken.value.body["reason"] == "AlreadyExists"
    named = http.call(
        "POST",
        "/api/v1/namespaces/ns/events",
        {"metadata": {"generateName": "kopf-event-"}, "reason": "X"},
    )
    assert named["metadata"]["name"].startswith("kopf-event-")


def test_status_and_spec_are_written_separately(http: KubeHttp) -> None:
    created = http.create(MODELS, NS, model())
    status = http.patch(
        MODELS, NS, "m", {"status": {"phase": "Building"}, "spec": {"x": 9}}, "status"
    )
    assert status["status"] == {"phase": "Building"} and status["spec"] == {"x": 1}
    assert status["metadata"]["generation"] == 1  # status writes never bump the generation
    annotated = http.patch(
        MODELS, NS, "m", {"metadata": {"annotations": {"a": "b"}}, "status": {"phase": "x"}}
    )
    assert annotated["metadata"]["generation"] == 1 and annotated["status"] == {"phase": "Building"}
    spec = http.patch(MODELS, NS, "m", {"spec": {"x": 2}})
    assert spec["metadata"]["generation"] == 2
    same = http.patch(MODELS, NS, "m", {"spec": {"x": 2}})
    assert same["metadata"]["resourceVersion"] == spec["metadata"]["resourceVersion"]
    assert int(spec["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_stale_writes_conflict(http: KubeHttp) -> None:
    created = http.create(MODELS, NS, model())
    old = created["metadata"]["resourceVersion"]
    http.patch(MODELS, NS, "m", {"spec": {"x": 2}})
    with pytest.raises(HttpError) as stale:
        http.patch(MODELS, NS, "m", {"metadata": {"resourceVersion": old}, "spec": {"x": 3}})
    assert stale.value.status == 409
    test_op = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": old},
        {"op": "add", "path": "/spec/y", "value": 1},
    ]
    with pytest.raises(HttpError) as failed:
        http.call(
            "PATCH",
            "/apis/optimodel.io/v1alpha1/namespaces/ns/optimizedmodels/m",
            test_op,
            "application/json-patch+json",
        )
    assert failed.value.status == 422  # what Kopf expects from a failed JSON-patch test


def test_discovery_reports_the_core_group_version(http: KubeHttp) -> None:
    assert http.call("GET", "/api/v1")["groupVersion"] == "v1"
    resources = {r["name"]: r for r in http.call("GET", "/apis/optimodel.io/v1alpha1")["resources"]}
    assert resources["optimizedmodels"]["namespaced"] is True
    assert {"optimizedmodels/status", "optimizedmodels/scale"} <= set(resources)


def test_the_kubernetes_client_lists_by_label_and_watches(
    server: EmulatorServer, http: KubeHttp
) -> None:
    configuration = k8s.Configuration()
    configuration.host = server.url
    with k8s.ApiClient(configuration) as api_client:
        core = k8s.CoreV1Api(api_client)
        for name, team in (("one", "search"), ("two", "ads")):
            meta = k8s.V1ObjectMeta(name=name, labels={"team": team})
            core.create_namespaced_config_map(NS, k8s.V1ConfigMap(metadata=meta, data={"a": "b"}))
        listed = core.list_namespaced_config_map(NS, label_selector="team=search")
        assert [item.metadata.name for item in listed.items if item.metadata] == ["one"]
        assert listed.metadata is not None

        def later() -> None:
            time.sleep(0.2)
            http.patch(CONFIG_MAPS, NS, "one", {"data": {"a": "c"}})

        threading.Thread(target=later).start()
        events = []
        # The client sends watch=True; replay starts after the listed resourceVersion.
        stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_config_map,
            NS,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=2,
        )
        for event in stream:
            events.append((event["type"], event["object"].metadata.name))
            if event["type"] == "MODIFIED":
                break
    assert events == [("MODIFIED", "one")]


def test_watch_without_a_version_replays_the_current_state_and_times_out(
    server: EmulatorServer, http: KubeHttp
) -> None:
    http.create(MODELS, NS, model("a"))
    url = f"{server.url}/apis/optimodel.io/v1alpha1/optimizedmodels?watch=true&timeoutSeconds=1"
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=5) as stream:
        lines = [json.loads(line) for line in stream.read().splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "a")]
    assert 0.9 < time.monotonic() - started < 4


def test_deleting_an_owner_collects_its_dependents(http: KubeHttp) -> None:
    owner = http.create(MODELS, NS, model())
    http.create(CONFIG_MAPS, NS, config_map("owned", owner))
    http.create(CONFIG_MAPS, NS, config_map("free"))
    http.delete(MODELS, NS, "m")
    assert http.get(CONFIG_MAPS, NS, "owned") is None
    assert http.get(CONFIG_MAPS, NS, "free") is not None


def test_an_object_created_for_a_deleted_owner_is_collected(http: KubeHttp) -> None:
    owner = http.create(MODELS, NS, model())
    http.delete(MODELS, NS, "m")
    http.create(CONFIG_MAPS, NS, config_map("late", owner))
    wait_until(lambda: http.get(CONFIG_MAPS, NS, "late") is None, 2, "the orphan collected")


def test_unknown_objects_and_resources_are_404(http: KubeHttp) -> None:
    assert http.get(DEPLOYMENTS, NS, "nope") is None
    with pytest.raises(HttpError) as unknown:
        http.call("GET", "/apis/example.com/v1/namespaces/ns/widgets")
    assert unknown.value.status == 404
