"""The reconcile decision (planning.py) and the reading of builder Jobs (builds.py): pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from optimodel.model_builder.report import build_inputs_hash
from optimodel.operator import api, naming
from optimodel.operator.artifacts import ArtifactStore, build_key
from optimodel.operator.builds import observe_build, parse_termination
from optimodel.operator.children import ChildChange
from optimodel.operator.planning import (
    BuildDecision,
    decide_build,
    next_status,
    rollout_condition,
)
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.status import parse_status
from optimodel.operator.validation import manifest_problems, parse_spec
from tests.cluster import built_report

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = "uid-minilm"
SETTINGS = OperatorSettings()


def model(generation: int = 1, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {
            "name": "minilm",
            "namespace": "ml",
            "uid": UID,
            "generation": generation,
            "resourceVersion": "10",
        },
        "spec": {
            "source": {
                "uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
                "task": "feature-extraction",
            },
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def key_and_hash(body: dict[str, Any]) -> tuple[str, str]:
    spec = parse_spec(body)
    spec_hash = build_inputs_hash(spec.source, spec.optimize, spec.serving)
    return build_key(spec_hash, ArtifactStore.for_model(spec.storage, SETTINGS)), spec_hash


def job(
    body: dict[str, Any], generation: int, state: str = "running", failed: int = 0
) -> dict[str, Any]:
    key, spec_hash = key_and_hash(body)
    conditions = {
        "running": [],
        "succeeded": [{"type": "Complete", "status": "True"}],
        "failed": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "too many",
            }
        ],
    }[state]
    return {
        "metadata": {
            "name": f"minilm-build-g{generation}",
            "labels": {naming.BUILD_KEY: key, naming.GENERATION: str(generation)},
            "annotations": {
                naming.ARTIFACT: f"pvc://optimodel-artifacts/ml/minilm/g{generation}",
                naming.SPEC_HASH: spec_hash,
            },
            "ownerReferences": [{"kind": api.KIND, "uid": UID, "controller": True}],
        },
        "status": {
            "conditions": conditions,
            "failed": failed,
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:03:00Z",
        },
    }


def pod(
    exit_code: int,
    message: str,
    container: str = naming.BUILDER_CONTAINER,
    init: bool = False,
    finished: str = "2026-01-01T00:02:00Z",
) -> dict[str, Any]:
    status = {
        "name": container,
        "state": {
            "terminated": {"exitCode": exit_code, "message": message, "finishedAt": finished}
        },
    }
    return {"status": {"initContainerStatuses" if init else "containerStatuses": [status]}}


def success_message(body: dict[str, Any]) -> str:
    return json.dumps({"reason": "Built", "report": built_report(key_and_hash(body)[1])})


# --- builds.py ---------------------------------------------------------------------------


def test_successful_job_yields_the_report_as_build_status() -> None:
    body = model()
    outcome = observe_build(
        job(body, 1, "succeeded"), [pod(0, success_message(body))], "pvc://a/ml/minilm/g1", 1
    )
    assert outcome.state == "succeeded" and outcome.build is not None
    assert outcome.build.artifact == "pvc://a/ml/minilm/g1"
    assert outcome.build.size_reduction == pytest.approx(90 / 23, abs=1e-3)
    assert outcome.build.signature is not None
    assert outcome.seconds == 180


def test_the_resolved_commits_reach_the_build_status() -> None:
    body = model()
    report = {**built_report(key_and_hash(body)[1]), "sourceCommit": "a" * 40}
    message = json.dumps({"reason": "Built", "report": report | {"adapterCommit": "b" * 40}})
    outcome = observe_build(job(body, 1, "succeeded"), [pod(0, message)], "pvc://a/g1", 1)
    assert outcome.build is not None
    assert (outcome.build.source_commit, outcome.build.adapter_commit) == ("a" * 40, "b" * 40)
    dumped = outcome.build.model_dump(by_alias=True)
    assert dumped["sourceCommit"] == "a" * 40


SOURCE_MISSING = "spec.source.revision: 'hf://acme/m' at revision 'v9': the revision does not exist"
GATE = json.dumps(
    {
        "reason": "AccuracyBelowThreshold",
        "message": "cosine 0.9712 < min 0.99 after quantize",
        "accuracy": 0.9712,
    }
)


@pytest.mark.parametrize(
    ("pods", "reason", "fragment"),
    [
        ([pod(3, GATE)], "AccuracyBelowThreshold", "cosine 0.9712 < min 0.99"),
        ([pod(2, json.dumps({"reason": "InvalidSpec", "message": "bad"}))], "InvalidSpec", "bad"),
        # Not JSON: FallbackToLogsOnError put the log tail there.
        ([pod(1, "Traceback ...\nMemoryError")], "BuildFailed", "exited with code 1"),
        (
            [
                pod(
                    137,
                    "",
                )
            ],
            "BuildFailed",
            "code 137",
        ),
        # The builder finished; the S3 upload did not.
        (
            [
                pod(0, "", init=True),
                pod(1, "upload failed: 403", container="upload", finished="2026-01-01T00:03:00Z"),
            ],
            "UploadFailed",
            "403",
        ),
        ([], "BuildFailed", "BackoffLimitExceeded"),
        # Sources and the store: the builder's (or the upload's) own reason, field and fix.
        (
            [pod(4, json.dumps({"reason": "SourceNotFound", "message": SOURCE_MISSING}))],
            "SourceNotFound",
            "spec.source.revision: 'hf://acme/m' at revision 'v9'",
        ),
        (
            [
                pod(
                    4,
                    json.dumps({"reason": "SourceAccessDenied", "message": "spec.source.uri: 401"}),
                )
            ],
            "SourceAccessDenied",
            "spec.source.uri",
        ),
        (
            [
                pod(0, "", init=True),
                pod(
                    4,
                    json.dumps({"reason": "StorageAccessDenied", "message": "spec.storage.s3.uri"}),
                    container="upload",
                    finished="2026-01-01T00:03:00Z",
                ),
            ],
            "StorageAccessDenied",
            "spec.storage.s3.uri",
        ),
    ],
)
def test_failed_job_reports_the_builders_own_error(
    pods: list[dict[str, Any]], reason: str, fragment: str
) -> None:
    outcome = observe_build(job(model(), 1, "failed", failed=3), pods, "pvc://a", 1)
    assert (outcome.state, outcome.reason) == ("failed", reason)
    assert fragment in outcome.message


def test_succeeded_job_without_report_is_not_served() -> None:
    outcome = observe_build(job(model(), 1, "succeeded"), [pod(0, "done")], "pvc://a", 1)
    assert (outcome.state, outcome.reason) == ("failed", "ReportMissing")


def test_running_job_counts_retries() -> None:
    outcome = observe_build(job(model(), 1, "running", failed=1), [], "pvc://a", 1)
    assert outcome.reason == "Building" and "attempt 2" in outcome.message


def test_termination_message_is_the_last_json_line() -> None:
    parsed = parse_termination("some log\n" + GATE)
    assert (
        parsed is not None
        and parsed.reason == "AccuracyBelowThreshold"
        and parsed.accuracy == 0.9712
    )
    assert parse_termination("plain text") is None


# --- decide_build --------------------------------------------------------------------------


def served(body: dict[str, Any], generation: int) -> api.OptimizedModelStatus:
    outcome = observe_build(
        job(body, generation, "succeeded"),
        [pod(0, success_message(body))],
        f"pvc://optimodel-artifacts/ml/minilm/g{generation}",
        generation,
    )
    return api.OptimizedModelStatus(build=outcome.build)


def test_new_model_gets_a_builder_job() -> None:
    decision = decide_build(model(), api.OptimizedModelStatus(), [], [], SETTINGS)
    assert decision.job_to_create is not None
    assert decision.job_to_create["metadata"]["name"] == "minilm-build-g1"
    assert (decision.built.status, decision.built.reason) == ("False", "Building")
    assert decision.serving is None


def test_a_bad_budget_annotation_does_not_stop_the_build() -> None:
    """It is the WithinBudget condition's business (operator/budget.py), not an InvalidSpec."""
    body = model()
    body["metadata"]["annotations"] = {api.BUDGET_USD_PER_HOUR: "six"}
    decision = decide_build(body, api.OptimizedModelStatus(), [], [], SETTINGS)
    assert not decision.invalid and decision.job_to_create is not None
    # `optimodel validate` still reports it with the spec's problems.
    assert [p.path for p in manifest_problems(body)] == [
        f"metadata.annotations[{api.BUDGET_USD_PER_HOUR}]"
    ]


