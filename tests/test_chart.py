"""The Helm chart: rendered with Helm's own Go code (helm-python-sdk), linted, every built-in
object validated with kubernetes-validate (strict), RBAC equal to operator/permissions.py, the
CRD a checked copy, and values.schema.json rejecting bad values with the offending path named.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from optimodel.operator.permissions import CLUSTER, NAMESPACED, Permission
from optimodel.operator.settings import OperatorSettings
from tests.conftest import REPO

CHART = REPO / "charts" / "optimodel"
RELEASE = "om"
NAMESPACE = "optimodel-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas known.
KUBE_VERSIONS = ("1.27", kubernetes_validate.latest_version())

# Objects whose kinds come from CRDs: kubernetes-validate has no schema for them, so they are
# skipped there explicitly and checked below against their own CRD (peering) or by shape.
CRD_KINDS = {
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}

Obj = dict[str, Any]
Values = dict[str, Any]

# The `--set` flags of the README's quick start, parsed by Helm's own strvals parser.
README_NAMESPACED_SET = "watch.mode=namespaced,watch.namespaces={ml-serving,ml-staging}"
README_S3_SET = "artifactStore.type=s3,artifactStore.s3.uri=s3://my-bucket/optimodel"
# --set would pass 0.65 as a string (Helm's --set types only integers and booleans): --set-json.
README_PRICES_SET_JSON = 'gpuPrices={"nvidia-l4":0.65}'

VALUE_SETS: dict[str, Values] = {
    "default": {},
    "namespaced": helm.parse_set_string(README_NAMESPACED_SET),
    "readme-s3-prices": {
        **helm.parse_set_string(README_S3_SET),
        **helm.parse_set_json(README_PRICES_SET_JSON),
    },
    "servicemonitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}
    },
    "custom-prices": {"gpuPrices": {"nvidia-l4": 0.65, "nvidia-h100": 3.2, "acme-x1": 1.5}},
    "hardware": {
        "hardware": {
            "nvidia-l4": {"spotUSDPerHour": 0.3},
            "cpu": {"onDemandUSDPerHour": 0.12, "spotUSDPerHour": 0.04},
        }
    },
    "two-replicas": {"replicaCount": 2},
    "spot": {
        "serving": {
            "capacity": {"provider": "karpenter"},
            "shutdown": {"drainSeconds": 3, "exitTimeoutSeconds": 40},
        }
    },
    "s3-pinned": {
        "image": {"digest": "sha256:" + "a" * 64},
        "builder": {"image": {"tag": "0.1.0-cuda"}, "serviceAccountName": "optimodel-builder"},
        "serving": {
            "gpuNodeLabel": "cloud.google.com/gke-accelerator",
            "responseCacheBytes": 64 << 20,
        },
        "artifactStore": {
            "type": "s3",
            "s3": {
                "uri": "s3://models/optimodel",
                "endpoint": "http://minio.storage:9000",
                "region": "us-east-1",
                "credentialsSecret": {"name": "optimodel-s3"},
            },
        },
    },
    "metrics-off": {"metrics": {"enabled": False}, "serviceAccount": {"name": "om-operator"}},
    "shared-cluster": {
        "policy": {
            "servingImages": ["nvcr.io/nvidia/tritonserver:*"],
            "storage": {
                "pvcClaims": ["optimodel-*"],
                "s3": [
                    {
                        "bucket": "team-*",
                        "endpoint": "https://minio.storage:9000",
                        "credentialsSecret": {"name": "optimodel-s3"},
                    }
                ],
            },
            "namespaceCaps": {"ml-sandbox": {"maxReplicas": 2, "gpuTypes": ["nvidia-t4"]}},
        },
        "serving": {
            "serviceAccountName": "triton",
            "networkPolicy": {
                "enabled": True,
                "metricsScrapers": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
                ],
            },
        },
    },
    "sources": {
        "sources": {
            "hub": {"endpoint": "https://hf-mirror.internal", "tokenSecret": {"name": "hf"}},
            "s3": {
                "endpoint": "https://minio.models:9000",
                "region": "eu-west-1",
                "credentialsSecret": {"name": "model-readers"},
            },
            "cache": {"claimName": "model-cache", "sizeLimit": "50Gi"},
        }
    },
    "budget-prometheus": {
        "budgetIntervalSeconds": 30,
        "cpuReplicaPrice": 0.25,
        "prometheus": {
            "url": "http://prometheus.monitoring.svc:9090",
            "timeoutSeconds": 2,
            "dcgmNamespaceLabel": "namespace",
            "dcgmPodLabel": "pod",
        },
    },
}


@dataclass(frozen=True)
class Rendered:
    """One `helm template` of the chart: its objects (templates, then CRDs) and NOTES."""

    objects: list[Obj]
    notes: str

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> Obj:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def settings(self) -> Obj:
        data: Obj = yaml.safe_load(self.one("ConfigMap")["data"]["settings.yaml"])
        return data


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: Values) -> Rendered:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        document
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]
    objects += [document for crd in chart.crds for document in yaml.safe_load_all(crd["data"])]
    notes = next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))
    return Rendered(objects, notes)


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, Rendered]:
    return {name: render(chart, values) for name, values in VALUE_SETS.items()}


def deployment_container(result: Rendered) -> Obj:
    containers: list[Obj] = result.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- Rendering, lint, Kubernetes schemas -------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean(name: str) -> None:
    for kube in KUBE_VERSIONS:
        report = helm.lint(CHART, VALUE_SETS[name], strict=True, kube_version=f"v{kube}.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_builtin_object_validates_strictly(name: str, rendered: dict[str, Rendered]) -> None:
    validated = 0
    for obj in rendered[name].objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        for kube in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, kube, strict=True)
        validated += 1
    # Deployment, ConfigMap, ClusterRole(+Binding), at least: nothing was skipped by accident.
    assert validated >= 7


def test_strict_validation_catches_a_misplaced_field(rendered: dict[str, Rendered]) -> None:
    """Guards the test above: a field in the wrong place must fail kubernetes-validate."""
    deployment = copy.deepcopy(rendered["default"].one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_only_crd_kinds_are_skipped(rendered: dict[str, Rendered]) -> None:
    kinds = {(o["apiVersion"], o["kind"]) for r in rendered.values() for o in r.objects}
    assert kinds >= CRD_KINDS  # every skipped kind is really rendered by some values set
    for apiversion, kind in kinds - CRD_KINDS:
        group = apiversion.rpartition("/")[0]
        assert group in {"", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io"}, kind


def test_peering_objects_match_their_crd(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        crds = {c["spec"]["names"]["kind"]: c for c in result.of_kind("CustomResourceDefinition")}
        for obj in result.of_kind("KopfPeering") + result.of_kind("ClusterKopfPeering"):
            crd = crds[obj["kind"]]
            version = crd["spec"]["versions"][0]
            assert obj["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
            assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
            jsonschema.validate(obj, version["schema"]["openAPIV3Schema"])


def test_servicemonitor_scrapes_the_metrics_service(rendered: dict[str, Rendered]) -> None:
    assert rendered["default"].of_kind("ServiceMonitor") == []
    result = rendered["servicemonitor"]
    monitor, service = result.one("ServiceMonitor"), result.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_metrics_off_renders_no_service(rendered: dict[str, Rendered]) -> None:
    result = rendered["metrics-off"]
    assert result.of_kind("Service") == [] and result.of_kind("ServiceMonitor") == []
    assert "metrics" not in {p["name"] for p in deployment_container(result)["ports"]}
    assert result.settings()["metricsPort"] == 0  # the operator's "no metrics endpoint"


# --- The CRDs --------------------------------------------------------------------------------


def test_chart_crd_is_an_exact_copy_of_the_generated_crd() -> None:
    chart_copy = CHART / "crds" / "optimizedmodel.yaml"
    assert chart_copy.read_bytes() == (REPO / "crds" / "optimizedmodel.yaml").read_bytes(), (
        "charts/optimodel/crds/optimizedmodel.yaml differs from crds/optimizedmodel.yaml: "
        "cp crds/optimizedmodel.yaml charts/optimodel/crds/"
    )


def test_chart_ships_exactly_the_optimodel_and_kopf_peering_crds(chart: helm.Chart) -> None:
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [
        "kopf-peering.yaml",
        "optimizedmodel.yaml",
    ]
    names = {
        document["metadata"]["name"]
        for crd in chart.crds
        for document in yaml.safe_load_all(crd["data"])
    }
    assert names == {
        "optimizedmodels.optimodel.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


# --- RBAC == operator/permissions.py --------------------------------------------------------

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def grants(permissions: tuple[Permission, ...]) -> set[Grant]:
    return {(p.api_group, p.resource, verb) for p in permissions for verb in p.verbs}


def rule_grants(role: Obj) -> set[Grant]:
    found: set[Grant] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    found.add((group, resource, verb))
    return found


def bound_subjects(binding: Obj) -> list[Obj]:
    subjects: list[Obj] = binding["subjects"]
    return subjects


def table_rows(permissions: tuple[Permission, ...]) -> str:
    """operator/permissions.py as the rows of rbac.yaml's optimodel.permissions table."""
    rows = []
    for permission in permissions:
        group = permission.api_group or '""'
        verbs = ", ".join(permission.verbs)
        rows.append(f"  - {{apiGroup: {group}, resource: {permission.resource}, verbs: [{verbs}]}}")
    return "\n".join(rows)


