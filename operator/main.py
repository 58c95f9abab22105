"""The operator's entry point: settings, connection, metrics, then Kopf.

`optimodel operator` calls `main`; tests and benchmarks embed `run_operator` in a thread
with their own Configuration and stop/ready flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any, cast

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from optimodel.operator import handlers
from optimodel.operator.events import EventSink, KopfEvents
from optimodel.operator.kube import KubeApi
from optimodel.operator.metrics import serve_metrics
from optimodel.operator.peering import PeeringGate
from optimodel.operator.periodic import PeriodicLoop, PeriodicSchedule
from optimodel.operator.reconcile import Reconciler
from optimodel.operator.settings import OperatorSettings, SettingsError, load_settings

logger = logging.getLogger("optimodel.operator")

Flag = asyncio.Event | threading.Event | asyncio.Future[object]


class KubeConnectionError(RuntimeError):
    """Neither in-cluster credentials nor a kubeconfig were found."""


class QuietEventHandlers(logging.Filter):
    """Drop Kopf's "Handler ... succeeded" lines for the event handlers (child and model
    watches fire on every Deployment status change); change handlers keep theirs."""

    NOISY = ("'build-job'", "'serving-", "'model-event'")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Handler ")
            and message.endswith(" succeeded.")
            and any(name in message for name in self.NOISY)
        )


QUIET_EVENT_HANDLERS = QuietEventHandlers()


def kube_configuration() -> k8s.Configuration:
    """In-cluster service account first, then the local kubeconfig."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (k8s_config.ConfigException, FileNotFoundError) as error:
            raise KubeConnectionError(
                "no Kubernetes credentials: not running in a pod with a service account, and "
                f"no usable kubeconfig ({error}); fix: run in the cluster or set KUBECONFIG"
            ) from None
    return configuration


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """Kopf's own settings for this operator."""
    configured = kopf.OperatorSettings()
    # Handler progress and the last-handled spec live in annotations: the CRD's structural
    # schema would prune Kopf's fields from status.
    configured.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    configured.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    # Kopf's own log lines become Events only for warnings; the operator posts its own.
    configured.posting.level = logging.WARNING
    configured.posting.reporting_component = "optimodel-operator"
    # Reconnect watches now and then: a silently dead connection must not stall the operator.
    configured.watching.server_timeout = 300
    configured.watching.client_timeout = 330
    return configured


def peering_priority(settings: OperatorSettings) -> int:
    if settings.peering.priority is not None:
        return settings.peering.priority
    return random.SystemRandom().randint(1, 1_000_000)


def peering_identity() -> str:
    """This process's key in the peering object, as Kopf builds its own (pod, then host)."""
    who = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{who}/{os.getpid()}/{secrets.token_hex(3)}"


async def run_operator(
    settings: OperatorSettings,
    configuration: k8s.Configuration,
    *,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    events: EventSink | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run Kopf with the operator's handlers until `stop_flag` is set (or a signal arrives)."""
    logging.getLogger("kopf.objects").addFilter(QUIET_EVENT_HANDLERS)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings, configuration)
    api = KubeApi(configuration)
    reconciler = Reconciler(api=api, settings=settings, events=events or KopfEvents())
    identity, priority = peering_identity(), peering_priority(settings)
    schedule = PeriodicSchedule(
        {"resync": settings.resync_seconds, "budget": settings.budget_interval_seconds}
    )
    gate = PeeringGate(
        api,
        identity,
        priority,
        settings.peering.name,
        standalone=settings.peering.standalone,
        namespaces=tuple(settings.namespaces),
    )
    periodic = asyncio.create_task(
        PeriodicLoop(reconciler, schedule, gate).run(), name="optimodel periodic loop"
    )
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings(settings),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.peering.standalone,
            # kopf's Identity is a NewType of str that kopf does not export.
            identity=cast(Any, identity),
            priority=priority,
            # Naming the peering makes it mandatory: without the (Cluster)KopfPeering CRD the
            # operator waits rather than risk two replicas acting at once.
            peering_name=None if settings.peering.standalone else settings.peering.name,
            liveness_endpoint=liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=kopf.Memo(reconciler=reconciler, periodic=schedule),
        )
    finally:
        periodic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await periodic
        api.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the settings, connect, serve metrics, run until SIGTERM. Returns the exit code."""
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        configuration = kube_configuration()
    except (SettingsError, KubeConnectionError) as error:
        print(f"optimodel operator: {error}", file=sys.stderr)
        return 2
    if settings.metrics_port:
        port = serve_metrics(settings.metrics_port)
        logger.info("metrics on :%d/metrics", port)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    scope = ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    logger.info("serving OptimizedModels in %s", scope)
    asyncio.run(run_operator(settings, configuration, liveness_endpoint=liveness))
    return 0
