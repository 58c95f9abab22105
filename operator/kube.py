"""The operator's own Kubernetes calls (Kopf does the watching): a thin JSON client.

It speaks dicts, not generated models, so the renderers' manifests go out as they are and
what comes back is compared field by field. The `kubernetes` package supplies configuration
and authentication (in-cluster token, kubeconfig, client certificates); its blocking calls
run in a worker thread. Every resource and verb used here is in `permissions.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

from kubernetes import client as k8s

from optimodel.operator import api, autoscaling

Body = dict[str, Any]
PatchType = Literal["merge", "json"]
USER_AGENT = "optimodel-operator"

_CONTENT_TYPES: Mapping[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


@dataclass(frozen=True)
class Resource:
    """One API resource (namespaced unless told otherwise: then `namespace` is ignored)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scope = f"/namespaces/{quote(namespace, safe='')}" if self.namespaced else ""
        path = f"{root}{scope}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


OPTIMIZED_MODELS = Resource(api.GROUP, api.VERSION, api.PLURAL, api.KIND)
JOBS = Resource("batch", "v1", "jobs", "Job")
PODS = Resource("", "v1", "pods", "Pod")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
HORIZONTAL_POD_AUTOSCALERS = Resource(
    autoscaling.HPA.group, autoscaling.HPA.version, autoscaling.HPA.plural, autoscaling.HPA.kind
)
SCALED_OBJECTS = Resource(
    autoscaling.SCALED_OBJECT.group,
    autoscaling.SCALED_OBJECT.version,
    autoscaling.SCALED_OBJECT.plural,
    autoscaling.SCALED_OBJECT.kind,
)
AUTOSCALERS = (HORIZONTAL_POD_AUTOSCALERS, SCALED_OBJECTS)
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
# Read to price each serving pod by its node's capacity type and GPU type.
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
# Kopf's peering objects, read by the periodic loop's peering gate (peering.py).
PEERINGS = Resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
CLUSTER_PEERINGS = Resource(
    "kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False
)

RESOURCES_BY_KIND: Mapping[tuple[str, str], Resource] = {
    (resource.api_version, resource.kind): resource
    for resource in (
        OPTIMIZED_MODELS,
        JOBS,
        PODS,
        DEPLOYMENTS,
        SERVICES,
        CONFIG_MAPS,
        HORIZONTAL_POD_AUTOSCALERS,
        SCALED_OBJECTS,
        NETWORK_POLICIES,
        POD_DISRUPTION_BUDGETS,
    )
}


def resource_of(manifest: Mapping[str, Any]) -> Resource:
    """The resource a rendered manifest belongs to."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    try:
        return RESOURCES_BY_KIND[key]
    except KeyError:
        raise ValueError(f"the operator does not manage {key[1]} ({key[0]})") from None


class KubeError(Exception):
    """The API server refused a call."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{method} {path}: {status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A stale resourceVersion (409 Conflict) or a name taken (409 AlreadyExists)."""
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status in (409, 429) or self.status >= 500


class KubeApi:
    """Get, list, create and patch namespaced objects as JSON."""

    def __init__(self, configuration: k8s.Configuration, timeout_seconds: float = 30.0) -> None:
        self._client = k8s.ApiClient(configuration)
        self._client.user_agent = USER_AGENT
        self._timeout = timeout_seconds

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Body:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if query:
            path = f"{path}?{urlencode(query)}"
        _, url, headers, _, _ = self._client.param_serialize(
            method, path, header_params=headers, auth_settings=["BearerToken"]
        )
        response = self._client.call_api(
            method, url, header_params=headers, body=body, _request_timeout=self._timeout
        )
        data = response.read()  # type: ignore[no-untyped-call]
        try:
            payload: Any = json.loads(data) if data else {}
        except ValueError:
            payload = {"message": data.decode(errors="replace")}
        if not 200 <= response.status < 300:
            reason = payload.get("reason") if isinstance(payload, dict) else None
            message = payload.get("message") if isinstance(payload, dict) else None
            raise KubeError(
                response.status, str(reason or response.reason), str(message or ""), method, path
            )
        if not isinstance(payload, dict):
            raise KubeError(response.status, "BadResponse", "not a JSON object", method, path)
        return payload

    async def get(self, resource: Resource, namespace: str, name: str) -> Body | None:
        """The object, or None when it does not exist."""
        try:
            return await asyncio.to_thread(self._call, "GET", resource.path(namespace, name))
        except KubeError as error:
            if error.not_found:
                return None
            raise

    async def list(
        self, resource: Resource, namespace: str, labels: Mapping[str, str]
    ) -> list[Body]:
        """Objects in `namespace` carrying all `labels`."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        answer = await asyncio.to_thread(
            self._call, "GET", resource.path(namespace), {"labelSelector": selector}
        )
        items = answer.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def create(self, manifest: Body) -> Body:
        resource = resource_of(manifest)
        namespace = manifest["metadata"]["namespace"]
        return await asyncio.to_thread(self._call, "POST", resource.path(namespace), None, manifest)

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
    ) -> Body:
        return await asyncio.to_thread(
            self._call,
            "PATCH",
            resource.path(namespace, name, subresource),
            None,
            patch,
            _CONTENT_TYPES[patch_type],
        )

    async def delete(self, resource: Resource, namespace: str, name: str, uid: str) -> None:
        """Delete one object, only if it still is the one decided on (uid precondition);
        gone already is fine."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await asyncio.to_thread(
                self._call, "DELETE", resource.path(namespace, name), None, body
            )
        except KubeError as error:
            if not error.not_found:
                raise
