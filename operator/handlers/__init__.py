"""Kopf handlers: thin shells that turn an event into one `Reconciler.reconcile` call.

One module per event source; every handler has a stable id (Kopf keeps handler progress
under it), and all of them share the Reconciler in Kopf's memo, which serializes the work
per model.
"""

from __future__ import annotations

import kopf
from kubernetes import client as k8s

from optimodel.operator.handlers import (
    on_build_job,
    on_login,
    on_model_change,
    on_model_event,
    on_serving_child,
)
from optimodel.operator.settings import OperatorSettings


def register(
    registry: kopf.OperatorRegistry, settings: OperatorSettings, configuration: k8s.Configuration
) -> None:
    """Register every handler of the operator into `registry`."""
    on_login.register(registry, configuration)
    on_model_change.register(registry)
    on_build_job.register(registry)
    on_serving_child.register(registry)
    # No Kopf timers (they bring Kopf's finalizer): resyncs and budget ticks run in the
    # periodic loop (periodic.py), fed with the models this watch sees.
    on_model_event.register(registry)
