"""What every handler shares: the memo's Reconciler and error translation for Kopf."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from optimodel.operator import naming
from optimodel.operator.budget import SpendTick
from optimodel.operator.kube import KubeError
from optimodel.operator.reconcile import ReconcileConflictError, Reconciler

MODEL_RESOURCE = ("optimodel.io", "v1alpha1", "optimizedmodels")


def reconciler_of(memo: Any) -> Reconciler:
    reconciler = getattr(memo, "reconciler", None)
    if not isinstance(reconciler, Reconciler):
        raise kopf.PermanentError("the operator was started without a Reconciler in its memo")
    return reconciler


async def reconcile_labelled_model(
    namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    """A child of a model changed (its Job, Deployment, Service…): reconcile that model."""
    model = labels.get(naming.MODEL)
    if namespace is None or not model:
        return
    await reconciler_of(memo).reconcile(namespace, model, coalesce=True)


async def reconcile_for_kopf(
    memo: Any, namespace: str, name: str, *, tick: SpendTick | None = None
) -> None:
    """Reconcile; API hiccups become Kopf retries with a short delay instead of a long backoff."""
    try:
        await reconciler_of(memo).reconcile(namespace, name, tick=tick)
    except ReconcileConflictError as error:
        raise kopf.TemporaryError(str(error), delay=1) from error
    except KubeError as error:
        if error.transient:
            raise kopf.TemporaryError(str(error), delay=5) from error
        raise
