"""Manifests that are valid but cannot work: warnings, not errors (pure).

The API server accepts these and the operator runs them as asked; they are reported so the
user learns before deploying that the model would never serve, never wake or never scale.
`optimodel validate` shows them apart from problems and still exits 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optimodel.model_builder.spec import SpecProblem
from optimodel.operator import api
from optimodel.operator.cost import (
    CostError,
    PriceCatalog,
    parse_budget,
    parse_price_override,
    replica_cost_per_hour,
)


def budget_warnings(
    spec: api.OptimizedModelSpec, annotations: Mapping[str, Any], catalog: PriceCatalog
) -> list[SpecProblem]:
    """An hourly budget below the price of one replica affords no replica at all."""
    try:
        budget = parse_budget(annotations)
        price = replica_cost_per_hour(spec.serving, catalog, parse_price_override(annotations))
    except CostError:
        return []  # an unreadable amount or GPU type is reported elsewhere
    hourly = budget.usd_per_hour
    if hourly is None or price <= 0 or hourly >= price:
        return []
    scaling = spec.autoscaling
    keeps = scaling.min_replicas if scaling.enabled else (spec.replicas or 0)
    consequence = (
        f"the operator keeps {keeps} replica(s) running over budget (WithinBudget=False)"
        if keeps
        else "nothing is ever served"
    )
    return [
        SpecProblem(
            f"metadata.annotations[{api.BUDGET_USD_PER_HOUR}]",
            f"${hourly:g}/h is below the price of one replica (${price:g}/h for "
            f"{spec.serving.gpu.count} x {spec.serving.gpu.type}): {consequence}",
            f'raise the budget to at least "{price:g}", or serve on a cheaper GPU type',
        )
    ]


def autoscaling_warnings(spec: api.OptimizedModelSpec) -> list[SpecProblem]:
    """Autoscalers that can never act on the signals optimodel gives them."""
    scaling = spec.autoscaling
    if not scaling.enabled:
        return []
    warnings: list[SpecProblem] = []
    if scaling.engine == "keda" and scaling.min_replicas == 0:
        warnings.append(
            SpecProblem(
                "spec.autoscaling.minReplicas",
                "KEDA at minReplicas 0 can never wake: every trigger optimodel renders (GPU "
                "utilization, queue time) reads metrics of the serving pods themselves, and at "
                "zero replicas there are none",
                "set minReplicas: 1 (KEDA still scales on the triggers above it)",
            )
        )
    if spec.serving.gpu.count == 0:
        queue = scaling.target_queue_time_microseconds is not None
        warnings.append(
            SpecProblem(
                "spec.autoscaling.targetGPUUtilization",
                "serving.gpu.count is 0, so there is no GPU utilization to scale on"
                + (
                    ": only the queue-time target can move replicas"
                    if queue
                    else ": the autoscaler never sees its metric and never scales"
                ),
                "set serving.gpu.count >= 1, or autoscaling.enabled: false with spec.replicas"
                + ("" if queue else ", or add targetQueueTimeMicroseconds"),
            )
        )
    return warnings


def feasibility_warnings(
    spec: api.OptimizedModelSpec,
    annotations: Mapping[str, Any],
    catalog: PriceCatalog | None = None,
) -> list[SpecProblem]:
    """Every reason a valid spec cannot work; `catalog` defaults to the built-in prices."""
    return [
        *budget_warnings(spec, annotations, catalog or PriceCatalog()),
        *autoscaling_warnings(spec),
    ]
