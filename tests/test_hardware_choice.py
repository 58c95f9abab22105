"""The operator's hardware choice for one spec: validation, candidates under the admin policy,
measured profiles, status, and the node selection of the chosen type (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from optimodel.model_builder.spec import gpu_choice_problems
from optimodel.operator import api
from optimodel.operator.hardware_choice import (
    candidate_types,
    model_hardware,
    profiles_for,
    record_hardware,
)
from optimodel.operator.policy import policy_violations
from optimodel.operator.render.placement import gpu_node_selector
from optimodel.operator.settings import OperatorSettings
from tests.test_performance import MINILM_FP16

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
BUILD = api.BuildStatus(
    artifact="pvc://optimodel-artifacts/ns/m/g1",
    generation=1,
    size_bytes=1,
    original_size_bytes=4,
    size_reduction=4.0,
    accuracy_metric="cosine",
    accuracy=0.999,
    work=MINILM_FP16,
)


def spec(**serving: Any) -> api.OptimizedModelSpec:
    return api.OptimizedModelSpec.model_validate(
        {"source": {"uri": "hf://org/m", "task": "feature-extraction"}, "serving": serving}
    )


AUTO = {"gpu": {"type": "auto"}, "target": {"inferencesPerSecond": 2000, "latencyP99Ms": 50}}


@pytest.mark.parametrize(
    ("serving", "path", "words"),
    [
        ({"gpu": {"type": "auto"}}, "spec.serving.target", "none is set"),
        ({**AUTO, "gpu": {"type": "auto", "count": 0}}, "spec.serving.gpu.type", "gpu.count is 0"),
        ({"gpu": {"type": "nvidia-l4", "types": ["nvidia-t4"]}}, "spec.serving.gpu.types", "auto"),
        ({**AUTO, "gpu": {"type": "auto", "types": ["cpu"]}}, "spec.serving.gpu.types[0]", "GPU"),
        (
            {**AUTO, "gpu": {"type": "auto", "types": ["nvidia-t4", "nvidia-t4"]}},
            "spec.serving.gpu.types[1]",
            "twice",
        ),
    ],
)
def test_the_choice_is_validated_naming_the_field(
    serving: dict[str, Any], path: str, words: str
) -> None:
    problems = gpu_choice_problems(spec(**serving).serving)
    assert [p.path for p in problems] == [path]
    assert words in problems[0].message and problems[0].fix


def test_unknown_or_disallowed_types_are_refused_by_the_settings() -> None:
    settings = OperatorSettings.model_validate(
        {"policy": {"namespaceCaps": {"team": {"gpuTypes": ["nvidia-l4", "nvidia-t4"]}}}}
    )
    listed = spec(
        **{**AUTO, "gpu": {"type": "auto", "types": ["nvidia-l4", "acme-x9", "nvidia-h100"]}}
    )
    found = {(v.path, v.rule) for v in policy_violations(listed, "team", settings)}
    assert found == {
        ("spec.serving.gpu.types[1]", "hardware"),
        ("spec.serving.gpu.types[1]", "policy.namespaceCaps.team.gpuTypes"),
        ("spec.serving.gpu.types[2]", "policy.namespaceCaps.team.gpuTypes"),
    }
    # auto itself is not a type the caps could list.
    assert policy_violations(spec(**AUTO), "team", settings) == []


def test_the_policy_caps_restrict_the_candidates() -> None:
    settings = OperatorSettings.model_validate(
        {"policy": {"namespaceCaps": {"team": {"gpuTypes": ["nvidia-l4", "nvidia-a10g"]}}}}
    )
    assert candidate_types(spec(**AUTO), "team", settings) == ("nvidia-l4", "nvidia-a10g")
    assert "nvidia-t4" in candidate_types(spec(**AUTO), "other", settings)
    assert candidate_types(spec(gpu={"type": "nvidia-h100"}), "team", settings) == ("nvidia-h100",)
    assert candidate_types(spec(gpu={"count": 0}), "team", settings) == ("cpu",)
    chosen = model_hardware(
        spec(**AUTO), BUILD, model="m", namespace="team", annotations={}, settings=settings
    )
    assert chosen.spec.serving.gpu.type == "nvidia-l4"  # T4 would be cheaper, not allowed
    assert chosen.status is not None and chosen.status.runner_up is not None
    assert chosen.status.runner_up.type == "nvidia-a10g"


def test_before_the_build_auto_is_priced_at_its_dearest_candidate() -> None:
    settings = OperatorSettings()
    waiting = model_hardware(
        spec(**AUTO), None, model="m", namespace="ns", annotations={}, settings=settings
    )
    assert waiting.spec.serving.gpu.type == "nvidia-h200"
    assert waiting.condition is not None and waiting.condition.reason == "AwaitingBuild"
    assert waiting.status is None
    plain = model_hardware(
        spec(gpu={"type": "nvidia-l4"}),
        BUILD,
        model="m",
        namespace="ns",
        annotations={},
        settings=settings,
    )
    assert plain.condition is None and plain.spec.serving.gpu.type == "nvidia-l4"


def test_an_unreachable_target_says_the_best_it_can_do() -> None:
    far = {**AUTO, "target": {"inferencesPerSecond": 5_000_000}}
    settings = OperatorSettings()
    result = model_hardware(
        spec(**far), BUILD, model="m", namespace="ns", annotations={}, settings=settings
    )
    assert result.condition is not None
    assert (result.condition.status, result.condition.reason) == ("False", "TargetUnreachable")
    assert "out of reach: the best is" in result.condition.message
    assert "maxReplicas is 8" in result.condition.message
    status, events = record_hardware(api.OptimizedModelStatus(), result, 1, NOW)
    assert status.hardware is not None and not status.hardware.target_reachable
    assert [e.reason for e in events] == ["TargetUnreachable"]
    # The same verdict again posts nothing; removing the target removes the record.
    again, repeated = record_hardware(status, result, 1, NOW)
    assert repeated == () and again == status
    cleared, _ = record_hardware(status, None, 2, NOW)
    assert cleared.hardware is None and cleared.conditions == []


def test_a_models_own_profile_beats_the_general_one() -> None:
    entry = {"type": "nvidia-l4", "latencyP99Ms": 20, "measuredBy": "gpu_check.py"}
    settings = OperatorSettings.model_validate(
        {
            "hardwareProfiles": [
                {**entry, "model": "m", "inferencesPerSecond": 3000},
                {**entry, "inferencesPerSecond": 100},
            ]
        }
    )
    assert profiles_for("m", settings)["nvidia-l4"].inferences_per_second == 3000
    assert profiles_for("other", settings)["nvidia-l4"].inferences_per_second == 100
    result = model_hardware(
        spec(**{**AUTO, "gpu": {"type": "auto", "types": ["nvidia-l4"]}}),
        BUILD,
        model="m",
        namespace="ns",
        annotations={},
        settings=settings,
    )
    assert result.status is not None and result.status.chosen.basis == "measured"
    assert result.status.chosen.replicas == 1  # 2000/s at 70% of 3000/s


def test_node_selection_names_the_served_type() -> None:
    serving = OperatorSettings.model_validate(
        {
            "serving": {
                "gpuNodeLabel": "cloud.google.com/gke-accelerator",
                "gpuNodeLabelValues": {"nvidia-t4": "nvidia-tesla-t4"},
            }
        }
    ).serving
    label = "cloud.google.com/gke-accelerator"
    assert gpu_node_selector("nvidia-t4", 1, serving) == {label: "nvidia-tesla-t4"}
    assert gpu_node_selector("nvidia-l4", 2, serving) == {label: "nvidia-l4"}
    assert gpu_node_selector("nvidia-l4", 0, serving) == {}
    assert gpu_node_selector("nvidia-l4", 1, OperatorSettings().serving) == {}


def test_spot_capacity_prices_the_replicas_above_the_base_on_spot() -> None:
    many = {**AUTO, "gpu": {"type": "auto", "types": ["nvidia-l4"]}}
    many["target"] = {"inferencesPerSecond": 20_000}
    settings = OperatorSettings()
    on_demand = model_hardware(
        spec(**many), BUILD, model="m", namespace="ns", annotations={}, settings=settings
    )
    spot = model_hardware(
        spec(**many, capacity="spot-with-fallback", onDemandReplicas=1),
        BUILD,
        model="m",
        namespace="ns",
        annotations={},
        settings=settings,
    )
    assert on_demand.status is not None and spot.status is not None
    replicas = on_demand.status.chosen.replicas
    assert replicas == spot.status.chosen.replicas > 1
    assert on_demand.status.chosen.usd_per_hour == pytest.approx(replicas * 0.70)
    assert spot.status.chosen.usd_per_hour == pytest.approx(0.70 + (replicas - 1) * 0.28)


def test_pods_are_priced_by_the_type_their_node_label_value_maps_back_to() -> None:
    from optimodel.operator.capacity import price_serving_pods

    label = "nvidia.com/gpu.product"
    pod = {"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    node = {"metadata": {"name": "n1", "labels": {label: "NVIDIA-H100-80GB-HBM3"}}}
    rate = price_serving_pods(
        pods=[pod],
        nodes={"n1": node},
        replicas=1,
        serving=spec(gpu={"type": "nvidia-l4"}).serving,
        catalog=OperatorSettings().price_catalog,
        provider=None,
        gpu_node_label=label,
        gpu_label_values={"nvidia-h100": "NVIDIA-H100-80GB-HBM3"},
    )
    assert rate.usd_per_hour == pytest.approx(11.0)  # the node's H100, not the spec's L4


def test_auto_with_spot_renders_the_chosen_types_node_selection_on_both_tiers() -> None:
    """The issue's 'done when': gpu.type auto, a target and spot-with-fallback render the
    chosen type's node selection, the spot tier's affinity, the on-demand base and a PDB."""
    from optimodel.operator.preview import render_model
    from tests.test_capacity_render import manifest, report

    settings = OperatorSettings.model_validate(
        {
            "serving": {
                "capacity": {"provider": "gke"},
                "gpuNodeLabel": "cloud.google.com/gke-accelerator",
                "gpuNodeLabelValues": {"nvidia-t4": "nvidia-tesla-t4"},
            }
        }
    )
    document = manifest(
        serving={
            **AUTO,
            "gpu": {"type": "auto", "count": 1},
            "capacity": "spot-with-fallback",
            "onDemandReplicas": 2,
        }
    )
    built = report().model_copy(update={"work": MINILM_FP16})
    rendered = render_model(document, settings, built, now=NOW)
    found = {(c["kind"], c["metadata"]["name"]): c for c in rendered.manifests}
    for name in ("minilm", "minilm-spot"):
        pod = found[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
        assert "affinity" in pod
    assert found[("Deployment", "minilm")]["spec"]["replicas"] == 2
    assert ("PodDisruptionBudget", "minilm") in found
    assert "hardware: nvidia-t4 x 1 replica(s) meets the target" in rendered.note
