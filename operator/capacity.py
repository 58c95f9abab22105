"""Spot capacity with an on-demand base: how replicas split between on-demand and spot nodes,
how each provider marks its spot nodes, and what each running serving pod costs. Pure.

`spec.serving.capacity` on-demand keeps one Deployment, as before. spot and
spot-with-fallback run two Deployments behind the one Service (operator/OPERATOR.md has the
why): `<name>`, the base of `onDemandReplicas` that never scales and is held off spot nodes,
and `<name>-spot`, which the autoscaler scales and which requires (spot) or prefers
(spot-with-fallback) spot nodes. The budget's cap is a cap on both together: the spot
autoscaler gets it minus the base (`ReplicaSplit.spot_cap`).

Spend is priced per pod (`price_serving_pods`): each serving pod on a node by that node's
capacity type and GPU type (its labels, named by the provider and the operator's settings);
replicas the Deployments count but no pod shows (not scheduled yet, not readable) at the
catalog's on-demand price, so spend is never under-counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optimodel.model_builder.spec import Capacity, Serving
from optimodel.operator import api, naming
from optimodel.operator.cost import PriceCatalog
from optimodel.operator.hardware import CAPACITY_TYPES, CapacityType

ProviderName = Literal["gke", "eks", "aks", "karpenter"]
PROVIDER_NAMES: tuple[ProviderName, ...] = ("gke", "eks", "aks", "karpenter")
# Label on the pods of each tier; the spot Deployment's selector carries it, so its
# autoscaler reads only spot pods.
CAPACITY_LABEL = f"{api.GROUP}/capacity"
SPOT_SUFFIX = "-spot"


@dataclass(frozen=True)
class CapacityProvider:
    """How one provider labels (and perhaps taints) its spot nodes."""

    name: ProviderName
    label: str  # the node label naming the capacity type
    spot_values: tuple[str, ...]  # its values on spot nodes
    # The taint spot nodes carry (key, value, effect), or None: spot pods tolerate it, base
    # pods do not.
    taint: tuple[str, str, str] | None = None

    def capacity_of(self, node_labels: Mapping[str, str]) -> CapacityType:
        """A node's capacity type: spot when the label says so, else on-demand."""
        return "spot" if node_labels.get(self.label) in self.spot_values else "on-demand"


PROVIDERS: Mapping[ProviderName, CapacityProvider] = {
    # GKE Spot VMs (and preemptible VMs, labelled alike): cloud.google.com/gke-spot=true;
    # GKE does not taint them unless the node pool says so, and tolerating the customary
    # cloud.google.com/gke-spot=true:NoSchedule costs nothing where it is absent.
    "gke": CapacityProvider(
        "gke",
        "cloud.google.com/gke-spot",
        ("true",),
        ("cloud.google.com/gke-spot", "true", "NoSchedule"),
    ),
    # EKS managed node groups: eks.amazonaws.com/capacityType=SPOT or ON_DEMAND; no taint.
    "eks": CapacityProvider("eks", "eks.amazonaws.com/capacityType", ("SPOT",)),
    # AKS spot node pools: kubernetes.azure.com/scalesetpriority=spot, always tainted so.
    "aks": CapacityProvider(
        "aks",
        "kubernetes.azure.com/scalesetpriority",
        ("spot",),
        ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
    ),
    # Karpenter NodePools: karpenter.sh/capacity-type=spot or on-demand (taints are the
    # NodePool's own choice).
    "karpenter": CapacityProvider("karpenter", "karpenter.sh/capacity-type", ("spot",)),
}


def spot_deployment_name(model: str) -> str:
    """The Deployment of the replicas above the on-demand base (capacity spot modes)."""
    return f"{model}{SPOT_SUFFIX}"


def serving_deployments_pattern(model: str) -> str:
    """A regular expression matching both tiers' Deployment names, for pod-name selectors
    in Prometheus queries (<name>-<hash>-<id> and <name>-spot-<hash>-<id>)."""
    return f"{naming.deployment_name(model)}({SPOT_SUFFIX})?"


@dataclass(frozen=True)
class ReplicaSplit:
    """How a model's replicas divide between the on-demand base and the spot tier.

    With capacity on-demand there is no spot tier (`spot` False): the one Deployment holds
    every replica. Otherwise `base` replicas run in `<name>` and the spot Deployment runs
    `spot_min` .. `spot_max` (autoscaled) or exactly `spot_min` (fixed replicas).
    """

    capacity: Capacity
    base: int
    spot_min: int
    spot_max: int
    autoscaled: bool

    @property
    def spot(self) -> bool:
        return self.capacity != "on-demand"

    @property
    def min_total(self) -> int:
        """The fewest replicas that run (what the budget reserves)."""
        return self.base + self.spot_min

    def spot_cap(self, total_cap: int) -> int:
        """The spot autoscaler's maxReplicas for the budget's cap on all replicas."""
        return max(self.spot_min, min(self.spot_max, total_cap - self.base))


