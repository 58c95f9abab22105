"""The optional NetworkPolicy in front of one model's Triton pods (serving.networkPolicy).

Ingress only: the named clients reach the inference ports, the named scrapers the metrics
port, nothing else gets in. Egress is left open: the init container fetches the artifact
from the store (S3 endpoint, CSI), which a platform fences with its own policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimodel.operator import naming
from optimodel.operator.render.common import Manifest, ModelRef, metadata
from optimodel.operator.settings import NetworkPolicySettings

# An empty podSelector as a peer: every pod of the policy's own namespace.
SAME_NAMESPACE: tuple[dict[str, Any], ...] = ({"podSelector": {}},)


def _rule(peers: Sequence[dict[str, Any]], ports: Sequence[int]) -> dict[str, Any]:
    return {
        "from": [dict(peer) for peer in (peers or SAME_NAMESPACE)],
        "ports": [{"protocol": "TCP", "port": port} for port in ports],
    }


def render_network_policy(model: ModelRef, policy: NetworkPolicySettings) -> Manifest:
    """Admit `policy.clients` to HTTP/gRPC and `policy.metricsScrapers` to metrics."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(model, naming.network_policy_name(model.name), naming.SERVER),
        "spec": {
            "podSelector": {"matchLabels": naming.server_selector(model.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                _rule(policy.clients, (naming.HTTP_PORT, naming.GRPC_PORT)),
                _rule(policy.metrics_scrapers, (naming.METRICS_PORT,)),
            ],
        },
    }
