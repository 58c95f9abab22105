"""Spend priced per pod (operator/capacity.py): each serving pod by its node's capacity type
and GPU type, and the split accrued by capacity type (operator/cost.py). Pure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from optimodel.model_builder.spec import Serving
from optimodel.operator.capacity import PROVIDERS, price_serving_pods
from optimodel.operator.cost import PriceCatalog, accrue_spend
from optimodel.operator.hardware import DEFAULT_CPU_REPLICA, DEFAULT_GPUS
from optimodel.operator.kube import KubeError
from optimodel.operator.reconcile import Reconciler
from optimodel.operator.settings import OperatorSettings
from tests.cluster import RecordedEvents

Obj = dict[str, Any]
CATALOG = PriceCatalog()
L4, T4 = DEFAULT_GPUS["nvidia-l4"], DEFAULT_GPUS["nvidia-t4"]
GPU_LABEL = "cloud.google.com/gke-accelerator"
NODES: dict[str, Obj | None] = {
    "od": {"metadata": {"labels": {GPU_LABEL: "nvidia-l4"}}},
    "spot": {"metadata": {"labels": {GPU_LABEL: "nvidia-l4", "cloud.google.com/gke-spot": "true"}}},
    "spot-t4": {
        "metadata": {"labels": {GPU_LABEL: "nvidia-t4", "cloud.google.com/gke-spot": "true"}}
    },
    "spot-unknown-gpu": {
        "metadata": {"labels": {GPU_LABEL: "acme-x9", "cloud.google.com/gke-spot": "true"}}
    },
    "unreadable": None,
}


def pod(node: str | None, phase: str = "Running") -> Obj:
    return {"spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


def rate(pods: list[Obj], replicas: int, serving: Serving | None = None, **extra: Any) -> Any:
    return price_serving_pods(
        pods=pods,
        nodes=NODES,
        replicas=replicas,
        serving=serving or Serving(),
        catalog=CATALOG,
        provider=extra.pop("provider", PROVIDERS["gke"]),
        gpu_node_label=GPU_LABEL,
        **extra,
    )


@pytest.mark.parametrize(
    ("pods", "replicas", "on_demand", "spot"),
    [
        # Each pod at its node's price: capacity from the provider's label, GPU from the other.
        ([pod("od"), pod("spot"), pod("spot-t4")], 3, L4.on_demand_usd_per_hour,
         L4.price("spot") + T4.price("spot")),
        # A GPU type the catalog lacks: the spec's type, at the node's capacity.
        ([pod("spot-unknown-gpu")], 1, 0.0, L4.price("spot")),
        # An unreadable node: on-demand.
        ([pod("unreadable")], 1, L4.on_demand_usd_per_hour, 0.0),
        # Pending (no node yet) and finished pods are not on a node; the Deployments still
        # count two replicas, charged on-demand.
        ([pod(None, "Pending"), pod("spot", "Succeeded")], 2, 2 * L4.on_demand_usd_per_hour, 0.0),
        # Fewer replicas than pods on nodes (a terminating pod): every pod on a node counts.
        ([pod("od"), pod("spot")], 1, L4.on_demand_usd_per_hour, L4.price("spot")),
    ],
)  # fmt: skip
def test_each_pod_is_priced_by_its_node(
    pods: list[Obj], replicas: int, on_demand: float, spot: float
) -> None:
    found = rate(pods, replicas)
    assert found.of("on-demand").usd_per_hour == pytest.approx(on_demand)
    assert found.of("spot").usd_per_hour == pytest.approx(spot)
    assert found.usd_per_hour == pytest.approx(on_demand + spot)


def test_without_a_provider_every_pod_is_on_demand() -> None:
    found = rate([pod("spot")], 1, provider=None)
    assert found.of("spot").replicas == 0
    assert found.of("on-demand").usd_per_hour == pytest.approx(L4.on_demand_usd_per_hour)


def test_gpu_count_cpu_replicas_and_the_price_annotation() -> None:
    two = Serving.model_validate({"gpu": {"type": "nvidia-l4", "count": 2}})
    assert rate([pod("spot")], 1, two).usd_per_hour == pytest.approx(2 * L4.price("spot"))
    cpu = Serving.model_validate({"gpu": {"count": 0}})
    assert rate([pod("spot")], 1, cpu).usd_per_hour == pytest.approx(
        DEFAULT_CPU_REPLICA.price("spot")
    )
    # The model's own price annotation wins on every node.
    override = rate([pod("spot"), pod("od")], 2, two, annotation_override=0.5)
    assert override.usd_per_hour == pytest.approx(2 * 2 * 0.5)


def test_the_split_accrues_by_capacity_and_sums_to_the_total() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    first = accrue_spend(None, 0, L4.on_demand_usd_per_hour, start, {"on-demand": (1, 0.7)})
    # An hour later a spot pod runs beside it: the interval is charged at each type's larger
    # rate (the spot pod may have run all hour).
    later = accrue_spend(
        first, 0, 0.7, start + timedelta(hours=1), {"on-demand": (1, 0.7), "spot": (1, 0.28)}
    )
    assert later.shares["on-demand"].month_to_date_usd == pytest.approx(0.7)
    assert later.shares["spot"].month_to_date_usd == pytest.approx(0.28)
    assert later.month_to_date_usd == pytest.approx(0.98)
    # The spot pod is preempted and comes back on-demand: both types charged for the hour.
    moved = accrue_spend(later, 0, 0.7, start + timedelta(hours=2), {"on-demand": (2, 1.4)})
    assert moved.shares["on-demand"].month_to_date_usd == pytest.approx(0.7 + 1.4)
    assert moved.shares["spot"].month_to_date_usd == pytest.approx(0.28 + 0.28)
    assert moved.shares["spot"].replicas == 0
    assert moved.month_to_date_usd == pytest.approx(
        sum(s.month_to_date_usd for s in moved.shares.values())
    )
    # Stored in status.cost and read back after a restart.
    status = moved.to_status()
    assert status["spot"] == {
        "replicas": 0,
        "currentUSDPerHour": 0.0,
        "monthToDateUSD": pytest.approx(0.56),
    }
    # A new month starts every share from zero.
    april = accrue_spend(
        moved, 0, 0.7, datetime(2026, 4, 1, 1, tzinfo=UTC), {"on-demand": (2, 1.4)}
    )
    assert april.shares["on-demand"].month_to_date_usd == pytest.approx(1.4)
    assert april.shares["spot"].month_to_date_usd == 0.0


class ForbiddenNodes:
    """A KubeApi whose nodes answer with `status`."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def get(self, resource: Any, namespace: str, name: str) -> Obj | None:
        raise KubeError(self.status, "Forbidden", "nodes is forbidden", "GET", f"/nodes/{name}")


def test_unreadable_nodes_price_on_demand_but_other_errors_surface() -> None:
    """An older chart's RBAC without nodes get must not stop reconciles."""
    reconciler = Reconciler(ForbiddenNodes(403), OperatorSettings(), RecordedEvents())  # type: ignore[arg-type]
    assert asyncio.run(reconciler._node("n1")) is None
    failing = Reconciler(ForbiddenNodes(500), OperatorSettings(), RecordedEvents())  # type: ignore[arg-type]
    with pytest.raises(KubeError):
        asyncio.run(failing._node("n1"))
