"""The Service in front of the Triton pods: HTTP, gRPC and metrics."""

from __future__ import annotations

from optimodel.operator import naming
from optimodel.operator.render.common import Manifest, ModelRef, metadata

PORTS = (("http", naming.HTTP_PORT), ("grpc", naming.GRPC_PORT), ("metrics", naming.METRICS_PORT))


def render_service(model: ModelRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(model, naming.service_name(model.name), naming.SERVER),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.server_selector(model.name),
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in PORTS
            ],
        },
    }