def test_running_job_is_adopted_not_duplicated() -> None:
    body = model()
    decision = decide_build(body, api.OptimizedModelStatus(), [job(body, 1)], [], SETTINGS)
    assert decision.job_to_create is None and decision.built.reason == "Building"


def test_serving_only_change_needs_no_build() -> None:
    body = model(generation=1)
    status = served(body, 1)
    changed = model(generation=2, serving={"maxBatchSize": 64})
    decision = decide_build(changed, status, [], [], SETTINGS)
    assert decision.job_to_create is None
    assert decision.built.status == "True" and decision.serving == status.build


def test_source_change_builds_and_keeps_serving_the_old_artifact() -> None:
    old = model(generation=1)
    status = served(old, 1)
    new = model(generation=2, optimize={"quantize": {"mode": "int4-weight-only"}})
    decision = decide_build(new, status, [job(old, 1, "succeeded")], [], SETTINGS)
    assert decision.job_to_create is not None
    assert decision.job_to_create["metadata"]["name"] == "minilm-build-g2"
    assert decision.serving == status.build  # g1 keeps serving until g2 passes


def test_failed_gate_keeps_the_old_artifact() -> None:
    old = model(generation=1)
    status = served(old, 1)
    new = model(generation=2, optimize={"accuracy": {"min": 0.999}})
    decision = decide_build(new, status, [job(new, 2, "failed")], [pod(3, GATE)], SETTINGS)
    assert decision.job_to_create is None  # no retry of a deterministic failure
    assert (decision.built.status, decision.built.reason) == ("False", "AccuracyBelowThreshold")
    assert "artifact g1 keeps serving" in decision.built.message
    assert decision.serving == status.build


