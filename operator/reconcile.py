"""Reconcile one OptimizedModel: read, decide (planning.py, pure), write, record status.

Every handler ends up here, for whichever event woke it; one reconcile per model runs at a
time. Writes carry the resourceVersion they were decided on, so a decision made on a stale
read fails with 409 and is retried from a fresh read instead of overwriting newer state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from optimodel.operator import metrics, naming
from optimodel.operator.builds import job_state
from optimodel.operator.children import ChildChange, plan_children, restore_patch
from optimodel.operator.events import EventSink
from optimodel.operator.kube import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    JOBS,
    OPTIMIZED_MODELS,
    PODS,
    SERVICES,
    Body,
    KubeApi,
    KubeError,
    resource_of,
)
from optimodel.operator.planning import (
    BuildDecision,
    ModelEvent,
    build_key_of,
    change_events,
    decide_build,
    job_for_key,
    next_status,
)
from optimodel.operator.render import ServingInputs, render_children
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import parse_status, status_document

ModelKey = tuple[str, str]
MAX_ATTEMPTS = 5

logger = logging.getLogger("optimodel.operator")


class ReconcileConflictError(Exception):
    """The model kept changing under the reconcile; it is retried later."""


def merge_patch(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (null removes a key; lists replace)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch


@dataclass
class _ModelLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started: int = 0


@dataclass
class Reconciler:
    """Reconciles models one at a time each; shared by all handlers through Kopf's memo."""

    api: KubeApi
    settings: OperatorSettings
    events: EventSink
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _locks: dict[ModelKey, _ModelLock] = field(default_factory=dict)
    _phases: dict[ModelKey, str] = field(default_factory=dict)

    async def reconcile(self, namespace: str, name: str, *, coalesce: bool = False) -> None:
        """Bring one model to its desired state.

        With `coalesce`, a call that waited while another reconcile of the same model started
        returns at once: that reconcile read the world after this call's event happened."""
        state = self._locks.setdefault((namespace, name), _ModelLock())
        seen = state.started
        async with state.lock:
            if coalesce and state.started > seen:
                return
            state.started += 1
            started = time.perf_counter()
            try:
                await self._reconcile_with_retries(namespace, name)
            except Exception:
                metrics.RECONCILES.labels("error").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def forget(self, namespace: str, name: str) -> None:
        """Drop per-model state after the model is deleted."""
        self._locks.pop((namespace, name), None)
        if self._phases.pop((namespace, name), None) is not None:
            self._publish_phases()

    async def _reconcile_with_retries(self, namespace: str, name: str) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            try:
                await self._reconcile_once(namespace, name)
            except KubeError as error:
                if not error.conflict:
                    raise
                metrics.RECONCILES.labels("conflict").inc()
                logger.debug("retrying %s/%s after a conflict: %s", namespace, name, error)
                continue
            metrics.RECONCILES.labels("ok").inc()
            return
        raise ReconcileConflictError(
            f"{namespace}/{name} changed during {MAX_ATTEMPTS} reconcile attempts in a row"
        )

    async def _read_build(
        self, body: Body, namespace: str, name: str
    ) -> tuple[list[Body], list[Body]]:
        """The model's Jobs, and the pods of the current key's Job once it finished."""
        jobs = await self.api.list(JOBS, namespace, {naming.MODEL: name})
        key = build_key_of(body, self.settings)
        job = job_for_key(jobs, key, body["metadata"]["uid"]) if key else None
        pods: list[Body] = []
        if job is not None and job_state(job) != "running":
            pods = await self.api.list(PODS, namespace, {naming.JOB_NAME: job["metadata"]["name"]})
        return jobs, pods

    async def _reconcile_once(self, namespace: str, name: str) -> None:
        body = await self.api.get(OPTIMIZED_MODELS, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        now = self.clock()
        previous = parse_status(body.get("status"))
        jobs, pods = await self._read_build(body, namespace, name)
        decision = decide_build(body, previous, jobs, pods, self.settings)
        if decision.job_to_create is not None:
            await self.api.create(decision.job_to_create)
            metrics.BUILDS_STARTED.inc()

        desired = self._render(decision, body, now)
        actual = await self._read_children(namespace, name, desired)
        changes = plan_children(
            desired,
            actual,
            decision.model.uid,
            scaled_elsewhere=decision.spec is not None and decision.spec.autoscaling.enabled,
        )
        after = dict(actual)
        for change in changes:
            result = await self._apply(change, namespace)
            if result is not None:
                after[(change.kind, change.name)] = result
        for event in change_events(decision, changes):
            self.events.post(body, event)

        outcome = next_status(
            decision=decision,
            previous=previous,
            changes=changes,
            deployment=after.get(("Deployment", naming.deployment_name(name))),
            service=after.get(("Service", naming.service_name(name))),
            now=now,
        )
        if outcome.write:
            patch = merge_patch(body.get("status") or {}, status_document(outcome.status))
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": patch,
            }
            try:
                await self.api.patch(OPTIMIZED_MODELS, namespace, name, patch, subresource="status")
            except KubeError as error:
                if error.not_found:
                    return  # deleted meanwhile: its children go with it
                raise
        for event in outcome.events:
            self.events.post(body, event)
        self._count_builds(decision, outcome.events)
        self._phases[(namespace, name)] = outcome.status.phase or "Pending"
        self._publish_phases()

    def _render(self, decision: BuildDecision, body: Body, now: datetime) -> list[Body]:
        if decision.invalid or decision.serving is None:
            return []
        assert decision.spec is not None and decision.store is not None
        serving_store = decision.store
        inputs = ServingInputs(
            model=decision.model,
            spec=decision.spec,
            build=decision.serving,
            store=serving_store,
            settings=self.settings,
            now=now,
            annotations=dict((body.get("metadata") or {}).get("annotations") or {}),
            status=parse_status(body.get("status")),
        )
        return render_children(inputs)

    async def _read_children(
        self, namespace: str, name: str, desired: list[Body]
    ) -> dict[tuple[str, str], Body | None]:
        wanted = {(str(d["kind"]), str(d["metadata"]["name"])): resource_of(d) for d in desired}
        # Deployment and Service are read even when nothing is rendered (invalid spec, old
        # artifact) to report what is being served.
        wanted.setdefault(("Deployment", naming.deployment_name(name)), DEPLOYMENTS)
        wanted.setdefault(("Service", naming.service_name(name)), SERVICES)
        wanted.setdefault(("ConfigMap", naming.config_map_name(name)), CONFIG_MAPS)
        keys = list(wanted)
        found = await asyncio.gather(
            *(self.api.get(wanted[key], namespace, key[1]) for key in keys)
        )
        return dict(zip(keys, found, strict=True))

    async def _apply(self, change: ChildChange, namespace: str) -> Body | None:
        if change.action == "create":
            return await self.api.create(dict(change.desired))
        if change.action in ("update", "restore"):
            assert change.actual is not None
            patch = restore_patch(change)
            patch["metadata"]["resourceVersion"] = change.actual["metadata"]["resourceVersion"]
            resource = resource_of(change.desired)
            if change.action == "restore":
                metrics.DRIFT_REPAIRS.labels(change.kind).inc()
            return await self.api.patch(resource, namespace, change.name, patch)
        return None

    def _count_builds(self, decision: BuildDecision, events: tuple[ModelEvent, ...]) -> None:
        outcome = decision.outcome
        if outcome is None:
            return
        for event in events:
            if event.reason == "BuildSucceeded" and outcome.state == "succeeded":
                metrics.BUILDS_SUCCEEDED.inc()
                if outcome.seconds is not None:
                    metrics.BUILD_SECONDS.observe(outcome.seconds)
            elif event.type == "Warning" and event.reason == outcome.reason:
                metrics.BUILDS_FAILED.labels(outcome.reason).inc()

    def _publish_phases(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase in ("Pending", "Building", "Deploying", "Ready", "Failed"):
            metrics.MODELS.labels(phase).set(counts.get(phase, 0))
