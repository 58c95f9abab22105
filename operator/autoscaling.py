"""The serving autoscaler: an HPA autoscaling/v2 or a KEDA ScaledObject. Pure rendering.

Both scale the Triton Deployment on GPU utilization (DCGM_FI_DEV_GPU_UTIL from dcgm-exporter,
percent) and, when spec.autoscaling.targetQueueTimeMicroseconds is set, on Triton's average
queue time per request. maxReplicas is the budget's cap (`cost.cap_replicas`), never the spec
maximum directly; `autoscaler_cap_patch` re-caps a live autoscaler without touching the pods.
The prometheus-adapter rules the HPA needs are in operator/AUTOSCALING.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optimodel.operator import api

GPU_UTILIZATION_METRIC = "DCGM_FI_DEV_GPU_UTIL"
# Exposed per pod by the prometheus-adapter rule in AUTOSCALING.md from Triton's counters
# nv_inference_queue_duration_us / nv_inference_request_success.
QUEUE_TIME_METRIC = "nv_inference_queue_duration_us_per_request"
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


@dataclass(frozen=True)
class AutoscalerKind:
    """Where an engine's autoscaler lives in the API (for get/patch by the handlers)."""

    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


HPA = AutoscalerKind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
SCALED_OBJECT = AutoscalerKind("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")


def autoscaler_kind(engine: api.AutoscalingEngine) -> AutoscalerKind:
    """The kind of autoscaler rendered for spec.autoscaling.engine."""
    return HPA if engine == "hpa" else SCALED_OBJECT


@dataclass(frozen=True)
class ScalingBehavior:
    """Scale-up/down speed: quick up (pods take minutes to load a model), slow down."""

    scale_up_stabilization_seconds: int = 60
    scale_up_percent: int = 100
    scale_up_pods: int = 2
    scale_up_period_seconds: int = 60
    scale_down_stabilization_seconds: int = 300
    scale_down_percent: int = 50
    scale_down_period_seconds: int = 120

    def render(self) -> dict[str, Any]:
        """The HPA v2 `behavior` block (KEDA passes it through unchanged)."""
        return {
            "scaleUp": {
                "stabilizationWindowSeconds": self.scale_up_stabilization_seconds,
                "selectPolicy": "Max",
                "policies": [
                    {
                        "type": "Percent",
                        "value": self.scale_up_percent,
                        "periodSeconds": self.scale_up_period_seconds,
                    },
                    {
                        "type": "Pods",
                        "value": self.scale_up_pods,
                        "periodSeconds": self.scale_up_period_seconds,
                    },
                ],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": self.scale_down_stabilization_seconds,
                "selectPolicy": "Max",
                "policies": [
                    {
                        "type": "Percent",
                        "value": self.scale_down_percent,
                        "periodSeconds": self.scale_down_period_seconds,
                    }
                ],
            },
        }


@dataclass(frozen=True)
class PrometheusSource:
    """Where KEDA queries Prometheus, and the labels naming a pod in each exporter's series.

    dcgm-exporter reports the GPU's pod as `pod`/`namespace`; scraped through a ServiceMonitor
    without honorLabels they arrive as `exported_pod`/`exported_namespace`. Triton's own
    metrics are scraped from the pod itself, so they carry `pod`/`namespace`.
    """

    server_address: str = DEFAULT_PROMETHEUS_ADDRESS
    dcgm_namespace_label: str = "exported_namespace"
    dcgm_pod_label: str = "exported_pod"
    triton_namespace_label: str = "namespace"
    triton_pod_label: str = "pod"

    def gpu_utilization_sum(self, namespace: str, deployment: str) -> str:
        """Sum over the Deployment's pods of each pod's mean GPU utilization (percent)."""
        ns, pod = self.dcgm_namespace_label, self.dcgm_pod_label
        return (
            f"sum(avg by ({pod}) ({GPU_UTILIZATION_METRIC}"
            f'{{{ns}="{namespace}",{pod}=~"{_pods_of(deployment)}"}}))'
        )

    def queue_time_average(self, namespace: str, deployment: str) -> str:
        """Mean Triton queue time per request (microseconds) over the Deployment's pods."""
        ns, pod = self.triton_namespace_label, self.triton_pod_label
        selector = f'{{{ns}="{namespace}",{pod}=~"{_pods_of(deployment)}"}}'
        return (
            f"sum(rate(nv_inference_queue_duration_us{selector}[1m])) / "
            f"clamp_min(sum(rate(nv_inference_request_success{selector}[1m])), 0.001)"
        )

    def inference_rate(self, namespace: str, deployment: str, window: str = "5m") -> str:
        """Inferences per second over the Deployment's pods (Triton's nv_inference_count)."""
        ns, pod = self.triton_namespace_label, self.triton_pod_label
        selector = f'{{{ns}="{namespace}",{pod}=~"{_pods_of(deployment)}"}}'
        return f"sum(rate(nv_inference_count{selector}[{window}]))"


