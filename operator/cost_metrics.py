"""Prometheus gauges of serving cost and budget, one series per OptimizedModel.

Nothing registers at import: `CostMetrics(registry)` defines the gauges in the registry the
operator exports (or a fresh one in tests), and `observe` sets them from status.cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from optimodel.operator import api
from optimodel.operator.cost import Budget
from optimodel.operator.hardware import CAPACITY_TYPES

LABELS = ("namespace", "name")


class CostMetrics:
    """The operator's cost gauges, labelled by the OptimizedModel's namespace and name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, LABELS, registry=registry)

        self.cost_usd_per_hour = gauge(
            "optimodel_cost_usd_per_hour", "Serving cost now: replicas x replica price."
        )
        self.replica_usd_per_hour = gauge(
            "optimodel_replica_cost_usd_per_hour", "Price of one serving replica-hour."
        )
        self.budget_usd_per_hour = gauge(
            "optimodel_budget_usd_per_hour", "Hourly budget annotation (absent when unset)."
        )
        self.budget_usd_per_month = gauge(
            "optimodel_budget_usd_per_month", "Monthly budget annotation (absent when unset)."
        )
        self.month_to_date_usd = gauge(
            "optimodel_month_to_date_spend_usd", "Serving spend this month (UTC)."
        )
        self.projected_month_usd = gauge(
            "optimodel_projected_month_spend_usd",
            "Month-to-date spend plus the current hourly cost until the month ends.",
        )
        self.max_affordable_replicas = gauge(
            "optimodel_max_affordable_replicas",
            "Replicas the budget affords now (absent when there is no budget).",
        )
        self.usd_per_million_inferences = gauge(
            "optimodel_usd_per_million_inferences", "Serving cost of one million inferences."
        )
        self.within_budget = gauge(
            "optimodel_within_budget", "1 when the WithinBudget condition is True, else 0."
        )

        def by_capacity(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, (*LABELS, "capacity"), registry=registry)

        self.capacity_cost_usd_per_hour = by_capacity(
            "optimodel_capacity_cost_usd_per_hour",
            "Serving cost now of the pods on one capacity type (on-demand, spot).",
        )
        self.capacity_month_to_date_usd = by_capacity(
            "optimodel_capacity_month_to_date_spend_usd",
            "This month's serving spend (UTC) on one capacity type.",
        )
        self.capacity_replicas = by_capacity(
            "optimodel_capacity_replicas", "Serving pods on one capacity type."
        )
        self._by_capacity = (
            self.capacity_cost_usd_per_hour,
            self.capacity_month_to_date_usd,
            self.capacity_replicas,
        )
        self._all = (
            self.cost_usd_per_hour,
            self.replica_usd_per_hour,
            self.budget_usd_per_hour,
            self.budget_usd_per_month,
            self.month_to_date_usd,
            self.projected_month_usd,
            self.max_affordable_replicas,
            self.usd_per_million_inferences,
            self.within_budget,
        )

    def observe(
        self,
        namespace: str,
        name: str,
        cost: Mapping[str, Any],
        budget: Budget,
        within_budget: bool,
    ) -> None:
        """Set every gauge of one OptimizedModel from its status.cost and budget."""
        status = api.CostStatus.model_validate(cost)
        values: list[tuple[Gauge, float | None]] = [
            (self.cost_usd_per_hour, status.current_usd_per_hour),
            (self.replica_usd_per_hour, status.replica_usd_per_hour),
            (self.budget_usd_per_hour, budget.usd_per_hour),
            (self.budget_usd_per_month, budget.usd_per_month),
            (self.month_to_date_usd, status.month_to_date_usd),
            (self.projected_month_usd, status.projected_month_usd),
            (self.max_affordable_replicas, status.max_affordable_replicas),
            (self.usd_per_million_inferences, status.usd_per_million_inferences),
            (self.within_budget, 1.0 if within_budget else 0.0),
        ]
        for gauge, value in values:
            if value is None:
                _remove(gauge, namespace, name)
            else:
                gauge.labels(namespace, name).set(value)
        for capacity, share in (("on-demand", status.on_demand), ("spot", status.spot)):
            shares = (
                (self.capacity_cost_usd_per_hour, share and share.current_usd_per_hour),
                (self.capacity_month_to_date_usd, share and share.month_to_date_usd),
                (self.capacity_replicas, share and share.replicas),
            )
            for gauge, number in shares:
                if share is None:
                    _remove(gauge, namespace, name, capacity)
                else:
                    gauge.labels(namespace, name, capacity).set(float(number or 0))

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted OptimizedModel."""
        for gauge in self._all:
            _remove(gauge, namespace, name)
        for gauge in self._by_capacity:
            for capacity in CAPACITY_TYPES:
                _remove(gauge, namespace, name, capacity)


def _remove(gauge: Gauge, *labels: str) -> None:
    # An unset value is an absent series, not a 0 that would read as "budget of $0".
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
