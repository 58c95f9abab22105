"""gpu.type auto end to end: the operator compares the types for the target once the build
reports its work (a tiny BERT's fused fp16 graph, counted by the builder's work.py), serves the
cheapest the namespace's policy allows with its node selection, prices the budget with it, and
says when a target is out of reach (operator on the API emulator)."""

from __future__ import annotations

from typing import Any

import onnx
import pytest

from optimodel.model_builder.work import count_work
from tests.cluster import DEPLOYMENTS, MODELS, built_report
from tests.test_operator_cluster import NS, Cluster
from tests.test_work import tiny_artifacts

pytestmark = pytest.mark.cluster
LABEL = "nvidia.com/gpu.product"


def test_auto_serves_the_cheapest_allowed_type_that_meets_the_target(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    graph = tiny_artifacts(tmp_path_factory.mktemp("work"))["fused-fp16"]
    work = count_work(onnx.load(str(graph)), sequence_length=128, batch_size=32)
    settings: dict[str, Any] = {
        "resyncSeconds": 1,
        "serving": {"gpuNodeLabel": LABEL, "gpuNodeLabelValues": {"nvidia-l4": "NVIDIA-L4"}},
        # T4 would be cheaper still; this namespace may use L4 and A10G only.
        "policy": {"namespaceCaps": {NS: {"gpuTypes": ["nvidia-l4", "nvidia-a10g"]}}},
    }
    with cluster.operator(**settings):
        cluster.create(
            "chooser",
            serving={
                "gpu": {"type": "auto", "count": 1},
                "target": {"inferencesPerSecond": 500, "latencyP99Ms": 100},
            },
        )
        [job] = cluster.wait_jobs("chooser", 1)
        waiting = cluster.wait_condition("chooser", "TargetReachable", "Unknown", "AwaitingBuild")
        assert "nvidia-a10g" in waiting["message"]  # priced at the dearest candidate
        assert cluster.http.model(NS, "chooser")["status"]["cost"]["replicaUSDPerHour"] == 1.0

        report = built_report(job["metadata"]["annotations"]["optimodel.io/spec-hash"])
        cluster.jobs.succeed(job, {**report, "work": work.model_dump(by_alias=True)})
        met = cluster.wait_condition("chooser", "TargetReachable", "True", "TargetMet")
        assert met["message"].startswith("nvidia-l4 x 1 replica(s) meets the target 500/s")
        deployment = cluster.rollout_when("chooser", 1)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {LABEL: "NVIDIA-L4"}
        cluster.wait_condition("chooser", "Ready", "True")
        status = cluster.http.model(NS, "chooser")["status"]
        hardware = status["hardware"]
        assert hardware["chosen"]["type"] == "nvidia-l4"
        assert hardware["chosen"]["basis"] == "estimated"
        assert hardware["runnerUp"]["type"] == "nvidia-a10g"
        assert hardware["candidates"] == 2 and hardware["targetReachable"] is True
        assert status["cost"]["replicaUSDPerHour"] == 0.7  # the chosen type's price
        assert "HardwareChosen" in cluster.reasons("chooser", "HardwareChosen")

        # A target no allowed type reaches within maxReplicas: the best it can do, and why.
        cluster.http.patch(
            MODELS, NS, "chooser", {"spec": {"serving": {"target": {"inferencesPerSecond": 1e7}}}}
        )
        missed = cluster.wait_condition("chooser", "TargetReachable", "False", "TargetUnreachable")
        assert "out of reach: the best is nvidia-l4 x 8 replica(s)" in missed["message"]
        assert "maxReplicas is 8" in missed["message"]
        # The $6/h budget annotation affords 6 A10Gs only.
        assert "runner-up nvidia-a10g x 6 at $6.00/h" in missed["message"]
        assert "TargetUnreachable" in cluster.reasons("chooser", "TargetUnreachable")
        after = cluster.http.get(DEPLOYMENTS, NS, "chooser")
        assert after is not None
        assert after["spec"]["template"]["spec"]["nodeSelector"] == {LABEL: "NVIDIA-L4"}
