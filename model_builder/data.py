"""Text data sets for evaluation, calibration and distillation: builtin, JSONL or CSV.

Two sets ship with the builder and never overlap, so a model tuned or calibrated on one is
judged on texts it has not seen: builtin://eval-texts (the gate's default) and
builtin://calibration-texts (calibration and distillation's default).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from optimodel.model_builder.errors import EvalDataError, SourceNotFoundError
from optimodel.model_builder.sources import SourceRequest, fetch
from optimodel.model_builder.sources.local import resolve_local_uri
from optimodel.model_builder.spec import DataRef

DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN_SETS: dict[str, str] = {
    "eval-texts": "eval_texts.jsonl",
    "calibration-texts": "calibration_texts.jsonl",
}
DEFAULT_EVAL_DATA = DataRef(uri="builtin://eval-texts")
DEFAULT_CALIBRATION_DATA = DataRef(uri="builtin://calibration-texts")

Label = str | int


@dataclass(frozen=True)
class TextSet:
    """Texts (and labels, when the set has them) in file order."""

    origin: str
    texts: list[str]
    labels: list[Label] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def _data_path(ref: DataRef, field: str) -> Path:
    if ref.uri.startswith("builtin://"):
        name = ref.uri.removeprefix("builtin://")
        if name not in BUILTIN_SETS:
            raise EvalDataError(
                f"unknown builtin data set {ref.uri!r}",
                field=f"{field}.uri",
                fix=f"use one of: {', '.join(f'builtin://{n}' for n in BUILTIN_SETS)}",
            )
        return DATA_DIR / BUILTIN_SETS[name]
    if ref.uri.startswith("s3://"):
        # Fetch failures (missing key, access denied, unreachable store) keep their own
        # reasons: they are the store's answer, not a problem with the data.
        return fetch(SourceRequest(ref.uri, "data", f"{field}.uri")).path
    try:
        return resolve_local_uri(ref.uri, field=f"{field}.uri")
    except SourceNotFoundError as error:
        raise EvalDataError(error.message, field=error.field, fix=error.fix) from error


def _read_rows(path: Path, ref: DataRef, field: str) -> list[dict[str, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EvalDataError(
            f"cannot read {ref.uri!r} ({path}): {error.strerror or error}",
            field=f"{field}.uri",
            fix="check the path, and that the volume is mounted in the builder",
        ) from error
    except UnicodeDecodeError as error:
        raise EvalDataError(
            f"{ref.uri!r} is not UTF-8 text",
            field=f"{field}.uri",
            fix="save the file as UTF-8",
        ) from error
    if ref.format == "csv":
        return [dict(row) for row in csv.DictReader(text.splitlines())]
    rows: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvalDataError(
                f"{ref.uri!r} line {number} is not JSON: {error.msg}",
                field=f"{field}.format",
                fix="write one JSON object per line, or set format: csv for a CSV file",
            ) from error
        if not isinstance(row, dict):
            raise EvalDataError(
                f"{ref.uri!r} line {number} is a JSON {type(row).__name__}, not an object",
                field=f"{field}.format",
                fix='write one object per line, e.g. {"text": "..."}',
            )
        rows.append(row)
    return rows


def load_text_set(ref: DataRef, *, field: str) -> TextSet:
    """Read up to ref.maxSamples rows; every row must have the text (and label) field."""
    path = _data_path(ref, field)
    rows = _read_rows(path, ref, field)[: ref.max_samples]
    if not rows:
        raise EvalDataError(
            f"{ref.uri!r} holds no examples", field=f"{field}.uri", fix="point at a non-empty file"
        )
    texts: list[str] = []
    labels: list[Label] = []
    for number, row in enumerate(rows, start=1):
        value = row.get(ref.text_field)
        if not isinstance(value, str) or not value.strip():
            present = ", ".join(sorted(row)) or "none"
            raise EvalDataError(
                f"example {number} of {ref.uri!r} has no text in field {ref.text_field!r} "
                f"(fields: {present})",
                field=f"{field}.textField",
                fix="set textField to the column holding the text",
            )
        texts.append(value)
        if ref.label_field is not None:
            label = row.get(ref.label_field)
            if not isinstance(label, str | int) or isinstance(label, bool) or label == "":
                raise EvalDataError(
                    f"example {number} of {ref.uri!r} has no label in field "
                    f"{ref.label_field!r} (got {label!r})",
                    field=f"{field}.labelField",
                    fix="set labelField to the column holding class ids or label names",
                )
            labels.append(label)
    return TextSet(ref.uri, texts, labels if ref.label_field is not None else None)
