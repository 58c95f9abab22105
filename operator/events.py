"""Kubernetes Events on OptimizedModels, posted through Kopf's event queue.

Events are emitted on transitions only (a Job created, a condition that changed, a child
restored), never on every reconcile, so an idle or broken model does not flood the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from optimodel.operator import api
from optimodel.operator.status import ModelEvent


class EventSink(Protocol):
    """Where the reconciler sends Events (Kopf in the operator, a list in tests)."""

    def post(self, model: Mapping[str, Any], event: ModelEvent) -> None: ...


def involved_object(model: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a model's body an Event refers to."""
    meta = model["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


class KopfEvents:
    """Post through Kopf (batched, retried, never failing a reconcile)."""

    def post(self, model: Mapping[str, Any], event: ModelEvent) -> None:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, involved_object(model))),
            type=event.type,
            reason=event.reason,
            message=event.message,
        )
