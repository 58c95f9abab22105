"""Typed build failures. Library code raises these; only the edges (CLI, Job entrypoint)
turn them into exit codes and termination messages.

Every error names the spec field it is about, the offending value and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from optimodel.model_builder.report import BuildReport, TerminationReason


class BuildError(Exception):
    """A build failed for a reason the user can act on."""

    reason: ClassVar[TerminationReason] = "BuildFailed"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return f"{text} (fix: {self.fix})" if self.fix else text


class InvalidBuildSpecError(BuildError):
    """The build spec is malformed or contradicts itself; retrying cannot help."""

    reason: ClassVar[TerminationReason] = "InvalidSpec"
    exit_code: ClassVar[int] = 2


class SourceError(BuildError):
    """A model, adapter or data set could not be fetched; retrying the Job cannot help.

    Transient failures (network errors, rate limiting, 5xx) were already retried with backoff
    inside the fetch; what is raised here is the verdict after those retries.
    """

    exit_code: ClassVar[int] = 4


class SourceNotFoundError(SourceError):
    """What a source URI (or revision, bucket, key) names does not exist."""

    reason: ClassVar[TerminationReason] = "SourceNotFound"


class SourceAccessDeniedError(SourceError):
    """The server refused the credentials (HTTP 401/403, S3 AccessDenied, gated repository)."""

    reason: ClassVar[TerminationReason] = "SourceAccessDenied"


class SourceUnavailableError(SourceError):
    """The server could not be reached or kept refusing (network, 429, 5xx) after retries."""

    reason: ClassVar[TerminationReason] = "SourceUnavailable"


class AdapterMismatchError(SourceError):
    """source.adapter was trained for another base model (other name, modules or shapes)."""

    reason: ClassVar[TerminationReason] = "AdapterMismatch"


class StorageError(BuildError):
    """The artifact store refused the upload of a built repository (after retries)."""

    reason: ClassVar[TerminationReason] = "StorageFailed"
    exit_code: ClassVar[int] = 4


class StorageNotFoundError(StorageError):
    """The artifact store's bucket does not exist."""

    reason: ClassVar[TerminationReason] = "StorageNotFound"


class StorageAccessDeniedError(StorageError):
    """The artifact store refused the credentials."""

    reason: ClassVar[TerminationReason] = "StorageAccessDenied"


class UnsupportedModelError(InvalidBuildSpecError):
    """The model's task or architecture is one the builder cannot handle."""


class UnsupportedQuantizationError(InvalidBuildSpecError):
    """The quantize mode (or one of its options) does not apply to this model."""


class EvalDataError(BuildError):
    """Evaluation or calibration data is missing, unreadable or lacks the named field."""


class AccuracyGateError(BuildError):
    """The optimized model scored below optimize.accuracy.min; nothing was published."""

    reason: ClassVar[TerminationReason] = "AccuracyBelowThreshold"
    exit_code: ClassVar[int] = 3

    def __init__(
        self, message: str, *, report: BuildReport, shortfall: float, culprit: str | None
    ) -> None:
        self.report = report
        self.shortfall = shortfall
        self.culprit = culprit
        super().__init__(
            message,
            field="spec.optimize.accuracy.min",
            fix=(
                "keep more of the model (lower prune.sparsity, add prune.recovery, "
                "quantize.perChannel: true, quantize.keepFp32Nodes), or lower accuracy.min"
            ),
        )


class ModelFilesError(InvalidBuildSpecError):
    """The files at source.uri are there but unusable: corrupt config, truncated weights,
    a missing tokenizer, or one that does not cover the model's vocabulary."""


class OutputFolderError(BuildError):
    """The output folder cannot hold the build: below a file, read-only, full, a bad name."""
