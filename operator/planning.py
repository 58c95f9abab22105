"""The reconcile decision for one OptimizedModel, as pure functions of what was observed.

Level-triggered: every call starts from the model, its Jobs and its serving children as
they are now, never from the event that woke the operator, so a missed event, a restart
or a repeated call converges on the same state and creates nothing twice.

1. `decide_build`: is the spec valid, which build (key = build-input hash + store) it
   needs, whether a Job must be created, what the Job reported, what should be served.
2. `render_children` (render/) turns the served build into manifests; `plan_children`
   (children.py) compares them with the cluster.
3. `next_status`: conditions, phase, Events, from the outcome of 1-2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from optimodel.model_builder.report import build_inputs_hash
from optimodel.model_builder.spec import SpecProblem
from optimodel.operator import api, naming
from optimodel.operator.artifacts import ArtifactStore, build_key
from optimodel.operator.builds import BuildOutcome, describe_build, job_state, observe_build
from optimodel.operator.capacity import replica_split, spot_deployment_name
from optimodel.operator.children import ChildChange, controlled_by
from optimodel.operator.policy import REASON as POLICY_VIOLATION
from optimodel.operator.policy import policy_violations
from optimodel.operator.render import BuildRequest, ModelRef, render_build_job
from optimodel.operator.render.common import Manifest
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import (
    ConditionUpdate,
    ModelEvent,
    changed,
    find_condition,
    phase_for,
    set_condition,
)
from optimodel.operator.validation import manifest_problems, parse_spec

BUILD_IN_PROGRESS = frozenset({"Building", "BuildPending"})
RETRY_HINT = (
    f"; this spec is not built again until it changes or annotation {api.RETRY_BUILD} gets a "
    "new value"
)


@dataclass(frozen=True)
class BuildDecision:
    """What the model's build needs, and what it should serve."""

    model: ModelRef
    generation: int
    problems: Sequence[SpecProblem]
    spec: api.OptimizedModelSpec | None = None
    store: ArtifactStore | None = None
    key: str | None = None
    job_to_create: Manifest | None = None
    outcome: BuildOutcome | None = None
    built: ConditionUpdate = field(
        default_factory=lambda: ConditionUpdate("Built", "Unknown", "BuildPending", "")
    )
    serving: api.BuildStatus | None = None
    # status.failedBuild after this reconcile.
    failed_build: api.FailedBuild | None = None

    @property
    def invalid(self) -> bool:
        """The spec is invalid or refused by the admin policy: nothing is built or rendered."""
        return bool(self.problems)


