"""The gate's arithmetic (table-driven) and the evaluation data readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimodel.model_builder.data import (
    DEFAULT_CALIBRATION_DATA,
    DEFAULT_EVAL_DATA,
    load_text_set,
)
from optimodel.model_builder.errors import EvalDataError
from optimodel.model_builder.evaluate import (
    Score,
    cosine_similarities,
    gate_verdict,
    label_ids,
    score_outputs,
    shortfall,
)
from optimodel.model_builder.pipeline import culprit_step
from optimodel.model_builder.spec import AccuracyGate, DataRef

LABELS = {0: "negative", 1: "positive"}


@pytest.mark.parametrize(
    ("reference", "candidate", "expected"),
    [
        ([[1.0, 0.0]], [[2.0, 0.0]], [1.0]),  # scale does not matter
        ([[1.0, 0.0]], [[0.0, 3.0]], [0.0]),
        ([[1.0, 1.0]], [[-1.0, -1.0]], [-1.0]),
        ([[0.0, 0.0]], [[0.0, 0.0]], [1.0]),  # two zero vectors are identical
        ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0]], [1.0, 0.5**0.5]),
    ],
)
def test_cosine_similarities(
    reference: list[list[float]], candidate: list[list[float]], expected: list[float]
) -> None:
    actual = cosine_similarities(np.asarray(reference), np.asarray(candidate))
    np.testing.assert_allclose(actual, expected, atol=1e-7)


def test_scores_per_metric() -> None:
    reference = np.asarray([[2.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    candidate = np.asarray([[2.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=np.float32)
    agreement = score_outputs("top1-agreement", reference, candidate)
    assert agreement.mean == 0.75 and agreement.min is None and agreement.samples == 4
    accuracy = score_outputs("accuracy", reference, candidate, labels=[0, 0, 1, 1])
    assert accuracy.mean == 0.75  # predicted 0, 0, 0, 1
    cosine = score_outputs("cosine", reference, candidate)
    assert cosine.min == pytest.approx(0.0) and 0.0 < cosine.mean < 1.0


@pytest.mark.parametrize(
    ("mean", "worst", "gate", "passed", "missed_by"),
    [
        (0.995, 0.96, AccuracyGate(min=0.99, worst_case_min=0.95), True, 0.0),
        (0.985, 0.96, AccuracyGate(min=0.99, worst_case_min=0.95), False, 0.005),
        (0.995, 0.90, AccuracyGate(min=0.99, worst_case_min=0.95), False, 0.05),
        (0.995, 0.10, AccuracyGate(min=0.99), True, 0.0),  # no worst-case gate
        (0.99, 0.95, AccuracyGate(min=0.99, worst_case_min=0.95), True, 0.0),  # at the edge
    ],
)
def test_gate_verdict(
    mean: float, worst: float, gate: AccuracyGate, passed: bool, missed_by: float
) -> None:
    verdict = gate_verdict(Score("cosine", mean, worst, 10), gate)
    assert verdict.passed is passed
    assert shortfall(verdict) == pytest.approx(missed_by)


def test_culprit_is_the_step_with_the_largest_drop() -> None:
    baseline = Score("cosine", 1.0, 1.0, 10)
    scores = [
        ("prune", Score("cosine", 0.97, 0.80, 10)),
        ("recover", Score("cosine", 0.995, 0.97, 10)),
        ("export", Score("cosine", 0.995, 0.97, 10)),
        ("quantize", Score("cosine", 0.96, 0.90, 10)),
    ]
    assert culprit_step(scores, baseline, worst_case=False) == ("quantize", 0.995, 0.96)  # type: ignore[arg-type]
    assert culprit_step(scores, baseline, worst_case=True) == ("prune", 1.0, 0.80)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(["positive", "NEGATIVE"], [1, 0]), ([1, "0"], [1, 0])],
)
def test_label_ids_accept_names_and_ids(labels: list[str | int], expected: list[int]) -> None:
    assert label_ids(labels, LABELS, field="f") == expected


@pytest.mark.parametrize(("labels", "message"), [(["neutral"], "'neutral'"), ([7], "7")])
def test_unknown_labels_name_the_classes(labels: list[str | int], message: str) -> None:
    with pytest.raises(EvalDataError, match=message) as caught:
        label_ids(labels, LABELS, field="spec.optimize.evalData.labelField")
    assert caught.value.field == "spec.optimize.evalData.labelField"
    assert "negative, positive" in str(caught.value) or "[0, 1]" in str(caught.value)


def test_builtin_sets_are_varied_and_disjoint() -> None:
    evaluation = load_text_set(
        DEFAULT_EVAL_DATA.model_copy(update={"max_samples": 10_000}), field="e"
    )
    calibration = load_text_set(
        DEFAULT_CALIBRATION_DATA.model_copy(update={"max_samples": 10_000}), field="c"
    )
    assert len(evaluation) >= 250 and len(calibration) >= 250
    assert not set(evaluation.texts) & set(calibration.texts)
    lengths = [len(text) for text in evaluation.texts]
    assert min(lengths) <= 3 and max(lengths) >= 400  # single words to paragraphs
    assert any(not text.isascii() for text in evaluation.texts)  # other scripts too


def test_jsonl_and_csv_with_labels(tmp_path: Path) -> None:
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"sentence": "good", "label": 1}\n\n{"sentence": "bad", "label": 0}\n')
    ref = DataRef(uri=f"file://{jsonl}", text_field="sentence", label_field="label")
    loaded = load_text_set(ref, field="spec.optimize.evalData")
    assert loaded.texts == ["good", "bad"] and loaded.labels == [1, 0]

    csv_file = tmp_path / "data.csv"
    csv_file.write_text('text,label\n"hello, world",positive\nbye,negative\n')
    ref = DataRef(uri=f"file://{csv_file}", format="csv", label_field="label", max_samples=1)
    loaded = load_text_set(ref, field="spec.optimize.evalData")
    assert loaded.texts == ["hello, world"] and loaded.labels == ["positive"]


@pytest.mark.parametrize(
    ("content", "ref_update", "field", "message"),
    [
        (None, {}, "uri", "cannot read"),
        ('{"text": "a"}\nnot json\n', {}, "format", "line 2 is not JSON"),
        ('["a"]\n', {}, "format", "not an object"),
        ('{"sentence": "a"}\n', {}, "textField", "no text in field 'text'"),
        ('{"text": "a"}\n', {"label_field": "label"}, "labelField", "no label"),
        ("", {}, "uri", "holds no examples"),
    ],
)
def test_bad_data_names_the_field(
    tmp_path: Path, content: str | None, ref_update: dict[str, str], field: str, message: str
) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    ref = DataRef(uri=f"file://{path}").model_copy(update=ref_update)
    with pytest.raises(EvalDataError, match=message) as caught:
        load_text_set(ref, field="spec.optimize.evalData")
    assert caught.value.field == f"spec.optimize.evalData.{field}"
    assert caught.value.fix


def test_unknown_builtin_set_lists_the_known_ones() -> None:
    with pytest.raises(EvalDataError, match="builtin://eval-texts"):
        load_text_set(DataRef(uri="builtin://nope"), field="spec.optimize.evalData")
