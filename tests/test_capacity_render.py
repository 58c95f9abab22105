"""Spot capacity with an on-demand base, read from `optimodel render`: the children the
operator creates (the same renderers), each validated against the Kubernetes schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.model_builder.report import AccuracyResult, BuildReport, Measurement
from optimodel.operator import api, naming
from optimodel.operator.capacity import (
    CAPACITY_LABEL,
    PROVIDERS,
    replica_split,
)
from optimodel.operator.planning import BuildDecision, rollout_condition
from optimodel.operator.render import ModelRef
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.validation import manifest_problems, policy_problems
from tests.test_operator_render import SIGNATURE

K8S_VERSION = "1.30"
Obj = dict[str, Any]
runner = CliRunner()
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def manifest(serving: Obj | None = None, autoscaling: Obj | None = None, **spec: Any) -> Obj:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": "minilm",
            "namespace": "ml",
            "annotations": {api.BUDGET_USD_PER_HOUR: "5"},
        },
        "spec": {
            "source": {
                "uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
                "task": "feature-extraction",
            },
            "serving": {"gpu": {"type": "nvidia-l4", "count": 1}, **(serving or {})},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 10, **(autoscaling or {})},
            **spec,
        },
    }


def report() -> BuildReport:
    return BuildReport(
        name="minilm",
        spec_hash="abc",
        passed=True,
        source_uri="hf://sentence-transformers/all-MiniLM-L6-v2",
        task="feature-extraction",
        original=Measurement(size_bytes=90_000_000),
        optimized=Measurement(size_bytes=45_000_000, latency_p50_ms=3.1, throughput=900),
        accuracy=AccuracyResult(
            metric="cosine", mean=0.998, threshold=0.99, samples=64, passed=True
        ),
        signature=SIGNATURE,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def render(
    tmp_path: Path, document: Obj, settings: Obj | None = None, with_report: bool = True
) -> tuple[list[Obj], str]:
    """`optimodel render` of one manifest: (the YAML documents, stderr)."""
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(document))
    args = ["render", str(path)]
    if with_report:
        (tmp_path / "report.json").write_text(report().model_dump_json(by_alias=True))
        args += ["--report", str(tmp_path / "report.json")]
    if settings is not None:
        (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
        args += ["--settings", str(tmp_path / "settings.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout)), result.stderr


def by_kind_name(children: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def pod_of(deployment: Obj) -> Obj:
    pod: Obj = deployment["spec"]["template"]["spec"]
    return pod


SPOT_SETTINGS = {"serving": {"capacity": {"provider": "aks"}}}


def test_without_a_report_only_the_builder_job_is_rendered_and_it_says_so(
    tmp_path: Path,
) -> None:
    children, note = render(tmp_path, manifest(), with_report=False)
    assert [c["kind"] for c in children] == ["Job"]
    assert children[0]["metadata"]["name"] == naming.build_job_name("minilm", 1)
    assert "builder Job only" in note and "--report" in note
    kubernetes_validate.validate(children[0], K8S_VERSION, strict=True)


def test_on_demand_renders_one_deployment_its_budget_cap_and_a_disruption_budget(
    tmp_path: Path,
) -> None:
    children, note = render(tmp_path, manifest())
    assert [c["kind"] for c in children] == [
        "Job",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
    found = by_kind_name(children)
    hpa = found[("HorizontalPodAutoscaler", "minilm")]["spec"]
    # $5/h at $0.70 per L4-hour affords 7 replicas: the budget's cap, as the operator sets it.
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    assert "affords 7" in note
    pod = pod_of(found[("Deployment", "minilm")])
    assert "affinity" not in pod
    # Created as the operator creates them: with the hash of what was rendered.
    assert naming.RENDERED_HASH in found[("Service", "minilm")]["metadata"]["annotations"]


def test_spot_with_fallback_runs_an_on_demand_base_and_an_autoscaled_spot_tier(
    tmp_path: Path,
) -> None:
    document = manifest(serving={"capacity": "spot-with-fallback", "onDemandReplicas": 2})
    children, _ = render(tmp_path, document, SPOT_SETTINGS)
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)
    found = by_kind_name(children)
    base, spot = found[("Deployment", "minilm")], found[("Deployment", "minilm-spot")]
    aks = PROVIDERS["aks"]

    # The base: fixed at onDemandReplicas, held off spot nodes, not tolerating their taint.
    assert base["spec"]["replicas"] == 2
    base_pod = pod_of(base)
    required = base_pod["affinity"]["nodeAffinity"][REQUIRED]
    assert required["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": aks.label, "operator": "NotIn", "values": ["spot"]}]}
    ]
    assert all(t["key"] != aks.label for t in base_pod["tolerations"])

    # The spot tier: prefers spot nodes (falls back to on-demand), tolerates the AKS taint.
    spot_pod = pod_of(spot)
    [preferred] = spot_pod["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred["preference"]["matchExpressions"] == [
        {"key": aks.label, "operator": "In", "values": ["spot"]}
    ]
    assert {
        "key": aks.label,
        "operator": "Equal",
        "value": "spot",
        "effect": "NoSchedule",
    } in spot_pod["tolerations"]
    # Selectors: the spot tier's sees only spot pods; the Service and the PDB see both.
    assert spot["spec"]["selector"]["matchLabels"][CAPACITY_LABEL] == "spot"
    assert spot["spec"]["template"]["metadata"]["labels"][CAPACITY_LABEL] == "spot"
    assert base["spec"]["template"]["metadata"]["labels"][CAPACITY_LABEL] == "on-demand"
    selector = naming.server_selector("minilm")
    for kind in ("Service", "PodDisruptionBudget"):
        child = found[(kind, "minilm")]["spec"]["selector"]
        assert child.get("matchLabels", child) == selector
    assert selector.items() <= base["spec"]["template"]["metadata"]["labels"].items()

    # The autoscaler scales the spot tier only; the budget's cap (7) minus the base (2).
    hpa = found[("HorizontalPodAutoscaler", "minilm")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "minilm-spot"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 5)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_spot_requires_spot_nodes_of_each_provider(tmp_path: Path, provider: str) -> None:
    document = manifest(
        serving={"capacity": "spot", "onDemandReplicas": 1}, autoscaling={"engine": "keda"}
    )
    settings = {"serving": {"capacity": {"provider": provider}}}
    children, _ = render(tmp_path, document, settings)
    found = by_kind_name(children)
    described = PROVIDERS[provider]  # type: ignore[index]
    spot_pod = pod_of(found[("Deployment", "minilm-spot")])
    required = spot_pod["affinity"]["nodeAffinity"][REQUIRED]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": described.label, "operator": "In", "values": list(described.spot_values)}
    ]
    tolerated = {t["key"] for t in spot_pod.get("tolerations", [])}
    assert (described.taint is not None) == (described.label in tolerated)
    # KEDA scales the spot tier to zero: the base (1) covers minReplicas 2 with one spot.
    scaled = found[("ScaledObject", "minilm")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "minilm-spot"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 6)


def test_every_triton_pod_drains_before_triton_exits(tmp_path: Path) -> None:
    """preStop wait, then Triton's exit timeout, all inside the grace period."""
    settings = {
        **SPOT_SETTINGS,
        "serving": {**SPOT_SETTINGS["serving"], "shutdown": {"drainSeconds": 4}},
    }
    document = manifest(serving={"capacity": "spot-with-fallback"})
    children, _ = render(tmp_path, document, settings)
    deployments = [c for c in children if c["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        pod = pod_of(deployment)
        triton = pod["containers"][0]
        assert triton["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "4"]
        assert "--exit-timeout-secs=15" in triton["args"]
        assert pod["terminationGracePeriodSeconds"] == 4 + 15 + 5
    budget = next(c for c in children if c["kind"] == "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_fixed_replicas_split_between_the_base_and_the_spot_tier(tmp_path: Path) -> None:
    document = manifest(
        serving={"capacity": "spot-with-fallback", "onDemandReplicas": 1},
        autoscaling={"enabled": False, "minReplicas": 1},
        replicas=4,
    )
    children, _ = render(tmp_path, document, SPOT_SETTINGS)
    found = by_kind_name(children)
    assert found[("Deployment", "minilm")]["spec"]["replicas"] == 1
    assert found[("Deployment", "minilm-spot")]["spec"]["replicas"] == 3
    assert not any(c["kind"] == "HorizontalPodAutoscaler" for c in children)


def test_spot_without_a_provider_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(manifest(serving={"capacity": "spot"})))
    result = runner.invoke(app, ["render", str(path)])
    assert result.exit_code == 1
    assert "spec.serving.capacity" in result.stderr
    assert "serving.capacity.provider" in result.stderr


@pytest.mark.parametrize(
    ("serving", "autoscaling", "extra", "fix"),
    [
        ({"onDemandReplicas": 1}, {}, {}, "remove onDemandReplicas"),
        ({"capacity": "spot", "onDemandReplicas": 10}, {}, {}, "onDemandReplicas <= 9"),
        (
            {"capacity": "spot", "onDemandReplicas": 11},
            {"engine": "keda"},
            {},
            "onDemandReplicas <= 10",
        ),
        (
            {"capacity": "spot", "onDemandReplicas": 3},
            {"enabled": False},
            {"replicas": 2},
            "onDemandReplicas <= 2",
        ),
    ],
)
def test_capacity_rules_name_the_field_and_the_fix(
    serving: Obj, autoscaling: Obj, extra: Obj, fix: str
) -> None:
    [problem] = manifest_problems(manifest(serving=serving, autoscaling=autoscaling, **extra))
    assert problem.path == "spec.serving.onDemandReplicas"
    assert fix in problem.fix


def test_the_provider_setting_admits_spot() -> None:
    document = manifest(serving={"capacity": "spot"})
    assert policy_problems(document, OperatorSettings(), "ml")
    assert not policy_problems(document, OperatorSettings.model_validate(SPOT_SETTINGS), "ml")


@pytest.mark.parametrize(
    ("serving", "autoscaling", "split"),
    [
        ({}, {}, (2, 0, 0)),  # on-demand: no spot tier
        ({"capacity": "spot-with-fallback"}, {}, (2, 1, 8)),  # HPA keeps one spot replica
        ({"capacity": "spot-with-fallback"}, {"engine": "keda"}, (2, 0, 8)),
        ({"capacity": "spot", "onDemandReplicas": 0}, {}, (0, 2, 10)),
        ({"capacity": "spot", "onDemandReplicas": 1}, {"minReplicas": 3}, (1, 2, 9)),
    ],
)
def test_replica_split(serving: Obj, autoscaling: Obj, split: tuple[int, int, int]) -> None:
    spec = api.OptimizedModelSpec.model_validate(
        manifest(serving=serving, autoscaling=autoscaling)["spec"]
    )
    found = replica_split(spec)
    assert (found.base, found.spot_min, found.spot_max) == split
    # The spot tier's cap never goes below its minimum, nor above what the base leaves.
    assert found.spot_cap(0) == found.spot_min
    assert found.spot_cap(100) == found.spot_max


def test_a_failed_report_renders_no_serving_children(tmp_path: Path) -> None:
    failed = report().model_copy(update={"passed": False, "failure": "cosine 0.9 < 0.99"})
    (tmp_path / "report.json").write_text(failed.model_dump_json(by_alias=True))
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    result = runner.invoke(app, ["render", str(path), "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert [d["kind"] for d in yaml.safe_load_all(result.stdout)] == ["Job"]
    assert "cosine 0.9 < 0.99" in result.stderr


def test_a_bad_report_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"name": "minilm"}))
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    result = runner.invoke(app, ["render", str(path), "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 2
    assert "--report" in result.stderr


def test_the_spot_example_renders_its_base_and_spot_tier(tmp_path: Path, repo: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({"serving": {"capacity": {"provider": "gke"}}}))
    (tmp_path / "report.json").write_text(report().model_dump_json(by_alias=True))
    args = ["render", str(repo / "examples" / "minilm-spot.yaml"), "--settings", str(settings)]
    result = runner.invoke(app, [*args, "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    found = by_kind_name(list(yaml.safe_load_all(result.stdout)))
    assert found[("Deployment", "minilm-spot")]["spec"]["replicas"] == 2
    # KEDA's spot tier starts at zero: minReplicas 2 are the base.
    assert found[("Deployment", "minilm-spot-spot")]["spec"]["replicas"] == 0
    scaled = found[("ScaledObject", "minilm-spot")]["spec"]
    # $8/h affords 11 L4 replicas (hourly cap), 9 of them on the spot tier.
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 9)
    # Its GPU trigger reads both tiers' pods less the base's share (2 x 70%), so it wakes
    # from zero when the base is busier than its target.
    query = scaled["triggers"][0]["metadata"]["query"]
    assert query.startswith("clamp_min(sum(") and query.endswith(" - 140, 0)")
    assert 'exported_pod=~"minilm-spot(-spot)?-[a-z0-9]+-[a-z0-9]+"' in query
    assert ("PodDisruptionBudget", "minilm-spot") in found


def test_deployed_waits_for_the_spot_tier_too() -> None:
    model = ModelRef("minilm", "ml", "uid-1")
    spec = api.OptimizedModelSpec.model_validate(
        manifest(serving={"capacity": "spot-with-fallback"})["spec"]
    )
    build = api.BuildStatus(
        artifact="pvc://models/ml/minilm/g1",
        generation=1,
        size_bytes=1,
        original_size_bytes=2,
        size_reduction=2,
        accuracy_metric="cosine",
        accuracy=0.99,
    )
    decision = BuildDecision(model, 1, (), spec=spec, serving=build)

    def deployment(name: str, replicas: int) -> Obj:
        return {
            "metadata": {
                "name": name,
                "generation": 1,
                "annotations": {naming.ARTIFACT: build.artifact},
                "ownerReferences": [model.owner_reference()],
            },
            "spec": {"replicas": replicas},
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            },
        }

    base = deployment("minilm", 2)
    missing = rollout_condition(decision, base, [], None)
    assert (missing.status, missing.reason) == ("False", "Deploying")
    assert "minilm-spot" in missing.message
    rolling = deployment("minilm-spot", 3)
    rolling["status"]["availableReplicas"] = 1
    assert rollout_condition(decision, base, [], rolling).reason == "RollingOut"
    done = rollout_condition(decision, base, [], deployment("minilm-spot", 3))
    assert done.status == "True" and "minilm-spot" in done.message
    # On-demand capacity never waits for a spot tier.
    on_demand = BuildDecision(
        model, 1, (), spec=api.OptimizedModelSpec.model_validate(manifest()["spec"]), serving=build
    )
    assert rollout_condition(on_demand, base, [], None).status == "True"