def test_new_build_switches_serving_after_success() -> None:
    old = model(generation=1)
    new = model(generation=2, optimize={"quantize": {"mode": "int4-weight-only"}})
    decision = decide_build(
        new, served(old, 1), [job(new, 2, "succeeded")], [pod(0, success_message(new))], SETTINGS
    )
    assert decision.serving is not None and decision.serving.generation == 2
    assert decision.built.status == "True"


def test_store_change_rebuilds_into_the_new_store() -> None:
    old = model(generation=1)
    moved = model(generation=2, storage={"s3": {"uri": "s3://bucket/models"}})
    settings = OperatorSettings.model_validate({"policy": {"storage": {"s3": [{"bucket": "*"}]}}})
    decision = decide_build(moved, served(old, 1), [], [], settings)
    assert decision.job_to_create is not None
    assert (
        decision.job_to_create["metadata"]["annotations"][naming.ARTIFACT]
        == "s3://bucket/models/ml/minilm/g2"
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.maxReplicas"),
        ({"serving": {"maxBatchsize": 8}}, "spec.serving.maxBatchsize"),
        ({"optimize": {"quantize": {"mode": "int3"}}}, "spec.optimize.quantize.mode"),
    ],
)
def test_invalid_spec_creates_nothing_and_names_the_field(spec: dict[str, Any], field: str) -> None:
    decision = decide_build(model(**spec), api.OptimizedModelStatus(), [], [], SETTINGS)
    assert decision.invalid and decision.job_to_create is None
    assert (decision.built.status, decision.built.reason) == ("False", "InvalidSpec")
    assert field in decision.built.message and "fix:" in decision.built.message


# --- rollout and status ----------------------------------------------------------------


def deployment(
    artifact: str, generation: int = 2, observed: int = 2, **status: int
) -> dict[str, Any]:
    return {
        "metadata": {
            "generation": generation,
            "annotations": {naming.ARTIFACT: artifact},
            "ownerReferences": [{"kind": api.KIND, "uid": UID, "controller": True}],
        },
        "spec": {"replicas": 2},
        "status": {"observedGeneration": observed, **status},
    }