def on_demand_base(spec: api.OptimizedModelSpec) -> int:
    """spec.serving.onDemandReplicas, defaulting to autoscaling.minReplicas (without
    autoscaling never more than spec.replicas)."""
    serving = spec.serving
    base = serving.on_demand_replicas
    if base is None:
        base = spec.autoscaling.min_replicas
    if not spec.autoscaling.enabled:
        fixed = spec.replicas if spec.replicas is not None else 1
        return min(base, fixed)
    return base


def replica_split(spec: api.OptimizedModelSpec) -> ReplicaSplit:
    """The split of `spec`'s replicas (validation has checked base <= the maximum)."""
    scaling = spec.autoscaling
    capacity = spec.serving.capacity
    if not scaling.enabled:
        fixed = spec.replicas if spec.replicas is not None else 1
        if capacity == "on-demand":
            return ReplicaSplit(capacity, fixed, 0, 0, False)
        base = on_demand_base(spec)
        return ReplicaSplit(capacity, base, fixed - base, fixed - base, False)
    spec_max = max(scaling.min_replicas, scaling.max_replicas)
    if capacity == "on-demand":
        return ReplicaSplit(capacity, scaling.min_replicas, 0, 0, True)
    base = on_demand_base(spec)
    # An HPA cannot scale to zero: with engine hpa the spot tier keeps one replica.
    floor = 1 if scaling.engine == "hpa" else 0
    spot_min = max(scaling.min_replicas - base, floor)
    return ReplicaSplit(capacity, base, spot_min, max(spec_max - base, spot_min), True)


def capacity_problems(spec: api.OptimizedModelSpec) -> list[tuple[str, str, str]]:
    """(field, message, fix) for a capacity choice that cannot work; spec-only rules (the
    provider setting is checked by policy.py, which has the settings)."""
    serving = spec.serving
    scaling = spec.autoscaling
    base = serving.on_demand_replicas
    if serving.capacity == "on-demand":
        if base is not None:
            return [
                (
                    "spec.serving.onDemandReplicas",
                    "onDemandReplicas only means something with capacity spot or "
                    "spot-with-fallback (every replica is on-demand already)",
                    "remove onDemandReplicas, or set serving.capacity: spot-with-fallback",
                )
            ]
        return []
    if base is None:
        return []
    if not scaling.enabled:
        fixed = spec.replicas if spec.replicas is not None else 1
        if base > fixed:
            return [
                (
                    "spec.serving.onDemandReplicas",
                    f"onDemandReplicas {base} is above replicas {fixed}",
                    f"set onDemandReplicas <= {fixed}",
                )
            ]
        return []
    limit = scaling.max_replicas - (1 if scaling.engine == "hpa" else 0)
    if base > limit:
        why = (
            "; with engine hpa the spot tier keeps at least one replica (an HPA cannot scale "
            "to zero)"
            if scaling.engine == "hpa"
            else ""
        )
        return [
            (
                "spec.serving.onDemandReplicas",
                f"onDemandReplicas {base} leaves no room below maxReplicas "
                f"{scaling.max_replicas}{why}",
                f"set onDemandReplicas <= {max(limit, 0)} or raise autoscaling.maxReplicas",
            )
        ]
    return []


# --- placement ------------------------------------------------------------------------------


def base_placement(provider: CapacityProvider) -> dict[str, Any]:
    """Pod spec fields holding the base off spot nodes: a required node affinity (NotIn also
    matches nodes without the label, which is how GKE and AKS mark on-demand nodes)."""
    term = {"key": provider.label, "operator": "NotIn", "values": list(provider.spot_values)}
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    }


def spot_placement(provider: CapacityProvider, capacity: Capacity) -> dict[str, Any]:
    """Pod spec fields of the spot tier: spot nodes required (spot) or preferred
    (spot-with-fallback: the scheduler, Karpenter and the cluster autoscaler fall back to
    on-demand nodes when no spot node can take the pod), and the spot taint tolerated."""
    term = {"key": provider.label, "operator": "In", "values": list(provider.spot_values)}
    affinity: dict[str, Any]
    if capacity == "spot":
        affinity = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [term]}]
            }
        }
    else:
        affinity = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [term]}}
            ]
        }
    fields: dict[str, Any] = {"affinity": {"nodeAffinity": affinity}}
    if provider.taint is not None:
        key, value, effect = provider.taint
        fields["tolerations"] = [
            {"key": key, "operator": "Equal", "value": value, "effect": effect}
        ]
    return fields