def model_ref(body: Mapping[str, Any]) -> ModelRef:
    meta = body["metadata"]
    return ModelRef(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def describe_problems(problems: Sequence[SpecProblem]) -> str:
    return "; ".join(f"{p.path}: {p.message} (fix: {p.fix})" for p in problems)


def retry_of(manifest: Mapping[str, Any]) -> str:
    """The optimodel.io/retry-build annotation of a model or a builder Job ("" unset)."""
    value = ((manifest.get("metadata") or {}).get("annotations") or {}).get(api.RETRY_BUILD)
    return value if isinstance(value, str) else ""


def current_build_job(
    jobs: Sequence[Mapping[str, Any]], key: str, owner_uid: str, retry: str
) -> Mapping[str, Any] | None:
    """The Job of the current build: the newest for `key` created for the model's retry
    value; else the newest for `key` unless it failed (a new retry value asks for a new try
    of a failed build, never for a second copy of a running or successful one)."""
    matching = [
        job
        for job in jobs
        if (job.get("metadata") or {}).get("labels", {}).get(naming.BUILD_KEY) == key
        and controlled_by(job, owner_uid)
    ]
    matching.sort(
        key=lambda job: (
            int(job["metadata"].get("labels", {}).get(naming.GENERATION, 0)),
            str(job["metadata"].get("creationTimestamp") or ""),
        )
    )
    exact = [job for job in matching if retry_of(job) == retry]
    if exact:
        return exact[-1]
    if matching and job_state(matching[-1]) != "failed":
        return matching[-1]
    return None


def _job_name(
    model: ModelRef, generation: int, key: str, jobs: Sequence[Mapping[str, Any]], retry: str = ""
) -> str:
    """`<name>-build-g<generation>`, unless a Job took it (the store changed, or a retry of a
    failed build): then `<name>-build-<hash>` of the key (and the retry value)."""
    taken = {str(job["metadata"]["name"]) for job in jobs}
    retried = hashlib.sha256(f"{key}|{retry}".encode()).hexdigest()
    for name in (
        naming.build_job_name(model.name, generation),
        f"{model.name}-build-{key[:8]}",
        f"{model.name}-build-{retried[:8]}",
    ):
        if name not in taken:
            return name
    return f"{model.name}-build-{retried[:8]}"


def decide_build(
    body: Mapping[str, Any],
    status: api.OptimizedModelStatus,
    jobs: Sequence[Mapping[str, Any]],
    key_job_pods: Sequence[Mapping[str, Any]],
    settings: OperatorSettings,
) -> BuildDecision:
    """The build side of the decision: validity, the Job, its outcome, what to serve.

    `key_job_pods` are the pods of the Job for the current build key (needed only once that
    Job finished; see `build_key_of`)."""
    model = model_ref(body)
    generation = int(body["metadata"].get("generation") or 1)
    served = status.build
    problems = manifest_problems(dict(body), budget_annotations=False)
    kept = status.failed_build  # an invalid or refused spec builds nothing: keep the record
    if problems:
        built = ConditionUpdate("Built", "False", "InvalidSpec", describe_problems(problems))
        return BuildDecision(
            model, generation, problems, built=built, serving=served, failed_build=kept
        )
    spec = parse_spec(body)
    refused = [v.problem() for v in policy_violations(spec, model.namespace, settings)]
    if refused:
        built = ConditionUpdate("Built", "False", POLICY_VIOLATION, describe_problems(refused))
        return BuildDecision(
            model, generation, refused, built=built, serving=served, failed_build=kept
        )
    store = ArtifactStore.for_model(spec.storage, settings)
    spec_hash = build_inputs_hash(spec.source, spec.optimize, spec.serving)
    key = build_key(spec_hash, store)
    common: dict[str, Any] = {"spec": spec, "store": store, "key": key}

    if served is not None and served.spec_hash == spec_hash and store.holds(served.artifact):
        built = ConditionUpdate("Built", "True", "Built", describe_build(served))
        return BuildDecision(model, generation, (), built=built, serving=served, **common)

    retry = retry_of(body)
    job = current_build_job(jobs, key, model.uid, retry)
    failed = status.failed_build
    if job is None and failed is not None and failed.key == key and failed.retry == retry:
        # This spec's build failed and its Job is gone (TTL): the same inputs would fail the
        # same way. Wait for a spec change or a new retry value.
        built = ConditionUpdate("Built", "False", failed.reason, failed.message)
        return BuildDecision(
            model, generation, (), built=built, serving=served, failed_build=failed, **common
        )
    if job is None:
        request = BuildRequest(
            model=model,
            spec=spec,
            generation=generation,
            key=key,
            spec_hash=spec_hash,
            store=store,
            job_name=_job_name(model, generation, key, jobs, retry),
            retry=retry,
        )
        manifest = render_build_job(request, settings)
        built = ConditionUpdate(
            "Built", "False", "Building", f"builder Job {request.job_name} created"
        )
        return BuildDecision(
            model, generation, (), job_to_create=manifest, built=built, serving=served, **common
        )

    job_generation = int(job["metadata"].get("labels", {}).get(naming.GENERATION, generation))
    artifact = str((job["metadata"].get("annotations") or {}).get(naming.ARTIFACT, ""))
    outcome = observe_build(job, key_job_pods, artifact, job_generation)
    if outcome.state == "succeeded" and outcome.build is not None:
        built = ConditionUpdate("Built", "True", "Built", describe_build(outcome.build))
        return BuildDecision(
            model, generation, (), outcome=outcome, built=built, serving=outcome.build, **common
        )
    if outcome.state == "failed" and _same_failure(failed, key, outcome.job_name, retry_of(job)):
        # A finished Job's verdict cannot change; its pods may be gone by now (the TTL
        # controller deletes them with the Job), so the first reading stands.
        assert failed is not None
        built = ConditionUpdate("Built", "False", failed.reason, failed.message)
        return BuildDecision(
            model,
            generation,
            (),
            outcome=outcome,
            built=built,
            serving=served,
            failed_build=failed,
            **common,
        )
    message = outcome.message
    failed_build = None
    if outcome.state == "failed":
        if served is not None:
            message += f"; artifact g{served.generation} keeps serving"
        message += RETRY_HINT
        failed_build = api.FailedBuild(
            key=key,
            retry=retry_of(job),
            generation=job_generation,
            job=outcome.job_name,
            reason=outcome.reason,
            message=message,
        )
    built = ConditionUpdate("Built", "False", outcome.reason, message)
    return BuildDecision(
        model,
        generation,
        (),
        outcome=outcome,
        built=built,
        serving=served,
        failed_build=failed_build,
        **common,
    )


def _same_failure(failed: api.FailedBuild | None, key: str, job: str, retry: str) -> bool:
    return failed is not None and (failed.key, failed.job, failed.retry) == (key, job, retry)


def build_key_of(body: Mapping[str, Any], settings: OperatorSettings) -> str | None:
    """The current build key, or None for an invalid spec (to pick the Job whose pods to read)."""
    if manifest_problems(dict(body), budget_annotations=False):
        return None
    spec = parse_spec(body)
    if policy_violations(spec, body["metadata"]["namespace"], settings):
        return None
    store = ArtifactStore.for_model(spec.storage, settings)
    return build_key(build_inputs_hash(spec.source, spec.optimize, spec.serving), store)


def rollout_condition(
    decision: BuildDecision,
    deployment: Mapping[str, Any] | None,
    conflicts: Sequence[ChildChange],
    spot_deployment: Mapping[str, Any] | None = None,
) -> ConditionUpdate:
    """Deployed: is the served artifact rolled out (like `kubectl rollout status`), on the
    Deployment and, with spot capacity, on the spot tier's too?"""
    if conflicts:
        names = ", ".join(f"{c.kind} {c.name}" for c in conflicts)
        return ConditionUpdate(
            "Deployed",
            "False",
            "NameConflict",
            f"{names} already exist(s) and is not controlled by this OptimizedModel; "
            "rename the model or remove the other object",
        )
    serving = decision.serving
    if serving is None:
        return ConditionUpdate(
            "Deployed",
            "False",
            "AwaitingBuild",
            "nothing is deployed until a build passes its accuracy gate",
        )
    name = naming.deployment_name(decision.model.name)
    base = _rollout_of(name, deployment, serving, decision.model.uid)
    spot = decision.spec is not None and replica_split(decision.spec).spot
    if base.status != "True" or not spot:
        return base
    spot_name = spot_deployment_name(decision.model.name)
    tier = _rollout_of(spot_name, spot_deployment, serving, decision.model.uid)
    if tier.status != "True":
        return tier
    return ConditionUpdate(
        "Deployed", "True", "Deployed", f"{base.message}; {spot_name}: {tier.message}"
    )


def _rollout_of(
    name: str, deployment: Mapping[str, Any] | None, serving: api.BuildStatus, owner_uid: str
) -> ConditionUpdate:
    if deployment is None or not controlled_by(deployment, owner_uid):
        return ConditionUpdate(
            "Deployed", "False", "Deploying", f"Deployment {name} is not there yet"
        )
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    state = deployment.get("status") or {}
    artifact = (meta.get("annotations") or {}).get(naming.ARTIFACT, "")
    label = f"artifact g{serving.generation}"
    if artifact != serving.artifact:
        return ConditionUpdate(
            "Deployed", "False", "Deploying", f"Deployment {name} does not serve {label} yet"
        )
    for condition in state.get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            return ConditionUpdate(
                "Deployed",
                "False",
                "ProgressDeadlineExceeded",
                f"Deployment {name}: {condition.get('message') or 'rollout stalled'}",
            )
    if int(state.get("observedGeneration") or 0) < int(meta.get("generation") or 1):
        return ConditionUpdate(
            "Deployed",
            "False",
            "RollingOut",
            f"Deployment {name}: waiting for the rollout to start",
        )
    wanted = int(spec.get("replicas", 1))
    updated = int(state.get("updatedReplicas") or 0)
    total = int(state.get("replicas") or 0)
    available = int(state.get("availableReplicas") or 0)
    if updated < wanted:
        message = f"{updated} of {wanted} replicas run {label}"
    elif total > updated:
        message = f"{total - updated} old replica(s) still terminating"
    elif available < updated:
        message = f"{available} of {updated} updated replicas available"
    else:
        return ConditionUpdate(
            "Deployed",
            "True",
            "Deployed",
            f"Deployment {name} serves {describe_build(serving)} on {available} replica(s)",
        )
    return ConditionUpdate("Deployed", "False", "RollingOut", f"Deployment {name}: {message}")


def ready_condition(
    decision: BuildDecision, built: ConditionUpdate, deployed: ConditionUpdate, endpoint: str | None
) -> ConditionUpdate:
    if decision.invalid:  # InvalidSpec or PolicyViolation
        return ConditionUpdate("Ready", "False", built.reason, built.message)
    if built.status != "True":
        message = built.message
        if deployed.status == "True" and decision.serving is not None:
            message += (
                f" (the Deployment serves the previous artifact g{decision.serving.generation})"
            )
        return ConditionUpdate("Ready", "False", built.reason, message)
    if deployed.status != "True":
        return ConditionUpdate("Ready", "False", deployed.reason, deployed.message)
    assert decision.serving is not None
    where = f" at {endpoint}" if endpoint else ""
    return ConditionUpdate(
        "Ready", "True", "Ready", f"serving {describe_build(decision.serving)}{where}"
    )


@dataclass(frozen=True)
class StatusOutcome:
    """The status, whether it changed, and the Events of condition transitions."""

    status: api.OptimizedModelStatus
    write: bool
    events: tuple[ModelEvent, ...]
    built: ConditionUpdate
    deployed: ConditionUpdate
    ready: ConditionUpdate


def _update_event(change: ChildChange) -> ModelEvent:
    actual = change.actual or {}
    if change.kind == "Deployment":
        have = ((actual.get("metadata") or {}).get("annotations") or {}).get(naming.ARTIFACT)
        want = change.desired["metadata"]["annotations"][naming.ARTIFACT]
        if have != want:
            return ModelEvent("Normal", "Deploying", f"rolling Deployment {change.name} to {want}")
    if change.kind == "ConfigMap":
        return ModelEvent(
            "Normal",
            "Reconfiguring",
            f"new config.pbtxt in ConfigMap {change.name}: pods roll without a rebuild",
        )
    return ModelEvent("Normal", "Updated", f"updated {change.kind} {change.name} to the spec")


def change_events(decision: BuildDecision, changes: Sequence[ChildChange]) -> list[ModelEvent]:
    """Events for what this reconcile created or patched (posted once the calls succeeded)."""
    events: list[ModelEvent] = []
    if decision.job_to_create is not None:
        meta = decision.job_to_create["metadata"]
        events.append(
            ModelEvent(
                "Normal",
                "BuildStarted",
                f"created builder Job {meta['name']} for generation {decision.generation} "
                f"(writes {meta['annotations'][naming.ARTIFACT]})",
            )
        )
    created = [f"{c.kind} {c.name}" for c in changes if c.action == "create"]
    if created:
        events.append(ModelEvent("Normal", "Created", "created " + ", ".join(created)))
    for change in changes:
        if change.action == "restore":
            events.append(
                ModelEvent(
                    "Normal",
                    "DriftRepaired",
                    f"restored {change.kind} {change.name}: {change.difference} was changed by "
                    "hand",
                )
            )
        elif change.action == "update":
            events.append(_update_event(change))
        elif change.action == "delete":
            events.append(
                ModelEvent(
                    "Normal",
                    "Removed",
                    f"deleted {change.kind} {change.name}: the spec no longer asks for it",
                )
            )
    return events


def next_status(
    *,
    decision: BuildDecision,
    previous: api.OptimizedModelStatus,
    changes: Sequence[ChildChange],
    deployment: Mapping[str, Any] | None,
    service: Mapping[str, Any] | None,
    now: datetime,
    spot_deployment: Mapping[str, Any] | None = None,
) -> StatusOutcome:
    """Conditions, phase, printer-column fields and Events after this reconcile's changes.

    `deployment`/`service` (and the spot tier's Deployment) are as they stand after the
    changes were applied."""
    generation = decision.generation
    conflicts = [c for c in changes if c.action == "conflict"]
    built = decision.built
    deployed = rollout_condition(decision, deployment, conflicts, spot_deployment)
    endpoint = None
    if service is not None and controlled_by(service, decision.model.uid):
        endpoint = naming.endpoint(decision.model.name, decision.model.namespace)
    ready = ready_condition(decision, built, deployed, endpoint)

    conditions = list(previous.conditions)
    for update in (built, deployed, ready):
        conditions = set_condition(conditions, update, generation, now)
    replicas = None
    for found in (deployment, spot_deployment):
        if found is not None and controlled_by(found, decision.model.uid):
            replicas = (replicas or 0) + int((found.get("status") or {}).get("replicas") or 0)
    status = previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": phase_for(decision.invalid, built, deployed, ready),
            "conditions": conditions,
            "build": decision.serving,
            "replicas": replicas,
            "selector": naming.selector_string(naming.server_selector(decision.model.name)),
            "endpoint": endpoint,
            "failed_build": decision.failed_build,
        }
    )

    events: list[ModelEvent] = []
    new_built = find_condition(conditions, "Built")
    if changed(find_condition(previous.conditions, "Built"), new_built) and new_built is not None:
        if new_built.status == "True":
            events.append(ModelEvent("Normal", "BuildSucceeded", new_built.message))
        elif new_built.reason not in BUILD_IN_PROGRESS:
            events.append(ModelEvent("Warning", new_built.reason, new_built.message))
    old_deployed = find_condition(previous.conditions, "Deployed")
    new_deployed = find_condition(conditions, "Deployed")
    if (
        new_deployed is not None
        and new_deployed.reason in ("NameConflict", "ProgressDeadlineExceeded")
        and changed(old_deployed, new_deployed)
    ):
        events.append(ModelEvent("Warning", new_deployed.reason, new_deployed.message))
    old_ready = find_condition(previous.conditions, "Ready")
    new_ready = find_condition(conditions, "Ready")
    if (
        new_ready is not None
        and new_ready.status == "True"
        and (old_ready is None or old_ready.status != "True")
    ):
        events.append(ModelEvent("Normal", "Ready", new_ready.message))
    return StatusOutcome(status, status != previous, tuple(events), built, deployed, ready)
