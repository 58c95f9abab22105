"""Reconcile one OptimizedModel: read, decide (planning.py, budget.py: pure), write, record
status.

Every handler ends up here, for whichever event woke it, the periodic loop's budget ticks
and resyncs included (periodic.py); one reconcile per model runs at a time, so a tick and the
event handlers never race on the status. Writes carry the resourceVersion they were decided
on, so a decision made on a stale read fails with 409 and is retried from a fresh read
instead of overwriting newer state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from optimodel.operator import autoscaling, cost, metrics, naming
from optimodel.operator.api import OptimizedModelStatus
from optimodel.operator.budget import (
    BudgetOutcome,
    SpendTick,
    assess_model_budget,
    lookahead_for,
)
from optimodel.operator.builds import job_state
from optimodel.operator.capacity import (
    ServingSpendRate,
    price_serving_pods,
    replica_split,
    spot_deployment_name,
)
from optimodel.operator.children import (
    ChildChange,
    controlled_by,
    plan_children,
    plan_removals,
    restore_patch,
)
from optimodel.operator.cost import parse_price_override
from optimodel.operator.events import EventSink
from optimodel.operator.hardware_choice import ModelHardware, model_hardware, record_hardware
from optimodel.operator.kube import (
    CONFIG_MAPS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    JOBS,
    NETWORK_POLICIES,
    NODES,
    OPTIMIZED_MODELS,
    POD_DISRUPTION_BUDGETS,
    PODS,
    SCALED_OBJECTS,
    SERVICES,
    Body,
    KubeApi,
    KubeError,
    Resource,
    resource_of,
)
from optimodel.operator.planning import (
    BuildDecision,
    build_key_of,
    change_events,
    current_build_job,
    decide_build,
    next_status,
    retry_of,
)
from optimodel.operator.render import ServingInputs, autoscaled_deployment, render_children
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import ModelEvent, parse_status, set_condition, status_document

ModelKey = tuple[str, str]
ChildKey = tuple[str, str]
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
    # Budget ticks that found nothing running and wrote nothing (see budget.py).
    _idle_since: dict[ModelKey, datetime] = field(default_factory=dict)
    # Models told once that their autoscaler's API is not served (KEDA not installed).
    _unserved_autoscalers: set[ModelKey] = field(default_factory=set)
    # Told once that the RBAC lacks nodes get (pods are then priced on-demand).
    _nodes_forbidden: bool = False

    async def reconcile(
        self,
        namespace: str,
        name: str,
        *,
        coalesce: bool = False,
        tick: SpendTick | None = None,
    ) -> bool:
        """Bring one model to its desired state; False if the model does not exist.

        With `coalesce`, a call that waited while another reconcile of the same model started
        returns at once: that reconcile read the world after this call's event happened.
        A `tick` (the budget timer) also accounts spend up to now."""
        state = self._locks.setdefault((namespace, name), _ModelLock())
        seen = state.started
        async with state.lock:
            if coalesce and state.started > seen:
                return True
            state.started += 1
            started = time.perf_counter()
            try:
                return await self._reconcile_with_retries(namespace, name, tick)
            except Exception:
                metrics.RECONCILES.labels("error").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    def forget(self, namespace: str, name: str) -> None:
        """Drop per-model state (and its cost metrics) after the model is deleted."""
        key = (namespace, name)
        self._locks.pop(key, None)
        self._idle_since.pop(key, None)
        self._unserved_autoscalers.discard(key)
        metrics.COST.forget(namespace, name)
        if self._phases.pop(key, None) is not None:
            self._publish_phases()

    async def _reconcile_with_retries(
        self, namespace: str, name: str, tick: SpendTick | None
    ) -> bool:
        for _attempt in range(MAX_ATTEMPTS):
            try:
                exists = await self._reconcile_once(namespace, name, tick)
            except KubeError as error:
                if not error.conflict:
                    raise
                metrics.RECONCILES.labels("conflict").inc()
                logger.debug("retrying %s/%s after a conflict: %s", namespace, name, error)
                continue
            metrics.RECONCILES.labels("ok").inc()
            return exists
        raise ReconcileConflictError(
            f"{namespace}/{name} changed during {MAX_ATTEMPTS} reconcile attempts in a row"
        )

    async def _read_build(
        self, body: Body, namespace: str, name: str
    ) -> tuple[list[Body], list[Body]]:
        """The model's Jobs, and the pods of the current key's Job once it finished."""
        jobs = await self.api.list(JOBS, namespace, {naming.MODEL: name})
        key = build_key_of(body, self.settings)
        uid = body["metadata"]["uid"]
        job = current_build_job(jobs, key, uid, retry_of(body)) if key else None
        pods: list[Body] = []
        if job is not None and job_state(job) != "running":
            pods = await self.api.list(PODS, namespace, {naming.JOB_NAME: job["metadata"]["name"]})
        return jobs, pods

    async def _reconcile_once(self, namespace: str, name: str, tick: SpendTick | None) -> bool:
        """One read-decide-write round; False if the model does not exist."""
        body = await self.api.get(OPTIMIZED_MODELS, namespace, name)
        if body is None:
            return False
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return True
        now = self.clock()
        previous = parse_status(body.get("status"))
        jobs, pods = await self._read_build(body, namespace, name)
        decision = decide_build(body, previous, jobs, pods, self.settings)
        if decision.job_to_create is not None:
            await self.api.create(decision.job_to_create)
            metrics.BUILDS_STARTED.inc()

        hardware = self._hardware(decision, body)
        if hardware is not None:
            # Budget, prices and node selection all use the type the model is served on.
            decision = dataclasses.replace(decision, spec=hardware.spec)
        rendering = not decision.invalid and decision.serving is not None
        actual = await self._read_children(namespace, name, autoscalers=rendering)
        deployments = [
            found
            for key in _deployment_keys(name)
            if (found := actual.get(key)) is not None and controlled_by(found, decision.model.uid)
        ]
        budget = await self._assess_budget(decision, body, previous, deployments, now, tick)
        desired = self._render(decision, body, now, budget)
        changes = plan_children(
            desired,
            actual,
            decision.model.uid,
            scaled_elsewhere=decision.spec is not None and decision.spec.autoscaling.enabled,
            autoscaled=None
            if decision.spec is None
            else autoscaled_deployment(decision.spec, name),
        )
        changes = _without_stray_autoscaler(changes)
        if desired:
            removable = [(r.kind, naming.autoscaler_name(name)) for r in AUTOSCALER_RESOURCES]
            removable.append((NETWORK_POLICIES.kind, naming.network_policy_name(name)))
            # The spot tier, after capacity went back to on-demand.
            removable.append((DEPLOYMENTS.kind, spot_deployment_name(name)))
            changes += plan_removals(desired, actual, decision.model.uid, removable)
        after = dict(actual)
        for change in changes:
            result = await self._apply(change, namespace, name)
            if change.action == "delete":
                after[(change.kind, change.name)] = None
            elif result is not None:
                after[(change.kind, change.name)] = result
        for event in change_events(decision, changes):
            self.events.post(body, event)
        recapped = await self._recap(decision, budget, changes, after, previous, namespace)

        base = previous
        if budget is not None and budget.cost_status is not None:
            base = previous.model_copy(update={"cost": budget.cost_status})
        outcome = next_status(
            decision=decision,
            previous=base,
            changes=changes,
            deployment=after.get(("Deployment", naming.deployment_name(name))),
            service=after.get(("Service", naming.service_name(name))),
            now=now,
            spot_deployment=after.get(("Deployment", spot_deployment_name(name))),
        )
        status = outcome.status
        if budget is not None:
            conditions = set_condition(
                status.conditions, budget.condition, decision.generation, now
            )
            status = status.model_copy(update={"conditions": conditions})
        status, hardware_events = record_hardware(status, hardware, decision.generation, now)
        if status != previous:
            patch = merge_patch(body.get("status") or {}, status_document(status))
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": patch,
            }
            try:
                await self.api.patch(OPTIMIZED_MODELS, namespace, name, patch, subresource="status")
            except KubeError as error:
                if error.not_found:
                    return False  # deleted meanwhile: its children go with it
                raise
        budget_events = budget.events if budget is not None else ()
        for event in (*outcome.events, *hardware_events, *recapped, *budget_events):
            self.events.post(body, event)
        self._count_builds(decision, outcome.events)
        self._record_budget(namespace, name, budget, status)
        self._phases[(namespace, name)] = status.phase or "Pending"
        self._publish_phases()
        return True

    def _hardware(self, decision: BuildDecision, body: Body) -> ModelHardware | None:
        """The hardware choice for a valid spec (None: nothing to choose for)."""
        if decision.invalid or decision.spec is None:
            return None
        return model_hardware(
            decision.spec,
            decision.serving,
            model=decision.model.name,
            namespace=decision.model.namespace,
            annotations=dict((body.get("metadata") or {}).get("annotations") or {}),
            settings=self.settings,
        )

    async def _node(self, name: str) -> Body | None:
        """A serving pod's node; None when it is gone or not readable (an older chart's
        RBAC without nodes: its pods are then priced on-demand, and the model still
        reconciles)."""
        try:
            return await self.api.get(NODES, "", name)
        except KubeError as error:
            if error.status != 403:
                raise
            if not self._nodes_forbidden:
                self._nodes_forbidden = True
                logger.warning("nodes are not readable (%s): pods are priced on-demand", error)
            return None

    async def _price_pods(
        self, decision: BuildDecision, annotations: Mapping[str, str], replicas: int
    ) -> ServingSpendRate | None:
        """The model's serving pods, each priced by its node's labels (None: no replicas, or
        a price annotation that the budget reports as unusable)."""
        assert decision.spec is not None
        if not replicas:
            return None
        try:
            override = parse_price_override(annotations)
        except ValueError:
            return None  # the budget says why (InvalidBudgetAnnotation)
        model = decision.model
        pods = await self.api.list(PODS, model.namespace, naming.server_selector(model.name))
        names = sorted(
            {str(node) for pod in pods if (node := (pod.get("spec") or {}).get("nodeName"))}
        )
        found = await asyncio.gather(*(self._node(node) for node in names))
        serving = self.settings.serving
        return price_serving_pods(
            pods=pods,
            nodes=dict(zip(names, found, strict=True)),
            replicas=replicas,
            serving=decision.spec.serving,
            catalog=self.settings.price_catalog,
            provider=serving.capacity.resolved(),
            gpu_node_label=serving.gpu_node_label,
            annotation_override=override,
            gpu_label_values=serving.gpu_node_label_values,
        )

    async def _assess_budget(
        self,
        decision: BuildDecision,
        body: Body,
        previous: OptimizedModelStatus,
        deployments: list[Body],
        now: datetime,
        tick: SpendTick | None,
    ) -> BudgetOutcome | None:
        """The budget after this reconcile; None for an invalid spec (nothing to price)."""
        if decision.invalid or decision.spec is None:
            return None
        replicas = sum(int((d.get("status") or {}).get("replicas") or 0) for d in deployments)
        annotations = dict((body.get("metadata") or {}).get("annotations") or {})
        try:
            rate = await self._price_pods(decision, annotations, replicas)
        except cost.CostError:
            rate = None  # an unpriced GPU type: the budget reports it (UnknownGpuPrice)
        key = (decision.model.namespace, decision.model.name)
        return assess_model_budget(
            spec=decision.spec,
            annotations=dict((body.get("metadata") or {}).get("annotations") or {}),
            previous=previous,
            replicas=replicas,
            catalog=self.settings.price_catalog,
            now=now,
            tick=tick,
            idle_since=self._idle_since.get(key),
            lookahead=lookahead_for(timedelta(seconds=self.settings.budget_interval_seconds)),
            spend_rate=rate,
        )

    def _record_budget(
        self,
        namespace: str,
        name: str,
        budget: BudgetOutcome | None,
        status: OptimizedModelStatus,
    ) -> None:
        """Remember an unwritten idle tick; export the cost gauges."""
        if budget is None:
            return
        key = (namespace, name)
        if budget.idle_since is not None:
            self._idle_since[key] = budget.idle_since
        if budget.budget is not None and status.cost is not None:
            document = status.cost.model_dump(by_alias=True, mode="json", exclude_none=True)
            metrics.COST.observe(namespace, name, document, budget.budget, budget.within_budget)
        else:
            metrics.COST.within_budget.labels(namespace, name).set(0)

    def _render(
        self, decision: BuildDecision, body: Body, now: datetime, budget: BudgetOutcome | None
    ) -> list[Body]:
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
            max_replicas=budget.max_replicas if budget is not None else None,
        )
        return render_children(inputs)

    async def _read_children(
        self, namespace: str, name: str, *, autoscalers: bool
    ) -> dict[ChildKey, Body | None]:
        """The model's children, rendered or not: the Deployment's replicas price the budget
        before anything is rendered, and an autoscaler that is no longer rendered is found to
        be deleted. Deployment and Service are read even when nothing is rendered (invalid
        spec, no build yet) to report what is being served; the autoscalers and the
        NetworkPolicy only when the serving children are rendered (nothing else creates or
        deletes them)."""
        wanted: dict[ChildKey, Resource] = {
            ("Deployment", naming.deployment_name(name)): DEPLOYMENTS,
            ("Deployment", spot_deployment_name(name)): DEPLOYMENTS,
            ("Service", naming.service_name(name)): SERVICES,
            ("ConfigMap", naming.config_map_name(name)): CONFIG_MAPS,
        }
        if autoscalers:
            budget = (POD_DISRUPTION_BUDGETS.kind, naming.disruption_budget_name(name))
            wanted[budget] = POD_DISRUPTION_BUDGETS
            for resource in AUTOSCALER_RESOURCES:
                wanted[(resource.kind, naming.autoscaler_name(name))] = resource
            policy = (NETWORK_POLICIES.kind, naming.network_policy_name(name))
            wanted[policy] = NETWORK_POLICIES
        keys = list(wanted)
        found = await asyncio.gather(
            *(self.api.get(wanted[key], namespace, key[1]) for key in keys)
        )
        return dict(zip(keys, found, strict=True))

    async def _apply(self, change: ChildChange, namespace: str, model: str) -> Body | None:
        if change.action == "create":
            try:
                return await self.api.create(dict(change.desired))
            except KubeError as error:
                if error.not_found and autoscaling.is_autoscaler(change.desired):
                    self._autoscaler_unserved(change, namespace, model)
                    return None
                raise
        if change.action in ("update", "restore"):
            assert change.actual is not None
            patch = restore_patch(change)
            patch["metadata"]["resourceVersion"] = change.actual["metadata"]["resourceVersion"]
            resource = resource_of(change.desired)
            if change.action == "restore":
                metrics.DRIFT_REPAIRS.labels(change.kind).inc()
            return await self.api.patch(resource, namespace, change.name, patch)
        if change.action == "delete":
            uid = str(change.desired["metadata"]["uid"])
            await self.api.delete(resource_of(change.desired), namespace, change.name, uid)
        return None

    def _autoscaler_unserved(self, change: ChildChange, namespace: str, model: str) -> None:
        """The cluster does not serve the autoscaler's API (KEDA missing): say so once; the
        Deployment keeps its replicas and the next reconcile tries again."""
        key = (namespace, model)
        if key in self._unserved_autoscalers:
            return
        self._unserved_autoscalers.add(key)
        api_version = change.desired["apiVersion"]
        logger.warning("%s/%s: %s is not served by this cluster", namespace, model, api_version)
        self.events.post(
            {"metadata": {"name": model, "namespace": namespace, "uid": _owner_uid(change)}},
            ModelEvent(
                "Warning",
                "AutoscalerUnavailable",
                f"{api_version} {change.kind} is not served by this cluster; install KEDA, "
                "or set spec.autoscaling.engine: hpa",
            ),
        )

    async def _recap(
        self,
        decision: BuildDecision,
        budget: BudgetOutcome | None,
        changes: list[ChildChange],
        after: dict[ChildKey, Body | None],
        previous: OptimizedModelStatus,
        namespace: str,
    ) -> tuple[ModelEvent, ...]:
        """Give the live autoscaler the budget's cap: a merge patch of the cap fields only
        (no rebuild, no pod restart). Returns the Event to post, if the cap is not the
        budget's own news (BudgetCapChanged)."""
        if budget is None or decision.spec is None:
            return ()
        engine = decision.spec.autoscaling.engine
        kind = autoscaling.autoscaler_kind(engine)
        name = naming.autoscaler_name(decision.model.name)
        if not any(c.kind == kind.kind and c.action != "conflict" for c in changes):
            return ()  # not rendered, or not ours
        live = after.get((kind.kind, name))
        if live is None:
            return ()
        cap = budget.max_replicas
        split = replica_split(decision.spec)
        if split.spot:
            cap = split.spot_cap(cap)  # the base takes its share of the budget's cap
        wanted = cap if engine == "keda" else max(cap, 1)
        have = autoscaling.live_cap(live)
        if have == wanted:
            return ()
        patch = autoscaling.autoscaler_cap_patch(engine, cap)
        patch["metadata"] = {
            **patch.get("metadata", {}),
            "resourceVersion": live["metadata"]["resourceVersion"],
        }
        resource = resource_of(live)
        after[(kind.kind, name)] = await self.api.patch(resource, namespace, name, patch)
        if any(event.reason == "BudgetCapChanged" for event in budget.events):
            return ()
        if decision.generation != previous.observed_generation:
            return (
                ModelEvent(
                    "Normal", "Updated", f"{kind.kind} {name}: maxReplicas {have} -> {wanted}"
                ),
            )
        metrics.DRIFT_REPAIRS.labels(kind.kind).inc()
        return (
            ModelEvent(
                "Normal",
                "DriftRepaired",
                f"restored {kind.kind} {name}: maxReplicas {have} was changed by hand, the "
                f"budget's cap is {wanted}",
            ),
        )

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


AUTOSCALER_RESOURCES: tuple[Resource, ...] = (HORIZONTAL_POD_AUTOSCALERS, SCALED_OBJECTS)


def _deployment_keys(model: str) -> tuple[ChildKey, ChildKey]:
    """The Deployment and the spot tier's (capacity spot, spot-with-fallback)."""
    return ("Deployment", naming.deployment_name(model)), (
        "Deployment",
        spot_deployment_name(model),
    )


def _owner_uid(change: ChildChange) -> str:
    for reference in change.desired["metadata"].get("ownerReferences") or []:
        return str(reference.get("uid"))
    return ""


def _without_stray_autoscaler(changes: list[ChildChange]) -> list[ChildChange]:
    """No autoscaler for a Deployment that is not ours: it would scale someone else's pods."""
    conflicted = any(c.kind == "Deployment" and c.action == "conflict" for c in changes)
    if not conflicted:
        return changes
    return [
        c for c in changes if not (autoscaling.is_autoscaler(c.desired) and c.action != "conflict")
    ]
