"""The text path's python steps without a server: length groups, padding, text decoding, the
tokenizer's fidelity to the original pipeline, the answer math, and what the serving image
must carry (Python 3.10, the pinned packages)."""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimodel.model_builder.served import postprocess_model, tokenize_model
from optimodel.model_builder.served.postprocess_model import (
    PostprocessSettings,
    answers,
    class_scores,
    classify,
    normalize,
)
from optimodel.model_builder.served.tokenize_model import (
    TextRowError,
    TokenizeSettings,
    bucketed_length,
    decode_rows,
    load_tokenizer,
    model_inputs,
    pad_ids,
    plan_length_groups,
)
from tests.builder_models import minilm_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def _cost(groups: list[list[int]], lengths: list[int], rows: list[int], overhead: int) -> int:
    return sum(sum(rows[i] for i in g) * max(lengths[i] for i in g) + overhead for g in groups)


def _best_contiguous_cost(lengths: list[int], rows: list[int], overhead: int) -> int:
    """Brute force over every split of the length-sorted requests."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        groups, current = [], [order[0]]
        for index, cut in zip(order[1:], cuts, strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(index)
        groups.append(current)
        cost = _cost(groups, lengths, rows, overhead)
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("overhead", [0, 16, 256, 10**9])
@pytest.mark.parametrize("seed", range(4))
def test_length_groups_are_the_cheapest_split(overhead: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(5, 120, size=8)]
    rows = [int(x) for x in rng.integers(1, 3, size=8)]
    groups = plan_length_groups(lengths, rows, overhead)
    assert sorted(i for g in groups for i in g) == list(range(8)), "every request, once"
    longest = [max(lengths[i] for i in g) for g in groups]
    assert longest == sorted(longest), "shortest group first: the model step sees runs"
    assert _cost(groups, lengths, rows, overhead) == _best_contiguous_cost(lengths, rows, overhead)


@pytest.mark.parametrize(
    ("length", "bucket", "max_length", "padded"),
    [
        (5, 16, 128, 16),
        (16, 16, 128, 16),
        (17, 16, 128, 32),
        (120, 16, 128, 128),
        (121, 16, 128, 128),  # never beyond what the tokenizer truncates to
        (120, 32, 120, 120),
        (0, 16, 128, 16),  # at least one position
        (7, 1, 128, 7),  # bucket 1: exact lengths
    ],
)
def test_lengths_are_padded_up_to_their_bucket(
    length: int, bucket: int, max_length: int, padded: int
) -> None:
    assert bucketed_length(length, bucket, max_length) == padded


def test_length_group_extremes() -> None:
    lengths = [30, 8, 120, 9, 31]
    assert plan_length_groups(lengths, [1] * 5, 10**9) == [[1, 3, 0, 4, 2]]  # one batch
    assert [len(g) for g in plan_length_groups(lengths, [1] * 5, 0)] == [1, 1, 1, 1, 1]
    assert plan_length_groups([], [], 256) == []
    # Many texts of few lengths: a bucket per length, however many requests.
    many = [16] * 40 + [64] * 40
    assert [len(g) for g in plan_length_groups(many, [1] * 80, 256)] == [40, 40]


def test_padding_is_right_aligned_and_masked(tokenizer_dir: Path) -> None:
    settings = TokenizeSettings(max_length=16, pad_id=7, pad_type_id=0)
    tokenizer = load_tokenizer(tokenizer_dir, settings)
    encodings = tokenizer.encode_batch(["a cat", "a much longer sentence here"])
    ids, mask, types = model_inputs(
        encodings, ["input_ids", "attention_mask", "token_type_ids"], 10, settings
    )
    assert ids.shape == mask.shape == types.shape == (2, 10) and ids.dtype == np.int64
    short = len(encodings[0].ids)
    assert ids[0, short:].tolist() == [7] * (10 - short)
    assert mask[0].tolist() == [1] * short + [0] * (10 - short)
    assert pad_ids([[1, 2]], 4, 0).tolist() == [[1, 2, 0, 0]]
    with pytest.raises(ValueError, match="position_ids"):
        model_inputs(encodings, ["position_ids"], 10, settings)


def test_rows_decode_as_utf8_or_name_the_row() -> None:
    raw = np.array([[b"plain"], ["caf\u00e9".encode()], [b""]], dtype=np.object_)
    assert decode_rows(raw) == ["plain", "caf\u00e9", ""]
    bad = np.array([[b"fine"], [b"\xff\xfeoops"]], dtype=np.object_)
    with pytest.raises(TextRowError, match=r"text\[1\] is not valid UTF-8 \(byte 0xff"):
        decode_rows(bad)
    with pytest.raises(TextRowError, match="no rows"):
        decode_rows(np.zeros((0, 1), dtype=np.object_))


_TEXTS = [
    "",
    "Hello, world!",
    "Ünïcödé façade — naïve café; 東京タワー and emoji 🙂🚀.",
    "   leading and trailing spaces   ",
    "word " * 400,  # far past max_length: truncated as the original truncates
    "x" * 100_000,  # one 100 KB 'word'
    "tab\tnew\nline\r\nand\u00a0nbsp",
]


@pytest.mark.parametrize("max_length", [8, 128])
def test_served_tokenizer_equals_the_original_pipeline(
    max_length: int, tokenizer_dir: Path
) -> None:
    """The tokenizer step's ids are the transformers tokenizer's, truncation included."""
    original = minilm_tokenizer()
    settings = TokenizeSettings(max_length=max_length, pad_id=int(original.pad_token_id))
    served = load_tokenizer(tokenizer_dir, settings)
    expected = original(_TEXTS, truncation=True, max_length=max_length)
    got = served.encode_batch(_TEXTS, add_special_tokens=True)
    for row, encoding in enumerate(got):
        assert encoding.ids == expected["input_ids"][row], _TEXTS[row][:40]
        assert encoding.attention_mask == expected["attention_mask"][row]
        assert len(encoding.ids) <= max_length


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MiniLM tokenizer saved as the builder saves it into the tokenizer step."""
    folder = tmp_path_factory.mktemp("tokenizer")
    minilm_tokenizer().save_pretrained(str(folder))
    return folder