def assert_rbac(role: Obj, permissions: tuple[Permission, ...]) -> None:
    assert rule_grants(role) == grants(permissions), (
        "charts/optimodel/templates/rbac.yaml differs from operator/permissions.py; its rows "
        f"should read:\n{table_rows(permissions)}"
    )


def test_rbac_table_rows_are_in_the_order_of_the_operator_table() -> None:
    """One row per Permission, same order: a reviewer compares the two files line by line."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    namespaced = text.split("namespaced:\n", 1)[1].split("cluster:\n", 1)[0].rstrip()
    cluster = text.split("cluster:\n", 1)[1].split("{{- end }}", 1)[0].rstrip()
    assert namespaced == table_rows(NAMESPACED)
    assert cluster == table_rows(CLUSTER)


def test_cluster_mode_rbac_is_exactly_the_operator_permissions(
    rendered: dict[str, Rendered],
) -> None:
    result = rendered["default"]
    assert result.of_kind("Role") == [] and result.of_kind("RoleBinding") == []
    role, binding = result.one("ClusterRole"), result.one("ClusterRoleBinding")
    assert_rbac(role, NAMESPACED + CLUSTER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = result.one("ServiceAccount")["metadata"]
    assert bound_subjects(binding) == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_namespaced_mode_rbac_is_per_namespace(rendered: dict[str, Rendered]) -> None:
    result = rendered["namespaced"]
    assert_rbac(result.one("ClusterRole"), CLUSTER)
    roles = {r["metadata"]["namespace"]: r for r in result.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in result.of_kind("RoleBinding")}
    assert set(roles) == set(bindings) == {"ml-serving", "ml-staging"}
    account = result.one("ServiceAccount")["metadata"]["name"]
    for namespace, role in roles.items():
        assert_rbac(role, NAMESPACED)
        binding = bindings[namespace]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert bound_subjects(binding) == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]


def test_existing_service_account_is_bound_and_not_created(rendered: dict[str, Rendered]) -> None:
    result = rendered["metrics-off"]
    assert result.one("ServiceAccount")["metadata"]["name"] == "om-operator"
    pod = result.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "om-operator"
    assert bound_subjects(result.one("ClusterRoleBinding"))[0]["name"] == "om-operator"


# --- The operator Deployment -----------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_deployment_is_hardened(name: str, rendered: dict[str, Rendered]) -> None:
    pod = rendered[name].one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = deployment_container(rendered[name])
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/optimodel"]["readOnly"] is True


def test_probes_hit_kopfs_liveness_endpoint(rendered: dict[str, Rendered]) -> None:
    result = rendered["default"]
    container = deployment_container(result)
    assert container["args"] == ["operator"]  # after the image's entrypoint, `optimodel`
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == result.settings()["healthPort"] == 8080
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_settings_file_is_mounted_where_the_operator_reads_it(
    rendered: dict[str, Rendered],
) -> None:
    result = rendered["default"]
    container = deployment_container(result)
    env = {e["name"]: e.get("value") for e in container["env"]}
    settings_file = Path(env["OPTIMODEL_SETTINGS_FILE"])
    mount = next(
        m for m in container["volumeMounts"] if m["mountPath"] == str(settings_file.parent)
    )
    volume = next(
        v
        for v in result.one("Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )
    configmap = result.one("ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert settings_file.name in configmap["data"]


def test_settings_change_rolls_the_operator(rendered: dict[str, Rendered]) -> None:
    def checksum(name: str) -> str:
        template = rendered[name].one("Deployment")["spec"]["template"]
        value: str = template["metadata"]["annotations"]["checksum/settings"]
        return value

    assert checksum("default") != checksum("custom-prices")
    assert checksum("default") == checksum("two-replicas")


# --- values -> settings ----------------------------------------------------------------------

SETTINGS_KEYS = {
    "sources",
    "builderImage",
    "tritonImage",
    "s3SyncImage",
    "artifactStore",
    "gpuPrices",
    "build",
    "serving",
    "namespaces",
    "metricsPort",
    "healthPort",
    "resyncSeconds",
    "budgetIntervalSeconds",
    "prometheus",
    "peering",
    "policy",
}


def test_default_settings(rendered: dict[str, Rendered]) -> None:
    settings = rendered["default"].settings()
    assert set(settings) == SETTINGS_KEYS
    assert settings["builderImage"] == "ghcr.io/optimodel/optimodel-builder:0.1.0"
    assert settings["tritonImage"] == "ghcr.io/optimodel/optimodel-triton:0.1.0"
    assert settings["s3SyncImage"] == "amazon/aws-cli:2.22.35"
    assert settings["artifactStore"] == {"pvc": {"claimName": "optimodel-artifacts", "subPath": ""}}
    assert settings["gpuPrices"] == {}
    # The chart's pod settings are the operator's own defaults (bounded, no API token).
    builtin = OperatorSettings().model_dump(by_alias=True, mode="json", exclude_none=True)
    assert settings["build"] == builtin["build"]
    assert settings["build"]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    assert settings["serving"] == builtin["serving"]
    assert settings["serving"]["networkPolicy"]["enabled"] is False
    # The admin policy's defaults allow nothing beyond the platform's images and store.
    policy = OperatorSettings.model_validate({"policy": settings["policy"]}).policy
    assert policy == OperatorSettings().policy
    assert policy.serving_images == policy.storage.pvc_claims == []
    assert policy.storage.s3 == []
    assert settings["serving"]["responseCacheBytes"] == 256 << 20
    assert settings["namespaces"] == []
    assert settings["metricsPort"] == 9090
    assert settings["healthPort"] == 8080
    assert settings["resyncSeconds"] == 300
    assert settings["budgetIntervalSeconds"] == 60
    assert settings["prometheus"] == {  # no url: no inference rates, KEDA's default address
        "timeoutSeconds": 5,
        "dcgmNamespaceLabel": "exported_namespace",
        "dcgmPodLabel": "exported_pod",
        "tritonNamespaceLabel": "namespace",
        "tritonPodLabel": "pod",
    }
    assert settings["peering"] == {"name": f"{RELEASE}-optimodel"}


def test_policy_and_pod_values_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    settings = OperatorSettings.model_validate(rendered["shared-cluster"].settings())
    assert settings.policy.serving_images == ["nvcr.io/nvidia/tritonserver:*"]
    [target] = settings.policy.storage.s3
    assert (
        target.credentials_secret is not None and target.credentials_secret.name == "optimodel-s3"
    )
    assert settings.policy.caps_for("ml-sandbox").max_replicas == 2
    assert settings.policy.caps_for("elsewhere").max_replicas is None
    assert settings.serving.service_account_name == "triton"
    assert settings.serving.network_policy.enabled
    assert settings.serving.network_policy.metrics_scrapers[0]["namespaceSelector"]


def test_budget_and_prometheus_values_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    settings = rendered["budget-prometheus"].settings()
    assert settings["budgetIntervalSeconds"] == 30
    assert settings["cpuReplicaPrice"] == 0.25
    assert settings["prometheus"]["url"] == "http://prometheus.monitoring.svc:9090"
    assert settings["prometheus"]["dcgmPodLabel"] == "pod"
    settings_module = pytest.importorskip("optimodel.operator.settings")
    parsed = settings_module.parse_settings(settings, {}, origin="budget-prometheus")
    assert parsed.price_catalog.cpu_replica_usd_per_hour == 0.25
    source = parsed.prometheus.source()
    assert source.server_address == "http://prometheus.monitoring.svc:9090"
    assert (source.dcgm_namespace_label, source.dcgm_pod_label) == ("namespace", "pod")


def test_custom_prices_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    assert rendered["custom-prices"].settings()["gpuPrices"] == {
        "nvidia-l4": 0.65,
        "nvidia-h100": 3.2,
        "acme-x1": 1.5,
    }


def test_hardware_entries_reach_both_catalogs(rendered: dict[str, Rendered]) -> None:
    settings = rendered["hardware"].settings()
    assert settings["hardware"]["nvidia-l4"] == {"spotUSDPerHour": 0.3}
    assert "hardware" not in rendered["default"].settings()
    settings_module = pytest.importorskip("optimodel.operator.settings")
    parsed = settings_module.parse_settings(settings, {}, origin="hardware")
    assert parsed.price_catalog.gpu_price("nvidia-l4", "spot") == 0.3
    assert parsed.price_catalog.cpu_replica_price() == 0.12


def test_s3_store_and_pinned_images(rendered: dict[str, Rendered]) -> None:
    result = rendered["s3-pinned"]
    settings = result.settings()
    assert settings["artifactStore"] == {
        "s3": {
            "uri": "s3://models/optimodel",
            "endpoint": "http://minio.storage:9000",
            "region": "us-east-1",
            "credentialsSecret": {"name": "optimodel-s3"},
        }
    }
    assert settings["builderImage"] == "ghcr.io/optimodel/optimodel-builder:0.1.0-cuda"
    assert settings["build"]["serviceAccountName"] == "optimodel-builder"
    assert settings["serving"]["gpuNodeLabel"] == "cloud.google.com/gke-accelerator"
    # An integer the operator reads (not 6.7108864e+07): Helm keeps YAML numbers as floats.
    assert settings["serving"]["responseCacheBytes"] == 64 << 20
    assert isinstance(settings["serving"]["responseCacheBytes"], int)
    image = deployment_container(result)["image"]
    assert image == "ghcr.io/optimodel/optimodel-operator@sha256:" + "a" * 64
    assert "write to s3://models/optimodel)" in result.notes and "PVC" not in result.notes


def test_capacity_values_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    settings = OperatorSettings.model_validate(rendered["spot"].settings())
    assert settings.serving.capacity.provider == "karpenter"
    assert settings.serving.shutdown.grace_period_seconds == 3 + 40 + 5
    assert "provider" not in rendered["default"].settings()["serving"]["capacity"]


def test_source_values_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    assert rendered["default"].settings()["sources"] == {
        "hub": {},
        "s3": {},
        "cache": {"subPath": "", "sizeLimit": "20Gi"},
    }
    settings = rendered["sources"].settings()["sources"]
    assert settings == {
        "hub": {
            "endpoint": "https://hf-mirror.internal",
            "tokenSecret": {"name": "hf", "key": "HF_TOKEN"},
        },
        "s3": {
            "endpoint": "https://minio.models:9000",
            "region": "eu-west-1",
            "credentialsSecret": {"name": "model-readers"},
        },
        "cache": {"claimName": "model-cache", "subPath": "", "sizeLimit": "50Gi"},
    }
    settings_module = pytest.importorskip("optimodel.operator.settings")
    parsed = settings_module.parse_settings(rendered["sources"].settings(), {}, origin="sources")
    assert parsed.sources.hub.token_secret.name == "hf"
    assert parsed.sources.cache.claim_name == "model-cache"


def test_namespaced_settings_list_the_watched_namespaces(rendered: dict[str, Rendered]) -> None:
    assert rendered["namespaced"].settings()["namespaces"] == ["ml-serving", "ml-staging"]


def test_readme_set_flags_reach_the_settings(rendered: dict[str, Rendered]) -> None:
    settings = rendered["readme-s3-prices"].settings()
    assert settings["artifactStore"] == {"s3": {"uri": "s3://my-bucket/optimodel"}}
    assert settings["gpuPrices"] == {"nvidia-l4": 0.65}


def test_the_readme_policy_example_renders_the_policy_it_describes(chart: helm.Chart) -> None:
    readme = (REPO / "README.md").read_text()
    [flag] = re.findall(r"--set-json '(policy=[^']+)'", readme)
    settings = OperatorSettings.model_validate(render(chart, helm.parse_set_json(flag)).settings())
    policy = settings.policy
    assert policy.serving_images == ["nvcr.io/nvidia/tritonserver:*"]
    assert [target.bucket for target in policy.storage.s3] == ["team-*"]
    assert policy.caps_for("ml-sandbox").gpu_types == ["nvidia-t4"]


def test_metrics_port_is_consistent(rendered: dict[str, Rendered]) -> None:
    result = rendered["servicemonitor"]
    port = result.settings()["metricsPort"]
    container_ports = {p["name"]: p["containerPort"] for p in deployment_container(result)["ports"]}
    assert container_ports["metrics"] == port
    (service_port,) = result.one("Service")["spec"]["ports"]
    assert service_port == {
        "name": "metrics",
        "port": port,
        "targetPort": "metrics",
        "protocol": "TCP",
    }


# --- Kopf peering ----------------------------------------------------------------------------


def test_cluster_mode_peers_through_a_cluster_peering(rendered: dict[str, Rendered]) -> None:
    for name in ("default", "two-replicas"):
        result = rendered[name]
        peering = result.one("ClusterKopfPeering")
        assert peering["metadata"]["name"] == result.settings()["peering"]["name"]
        assert result.of_kind("KopfPeering") == []
    assert rendered["two-replicas"].one("Deployment")["spec"]["replicas"] == 2
    assert "one acts, the others stand by" in rendered["two-replicas"].notes


def test_namespaced_mode_peers_in_every_watched_namespace(rendered: dict[str, Rendered]) -> None:
    result = rendered["namespaced"]
    assert result.of_kind("ClusterKopfPeering") == []
    peerings = result.of_kind("KopfPeering")
    assert {p["metadata"]["namespace"] for p in peerings} == {"ml-serving", "ml-staging"}
    assert {p["metadata"]["name"] for p in peerings} == {result.settings()["peering"]["name"]}
    assert "ml-serving, ml-staging" in result.notes


# --- values.schema.json and the template checks ----------------------------------------------

SCHEMA_REJECTS: list[tuple[str, Values, str]] = [
    # (case, values, what the message must contain: the path, the constraint)
    ("replicas-as-string", {"replicaCount": "2"}, "/replicaCount': got string, want integer"),
    ("replicas-zero", {"replicaCount": 0}, "/replicaCount"),
    ("negative-price", {"gpuPrices": {"nvidia-l4": -0.5}}, "/gpuPrices/nvidia-l4"),
    ("absurd-price", {"gpuPrices": {"nvidia-h100": 5000}}, "/gpuPrices/nvidia-h100"),
    ("price-as-string", {"gpuPrices": {"nvidia-l4": "0.8"}}, "got string, want number"),
    ("gpu-type-form", {"gpuPrices": {"NVIDIA L4": 1.0}}, "NVIDIA L4"),
    ("unknown-top-key", {"replicas": 2}, "additional properties 'replicas' not allowed"),
    ("unknown-nested-key", {"metrics": {"prot": 9091}}, "additional properties 'prot'"),
    ("tag-with-colon", {"image": {"tag": "v1:2"}}, "/image/tag"),
    ("digest-form", {"builder": {"image": {"digest": "sha256:xyz"}}}, "/builder/image/digest"),
    ("repository-uppercase", {"triton": {"image": {"repository": "NVCR.io/Triton"}}}, "/triton"),
    ("pull-policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ("mode-enum", {"watch": {"mode": "everywhere"}}, "/watch/mode"),
    (
        "namespaced-without-namespaces",
        {"watch": {"mode": "namespaced", "namespaces": []}},
        "/watch/namespaces': minItems",
    ),
    (
        "cluster-with-namespaces",
        {"watch": {"mode": "cluster", "namespaces": ["ml"]}},
        "/watch/namespaces': maxItems",
    ),
    ("store-type", {"artifactStore": {"type": "gcs"}}, "/artifactStore/type"),
    ("s3-without-uri", {"artifactStore": {"type": "s3"}}, "/artifactStore/s3/uri"),
    (
        "s3-uri-scheme",
        {"artifactStore": {"s3": {"uri": "https://bucket"}}},
        "/artifactStore/s3/uri",
    ),
    (
        "subpath-escapes",
        {"artifactStore": {"pvc": {"subPath": "models/../../etc"}}},
        "/artifactStore/pvc/subPath",
    ),
    (
        "negative-ttl",
        {"builder": {"ttlSecondsAfterFinished": -1}},
        "/builder/ttlSecondsAfterFinished",
    ),
    ("bad-quantity", {"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
    (
        "settings-quantity-unquoted",
        {"builder": {"resources": {"requests": {"cpu": 2}}}},
        "/builder/resources/requests/cpu': got number, want string",
    ),
    (
        "writable-root",
        {"securityContext": {"readOnlyRootFilesystem": False}},
        "/securityContext/readOnlyRootFilesystem': value must be true",
    ),
    ("run-as-root", {"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    (
        "servicemonitor-without-metrics",
        {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
        "/metrics/enabled': value must be true",
    ),
    ("metrics-port-range", {"metrics": {"port": 80}}, "/metrics/port"),
    ("cache-too-small", {"serving": {"responseCacheBytes": 1000}}, "/serving/responseCacheBytes"),
    (
        "cache-size-as-string",
        {"serving": {"responseCacheBytes": "256Mi"}},
        "/serving/responseCacheBytes",
    ),
    ("budget-interval-zero", {"budgetIntervalSeconds": 0}, "/budgetIntervalSeconds"),
    ("cpu-price-as-string", {"cpuReplicaPrice": "0.1"}, "/cpuReplicaPrice"),
    (
        "hardware-unknown-field",
        {"hardware": {"nvidia-l4": {"tflops": 3}}},
        "additional properties 'tflops'",
    ),
    (
        "hardware-negative-spot",
        {"hardware": {"nvidia-l4": {"spotUSDPerHour": -1}}},
        "/hardware/nvidia-l4/spotUSDPerHour",
    ),
    ("prometheus-url-scheme", {"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url"),
    (
        "prometheus-label-form",
        {"prometheus": {"dcgmPodLabel": "exported-pod"}},
        "/prometheus/dcgmPodLabel",
    ),
    ("policy-unknown-key", {"policy": {"images": ["x"]}}, "additional properties 'images'"),
    ("policy-image-pattern", {"policy": {"servingImages": "nvcr.io/*"}}, "/policy/servingImages"),
    (
        "policy-s3-without-bucket",
        {"policy": {"storage": {"s3": [{"endpoint": "https://minio:9000"}]}}},
        "/policy/storage/s3/0",
    ),
    (
        "policy-cap-gpu-type",
        {"policy": {"namespaceCaps": {"ml": {"gpuTypes": ["H100"]}}}},
        "/policy/namespaceCaps/ml/gpuTypes/0",
    ),
    (
        "network-peer-key",
        {"serving": {"networkPolicy": {"clients": [{"pods": {}}]}}},
        "/serving/networkPolicy/clients/0",
    ),
    ("size-limit-form", {"serving": {"volumes": {"tmp": "1 GB"}}}, "/serving/volumes/tmp"),
]


@pytest.mark.parametrize(
    ("values", "message"),
    [pytest.param(v, m, id=case) for case, v, m in SCHEMA_REJECTS],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: Values, message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert message in str(raised.value)
    # `helm template` / `helm install` refuse the same values before rendering anything.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


TEMPLATE_REJECTS: list[tuple[str, Values, str]] = [
    ("latest-tag", {"builder": {"image": {"tag": "latest"}}}, "builder.image.tag: 'latest'"),
    ("port-clash", {"metrics": {"port": 8080}}, "metrics.port and health.port are both 8080"),
    (
        "replicas-without-peering",
        {"replicaCount": 2, "peering": {"create": False}},
        "replicaCount > 1 needs Kopf peering",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"),
    [pytest.param(v, m, id=case) for case, v, m in TEMPLATE_REJECTS],
)
def test_template_rejects_what_the_schema_cannot_say(
    chart: helm.Chart, values: Values, message: str
) -> None:
    chart.validate_schema(values)  # well-formed, yet wrong
    with pytest.raises(helm.HelmRenderError) as raised:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(raised.value)


def test_schema_is_valid_draft7_and_accepts_the_defaults(chart: helm.Chart) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    for values in VALUE_SETS.values():
        chart.validate_schema(values)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_operator_accepts_the_rendered_settings(name: str, rendered: dict[str, Rendered]) -> None:
    """The settings file parses with the operator's own settings model (unknown keys fail)."""
    settings_module = pytest.importorskip("optimodel.operator.settings")
    parsed = settings_module.parse_settings(rendered[name].settings(), {}, origin=name)
    assert parsed.metrics_port == rendered[name].settings()["metricsPort"]
