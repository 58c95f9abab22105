"""Prometheus metrics of the operator: its own work, and the cost gauges per OptimizedModel
(defined in cost_metrics.py, registered here in the registry /metrics serves).

Served on settings.metricsPort at /metrics by `serve_metrics`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from optimodel.operator.cost_metrics import CostMetrics

RECONCILES = Counter(
    "optimodel_reconciles",
    "Reconciles of OptimizedModels by result (ok, conflict-retried, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "optimodel_reconcile_duration_seconds",
    "Time to reconcile one OptimizedModel (reads, decisions, writes).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BUILDS_STARTED = Counter("optimodel_builds_started", "Builder Jobs created.")
BUILDS_SUCCEEDED = Counter("optimodel_builds_succeeded", "Builds that passed the accuracy gate.")
BUILDS_FAILED = Counter(
    "optimodel_builds_failed",
    "Builds that failed, by reason (AccuracyBelowThreshold, InvalidSpec, BuildFailed, ...).",
    ["reason"],
)
BUILD_SECONDS = Histogram(
    "optimodel_build_duration_seconds",
    "Wall time of successful builder Jobs (start to completion).",
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
DRIFT_REPAIRS = Counter(
    "optimodel_drift_repairs", "Children restored after a hand edit or deletion.", ["kind"]
)
MODELS = Gauge("optimodel_models", "OptimizedModels by phase.", ["phase"])
# Set by every reconcile from status.cost; a deleted model's series are removed.
COST = CostMetrics(REGISTRY)


def serve_metrics(port: int, address: str = "0.0.0.0") -> int:
    """Start the /metrics HTTP server in a daemon thread; returns the bound port."""
    server, _ = start_http_server(port, addr=address)
    return int(server.server_port)
