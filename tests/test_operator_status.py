"""Status math, child diffing and merge patches: pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optimodel.operator import api, naming
from optimodel.operator.children import first_difference, plan_child, restore_patch
from optimodel.operator.reconcile import merge_patch
from optimodel.operator.status import (
    ConditionUpdate,
    find_condition,
    parse_status,
    phase_for,
    set_condition,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def built(status: api.ConditionStatus, reason: str, message: str = "") -> ConditionUpdate:
    return ConditionUpdate("Built", status, reason, message)


def test_new_condition_gets_now_and_the_generation() -> None:
    [condition] = set_condition([], built("False", "Building", "job x"), 4, T0)
    assert condition.last_transition_time == T0
    assert condition.observed_generation == 4
    assert (condition.status, condition.reason, condition.message) == ("False", "Building", "job x")


@pytest.mark.parametrize(
    ("update", "moves"),
    [
        (built("False", "BuildFailed", "exit 1"), False),  # same status, new reason: no transition
        (built("False", "Building", "attempt 2"), False),  # same status, new message
        (built("True", "Built", "g2"), True),  # status changed
        (built("Unknown", "BuildPending"), True),
    ],
)
def test_last_transition_time_moves_only_with_the_status(
    update: ConditionUpdate, moves: bool
) -> None:
    conditions = set_condition([], built("False", "Building", "job x"), 1, T0)
    [after] = set_condition(conditions, update, 2, T1)
    assert after.last_transition_time == (T1 if moves else T0)
    assert (after.reason, after.message, after.observed_generation) == (
        update.reason,
        update.message,
        2,
    )


def test_other_conditions_are_kept_in_place() -> None:
    budget = api.Condition(
        type="WithinBudget", status="True", reason="NoBudget", last_transition_time=T0
    )
    conditions = set_condition([budget], built("True", "Built"), 1, T1)
    conditions = set_condition(conditions, ConditionUpdate("Ready", "True", "Ready", ""), 1, T1)
    assert [c.type for c in conditions] == ["WithinBudget", "Built", "Ready"]
    assert find_condition(conditions, "WithinBudget") == budget


def test_transition_time_has_whole_seconds() -> None:
    [condition] = set_condition([], built("True", "Built"), 1, T0 + timedelta(microseconds=123))
    assert condition.last_transition_time == T0


@pytest.mark.parametrize(
    ("invalid", "built_reason", "deployed_reason", "ready", "phase"),
    [
        (True, "InvalidSpec", "AwaitingBuild", "False", "Failed"),
        (False, "Building", "AwaitingBuild", "False", "Building"),
        (False, "BuildPending", "AwaitingBuild", "False", "Building"),
        (False, "AccuracyBelowThreshold", "Deployed", "False", "Failed"),
        (False, "Built", "RollingOut", "False", "Deploying"),
        (False, "Built", "NameConflict", "False", "Failed"),
        (False, "Built", "Deployed", "True", "Ready"),
    ],
)
def test_phase(
    invalid: bool, built_reason: str, deployed_reason: str, ready: api.ConditionStatus, phase: str
) -> None:
    built_status: api.ConditionStatus = "True" if built_reason == "Built" else "False"
    deployed_status: api.ConditionStatus = "True" if deployed_reason == "Deployed" else "False"
    assert (
        phase_for(
            invalid,
            built(built_status, built_reason),
            ConditionUpdate("Deployed", deployed_status, deployed_reason, ""),
            ConditionUpdate("Ready", ready, "x", ""),
        )
        == phase
    )


def test_unreadable_status_starts_over_but_keeps_spend() -> None:
    cost = {"replicaUSDPerHour": 0.7, "currentUSDPerHour": 1.4, "monthToDateUSD": 12.5}
    status = parse_status({"phase": "Exploded", "cost": cost})
    assert status.phase is None
    assert status.cost is not None and status.cost.month_to_date_usd == 12.5


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}),
        ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
        ({"a": {"x": 1}}, {"a": 3}, {"a": 3}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


@pytest.mark.parametrize(
    ("desired", "actual", "path"),
    [
        ({"a": 1}, {"a": 1, "extra": 2}, None),  # fields added by others are theirs
        ({"a": {"b": 1}}, {"a": {"b": 2}}, "a.b"),
        ({"l": [{"n": 1}]}, {"l": [{"n": 1, "default": True}]}, None),
        ({"l": [{"n": 1}]}, {"l": [{"n": 1}, {"n": 2}]}, "l"),  # an added container
        ({"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 1}, {"n": 3}]}, "l[1].n"),
        ({"a": {"b": 1}}, {}, "a"),
    ],
)
def test_first_difference(desired: Any, actual: Any, path: str | None) -> None:
    assert first_difference(desired, actual) == path


OWNER = "uid-1"


def child(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "ownerReferences": [{"kind": api.KIND, "uid": OWNER, "controller": True}],
        },
        "spec": spec,
    }


def as_created(manifest: dict[str, Any], scaled: bool = False) -> dict[str, Any]:
    """What the API returns after the operator created `manifest`."""
    created = plan_child(manifest, None, OWNER, scaled_elsewhere=scaled).desired
    return {**created, "metadata": {**created["metadata"], "resourceVersion": "7", "uid": "c"}}


def test_missing_child_is_created_with_its_rendered_hash() -> None:
    change = plan_child(child(replicas=2), None, OWNER, scaled_elsewhere=True)
    assert change.action == "create"
    assert change.desired["spec"]["replicas"] == 2  # replicas set on create even when scaled
    assert naming.RENDERED_HASH in change.desired["metadata"]["annotations"]


def test_a_child_of_another_owner_is_never_touched() -> None:
    theirs = child(replicas=1)
    theirs["metadata"]["ownerReferences"] = []
    assert plan_child(child(replicas=1), theirs, OWNER, scaled_elsewhere=False).action == "conflict"


def test_matching_child_is_kept() -> None:
    actual = as_created(child(replicas=1, paused=False))
    actual["spec"]["progressDeadlineSeconds"] = 600  # an API-server default
    assert plan_child(child(replicas=1, paused=False), actual, OWNER, False).action == "keep"


def test_hand_edit_is_restored_and_a_new_rendering_is_an_update() -> None:
    actual = as_created(child(replicas=1, paused=False))
    actual["spec"]["paused"] = True  # kubectl edit
    change = plan_child(child(replicas=1, paused=False), actual, OWNER, False)
    assert (change.action, change.difference) == ("restore", "spec.paused")
    patch = restore_patch(change)
    assert patch["spec"]["paused"] is False and "name" not in patch["metadata"]

    changed = plan_child(
        child(replicas=1, paused=True), as_created(child(replicas=1, paused=False)), OWNER, False
    )
    assert changed.action == "update"


def test_autoscaled_replicas_belong_to_the_autoscaler() -> None:
    actual = as_created(child(replicas=1), scaled=True)
    actual["spec"]["replicas"] = 7  # the HPA scaled it
    assert plan_child(child(replicas=1), actual, OWNER, scaled_elsewhere=True).action == "keep"
    # Autoscaling switched off: the operator takes the replicas back.
    fixed = plan_child(child(replicas=1), actual, OWNER, scaled_elsewhere=False)
    assert fixed.action == "update" and restore_patch(fixed)["spec"]["replicas"] == 1


def test_a_label_added_to_the_service_selector_is_removed() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "m",
            "ownerReferences": [{"kind": api.KIND, "uid": OWNER, "controller": True}],
        },
        "spec": {"selector": {"optimodel.io/model": "m"}},
    }
    actual = as_created(service)
    actual["spec"] = {"selector": {"optimodel.io/model": "m", "app": "other"}}
    change = plan_child(service, actual, OWNER, scaled_elsewhere=False)
    assert (change.action, change.difference) == ("restore", "spec.selector")
    assert restore_patch(change)["spec"]["selector"] == {"optimodel.io/model": "m", "app": None}
