"""Every Kubernetes permission the operator uses: the single source for the Helm chart's RBAC.

A chart test renders the (Cluster)Role and compares it with this table, so the operator can
never need a verb the chart does not grant, and the chart never grants one it does not use.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    """Verbs on one resource of one API group ("" is the core group)."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]


WATCH = ("get", "list", "watch")
# What Kopf needs to serve a resource: list it, then watch from the listed resourceVersion.
KOPF = ("list", "watch")
# Kopf's peering keep-alives are merge patches of the peering object's status; the periodic
# loop reads the object (get) to act only as the acting peer (peering.py).
PEERING = (*WATCH, "patch")

# Namespaced resources the operator reads or writes. The end-to-end test records every request
# the operator makes to the API emulator and checks it against this table, both ways.
NAMESPACED: tuple[Permission, ...] = (
    # Kopf watches models and keeps its handler progress in their annotations (patch);
    # the reconciler reads each model fresh (get) before deciding.
    Permission("optimodel.io", "optimizedmodels", (*WATCH, "patch")),
    Permission("optimodel.io", "optimizedmodels/status", ("patch",)),
    # Builder Jobs are found by label (list), created once, never changed (immutable).
    Permission("batch", "jobs", (*KOPF, "create")),
    # The Triton Deployments; the spot tier's is deleted when capacity goes back to on-demand.
    Permission("apps", "deployments", (*WATCH, "create", "patch", "delete")),
    Permission("", "services", (*WATCH, "create", "patch")),
    Permission("", "configmaps", (*WATCH, "create", "patch")),
    # The autoscaler: re-capped by merge patch; deleted when autoscaling is turned off or its
    # engine changes (only the one this model controls).
    Permission("autoscaling", "horizontalpodautoscalers", (*WATCH, "create", "patch", "delete")),
    Permission("keda.sh", "scaledobjects", (*WATCH, "create", "patch", "delete")),
    # The optional NetworkPolicy of the Triton pods (serving.networkPolicy): deleted when
    # the setting is turned off.
    Permission("networking.k8s.io", "networkpolicies", (*WATCH, "create", "patch", "delete")),
    # The Triton pods' PodDisruptionBudget.
    Permission("policy", "poddisruptionbudgets", (*WATCH, "create", "patch")),
    # Build pods carry the builder's termination message; serving pods are priced by the
    # node they run on.
    Permission("", "pods", ("list",)),
    # Kopf posts Events through the core API.
    Permission("", "events", ("create",)),
    Permission("kopf.dev", "kopfpeerings", PEERING),
)

# Cluster-scoped resources Kopf needs: CRDs to discover resources, namespaces to follow the
# served namespaces (namespaced mode), and the cluster-wide peering.
CLUSTER: tuple[Permission, ...] = (
    Permission("apiextensions.k8s.io", "customresourcedefinitions", KOPF),
    Permission("", "namespaces", KOPF),
    # A serving pod's node: its capacity type (spot or on-demand) and GPU type price the pod.
    Permission("", "nodes", ("get",)),
    Permission("kopf.dev", "clusterkopfpeerings", PEERING),
)