def test_embeddings_come_back_unit_length() -> None:
    rows = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(rows), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    out = answers(PostprocessSettings(task="feature-extraction"), rows)
    assert list(out) == ["embeddings"] and out["embeddings"].dtype == np.float32


def test_labels_and_scores_as_the_hf_pipeline_computes_them() -> None:
    logits = np.array([[2.0, -1.0], [-0.5, 0.5]], dtype=np.float32)
    softmax = class_scores(logits, "softmax")
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-6)
    label, score = classify(logits, ["negative", "positive"], "softmax")
    assert label.tolist() == [[b"negative"], [b"positive"]]
    np.testing.assert_allclose(score[:, 0], [softmax[0, 0], softmax[1, 1]], rtol=1e-6)
    one_logit = np.array([[0.0], [2.0]], dtype=np.float32)
    label, score = classify(one_logit, ["toxic"], "sigmoid")
    np.testing.assert_allclose(score[:, 0], [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    label, _ = classify(logits, [], "softmax")  # no names in the config: HF's LABEL_i
    assert label.tolist() == [[b"LABEL_0"], [b"LABEL_1"]]
    out = answers(PostprocessSettings("text-classification", ["n", "p"]), logits)
    assert list(out) == ["logits", "label", "score"]


def test_settings_files_round_trip(tmp_path: Path) -> None:
    tokenize = TokenizeSettings(max_length=64, pad_id=1, pad_type_id=0, truncation_side="left")
    tokenize.write(tmp_path / "t.json")
    assert TokenizeSettings.read(tmp_path / "t.json") == tokenize
    answer = PostprocessSettings("text-classification", ["a", "b"], "sigmoid")
    answer.write(tmp_path / "p.json")
    assert PostprocessSettings.read(tmp_path / "p.json") == answer


@pytest.mark.parametrize("module", [tokenize_model, postprocess_model])
def test_steps_parse_as_python_3_10_and_import_only_what_the_image_has(module: Any) -> None:
    """The serving image runs these files with Python 3.10, numpy and tokenizers only."""
    source = Path(module.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 10))
    imported = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    image_packages = {"numpy", "tokenizers", "triton_python_backend_utils"}
    assert imported - image_packages <= {
        "__future__", "json", "collections", "dataclasses", "pathlib", "typing",
    }  # fmt: skip


def test_serving_image_pins_the_versions_tested_here() -> None:
    pins = {}
    for line in (ROOT / "images" / "triton-requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    assert set(pins) == {"numpy", "tokenizers"}
    for name, version in pins.items():
        assert importlib.metadata.version(name) == version, f"{name}: image and tests differ"
    dockerfile = (ROOT / "images" / "triton.Dockerfile").read_text()
    assert "ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile
    assert "--no-deps" in dockerfile and "triton-requirements.txt" in dockerfile
