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

# Namespaced resources the operator reads or writes.
NAMESPACED: tuple[Permission, ...] = (
    Permission("optimodel.io", "optimizedmodels", (*WATCH, "patch")),
    Permission("optimodel.io", "optimizedmodels/status", ("get", "patch")),
    Permission("batch", "jobs", (*WATCH, "create", "patch")),
    Permission("apps", "deployments", (*WATCH, "create", "patch")),
    Permission("", "services", (*WATCH, "create", "patch")),
    Permission("", "configmaps", (*WATCH, "create", "patch")),
    Permission("", "pods", WATCH),
    Permission("autoscaling", "horizontalpodautoscalers", (*WATCH, "create", "patch")),
    Permission("keda.sh", "scaledobjects", (*WATCH, "create", "patch")),
    Permission("", "events", ("create",)),
    Permission("events.k8s.io", "events", ("create",)),
    Permission("kopf.dev", "kopfpeerings", (*WATCH, "patch")),
)

# Cluster-scoped resources Kopf needs whatever the mode.
CLUSTER: tuple[Permission, ...] = (
    Permission("apiextensions.k8s.io", "customresourcedefinitions", WATCH),
    Permission("", "namespaces", WATCH),
    Permission("kopf.dev", "clusterkopfpeerings", (*WATCH, "patch")),
)