def serving_decision() -> BuildDecision:
    body = model()
    return decide_build(body, served(body, 1), [], [], SETTINGS)


G1 = "pvc://optimodel-artifacts/ml/minilm/g1"


@pytest.mark.parametrize(
    ("actual", "status", "reason"),
    [
        (None, "False", "Deploying"),
        (deployment("pvc://elsewhere"), "False", "Deploying"),
        (deployment(G1, generation=3, observed=2), "False", "RollingOut"),
        (deployment(G1, updatedReplicas=1, replicas=2, availableReplicas=1), "False", "RollingOut"),
        (deployment(G1, updatedReplicas=2, replicas=3, availableReplicas=2), "False", "RollingOut"),
        (deployment(G1, updatedReplicas=2, replicas=2, availableReplicas=1), "False", "RollingOut"),
        (deployment(G1, updatedReplicas=2, replicas=2, availableReplicas=2), "True", "Deployed"),
    ],
)
def test_rollout_condition(actual: dict[str, Any] | None, status: str, reason: str) -> None:
    condition = rollout_condition(serving_decision(), actual, [])
    assert (condition.status, condition.reason) == (status, reason)


def test_stalled_rollout_is_reported() -> None:
    actual = deployment(G1)
    actual["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet minilm-abc has timed out progressing.",
        }
    ]
    condition = rollout_condition(serving_decision(), actual, [])
    assert condition.reason == "ProgressDeadlineExceeded" and "timed out" in condition.message


def test_status_is_rewritten_only_when_it_changes_and_events_fire_on_transitions() -> None:
    decision = serving_decision()
    rolled = deployment(G1, updatedReplicas=2, replicas=2, availableReplicas=2)
    service = {
        "metadata": {"ownerReferences": [{"kind": api.KIND, "uid": UID, "controller": True}]}
    }
    first = next_status(
        decision=decision,
        previous=api.OptimizedModelStatus(),
        changes=[],
        deployment=rolled,
        service=service,
        now=NOW,
    )
    assert first.write and first.status.phase == "Ready"
    assert first.status.endpoint == "http://minilm.ml.svc:8000"
    assert first.status.replicas == 2 and first.status.observed_generation == 1
    assert {e.reason for e in first.events} == {"BuildSucceeded", "Ready"}
    # The same observation again: nothing to write, nothing to announce.
    stored = parse_status(first.status.model_dump(mode="json", by_alias=True, exclude_none=True))
    again = next_status(
        decision=decision, previous=stored, changes=[], deployment=rolled, service=service, now=NOW
    )
    assert not again.write and again.events == ()


def test_name_conflict_is_a_warning() -> None:
    theirs = ChildChange("conflict", {"kind": "Deployment", "metadata": {"name": "minilm"}}, {})
    outcome = next_status(
        decision=serving_decision(),
        previous=api.OptimizedModelStatus(),
        changes=[theirs],
        deployment=None,
        service=None,
        now=NOW,
    )
    assert outcome.deployed.reason == "NameConflict"
    assert any(e.type == "Warning" and e.reason == "NameConflict" for e in outcome.events)


def test_gate_failure_message_carries_the_builders_numbers() -> None:
    message = json.dumps(
        {
            "reason": "AccuracyBelowThreshold",
            "message": "accuracy gate failed",
            "accuracy": 0.9712,
            "threshold": 0.99,
            "step": "quantize",
        }
    )
    outcome = observe_build(job(model(), 1, "failed", failed=1), [pod(3, message)], "pvc://a", 1)
    assert outcome.reason == "AccuracyBelowThreshold"
    assert outcome.message == (
        "accuracy gate failed (measured 0.9712, required 0.99, lost at step quantize)"
    )


def test_report_without_signature_is_not_served() -> None:
    body = model()
    report = built_report(key_and_hash(body)[1])
    del report["signature"]
    message = json.dumps({"reason": "Built", "report": report})
    outcome = observe_build(job(body, 1, "succeeded"), [pod(0, message)], "pvc://a", 1)
    assert (outcome.state, outcome.reason) == ("failed", "ReportIncomplete")


