"""Names and labels of everything the operator creates for one OptimizedModel.

Names are deterministic (a restarted operator finds what it created), and every child
carries the same labels, so `kubectl get all -l optimodel.io/model=minilm` shows a model's
whole footprint. validation.MAX_NAME_LENGTH keeps the longest name within 63 characters.
"""

from __future__ import annotations

from collections.abc import Mapping

from optimodel.operator import api

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "optimodel"
PART_OF = "app.kubernetes.io/part-of"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MODEL = f"{api.GROUP}/model"
BUILD_KEY = f"{api.GROUP}/build-key"
GENERATION = f"{api.GROUP}/generation"
# Set by the Job controller on its pods (both spellings exist across Kubernetes versions).
JOB_NAME = "job-name"

# Annotations on children.
ARTIFACT = f"{api.GROUP}/artifact"
CONFIG_HASH = f"{api.GROUP}/config-hash"
SPEC_HASH = f"{api.GROUP}/spec-hash"
# Hash of the manifest the operator last rendered for a child: a child whose fields differ
# from the rendering while this still matches was edited by hand.
RENDERED_HASH = f"{api.GROUP}/rendered-hash"

BUILDER = "builder"
SERVER = "server"
AUTOSCALER = "autoscaler"

BUILDER_CONTAINER = "build"
UPLOAD_CONTAINER = "upload"
TRITON_CONTAINER = "triton"
CONFIG_FILE = "config.pbtxt"
CONFIG_KEY_SUFFIX = "." + CONFIG_FILE

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002


def build_job_name(model: str, generation: int) -> str:
    """The builder Job of the generation whose build inputs it builds."""
    return f"{model}-build-g{generation}"


def config_key(triton_model: str) -> str:
    """The ConfigMap key of one Triton model's config.pbtxt (`<model>.config.pbtxt`)."""
    return triton_model + CONFIG_KEY_SUFFIX


def deployment_name(model: str) -> str:
    return model


def service_name(model: str) -> str:
    return model


def autoscaler_name(model: str) -> str:
    """The HorizontalPodAutoscaler or KEDA ScaledObject (KEDA names its own HPA keda-hpa-<name>)."""
    return model


def config_map_name(model: str) -> str:
    return f"{model}-triton-config"


def network_policy_name(model: str) -> str:
    """The NetworkPolicy admitting clients to the model's Triton pods (serving.networkPolicy)."""
    return f"{model}-triton"


def disruption_budget_name(model: str) -> str:
    """The PodDisruptionBudget of the model's Triton pods (both capacity tiers)."""
    return model


def labels(model: str, component: str) -> dict[str, str]:
    """Labels every child of `model` carries."""
    return {
        MANAGED_BY: MANAGER,
        PART_OF: MANAGER,
        INSTANCE: model,
        COMPONENT: component,
        MODEL: model,
    }


def server_selector(model: str) -> dict[str, str]:
    """The Deployment's (and Service's) pod selector; immutable once created."""
    return {MODEL: model, COMPONENT: SERVER}


def selector_string(selector: Mapping[str, str]) -> str:
    """`status.selector` for the scale subresource: k=v,k=v in key order."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def endpoint(model: str, namespace: str) -> str:
    """In-cluster Triton HTTP endpoint of the model's Service."""
    return f"http://{service_name(model)}.{namespace}.svc:{HTTP_PORT}"
