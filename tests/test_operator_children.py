"""Desired vs actual autoscalers (operator/children.py): the budget's cap is not part of the
rendering the operator enforces, and only its own autoscaler is ever deleted."""

from __future__ import annotations

import copy
from typing import Any

from optimodel.operator import api, naming
from optimodel.operator.autoscaling import render_autoscaler
from optimodel.operator.children import plan_child, plan_removals
from optimodel.operator.render.common import ModelRef

MODEL = ModelRef(name="minilm", namespace="ml", uid="uid-1")


def hpa(cap: int) -> dict[str, Any]:
    return render_autoscaler(
        name="minilm",
        namespace="ml",
        owner_reference=MODEL.owner_reference(),
        autoscaling=api.Autoscaling(),
        max_replicas=cap,
        labels=naming.labels("minilm", naming.AUTOSCALER),
    )


def live(manifest: dict[str, Any], uid: str = "hpa-uid") -> dict[str, Any]:
    """What the API server returns after creating the manifest."""
    created = copy.deepcopy(manifest)
    created["metadata"].update(uid=uid, resourceVersion="7")
    created["status"] = {"currentReplicas": 2, "desiredReplicas": 2}
    return created


def test_a_new_cap_is_not_an_update_of_the_autoscaler() -> None:
    created = plan_child(hpa(8), None, MODEL.uid, scaled_elsewhere=True)
    assert created.action == "create" and created.desired["spec"]["maxReplicas"] == 8
    actual = live(dict(created.desired))
    # Re-capped by the budget (or by hand): the rest still matches, the cap is patched apart.
    assert plan_child(hpa(3), actual, MODEL.uid, scaled_elsewhere=True).action == "keep"
    edited = copy.deepcopy(actual)
    edited["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = "99"
    restore = plan_child(hpa(3), edited, MODEL.uid, scaled_elsewhere=True)
    assert restore.action == "restore" and restore.difference is not None
    assert "maxReplicas" not in restore.desired["spec"]  # the restore patch leaves the cap be


def test_only_the_models_own_autoscaler_is_removed() -> None:
    ours = live(hpa(3))
    theirs = copy.deepcopy(ours)
    theirs["metadata"]["ownerReferences"] = []
    removable = [("HorizontalPodAutoscaler", "minilm"), ("ScaledObject", "minilm")]
    key = ("HorizontalPodAutoscaler", "minilm")
    [removal] = plan_removals([], {key: ours}, MODEL.uid, removable)
    assert removal.action == "delete" and removal.kind == "HorizontalPodAutoscaler"
    assert plan_removals([], {key: theirs}, MODEL.uid, removable) == []
    assert plan_removals([hpa(3)], {key: ours}, MODEL.uid, removable) == []  # still rendered
