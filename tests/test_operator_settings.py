"""Operator settings: the file the Helm chart renders, env overrides, clear startup errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from optimodel.operator.autoscaling import DEFAULT_PROMETHEUS_ADDRESS
from optimodel.operator.cost import (
    DEFAULT_CPU_REPLICA_USD_PER_HOUR,
    DEFAULT_GPU_PRICES_USD_PER_HOUR,
)
from optimodel.operator.settings import (
    SETTINGS_FILE_ENV,
    OperatorSettings,
    SettingsError,
    load_settings,
    parse_settings,
)

CHART_LIKE = """
builderImage: registry.example/optimodel-builder:1.2.3
tritonImage: nvcr.io/nvidia/tritonserver:24.10-py3
s3SyncImage: amazon/aws-cli:2.22.35
artifactStore:
  s3: {uri: "s3://ml-artifacts/optimodel", region: eu-west-1, credentialsSecret: {name: keys}}
gpuPrices: {nvidia-l4: 0.55, acme-x1: 2.0}
build:
  backoffLimit: 1
  ttlSecondsAfterFinished: 3600
  activeDeadlineSeconds: 7200
  resources: {requests: {cpu: "4", memory: 16Gi}}
serving: {resources: {requests: {cpu: 500m}}, gpuNodeLabel: cloud.google.com/gke-accelerator}
namespaces: [ml-serving, ml-staging]
metricsPort: 9090
healthPort: 8080
resyncSeconds: 120
budgetIntervalSeconds: 30
cpuReplicaPrice: 0.2
prometheus: {url: "http://prometheus.monitoring:9090", timeoutSeconds: 2, dcgmPodLabel: pod}
peering: {name: optimodel-prod}
"""


def test_defaults_are_a_working_configuration() -> None:
    settings = OperatorSettings()
    assert settings.artifact_store.pvc is not None and settings.artifact_store.s3 is None
    assert settings.namespaces == [] and settings.metrics_port == 9090
    assert settings.gpu_price_catalog == dict(DEFAULT_GPU_PRICES_USD_PER_HOUR)


def test_the_file_the_chart_renders_is_read_in_full() -> None:
    settings = parse_settings(yaml.safe_load(CHART_LIKE), {}, "settings.yaml")
    assert settings.builder_image == "registry.example/optimodel-builder:1.2.3"
    assert settings.artifact_store.s3 is not None
    assert settings.artifact_store.s3.credentials_secret is not None
    assert settings.build.backoff_limit == 1
    assert settings.serving.gpu_node_label == "cloud.google.com/gke-accelerator"
    assert settings.namespaces == ["ml-serving", "ml-staging"]
    assert settings.peering.name == "optimodel-prod" and settings.peering.priority is None
    # Overrides are merged over the built-in catalog, one type at a time.
    catalog = settings.gpu_price_catalog
    assert catalog["nvidia-l4"] == 0.55 and catalog["acme-x1"] == 2.0
    assert catalog["nvidia-h100"] == DEFAULT_GPU_PRICES_USD_PER_HOUR["nvidia-h100"]
    assert settings.budget_interval_seconds == 30
    assert settings.price_catalog.gpu_price("acme-x1") == 2.0
    assert settings.price_catalog.cpu_replica_usd_per_hour == 0.2
    source = settings.prometheus.source()
    assert source.server_address == "http://prometheus.monitoring:9090"
    assert (source.dcgm_pod_label, source.dcgm_namespace_label) == ("pod", "exported_namespace")
    assert settings.prometheus.timeout_seconds == 2


def test_without_prometheus_keda_gets_the_default_address_and_prices_may_be_zero() -> None:
    settings = OperatorSettings.model_validate({"gpuPrices": {"nvidia-l4": 0}})
    assert settings.prometheus.url is None
    assert settings.prometheus.source().server_address == DEFAULT_PROMETHEUS_ADDRESS
    assert settings.price_catalog.gpu_price("nvidia-l4") == 0  # GPUs you own
    assert settings.price_catalog.cpu_replica_usd_per_hour == DEFAULT_CPU_REPLICA_USD_PER_HOUR
    assert settings.budget_interval_seconds == 60


def test_env_overrides_the_file() -> None:
    env = {
        "OPTIMODEL_BUILDER_IMAGE": "local/builder:dev",
        "OPTIMODEL_NAMESPACES": "a, b",
        "OPTIMODEL_METRICS_PORT": "0",
        "OPTIMODEL_PEERING_STANDALONE": "true",
        "OPTIMODEL_BUDGET_INTERVAL_SECONDS": "5",
        "OPTIMODEL_PROMETHEUS_URL": "http://127.0.0.1:9090",
    }
    settings = parse_settings(yaml.safe_load(CHART_LIKE), env, "settings.yaml")
    assert settings.budget_interval_seconds == 5
    assert settings.prometheus.url == "http://127.0.0.1:9090"
    assert settings.prometheus.dcgm_pod_label == "pod"  # the rest of the block stays
    assert settings.builder_image == "local/builder:dev"
    assert settings.namespaces == ["a", "b"]
    assert settings.metrics_port == 0 and settings.peering.standalone is True


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        ({"metricsPort": "http"}, ["metricsPort", "'http'"]),
        ({"builderImge": "x"}, ["builderImge", "fix: remove it"]),
        ({"build": {"resources": {"requests": {"cpu": "lots"}}}}, ["build.resources", "'lots'"]),
        ({"gpuPrices": {"nvidia-l4": -1}}, ["gpuPrices.nvidia-l4", "negative"]),
        ({"gpuPrices": {"NVIDIA L4": 1}}, ["gpuPrices", "lowercase"]),
        (
            {"artifactStore": {"pvc": {"claimName": "a"}, "s3": {"uri": "s3://models"}}},
            ["artifactStore", "exactly one"],
        ),
        ({"artifactStore": {"s3": {"uri": "http://b"}}}, ["artifactStore.s3.uri"]),
        ({"budgetIntervalSeconds": 0.5}, ["budgetIntervalSeconds", "0.5"]),
        ({"prometheus": {"url": "prometheus:9090"}}, ["prometheus.url", "'prometheus:9090'"]),
        ({"prometheus": {"tritonPodLabel": "pod-name"}}, ["prometheus.tritonPodLabel"]),
        ({"cpuReplicaPrice": -1}, ["cpuReplicaPrice"]),
        ([1, 2], ["YAML mapping"]),
    ],
)
def test_bad_settings_name_the_field_and_value(document: object, fragments: list[str]) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(document, {}, "/etc/optimodel/settings.yaml")
    message = str(caught.value)
    assert "/etc/optimodel/settings.yaml" in message
    for fragment in fragments:
        assert fragment in message


def test_load_settings_from_the_file_named_by_env(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(CHART_LIKE)
    assert load_settings({SETTINGS_FILE_ENV: str(path)}).resync_seconds == 120
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings({SETTINGS_FILE_ENV: str(tmp_path / "missing.yaml")})
    path.write_text("builderImage: [unclosed")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings({SETTINGS_FILE_ENV: str(path)})


def test_operator_command_refuses_bad_settings_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("build: {backoffLimit: -1}\n")
    result = subprocess.run(
        [sys.executable, "-m", "optimodel.cli", "operator"],
        env={SETTINGS_FILE_ENV: str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "build.backoffLimit" in result.stderr and "(got -1)" in result.stderr
