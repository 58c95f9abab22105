"""Pure renderers of every child of an OptimizedModel: Job, ConfigMap, Service, the
Deployment (two with spot capacity: the on-demand base and the spot tier), the
PodDisruptionBudget, the autoscaler (HorizontalPodAutoscaler or KEDA ScaledObject, capped by
the budget) and the optional NetworkPolicy.

`render_children` is the one place that decides which serving objects exist; the reconciler
creates what is missing, restores what drifted and deletes the autoscaler or NetworkPolicy it
no longer renders, for whatever this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from optimodel.operator import api, naming
from optimodel.operator.artifacts import ArtifactStore
from optimodel.operator.autoscaling import render_autoscaler
from optimodel.operator.capacity import (
    ReplicaSplit,
    replica_split,
    serving_deployments_pattern,
    spot_deployment_name,
)
from optimodel.operator.render.common import Manifest, ModelRef
from optimodel.operator.render.configmap import (
    configs_hash,
    render_config_map,
    served_triton_configs,
)
from optimodel.operator.render.deployment import (
    Tier,
    TritonDeploymentInputs,
    render_triton_deployment,
)
from optimodel.operator.render.disruption import render_disruption_budget
from optimodel.operator.render.job import BuildRequest, render_build_job
from optimodel.operator.render.network_policy import render_network_policy
from optimodel.operator.render.service import render_service
from optimodel.operator.settings import OperatorSettings

__all__ = [
    "BuildRequest",
    "Manifest",
    "ModelRef",
    "ServingInputs",
    "autoscaled_deployment",
    "initial_replicas",
    "render_build_job",
    "render_children",
]


@dataclass(frozen=True)
class ServingInputs:
    """Everything the serving children of one model are rendered from."""

    model: ModelRef
    spec: api.OptimizedModelSpec
    build: api.BuildStatus
    store: ArtifactStore
    settings: OperatorSettings
    now: datetime
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: api.OptimizedModelStatus = field(default_factory=api.OptimizedModelStatus)
    # The autoscaler's maxReplicas: the budget's cap (budget.BudgetOutcome.max_replicas);
    # None renders the spec's maximum.
    max_replicas: int | None = None


def initial_replicas(spec: api.OptimizedModelSpec) -> int:
    """Deployment replicas: spec.replicas without autoscaling; with it, the autoscaler owns
    the count and this is only the starting point (at least 1, so the first rollout proves
    the artifact serves)."""
    if not spec.autoscaling.enabled:
        return spec.replicas if spec.replicas is not None else 1
    return max(1, spec.autoscaling.min_replicas)


def autoscaled_deployment(spec: api.OptimizedModelSpec, model: str) -> str | None:
    """The Deployment the autoscaler scales (the spot tier when there is one), or None."""
    if not spec.autoscaling.enabled:
        return None
    if replica_split(spec).spot:
        return spot_deployment_name(model)
    return naming.deployment_name(model)


def _deployments(inputs: ServingInputs, split: ReplicaSplit, config_hash: str) -> list[Manifest]:
    """The Triton Deployment(s): one, or the on-demand base and the spot tier."""

    def render(tier: Tier, replicas: int) -> Manifest:
        return render_triton_deployment(
            TritonDeploymentInputs(
                model=inputs.model,
                spec=inputs.spec,
                build=inputs.build,
                store=inputs.store,
                config_hash=config_hash,
                replicas=replicas,
                tier=tier,
            ),
            inputs.settings,
        )

    if not split.spot:
        return [render("all", initial_replicas(inputs.spec))]
    # The base never scales; the spot tier starts at its minimum (the autoscaler owns it).
    return [render("on-demand", split.base), render("spot", split.spot_min)]


def render_children(inputs: ServingInputs) -> list[Manifest]:
    """The serving objects of one built model, in the order they are applied."""
    if inputs.build.signature is None:
        raise ValueError(
            f"status.build of {inputs.model.name} has no signature; the operator cannot render "
            "its config.pbtxt files (rebuild the model)"
        )
    configs = served_triton_configs(
        inputs.model.name,
        inputs.spec.source.task,
        inputs.build.signature,
        inputs.spec.serving,
        max_sequence_length=inputs.spec.source.max_sequence_length,
    )
    split = replica_split(inputs.spec)
    children = [render_config_map(inputs.model, configs), render_service(inputs.model)]
    policy = inputs.settings.serving.network_policy
    if policy.enabled:
        # Before the Deployment: no Triton pod ever runs without it.
        children.append(render_network_policy(inputs.model, policy))
    children += _deployments(inputs, split, configs_hash(configs))
    children.append(render_disruption_budget(inputs.model))
    scaling = inputs.spec.autoscaling
    target = autoscaled_deployment(inputs.spec, inputs.model.name)
    if target is not None:
        cap = inputs.max_replicas
        if cap is None:
            cap = max(scaling.min_replicas, scaling.max_replicas)
        base, pattern = 0, None
        if split.spot:
            # The budget caps all replicas: the spot tier gets what the base leaves.
            scaling = scaling.model_copy(update={"min_replicas": split.spot_min})
            cap = split.spot_cap(cap)
            base, pattern = split.base, serving_deployments_pattern(inputs.model.name)
        children.append(
            render_autoscaler(
                name=naming.autoscaler_name(inputs.model.name),
                namespace=inputs.model.namespace,
                owner_reference=inputs.model.owner_reference(),
                autoscaling=scaling,
                max_replicas=cap,
                target_name=target,
                labels=naming.labels(inputs.model.name, naming.AUTOSCALER),
                prometheus=inputs.settings.prometheus.source(),
                base_replicas=base,
                metric_deployments=pattern,
            )
        )
    return children
