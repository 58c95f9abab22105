"""The admin policy end to end: a refused spec gets Ready=False / PolicyViolation with the
rule named, and nothing is created or changed (operator on the API emulator)."""

from __future__ import annotations

import pytest

from tests.cluster import CONFIG_MAPS, DEPLOYMENTS, MODELS, SERVICES, wait_until
from tests.test_operator_cluster import NS, Cluster, quiet_period

pytestmark = pytest.mark.cluster
LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"


def test_a_refused_spec_changes_nothing_and_names_the_rule(cluster: Cluster) -> None:
    # The defaults (no image overrides, no per-model stores) with one namespace cap.
    with cluster.operator(resyncSeconds=1, policy={"namespaceCaps": {NS: {"maxReplicas": 8}}}):
        cluster.ready("minilm")
        deployment = cluster.http.get(DEPLOYMENTS, NS, "minilm")
        assert deployment is not None
        # A spec that would run the user's image where the platform's runs.
        cluster.patch_spec("minilm", {"serving": {"image": "attacker.example/triton:1"}})
        ready = cluster.wait_condition("minilm", "Ready", "False", "PolicyViolation", generation=2)
        assert "spec.serving.image" in ready["message"]
        assert "policy rule policy.servingImages" in ready["message"]
        built = cluster.wait_condition("minilm", "Built", "False", "PolicyViolation", generation=2)
        assert built["message"] == ready["message"]

        def handled() -> bool:  # Kopf has recorded the spec it handled (its own patch)
            annotations = cluster.http.model(NS, "minilm")["metadata"].get("annotations") or {}
            return "attacker.example" in annotations.get(LAST_HANDLED, "")

        wait_until(handled, what="Kopf's record of the handled spec")
        assert quiet_period(cluster, 2.5) == []  # resyncs write nothing
        after = cluster.http.get(DEPLOYMENTS, NS, "minilm")
        assert after is not None
        assert after["metadata"]["resourceVersion"] == deployment["metadata"]["resourceVersion"]
        assert len(cluster.http.jobs(NS, "minilm")) == 1
        status = cluster.http.model(NS, "minilm")["status"]
        assert status["phase"] == "Failed" and status["build"]["generation"] == 1
        assert cluster.reasons("minilm", "PolicyViolation").count("PolicyViolation") == 1

        # A new model naming a claim the builder would mount read-write, past the cap.
        cluster.create(
            "thief",
            storage={"pvc": {"claimName": "postgres-data"}},
            autoscaling={"maxReplicas": 9},
        )
        refused = cluster.wait_condition("thief", "Ready", "False", "PolicyViolation")
        assert "policy rule policy.storage.pvcClaims" in refused["message"]
        assert f"policy rule policy.namespaceCaps.{NS}.maxReplicas" in refused["message"]
        assert cluster.http.jobs(NS, "thief") == []
        for resource, name in ((DEPLOYMENTS, "thief"), (SERVICES, "thief")):
            assert cluster.http.get(resource, NS, name) is None
        assert cluster.http.get(CONFIG_MAPS, NS, "thief-triton-config") is None

        # Back within the policy: served again, without a rebuild.
        cluster.http.patch(MODELS, NS, "minilm", {"spec": {"serving": {"image": None}}})
        cluster.wait_condition("minilm", "Ready", "True", generation=3)
        assert len(cluster.http.jobs(NS, "minilm")) == 1
