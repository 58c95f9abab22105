"""The builder Job's entrypoint: `python -m optimodel.model_builder --spec FILE --out DIR`.

The spec is a BuildSpec as JSON or YAML (file, or JSON text in $OPTIMODEL_BUILD_SPEC); the
output folder defaults to $OPTIMODEL_OUTPUT_DIR. Exit codes: 0 built, 2 invalid spec,
3 accuracy gate failed, 4 a source (model, adapter, data) could not be fetched for good
(not found, access denied, unreachable after retries, adapter for another base), 1 any other
failure. The outcome is also written, as one line of
JSON (TerminationMessage), to the pod's termination-message file, which the operator reads.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from pydantic import ValidationError

from optimodel.model_builder.documents import DocumentError, load_json_document, read_data_file
from optimodel.model_builder.errors import AccuracyGateError, BuildError
from optimodel.model_builder.report import BuildSummary, TerminationMessage, TerminationReason
from optimodel.model_builder.spec import BuildSpec

SPEC_ENV = "OPTIMODEL_BUILD_SPEC"
OUTPUT_ENV = "OPTIMODEL_OUTPUT_DIR"
TERMINATION_LOG_ENV = "OPTIMODEL_TERMINATION_LOG"
KUBERNETES_TERMINATION_LOG = Path("/dev/termination-log")

EXIT_BUILT, EXIT_FAILED, EXIT_INVALID_SPEC, EXIT_GATE_FAILED = 0, 1, 2, 3
EXIT_SOURCE_FAILED = 4


class SpecInputError(Exception):
    """The spec could not be read or parsed."""


def termination_log_path() -> Path | None:
    """$OPTIMODEL_TERMINATION_LOG, else Kubernetes' file when it exists (never created here)."""
    configured = os.environ.get(TERMINATION_LOG_ENV)
    if configured:
        return Path(configured)
    if KUBERNETES_TERMINATION_LOG.is_file() and os.access(KUBERNETES_TERMINATION_LOG, os.W_OK):
        return KUBERNETES_TERMINATION_LOG
    return None


def read_spec(path: Path | None) -> BuildSpec:
    """The BuildSpec from a .json/.yaml file, or from $OPTIMODEL_BUILD_SPEC."""
    if path is not None:
        try:
            data = read_data_file(path)
        except DocumentError as error:
            raise SpecInputError(f"spec file {path} is not valid JSON/YAML data: {error}") from None
    elif os.environ.get(SPEC_ENV):
        try:
            data = load_json_document(os.environ[SPEC_ENV])
        except DocumentError as error:
            raise SpecInputError(f"${SPEC_ENV} is not valid JSON data: {error}") from None
    else:
        raise SpecInputError(f"no build spec: pass --spec FILE or set ${SPEC_ENV}")
    return BuildSpec.model_validate(data)


def _validation_message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(spec)'}: {item['msg']}"
        for item in error.errors()
    )


def outcome_message(
    error: BaseException | None, summary: BuildSummary | None
) -> TerminationMessage:
    """The termination message for a build that succeeded (error None) or failed."""
    if error is None:
        return TerminationMessage(reason="Built", report=summary)
    if isinstance(error, AccuracyGateError):
        accuracy = error.report.accuracy
        return TerminationMessage(
            reason="AccuracyBelowThreshold",
            message=str(error),
            accuracy=None if accuracy is None else accuracy.mean,
            threshold=None if accuracy is None else accuracy.threshold,
            step=error.culprit,
        )
    if isinstance(error, BuildError):
        return TerminationMessage(reason=error.reason, message=str(error))
    if isinstance(error, ValidationError):
        return TerminationMessage(reason="InvalidSpec", message=_validation_message(error))
    if isinstance(error, SpecInputError):
        return TerminationMessage(reason="InvalidSpec", message=str(error))
    return TerminationMessage(reason="BuildFailed", message=f"{type(error).__name__}: {error}")


EXIT_CODES: dict[TerminationReason, int] = {
    "Built": EXIT_BUILT,
    "BuildFailed": EXIT_FAILED,
    "InvalidSpec": EXIT_INVALID_SPEC,
    "AccuracyBelowThreshold": EXIT_GATE_FAILED,
    "SourceNotFound": EXIT_SOURCE_FAILED,
    "SourceAccessDenied": EXIT_SOURCE_FAILED,
    "SourceUnavailable": EXIT_SOURCE_FAILED,
    "AdapterMismatch": EXIT_SOURCE_FAILED,
    "StorageFailed": EXIT_SOURCE_FAILED,
    "StorageNotFound": EXIT_SOURCE_FAILED,
    "StorageAccessDenied": EXIT_SOURCE_FAILED,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optimodel.model_builder", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--spec", type=Path, help=f"BuildSpec .json/.yaml (else ${SPEC_ENV})")
    parser.add_argument("--out", type=Path, help=f"artifact folder (else ${OUTPUT_ENV})")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the speed benchmark")
    args = parser.parse_args(argv)

    out = args.out or (Path(os.environ[OUTPUT_ENV]) if os.environ.get(OUTPUT_ENV) else None)
    failure: BaseException | None = None
    summary = None
    try:
        if out is None:
            raise SpecInputError(f"no output folder: pass --out DIR or set ${OUTPUT_ENV}")
        spec = read_spec(args.spec)
        from optimodel.model_builder.pipeline import BuildProgress, run_build

        def log(event: BuildProgress) -> None:
            if event.state in ("finished", "skipped"):
                print(f"[{event.step}] {event.state}: {event.detail}", flush=True)

        report = run_build(spec, out, progress=log, benchmark=not args.no_benchmark)
        summary = BuildSummary.from_report(report)
        print(f"built {out / spec.name}", flush=True)
    except Exception as error:
        failure = error
        if not isinstance(error, BuildError | ValidationError | SpecInputError):
            traceback.print_exc()
    message = outcome_message(failure, summary)
    if failure is not None:
        print(f"{message.reason}: {message.message}", file=sys.stderr, flush=True)
    destination = termination_log_path()
    if destination is not None:
        try:
            destination.write_text(message.render())
        except OSError as error:
            print(f"cannot write termination message to {destination}: {error}", file=sys.stderr)
    return EXIT_CODES[message.reason]


if __name__ == "__main__":
    sys.exit(main())
