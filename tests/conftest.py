"""Shared fixtures: paths of the repository."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cluster import OperatorThread
    from tests.test_operator_cluster import Cluster
    from tests.test_prometheus import PrometheusServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


# Shared by the operator's end-to-end modules; imported lazily so that tests which need no
# cluster never import Kopf or the emulator.
@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh Kubernetes API emulator over HTTP, with a simulated Job controller."""
    from tests.cluster import JobController, KubeHttp
    from tests.emulator import EmulatorServer
    from tests.test_operator_cluster import PEERINGS, Cluster

    with EmulatorServer(PEERINGS) as server:
        http = KubeHttp(server.url)
        yield Cluster(server, http, JobController(http))


@pytest.fixture
def operator(cluster: Cluster) -> Iterator[OperatorThread]:
    """The operator running against `cluster` in its own thread."""
    with cluster.operator() as running:
        yield running


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    """A Prometheus HTTP API stand-in on 127.0.0.1 answering canned query results."""
    from tests.test_prometheus import PrometheusServer

    server = PrometheusServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