def _pods_of(deployment: str) -> str:
    # A Deployment's pods are <deployment>-<pod-template-hash>-<suffix>; names have no regex
    # metacharacters ([a-z0-9-]), so the name needs no escaping.
    return f"{deployment}-[a-z0-9]+-[a-z0-9]+"


def default_labels(name: str) -> dict[str, str]:
    """Recommended labels of the autoscaler of OptimizedModel `name`."""
    return {
        "app.kubernetes.io/name": "optimodel",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "autoscaler",
        "app.kubernetes.io/managed-by": "optimodel-operator",
    }


def render_autoscaler(
    *,
    name: str,
    namespace: str,
    owner_reference: Mapping[str, Any],
    autoscaling: api.Autoscaling,
    max_replicas: int,
    target_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    behavior: ScalingBehavior | None = None,
    prometheus: PrometheusSource | None = None,
    base_replicas: int = 0,
    metric_deployments: str | None = None,
) -> dict[str, Any]:
    """The autoscaler of the Deployment `target_name` (default `name`), capped at max_replicas.

    `max_replicas` is `BudgetCap.max_replicas`. With KEDA and a cap of 0 (minReplicas 0 and
    nothing affordable) the ScaledObject is paused at zero replicas.

    `base_replicas` run beside the target in another Deployment (the on-demand base of spot
    capacity), and `metric_deployments` (a name pattern) covers both: KEDA's triggers then
    read every pod of the model and the GPU-utilization sum less the base's share, so the
    target gets total-desired minus base and wakes from zero when the base is busy. (An HPA's
    Pods metrics average over the target's own pods, which the Service loads like the base.)
    """
    if not autoscaling.enabled:
        raise ValueError("spec.autoscaling.enabled is false: no autoscaler to render")
    if max_replicas < autoscaling.min_replicas:
        raise ValueError(
            f"max_replicas {max_replicas} is below minReplicas {autoscaling.min_replicas}; "
            "pass BudgetCap.max_replicas, which never is"
        )
    target = target_name or name
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {**default_labels(name), **(labels or {})},
        "ownerReferences": [dict(owner_reference)],
    }
    scale_target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}
    rendered_behavior = (behavior or ScalingBehavior()).render()
    if autoscaling.engine == "hpa":
        return _render_hpa(metadata, scale_target, autoscaling, max_replicas, rendered_behavior)
    return _render_scaled_object(
        metadata,
        scale_target,
        autoscaling,
        max_replicas,
        rendered_behavior,
        prometheus or PrometheusSource(),
        namespace,
        base_replicas,
        metric_deployments or target,
    )


def _render_hpa(
    metadata: dict[str, Any],
    scale_target: dict[str, str],
    autoscaling: api.Autoscaling,
    max_replicas: int,
    behavior: dict[str, Any],
) -> dict[str, Any]:
    if autoscaling.min_replicas < 1:
        raise ValueError(
            "spec.autoscaling.minReplicas 0 needs engine keda (the HPA cannot scale to zero)"
        )
    metrics = [_pods_metric(GPU_UTILIZATION_METRIC, autoscaling.target_gpu_utilization)]
    if autoscaling.target_queue_time_microseconds is not None:
        metrics.append(_pods_metric(QUEUE_TIME_METRIC, autoscaling.target_queue_time_microseconds))
    return {
        "apiVersion": HPA.api_version,
        "kind": HPA.kind,
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": scale_target,
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": max_replicas,
            "metrics": metrics,
            "behavior": behavior,
        },
    }


