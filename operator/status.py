"""Status per the Kubernetes API conventions: conditions, observedGeneration, phase. Pure.

`lastTransitionTime` changes only when a condition's status does (not its reason or
message), every condition names the generation it describes, and the operator writes the
status only when something in it changed, so an idle model costs no API writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from optimodel.operator import api

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class ModelEvent:
    """A Kubernetes Event to post on the OptimizedModel."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ConditionUpdate:
    """The desired state of one condition."""

    type: api.ConditionType
    status: api.ConditionStatus
    reason: str
    message: str


def find_condition(
    conditions: Sequence[api.Condition], kind: api.ConditionType
) -> api.Condition | None:
    return next((condition for condition in conditions if condition.type == kind), None)


def set_condition(
    conditions: Sequence[api.Condition],
    update: ConditionUpdate,
    generation: int,
    now: datetime,
) -> list[api.Condition]:
    """`conditions` with `update` applied; order kept, new types appended."""
    previous = find_condition(conditions, update.type)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == update.status
        else now.replace(microsecond=0)
    )
    updated = api.Condition(
        type=update.type,
        status=update.status,
        reason=update.reason,
        message=update.message[:32768],
        last_transition_time=transition,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if condition.type == update.type else condition for condition in conditions]


def changed(old: api.Condition | None, new: api.Condition | None) -> bool:
    """Whether a condition moved (status, reason or message), for Events."""
    if new is None:
        return False
    if old is None:
        return True
    return (old.status, old.reason, old.message) != (new.status, new.reason, new.message)


def parse_status(raw: Mapping[str, Any] | None) -> api.OptimizedModelStatus:
    """The stored status; a status this operator cannot read starts over rather than wedging
    every reconcile (it is rewritten in full from the observed world anyway)."""
    try:
        return api.OptimizedModelStatus.model_validate(dict(raw or {}))
    except ValidationError:
        kept = {key: value for key, value in (raw or {}).items() if key in ("cost",)}
        try:
            return api.OptimizedModelStatus.model_validate(kept)
        except ValidationError:
            return api.OptimizedModelStatus()


def status_document(status: api.OptimizedModelStatus) -> dict[str, Any]:
    """The status as written to the API (camelCase, no nulls)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def phase_for(
    invalid: bool, built: ConditionUpdate, deployed: ConditionUpdate, ready: ConditionUpdate
) -> api.Phase:
    """One word for `kubectl get`: the furthest point the model reached, or where it failed."""
    if invalid:
        return "Failed"
    if ready.status == "True":
        return "Ready"
    if built.status != "True":
        if built.reason in ("Building", "BuildPending"):
            return "Building"
        return "Failed"
    if deployed.reason in ("NameConflict", "ProgressDeadlineExceeded"):
        return "Failed"
    return "Deploying"
