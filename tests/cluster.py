"""Harness of the operator's end-to-end tests and benchmarks on the API emulator.

- `KubeHttp`: a plain-HTTP JSON client (independent of the operator's own client);
- `JobController` / `rollout`: the Job and Deployment controllers, played by patching
  /status and creating the pods a Job would run (with the builder's termination message);
- `OperatorThread`: the real operator (Kopf + handlers) in its own thread and event loop;
- `wait_until`: the only way tests wait: a bounded poll of a condition.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from kubernetes import client as k8s

from optimodel.operator import naming
from optimodel.operator.events import EventSink
from optimodel.operator.main import run_operator
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import ModelEvent

Body = dict[str, Any]
T = TypeVar("T")

TEST_USER_AGENT = "optimodel-tests"
MODELS = ("optimodel.io/v1alpha1", "optimizedmodels")
JOBS = ("batch/v1", "jobs")
PODS = ("v1", "pods")
DEPLOYMENTS = ("apps/v1", "deployments")
SERVICES = ("v1", "services")
CONFIG_MAPS = ("v1", "configmaps")
HPAS = ("autoscaling/v2", "horizontalpodautoscalers")
SCALED_OBJECTS = ("keda.sh/v1alpha1", "scaledobjects")
NETWORK_POLICIES = ("networking.k8s.io/v1", "networkpolicies")
DISRUPTION_BUDGETS = ("policy/v1", "poddisruptionbudgets")
EVENTS = ("v1", "events")
Resource = tuple[str, str]


class HttpError(Exception):
    def __init__(self, status: int, body: Body) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body.get('message', body)}")


def wait_until(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


class KubeHttp:
    """Just enough of the Kubernetes REST API, over urllib, for tests."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _path(
        self, resource: Resource, namespace: str | None, name: str | None = None, sub: str = ""
    ) -> str:
        api_version, plural = resource
        root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        path = root + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
        if name:
            path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
        return path

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Body:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": content_type, "User-Agent": TEST_USER_AGENT}
        request = urllib.request.Request(url, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            raise HttpError(error.code, json.loads(raw) if raw else {}) from None
        answer: Body = json.loads(payload) if payload else {}
        return answer

    def get(self, resource: Resource, namespace: str, name: str) -> Body | None:
        try:
            return self.call("GET", self._path(resource, namespace, name))
        except HttpError as error:
            if error.status == 404:
                return None
            raise

    def list_objects(
        self, resource: Resource, namespace: str | None = None, labels: str = ""
    ) -> list[Body]:
        query = {"labelSelector": labels} if labels else None
        items = self.call("GET", self._path(resource, namespace), query=query)["items"]
        return list(items)

    def create(self, resource: Resource, namespace: str, body: Body) -> Body:
        return self.call("POST", self._path(resource, namespace), body)

    def patch(
        self, resource: Resource, namespace: str, name: str, patch: Any, sub: str = ""
    ) -> Body:
        return self.call(
            "PATCH",
            self._path(resource, namespace, name, sub),
            patch,
            "application/merge-patch+json",
        )

    def delete(self, resource: Resource, namespace: str, name: str) -> Body:
        return self.call("DELETE", self._path(resource, namespace, name))

    # Shortcuts for the model under test.

    def model(self, namespace: str, name: str) -> Body:
        found = self.get(MODELS, namespace, name)
        assert found is not None, f"OptimizedModel {namespace}/{name} is gone"
        return found

    def condition(self, namespace: str, name: str, kind: str) -> Body | None:
        status = self.model(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)

    def events(self, namespace: str, name: str) -> list[Body]:
        return [
            event
            for event in self.list_objects(EVENTS, namespace)
            if event.get("involvedObject", {}).get("name") == name
        ]

    def jobs(self, namespace: str, model: str) -> list[Body]:
        return self.list_objects(JOBS, namespace, f"{naming.MODEL}={model}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobController:
    """Plays the Job controller and kubelet for builder Jobs: pods, exit codes, messages."""

    def __init__(self, http: KubeHttp) -> None:
        self.http = http

    def _builder_is_init_container(self, job: Body) -> bool:
        spec = job["spec"]["template"]["spec"]
        return any(c["name"] == naming.BUILDER_CONTAINER for c in spec.get("initContainers", []))

    def _pod(self, job: Body, attempt: int, exit_code: int, message: str) -> Body:
        namespace = job["metadata"]["namespace"]
        name = f"{job['metadata']['name']}-{attempt}"
        pod = self.http.create(
            PODS,
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {
                        naming.JOB_NAME: job["metadata"]["name"],
                        "batch.kubernetes.io/job-name": job["metadata"]["name"],
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job["metadata"]["name"],
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": job["spec"]["template"]["spec"],
            },
        )
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        builder = {"name": naming.BUILDER_CONTAINER, "state": {"terminated": terminated}}
        if self._builder_is_init_container(job):
            upload_state: Body = (
                {"terminated": {**terminated, "message": "", "reason": "Completed"}}
                if exit_code == 0
                else {"waiting": {"reason": "PodInitializing"}}
            )
            statuses = {
                "initContainerStatuses": [builder],
                "containerStatuses": [{"name": "upload", "state": upload_state}],
            }
        else:
            statuses = {"containerStatuses": [builder]}
        phase = "Succeeded" if exit_code == 0 else "Failed"
        return self.http.patch(
            PODS,
            namespace,
            pod["metadata"]["name"],
            {"status": {"phase": phase, **statuses}},
            "status",
        )

    def start(self, job: Body) -> None:
        self.http.patch(
            JOBS,
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {"status": {"active": 1, "startTime": _now()}},
            "status",
        )

    def succeed(self, job: Body, report: Body) -> None:
        """The builder exits 0 with its report as the termination message."""
        message = json.dumps({"reason": "Built", "report": report})
        self._pod(job, 0, 0, message)
        self.http.patch(
            JOBS,
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {
                "status": {
                    "active": 0,
                    "succeeded": 1,
                    "startTime": _now(),
                    "completionTime": _now(),
                    "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True"},
                        {"type": "Complete", "status": "True", "lastTransitionTime": _now()},
                    ],
                }
            },
            "status",
        )

    def fail(self, job: Body, exit_code: int, message: str) -> int:
        """Fail like the Job controller would: pods retried up to backoffLimit unless the pod
        failure policy fails the Job on this exit code. Returns the pods run."""
        spec = job["spec"]
        fail_now = any(
            rule["action"] == "FailJob"
            and exit_code in rule.get("onExitCodes", {}).get("values", [])
            for rule in spec.get("podFailurePolicy", {}).get("rules", [])
        )
        attempts = 1 if fail_now else int(spec.get("backoffLimit", 6)) + 1
        for attempt in range(attempts):
            self._pod(job, attempt, exit_code, message)
        reason = "PodFailurePolicy" if fail_now else "BackoffLimitExceeded"
        self.http.patch(
            JOBS,
            job["metadata"]["namespace"],
            job["metadata"]["name"],
            {
                "status": {
                    "active": 0,
                    "failed": attempts,
                    "conditions": [
                        {"type": "FailureTarget", "status": "True", "reason": reason},
                        {
                            "type": "Failed",
                            "status": "True",
                            "reason": reason,
                            "message": f"Job has reached the specified {reason}",
                        },
                    ],
                }
            },
            "status",
        )
        return attempts