# --- a failed build is not built again until asked ----------------------------------------


def gate_failure(body: dict[str, Any], name: str = "minilm-build-g1") -> dict[str, Any]:
    failed = job(body, 1, "failed")
    failed["metadata"]["name"] = name
    return failed


def with_retry(body: dict[str, Any], value: str) -> dict[str, Any]:
    body["metadata"]["annotations"] = {api.RETRY_BUILD: value}
    return body


def failed_once(body: dict[str, Any]) -> api.OptimizedModelStatus:
    """The status after the reconcile that saw the first build fail."""
    decision = decide_build(
        body, api.OptimizedModelStatus(), [gate_failure(body)], [pod(3, "low")], SETTINGS
    )
    assert decision.failed_build is not None and decision.failed_build.retry == ""
    assert api.RETRY_BUILD in decision.built.message
    return api.OptimizedModelStatus(failed_build=decision.failed_build)


def test_a_failed_build_whose_job_is_gone_is_not_built_again() -> None:
    body = model()
    status = failed_once(body)
    decision = decide_build(body, status, [], [], SETTINGS)  # the TTL controller struck
    assert decision.job_to_create is None
    assert decision.failed_build == status.failed_build
    assert decision.built.status == "False" and decision.built.reason == "BuildFailed"
    assert status.failed_build is not None
    assert decision.built.message == status.failed_build.message  # no new Event
    # A spec change is a new build.
    changed = model(generation=2, optimize={"accuracy": {"min": 0.9}})
    assert decide_build(changed, status, [], [], SETTINGS).job_to_create is not None


def test_a_new_retry_value_builds_the_same_spec_once_more() -> None:
    body = model()
    status = failed_once(body)
    retried = with_retry(model(), "1")
    # The failed Job still exists: its name is taken, so the retry gets a name of its own.
    decision = decide_build(retried, status, [gate_failure(body)], [], SETTINGS)
    assert decision.job_to_create is not None
    meta = decision.job_to_create["metadata"]
    assert meta["annotations"][api.RETRY_BUILD] == "1"
    assert meta["name"] != "minilm-build-g1"
    assert len(meta["name"]) <= 63
    # That Job running is the current build (no third Job); after it fails, it is the record.
    again = dict(decision.job_to_create, status={})
    assert decide_build(retried, status, [gate_failure(body), again], [], SETTINGS).outcome
    failed_again = gate_failure(body, meta["name"])
    failed_again["metadata"]["annotations"][api.RETRY_BUILD] = "1"
    record = decide_build(retried, status, [failed_again], [pod(3, "low")], SETTINGS).failed_build
    assert record is not None and record.retry == "1" and record.job == meta["name"]
    gone = decide_build(retried, api.OptimizedModelStatus(failed_build=record), [], [], SETTINGS)
    assert gone.job_to_create is None


def test_a_retry_value_never_duplicates_a_running_or_successful_build() -> None:
    body = model()
    running = job(body, 1, "running")
    decision = decide_build(
        with_retry(model(), "x"), api.OptimizedModelStatus(), [running], [], SETTINGS
    )
    assert decision.job_to_create is None and decision.outcome is not None
    assert decision.outcome.state == "running" and decision.failed_build is None
    done = job(body, 1, "succeeded")
    decision = decide_build(
        with_retry(model(), "x"),
        api.OptimizedModelStatus(),
        [done],
        [pod(0, success_message(body))],
        SETTINGS,
    )
    assert decision.job_to_create is None and decision.built.status == "True"


def test_a_failed_jobs_first_reading_stands_when_its_pods_are_gone() -> None:
    """The TTL controller deletes a Job's pods with it: a reconcile that still lists the Job
    but no longer its pods keeps the builder's own message (no new Event, no write)."""
    body = model()
    status = failed_once(body)
    decision = decide_build(body, status, [gate_failure(body)], [], SETTINGS)
    assert decision.failed_build == status.failed_build
    assert status.failed_build is not None
    assert decision.built.message == status.failed_build.message
    assert "low" in decision.built.message
