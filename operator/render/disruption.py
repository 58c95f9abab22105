"""The PodDisruptionBudget of a model's Triton pods (both tiers, one budget).

Voluntary disruptions (node drains, Karpenter consolidation and its spot-interruption drain,
cluster-autoscaler scale-down) evict one serving pod at a time, and each goes through the
drain (preStop wait, then Triton's exit timeout), so the others keep serving. maxUnavailable
1, not a minAvailable count: a node holding a single-replica model can still be drained (that
model then has no ready pod until its replacement is; run two replicas to never have a gap).
A spot preemption is not an eviction (no budget can stop it); the drain alone covers it.
"""

from __future__ import annotations

from optimodel.operator import naming
from optimodel.operator.render.common import Manifest, ModelRef, metadata


def render_disruption_budget(model: ModelRef) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(model, naming.disruption_budget_name(model.name), naming.SERVER),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.server_selector(model.name)},
            # A pod that never became ready (crash loop, no GPU) must not block a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