def rollout(http: KubeHttp, namespace: str, name: str) -> Body:
    """Play the Deployment controller: the current template runs on all replicas, ready."""
    deployment = http.get(DEPLOYMENTS, namespace, name)
    assert deployment is not None, f"Deployment {namespace}/{name} does not exist"
    replicas = int(deployment["spec"].get("replicas", 1))
    return http.patch(
        DEPLOYMENTS,
        namespace,
        name,
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }
        },
        "status",
    )


def built_report(spec_hash: str, accuracy: float = 0.995) -> Body:
    """A builder report as the termination message carries it."""
    return {
        "specHash": spec_hash,
        "sizeBytes": 23_000_000,
        "originalSizeBytes": 90_000_000,
        "accuracyMetric": "cosine",
        "accuracy": accuracy,
        "latencyP50Ms": 4.2,
        "throughput": 410.0,
        "signature": {
            "inputs": [
                {"name": "input_ids", "dataType": "TYPE_INT64", "dims": [-1]},
                {"name": "attention_mask", "dataType": "TYPE_INT64", "dims": [-1]},
            ],
            "outputs": [{"name": "embeddings", "dataType": "TYPE_FP32", "dims": [384]}],
        },
    }


class RecordedEvents:
    """An EventSink keeping the Events one operator posted (thread-safe enough: appends)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ModelEvent]] = []

    def post(self, model: Mapping[str, Any], event: ModelEvent) -> None:
        self.events.append((str(model["metadata"]["name"]), event))

    def reasons(self, name: str) -> list[str]:
        return [event.reason for model, event in self.events if model == name]


class OperatorThread:
    """The operator, as `optimodel operator` runs it, in a thread against `url`."""

    def __init__(
        self, url: str, settings: OperatorSettings, events: EventSink | None = None
    ) -> None:
        self.url = url
        self.settings = settings
        self.events = events
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def configuration(self) -> k8s.Configuration:
        configuration = k8s.Configuration()
        configuration.host = self.url
        return configuration

    def _run(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    self.settings,
                    self.configuration(),
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    events=self.events,
                )
            )
        except BaseException as error:
            self._failure = error
            self._ready.set()

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._failure is not None:
            raise RuntimeError(f"the operator did not start: {self._failure!r}")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop within 30 s")
        if self._failure is not None:
            raise RuntimeError(f"the operator failed: {self._failure!r}") from self._failure
