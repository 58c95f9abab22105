"""What a builder Job did, read from the Job's status and its pods' termination messages.

The builder writes one JSON line to /dev/termination-log (see the builder's CLI): on success
`{"reason": "Built", "report": {...}}`, on failure `{"reason": ..., "message": ...}`. The
kubelet copies it into the pod's status, which is where the operator reads it: no shared
volume, no log scraping. Pure functions of the objects as the API returns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from optimodel.model_builder.report import BuildSummary, TerminationMessage
from optimodel.operator import api, naming

BuildState = Literal["running", "succeeded", "failed"]
MAX_MESSAGE = 1000

# Exit codes of `python -m optimodel.model_builder` that no retry can change.
EXIT_INVALID_SPEC = 2
EXIT_ACCURACY_GATE = 3
EXIT_SOURCE_FAILED = 4  # a source or the artifact store refused for good (after retries)


@dataclass(frozen=True)
class BuildOutcome:
    """Where one builder Job stands."""

    state: BuildState
    job_name: str
    reason: str
    message: str
    build: api.BuildStatus | None = None
    seconds: float | None = None


def _shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _seconds(job: Mapping[str, Any]) -> float | None:
    """Wall time of a finished Job, from its status timestamps."""
    status = job.get("status") or {}
    try:
        started = datetime.fromisoformat(str(status["startTime"]).replace("Z", "+00:00"))
        finished = datetime.fromisoformat(str(status["completionTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return max(0.0, (finished - started).total_seconds())


def job_state(job: Mapping[str, Any]) -> BuildState:
    if job_condition(job, "Complete"):
        return "succeeded"
    if job_condition(job, "Failed"):
        return "failed"
    return "running"


@dataclass(frozen=True)
class _Terminated:
    container: str
    exit_code: int
    reason: str
    message: str
    finished_at: str


def _terminations(pods: Sequence[Mapping[str, Any]]) -> list[_Terminated]:
    """Terminated containers of all pods, latest first."""
    found = []
    for pod in pods:
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses"):
            for container in status.get(key) or []:
                terminated = (container.get("state") or {}).get("terminated")
                if not terminated:
                    continue
                found.append(
                    _Terminated(
                        container=str(container.get("name", "")),
                        exit_code=int(terminated.get("exitCode", -1)),
                        reason=str(terminated.get("reason") or ""),
                        message=str(terminated.get("message") or ""),
                        finished_at=str(terminated.get("finishedAt") or ""),
                    )
                )
    return sorted(found, key=lambda item: item.finished_at, reverse=True)


def parse_termination(text: str) -> TerminationMessage | None:
    """The builder's JSON message, or None when the text is something else (e.g. logs)."""
    for line in reversed(text.strip().splitlines()):
        try:
            return TerminationMessage.parse(line)
        except (ValueError, ValidationError):
            continue
    return None


def failure_message(parsed: TerminationMessage) -> str:
    """The builder's own words, with the gate's numbers when it reported them."""
    message = parsed.message or f"the builder failed with {parsed.reason}"
    if parsed.accuracy is not None and parsed.threshold is not None:
        numbers = f"measured {parsed.accuracy:.4f}, required {parsed.threshold:g}"
        if parsed.step:
            numbers += f", lost at step {parsed.step}"
        if f"{parsed.accuracy:.4f}" not in message:
            message += f" ({numbers})"
    return message


def build_status(report: BuildSummary, artifact: str, generation: int) -> api.BuildStatus:
    reduction = report.original_size_bytes / report.size_bytes if report.size_bytes else 0.0
    return api.BuildStatus(
        artifact=artifact,
        generation=generation,
        size_bytes=report.size_bytes,
        original_size_bytes=report.original_size_bytes,
        size_reduction=round(reduction, 3),
        accuracy_metric=report.accuracy_metric,
        accuracy=report.accuracy,
        latency_p50_ms=report.latency_p50_ms,
        throughput=report.throughput,
        spec_hash=report.spec_hash,
        recipe=report.recipe,
        signature=report.signature,
        source_commit=report.source_commit,
        adapter_commit=report.adapter_commit,
        work=report.work,
    )


def _failure(job_name: str, job: Mapping[str, Any], terminated: list[_Terminated]) -> BuildOutcome:
    attempts = int((job.get("status") or {}).get("failed") or 0)
    tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    for item in terminated:
        if item.exit_code == 0:
            continue
        # Both the build and the upload container write the builder's termination message.
        parsed = parse_termination(item.message)
        if parsed is not None:
            return BuildOutcome(
                "failed", job_name, parsed.reason, _shorten(failure_message(parsed))
            )
        detail = item.message or item.reason or "no message"
        reason = "UploadFailed" if item.container != naming.BUILDER_CONTAINER else "BuildFailed"
        return BuildOutcome(
            "failed",
            job_name,
            reason,
            _shorten(
                f"container {item.container} exited with code {item.exit_code}{tried}: {detail}"
            ),
        )
    failed = job_condition(job, "Failed") or {}
    why = failed.get("reason") or "Failed"
    text = failed.get("message") or "the Job failed before the builder reported anything"
    return BuildOutcome("failed", job_name, "BuildFailed", _shorten(f"{why}{tried}: {text}"))


def observe_build(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], artifact: str, generation: int
) -> BuildOutcome:
    """The outcome of one builder Job, from the Job and the pods it ran."""
    name = str(job["metadata"]["name"])
    state = job_state(job)
    terminated = _terminations(pods)
    if state == "running":
        failures = int((job.get("status") or {}).get("failed") or 0)
        retry = f" (attempt {failures + 1}, earlier ones failed)" if failures else ""
        return BuildOutcome("running", name, "Building", f"builder Job {name} is running{retry}")
    if state == "failed":
        return _failure(name, job, terminated)
    for item in terminated:
        if item.container != naming.BUILDER_CONTAINER or item.exit_code != 0:
            continue
        parsed = parse_termination(item.message)
        if parsed is not None and parsed.report is not None and parsed.report.signature is None:
            return BuildOutcome(
                "failed",
                name,
                "ReportIncomplete",
                f"builder Job {name} reported no model signature, so config.pbtxt cannot be "
                "rendered; rebuild with a builder that reports it",
            )
        if parsed is not None and parsed.report is not None:
            return BuildOutcome(
                "succeeded",
                name,
                "Built",
                f"builder Job {name} built {artifact}",
                build_status(parsed.report, artifact, generation),
                _seconds(job),
            )
    return BuildOutcome(
        "failed",
        name,
        "ReportMissing",
        f"builder Job {name} succeeded but no pod carries the builder's report in its "
        "termination message; delete the Job to build again",
    )


def describe_build(build: api.BuildStatus) -> str:
    """One line for condition messages and Events."""
    parts = [f"artifact g{build.generation}"]
    if build.size_reduction:
        parts.append(f"{build.size_reduction:.1f}x smaller")
    parts.append(f"{build.accuracy_metric} {build.accuracy:.4f}")
    if build.latency_p50_ms is not None:
        parts.append(f"p50 {build.latency_p50_ms:.1f} ms")
    return ", ".join(parts)
