"""How fast the operator reacts: OptimizedModel created -> builder Job created.

Runs the real operator (Kopf and the handlers, in a thread) against the Kubernetes API
emulator over HTTP. Latencies are measured on the emulator's clock: from the moment it
stored the OptimizedModel to the moment it stored the Job. Targets (issue 5): one model
< 1 s; 100 models created back to back all have their Job in < 30 s, without errors.

    python -m benchmarks.operator_reconcile [--models 100] [--singles 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from optimodel.operator.settings import OperatorSettings
from tests.cluster import MODELS, KubeHttp, OperatorThread, wait_until
from tests.emulator import EmulatorServer

RESULTS = Path(__file__).resolve().parent / "results" / "operator_reconcile.json"
NS = "bench"


class ErrorCount(logging.Handler):
    """Counts ERROR records of Kopf and the operator (a failed handler logs one)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
                "task": "feature-extraction",
            },
            "optimize": {"quantize": {"mode": "int8-dynamic"}},
        },
    }


def job_latency(server: EmulatorServer, name: str) -> float:
    created = server.emulator.created_at
    return created[("jobs", NS, f"{name}-build-g1")] - created[("optimizedmodels", NS, name)]


def job_created(server: EmulatorServer, name: str) -> bool:
    return ("jobs", NS, f"{name}-build-g1") in server.emulator.created_at


def reconcile_errors() -> float:
    return REGISTRY.get_sample_value("optimodel_reconciles_total", {"result": "error"}) or 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(models: int, singles: int) -> dict[str, Any]:
    errors = ErrorCount()
    for name in ("kopf", "optimodel"):
        logging.getLogger(name).addHandler(errors)
    settings = OperatorSettings.model_validate(
        {"metricsPort": 0, "healthPort": 0, "peering": {"standalone": True}}
    )
    errors_before = reconcile_errors()
    with EmulatorServer() as server:
        http = KubeHttp(server.url)
        with OperatorThread(server.url, settings):
            # Warm-up: the first reconcile imports and caches the CRD schema.
            http.create(MODELS, NS, manifest("warmup"))
            wait_until(lambda: http.jobs(NS, "warmup"), 30, "the warm-up Job")

            single: list[float] = []
            for index in range(singles):
                name = f"single-{index}"
                http.create(MODELS, NS, manifest(name))
                wait_until(partial(job_created, server, name), 30, f"the Job of {name}")
                single.append(job_latency(server, name))

            names = [f"burst-{index:03d}" for index in range(models)]
            started = time.monotonic()
            for name in names:
                http.create(MODELS, NS, manifest(name))
            submitted = time.monotonic() - started

            def all_jobs() -> bool:
                created = server.emulator.created_at
                return all(("jobs", NS, f"{name}-build-g1") in created for name in names)

            wait_until(all_jobs, 120, f"{models} Jobs")
            created = server.emulator.created_at
            first_model = min(created[("optimizedmodels", NS, name)] for name in names)
            last_job = max(created[("jobs", NS, f"{name}-build-g1")] for name in names)
            burst = [job_latency(server, name) for name in names]

            def all_reported() -> bool:
                for item in http.list_objects(MODELS, NS):
                    conditions = (item.get("status") or {}).get("conditions") or []
                    if not any(
                        c["type"] == "Built" and c["reason"] == "Building" for c in conditions
                    ):
                        return False
                return True

            wait_until(all_reported, 60, "every model's status to report its build")
            jobs_total = len(http.list_objects(("batch/v1", "jobs"), NS))

    return {
        "single": {
            "runs": singles,
            "median_s": statistics.median(single),
            "p90_s": percentile(single, 0.9),
            "max_s": max(single),
        },
        "burst": {
            "models": models,
            "submit_s": submitted,
            "all_jobs_created_s": last_job - first_model,
            "median_s": statistics.median(burst),
            "p90_s": percentile(burst, 0.9),
            "max_s": max(burst),
        },
        "jobs_total": jobs_total,
        "expected_jobs": models + singles + 1,
        "reconcile_errors": reconcile_errors() - errors_before,
        "error_logs": errors.messages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100, help="models created back to back")
    parser.add_argument("--singles", type=int, default=20, help="one-at-a-time latency runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.models, args.singles)
    single, burst = result["single"], result["burst"]
    print(
        f"one model -> Job: median {single['median_s'] * 1000:.0f} ms, "
        f"p90 {single['p90_s'] * 1000:.0f} ms, max {single['max_s'] * 1000:.0f} ms "
        f"({single['runs']} runs; target < 1 s)"
    )
    print(
        f"{burst['models']} models -> all Jobs created in {burst['all_jobs_created_s']:.2f} s "
        f"(submitted in {burst['submit_s']:.2f} s; per model median "
        f"{burst['median_s']:.2f} s, max {burst['max_s']:.2f} s; target < 30 s)"
    )
    print(
        f"Jobs: {result['jobs_total']} of {result['expected_jobs']} expected, reconcile errors: "
        f"{result['reconcile_errors']:.0f}, error logs: {len(result['error_logs'])}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    ok = (
        single["max_s"] < 1.0
        and burst["all_jobs_created_s"] < 30.0
        and result["jobs_total"] == result["expected_jobs"]
        and not result["reconcile_errors"]
        and not result["error_logs"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
