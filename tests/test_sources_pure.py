"""The pure parts of model sources: file selection, retry policy, adapter base check, spec
rules, and the exit code of every failure reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

import pytest

from optimodel.model_builder.__main__ import EXIT_CODES
from optimodel.model_builder.adapters import declared_base_conflict
from optimodel.model_builder.report import TerminationReason
from optimodel.model_builder.sources.files import missing_files, select_files
from optimodel.model_builder.sources.retry import RetryPolicy, TransientFetchError, with_retries
from optimodel.model_builder.spec import Source, source_problems

HUB_REPO = [
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "modules.json",
    "1_Pooling/config.json",
    "2_Dense/model.safetensors",
    "model.safetensors",
    "pytorch_model.bin",
    "onnx/model.onnx",
    "openvino/openvino_model.bin",
    "tf_model.h5",
    "README.md",
]


@pytest.mark.parametrize(
    ("names", "kind", "expected"),
    [
        (
            HUB_REPO,
            "model",
            [
                "config.json",
                "tokenizer.json",
                "vocab.txt",
                "modules.json",
                "1_Pooling/config.json",
                "model.safetensors",
            ],
        ),
        (
            ["config.json", "pytorch_model.bin", "tf_model.h5"],
            "model",
            ["config.json", "pytorch_model.bin"],
        ),
        (
            [
                "config.json",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "pytorch_model-00001-of-00002.bin",
            ],
            "model",
            [
                "config.json",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
            ],
        ),
        (
            ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md"],
            "adapter",
            ["adapter_config.json", "adapter_model.safetensors"],
        ),
    ],
)
def test_only_one_copy_of_the_weights_and_what_loading_reads(
    names: list[str], kind: str, expected: list[str]
) -> None:
    assert select_files(names, kind) == expected  # type: ignore[arg-type]
    assert missing_files(expected, kind) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "kind", "missing"),
    [
        (["model.safetensors"], "model", "no config.json"),
        (["config.json", "tf_model.h5"], "model", "no weights"),
        (["adapter_model.safetensors"], "adapter", "no adapter_config.json"),
        (["adapter_config.json"], "adapter", "no adapter weights"),
    ],
)
def test_incomplete_repositories_say_what_is_missing(
    names: list[str], kind: str, missing: str
) -> None:
    found = missing_files(select_files(names, kind), kind)  # type: ignore[arg-type]
    assert found is not None and found.startswith(missing)


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    policy = RetryPolicy(attempts=5, backoff_seconds=1.0, max_delay_seconds=5.0)
    assert [policy.delay(n, None) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, 3.0) == 3.0 and policy.delay(1, 60.0) == 5.0
    assert RetryPolicy.from_env({"OPTIMODEL_FETCH_ATTEMPTS": "2"}).attempts == 2
    assert RetryPolicy.from_env({"OPTIMODEL_FETCH_ATTEMPTS": "x"}) == RetryPolicy()


def test_retries_stop_at_the_first_success_or_after_the_last_attempt() -> None:
    slept: list[float] = []
    calls: Iterator[TransientFetchError | str] = iter(
        [TransientFetchError("429", retry_after=0.5), TransientFetchError("503"), "ok"]
    )

    def attempt() -> str:
        result = next(calls)
        if isinstance(result, Exception):
            raise result
        return result

    policy = RetryPolicy(attempts=3, backoff_seconds=1.0)
    assert with_retries(attempt, policy, sleep=slept.append) == "ok"
    assert slept == [0.5, 2.0]

    def always() -> str:
        raise TransientFetchError("down")

    with pytest.raises(TransientFetchError, match="down"):
        with_retries(always, RetryPolicy(attempts=2, backoff_seconds=0.0), sleep=slept.append)


@pytest.mark.parametrize(
    ("declared", "base", "conflict"),
    [
        (
            "sentence-transformers/all-MiniLM-L6-v2",
            "hf://sentence-transformers/all-MiniLM-L6-v2",
            False,
        ),
        (
            "Sentence-Transformers/all-minilm-l6-v2",
            "hf://sentence-transformers/all-MiniLM-L6-v2",
            False,
        ),
        ("bert-base-uncased", "hf://sentence-transformers/all-MiniLM-L6-v2", False),  # no org
        ("/tmp/base", "hf://acme/base", False),  # trained from a folder: cannot compare
        ("acme/base", "s3://models/base", False),  # the base has no Hub name here
        ("acme/other", "hf://acme/base", True),
    ],
)
def test_a_declared_hub_base_must_be_the_source(declared: str, base: str, conflict: bool) -> None:
    assert (declared_base_conflict(declared, base) is not None) is conflict


def test_revisions_apply_to_hub_sources_only() -> None:
    source = Source.model_validate(
        {
            "uri": "s3://models/m",
            "task": "feature-extraction",
            "revision": "main",
            "adapter": {"uri": "pvc://adapters/a", "revision": "v1"},
        }
    )
    assert [p.path for p in source_problems(source)] == [
        "spec.source.revision",
        "spec.source.adapter.revision",
    ]
    hub = Source.model_validate(
        {"uri": "hf://acme/m", "task": "feature-extraction", "revision": "v1"}
    )
    assert source_problems(hub) == []


def test_every_failure_reason_has_an_exit_code() -> None:
    assert set(EXIT_CODES) == set(get_args(TerminationReason))
    retried_by_kubernetes = {reason for reason, code in EXIT_CODES.items() if code == 1}
    assert retried_by_kubernetes == {"BuildFailed"}
