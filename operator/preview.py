"""What the operator would create for one manifest, without a cluster (`optimodel render`).

The same path as a reconcile, fed what a fresh cluster would show: no Jobs, no children, an
empty status. `decide_build` renders the builder Job; with a build report (the builder's
report.json, as `optimodel build` writes it) the build is taken as succeeded and the serving
children come from `render_children` under the budget's cap (`assess_model_budget`, nothing
running yet), stamped by `plan_children` exactly as the operator creates them. Without a
report only the Job is rendered: before a build passes its gate the operator creates nothing
else, and no placeholder report could stand in for the signature the configs are rendered
from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from optimodel.model_builder.report import BuildReport, BuildSummary
from optimodel.model_builder.spec import SpecProblem
from optimodel.operator import api, naming
from optimodel.operator.budget import assess_model_budget
from optimodel.operator.builds import build_status
from optimodel.operator.children import plan_children
from optimodel.operator.hardware_choice import model_hardware
from optimodel.operator.planning import decide_build, model_ref
from optimodel.operator.render import ServingInputs, autoscaled_deployment, render_children
from optimodel.operator.settings import OperatorSettings
from optimodel.operator.validation import ManifestError, manifest_problems, parse_spec

# metadata.uid of a manifest that never reached an API server (owner references need one).
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class RenderedModel:
    """The children of one manifest, in the order the operator applies them."""

    manifests: list[dict[str, Any]]
    note: str  # what was rendered, and what was not


def _as_created(document: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
    """The manifest as the API server would hand it to the operator: namespace, uid and
    generation 1 filled in."""
    metadata = dict(document.get("metadata") or {})
    metadata["namespace"] = namespace or metadata.get("namespace") or DEFAULT_NAMESPACE
    metadata.setdefault("uid", PLACEHOLDER_UID)
    metadata.setdefault("generation", 1)
    return {**document, "metadata": metadata}


def render_model(
    document: Mapping[str, Any],
    settings: OperatorSettings,
    report: BuildReport | None = None,
    namespace: str | None = None,
    now: datetime | None = None,
) -> RenderedModel:
    """Every child the operator creates for `document` (and `report`'s build). Raises
    ManifestError for an invalid manifest or one the admin policy refuses."""
    problems = manifest_problems(dict(document))
    if problems:
        raise ManifestError(problems)
    body = _as_created(document, namespace)
    now = now or datetime.now(UTC)
    decision = decide_build(body, api.OptimizedModelStatus(), [], [], settings)
    if decision.invalid:
        raise ManifestError(list(decision.problems))
    assert decision.job_to_create is not None and decision.store is not None
    job = decision.job_to_create
    if report is None:
        return RenderedModel(
            [job],
            "no build report: before a build passes its accuracy gate the operator creates "
            "the builder Job only; pass --report report.json for the serving children",
        )
    if not report.passed:
        return RenderedModel(
            [job],
            f"the report's build failed ({report.failure or 'accuracy gate'}): the operator "
            "serves nothing for it, so only the builder Job is rendered",
        )
    try:
        summary = BuildSummary.from_report(report)
    except ValueError as error:
        fix = "pass the report.json of a finished build"
        raise ManifestError([SpecProblem("--report", str(error), fix)]) from None
    model = model_ref(body)
    generation = decision.generation
    build = build_status(
        summary, decision.store.artifact_uri(model.namespace, model.name, generation), generation
    )
    annotations = dict(body["metadata"].get("annotations") or {})
    # gpu.type auto: rendered (and priced) on the type the operator would choose.
    hardware = model_hardware(
        parse_spec(body),
        build,
        model=model.name,
        namespace=model.namespace,
        annotations=annotations,
        settings=settings,
    )
    spec = hardware.spec
    budget = assess_model_budget(
        spec=spec,
        annotations=annotations,
        previous=api.OptimizedModelStatus(),
        replicas=0,
        catalog=settings.price_catalog,
        now=now,
    )
    desired = render_children(
        ServingInputs(
            model=model,
            spec=spec,
            build=build,
            store=decision.store,
            settings=settings,
            now=now,
            annotations=annotations,
            max_replicas=budget.max_replicas,
        )
    )
    changes = plan_children(
        desired,
        {},
        model.uid,
        scaled_elsewhere=spec.autoscaling.enabled,
        autoscaled=autoscaled_deployment(spec, model.name),
    )
    note = f"builder Job and the serving children of its build ({budget.condition.message})"
    if hardware.condition is not None:
        note += f"; hardware: {hardware.condition.message}"
    if report.spec_hash != job["metadata"]["annotations"][naming.SPEC_HASH]:
        note += (
            "; the report was built from other build inputs than this manifest's, so the "
            "operator would build again before serving it"
        )
    return RenderedModel([job, *(dict(change.desired) for change in changes)], note)