def _pods_metric(metric: str, average: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": metric},
            "target": {"type": "AverageValue", "averageValue": str(average)},
        },
    }


def _render_scaled_object(
    metadata: dict[str, Any],
    scale_target: dict[str, str],
    autoscaling: api.Autoscaling,
    max_replicas: int,
    behavior: dict[str, Any],
    prometheus: PrometheusSource,
    namespace: str,
    base_replicas: int,
    deployment: str,
) -> dict[str, Any]:
    utilization = prometheus.gpu_utilization_sum(namespace, deployment)
    if base_replicas:
        # The base's share of the target: ceil((sum - base x target) / target) is the total
        # the model needs less the base (and below zero, none).
        share = base_replicas * autoscaling.target_gpu_utilization
        utilization = f"clamp_min({utilization} - {share}, 0)"
    triggers: list[dict[str, Any]] = [
        {
            # The sum over pods against a per-replica threshold: desired replicas =
            # ceil(sum / target), the same arithmetic as the HPA's Pods metric.
            "type": "prometheus",
            "name": "gpu-utilization",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus.server_address,
                "query": utilization,
                "threshold": str(autoscaling.target_gpu_utilization),
            },
        }
    ]
    if autoscaling.target_queue_time_microseconds is not None:
        triggers.append(
            {
                # Already an average: Value scales by current replicas x value / target.
                "type": "prometheus",
                "name": "queue-time",
                "metricType": "Value",
                "metadata": {
                    "serverAddress": prometheus.server_address,
                    "query": prometheus.queue_time_average(namespace, deployment),
                    "threshold": str(autoscaling.target_queue_time_microseconds),
                },
            }
        )
    if max_replicas == 0:
        # KEDA's HPA needs maxReplicas >= 1; a budget that affords nothing pauses it at zero.
        metadata = {**metadata, "annotations": {KEDA_PAUSED_REPLICAS: "0"}}
    return {
        "apiVersion": SCALED_OBJECT.api_version,
        "kind": SCALED_OBJECT.kind,
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": scale_target,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": max(max_replicas, 1),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": triggers,
        },
    }


def autoscaler_cap_patch(engine: api.AutoscalingEngine, max_replicas: int) -> dict[str, Any]:
    """A JSON merge patch that re-caps a live autoscaler: no rebuild, no pod restart."""
    if max_replicas < 0:
        raise ValueError("max_replicas must not be negative")
    if engine == "hpa":
        return {"spec": {"maxReplicas": max(max_replicas, 1)}}
    return {
        "metadata": {"annotations": {KEDA_PAUSED_REPLICAS: "0" if max_replicas == 0 else None}},
        "spec": {"maxReplicaCount": max(max_replicas, 1)},
    }


def live_cap(autoscaler: Mapping[str, Any]) -> int | None:
    """The cap a live autoscaler enforces (0 for a ScaledObject paused at zero), or None."""
    spec = autoscaler.get("spec") or {}
    if autoscaler.get("kind") == HPA.kind:
        value = spec.get("maxReplicas")
    else:
        annotations = (autoscaler.get("metadata") or {}).get("annotations") or {}
        if annotations.get(KEDA_PAUSED_REPLICAS) == "0":
            return 0
        value = spec.get("maxReplicaCount")
    return int(value) if isinstance(value, int) else None


def without_cap(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A rendered autoscaler minus the fields the budget owns (maxReplicas, KEDA's pause).

    The operator compares and hashes autoscalers without them, so a new cap is a merge patch
    of those fields only (`autoscaler_cap_patch`), never a rewrite of the autoscaler."""
    stripped = copy.deepcopy(dict(manifest))
    spec = stripped.get("spec") or {}
    spec.pop("maxReplicas" if stripped.get("kind") == HPA.kind else "maxReplicaCount", None)
    annotations = (stripped.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(KEDA_PAUSED_REPLICAS, None)
        if not annotations:
            stripped["metadata"].pop("annotations")
    return stripped


def is_autoscaler(manifest: Mapping[str, Any]) -> bool:
    """Whether a manifest is one of the autoscaler kinds rendered here."""
    return (manifest.get("apiVersion"), manifest.get("kind")) in {
        (HPA.api_version, HPA.kind),
        (SCALED_OBJECT.api_version, SCALED_OBJECT.kind),
    }