# --- spend per pod --------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacitySpend:
    """Serving pods of one capacity type and what they cost per hour."""

    replicas: int = 0
    usd_per_hour: float = 0.0


@dataclass(frozen=True)
class ServingSpendRate:
    """What the serving pods of one model cost now, by capacity type."""

    by_capacity: Mapping[CapacityType, CapacitySpend] = field(default_factory=dict)

    @property
    def usd_per_hour(self) -> float:
        return sum(item.usd_per_hour for item in self.by_capacity.values())

    @property
    def replicas(self) -> int:
        return sum(item.replicas for item in self.by_capacity.values())

    def of(self, capacity: CapacityType) -> CapacitySpend:
        return self.by_capacity.get(capacity, CapacitySpend())


def _running_on_node(pod: Mapping[str, Any]) -> str | None:
    """The node a pod holds, if it holds one: scheduled and not finished."""
    node = (pod.get("spec") or {}).get("nodeName")
    phase = (pod.get("status") or {}).get("phase")
    if not node or phase in ("Succeeded", "Failed"):
        return None
    if (pod.get("metadata") or {}).get("deletionTimestamp") and phase != "Running":
        return None
    return str(node)


def pod_price(
    serving: Serving,
    catalog: PriceCatalog,
    capacity: CapacityType,
    node_gpu_type: str | None,
    annotation_override: float | None = None,
) -> float:
    """USD per hour of one serving pod on a node of `capacity` whose GPU-type label reads
    `node_gpu_type` (None, or a type the catalog lacks: the spec's type).

    The optimodel.io/price-usd-per-gpu-hour annotation is the model's own price: it wins on
    every node, as it does for the budget."""
    count = serving.gpu.count
    if annotation_override is not None:
        return annotation_override * max(count, 1)
    if count == 0:
        return catalog.cpu_replica_price(capacity)
    gpu_type = serving.gpu.type
    if node_gpu_type is not None and node_gpu_type in catalog.gpu_usd_per_hour:
        gpu_type = node_gpu_type
    return count * catalog.gpu_price(gpu_type, capacity)


def price_serving_pods(
    *,
    pods: Iterable[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any] | None],
    replicas: int,
    serving: Serving,
    catalog: PriceCatalog,
    provider: CapacityProvider | None,
    gpu_node_label: str | None,
    annotation_override: float | None = None,
    gpu_label_values: Mapping[str, str] | None = None,
) -> ServingSpendRate:
    """The spend rate of one model's serving pods.

    `pods` are the model's serving pods, `nodes` the nodes they run on by name (None: not
    readable), `replicas` what its Deployments report (status.replicas, summed). A pod on a
    node is priced by that node's labels: capacity type from the provider's label (no
    provider: on-demand), GPU type from `gpu_node_label`. Replicas beyond the priced pods
    are charged on-demand, so a missing pod never lowers the spend."""
    counts: dict[CapacityType, int] = {}
    costs: dict[CapacityType, float] = {}
    priced = 0
    by_value = {value: name for name, value in (gpu_label_values or {}).items()}
    for pod in pods:
        node_name = _running_on_node(pod)
        if node_name is None:
            continue
        node = nodes.get(node_name)
        labels: Mapping[str, str] = ((node or {}).get("metadata") or {}).get("labels") or {}
        capacity: CapacityType = (
            provider.capacity_of(labels) if provider is not None and node else "on-demand"
        )
        gpu_type = labels.get(gpu_node_label) if gpu_node_label else None
        # The label holds the provider's name where settings map a type to it.
        gpu_type = by_value.get(gpu_type, gpu_type) if gpu_type is not None else None
        price = pod_price(serving, catalog, capacity, gpu_type, annotation_override)
        counts[capacity] = counts.get(capacity, 0) + 1
        costs[capacity] = costs.get(capacity, 0.0) + price
        priced += 1
    unseen = max(0, replicas - priced)
    if unseen:
        price = pod_price(serving, catalog, "on-demand", None, annotation_override)
        counts["on-demand"] = counts.get("on-demand", 0) + unseen
        costs["on-demand"] = costs.get("on-demand", 0.0) + unseen * price
    return ServingSpendRate(
        {
            capacity: CapacitySpend(counts[capacity], costs[capacity])
            for capacity in CAPACITY_TYPES
            if capacity in counts
        }
    )
