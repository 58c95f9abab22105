"""hf:// sources against a real Hub mirror server (olah, offline, on 127.0.0.1) through the
same download code the builder Job runs: file selection, revisions resolved to commits, the
cache reused across builds, and every failure a clear, typed error naming the field."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from optimodel.model_builder.__main__ import main
from optimodel.model_builder.errors import (
    SourceAccessDeniedError,
    SourceError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from optimodel.model_builder.report import BuildReport, TerminationMessage
from optimodel.model_builder.sources import FetchSettings, SourceRequest, fetch
from tests.builder_models import single_torch_thread, tiny_adapter_dir, tiny_model_dir
from tests.hub_server import HubMirror, free_port, hub_mirror

pytestmark = pytest.mark.slow

REPO_ID = "acme/tiny-bert"
# Files a Hub repository often carries besides what a build loads: never downloaded.
EXTRA_FILES = ("pytorch_model.bin", "onnx/model.onnx", "tf_model.h5", "README.md")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubMirror]:
    root = tmp_path_factory.mktemp("hub")
    with hub_mirror(root) as mirror:
        yield mirror


@pytest.fixture(scope="module")
def commits(hub: HubMirror, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """acme/tiny-bert with a tag v1 on its first commit and main one commit further."""
    folder = tmp_path_factory.mktemp("repo") / "tiny-bert"
    shutil.copytree(tiny_model_dir("bert"), folder)
    for name in EXTRA_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not needed by the builder")
    first = hub.publish(REPO_ID, folder, tag="v1")
    (folder / "README.md").write_text("second commit")
    return {"v1": first, "main": hub.publish(REPO_ID, folder)}


@pytest.fixture
def online(hub: HubMirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubMirror:
    """The builder's environment in a Job: HF_ENDPOINT is the mirror, the cache is fresh."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("OPTIMODEL_FETCH_BACKOFF_SECONDS", "0.01")
    hub.reset()
    return hub


def _model(uri: str = f"hf://{REPO_ID}", revision: str | None = None) -> SourceRequest:
    return SourceRequest(uri, "model", "spec.source.uri", revision, "spec.source.revision")


def _downloads(hub: HubMirror) -> list[str]:
    return [request for request in hub.requests if "/resolve/" in request]


def test_only_the_files_a_build_loads_are_downloaded(
    online: HubMirror, commits: dict[str, str]
) -> None:
    fetched = fetch(_model())

    assert fetched.commit == commits["main"]
    files = sorted(p.relative_to(fetched.path).as_posix() for p in fetched.path.rglob("*"))
    assert files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert fetched.downloaded == 4 and fetched.reused == 0
    requested = " ".join(_downloads(online))
    assert "model.safetensors" in requested
    assert not any(name in requested for name in EXTRA_FILES)


def test_revision_resolves_to_its_commit_and_a_pinned_commit_needs_no_network(
    online: HubMirror, commits: dict[str, str]
) -> None:
    assert fetch(_model(revision="v1")).commit == commits["v1"]
    assert fetch(_model(revision="main")).commit == commits["main"]
    online.requests.clear()

    pinned = fetch(_model(revision=commits["v1"]))

    assert pinned.commit == commits["v1"] and pinned.reused == 4
    assert online.requests == []


def test_a_second_fetch_reuses_the_cache(online: HubMirror, commits: dict[str, str]) -> None:
    fetch(_model())
    online.requests.clear()

    again = fetch(_model())

    assert again.commit == commits["main"]
    assert (again.downloaded, again.reused) == (0, 4)
    assert _downloads(online) == []  # one revision lookup, no file transfer


def _fails(request: SourceRequest, settings: FetchSettings | None = None) -> SourceError:
    with pytest.raises(SourceError) as caught:
        fetch(request, settings)
    return caught.value


def test_missing_repository_and_revision_name_their_field(
    online: HubMirror, commits: dict[str, str]
) -> None:
    missing = _fails(_model("hf://acme/no-such-model"))
    assert isinstance(missing, SourceNotFoundError)
    assert missing.field == "spec.source.uri" and "acme/no-such-model" in missing.message
    assert missing.fix is not None and "sources.hub.tokenSecret" in missing.fix

    revision = _fails(_model(revision="v9"))
    assert isinstance(revision, SourceNotFoundError)
    assert revision.field == "spec.source.revision" and "'v9'" in revision.message
    assert revision.fix is not None and "main, v1" in revision.fix


def test_private_and_gated_repositories_are_access_errors(
    online: HubMirror, commits: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    online.faults.token = "hf_valid"
    anonymous = _fails(_model())
    assert isinstance(anonymous, SourceNotFoundError)  # the Hub hides private repositories
    assert "no token was sent" in anonymous.message

    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    refused = _fails(_model())
    assert isinstance(refused, SourceAccessDeniedError) and "401" in refused.message

    monkeypatch.setenv("HF_TOKEN", "hf_valid")
    assert fetch(_model()).commit == commits["main"]

    online.faults.token = None
    online.faults.gated = {REPO_ID}
    gated = _fails(_model())
    assert isinstance(gated, SourceAccessDeniedError) and "gated" in gated.message
    assert gated.field == "spec.source.uri"


def test_rate_limiting_is_retried_then_reported(
    online: HubMirror,
    commits: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    online.faults.throttled_api_calls = 2
    assert fetch(_model()).commit == commits["main"]  # attempts 3 of 4 succeeds
    assert online.faults.throttled_api_calls == 0

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing to fall back on
    monkeypatch.setenv("OPTIMODEL_FETCH_ATTEMPTS", "3")
    online.faults.throttled_api_calls = 100
    online.requests.clear()
    limited = _fails(_model())
    assert isinstance(limited, SourceUnavailableError)
    assert "HTTP 429" in limited.message and "3 attempts" in limited.message
    assert len([r for r in online.requests if r.startswith("GET /api/")]) == 3


def test_unreachable_hub_is_retried_then_reported(
    online: HubMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    down = _fails(_model())
    assert isinstance(down, SourceUnavailableError) and down.field == "spec.source.uri"
    assert "cannot reach" in down.message and "4 attempts" in down.message


def test_unreachable_hub_falls_back_to_a_cached_revision(
    online: HubMirror, commits: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch(_model(revision="v1"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")

    cached = fetch(_model(revision="v1"))

    assert cached.commit == commits["v1"] and "cache" in cached.origin


def test_offline_uses_only_the_cache(
    online: HubMirror, commits: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch(_model())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    online.requests.clear()

    assert fetch(_model()).commit == commits["main"]
    missing = _fails(_model("hf://acme/never-fetched"))
    assert isinstance(missing, SourceNotFoundError) and "HF_HUB_OFFLINE" in missing.message
    assert online.requests == []


def _job_spec(revision: str | None) -> dict[str, object]:
    source: dict[str, object] = {"uri": f"hf://{REPO_ID}", "task": "feature-extraction"}
    if revision:
        source["revision"] = revision
    return {
        "name": "tiny",
        "source": source,
        "optimize": {
            "quantize": {"mode": "none"},
            "accuracy": {"metric": "cosine", "min": 0.99},
            "evalData": {"uri": "builtin://eval-texts", "maxSamples": 16},
        },
    }


def test_builder_job_builds_from_the_hub_and_records_the_commit(
    online: HubMirror, commits: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))
    monkeypatch.setenv("OPTIMODEL_BUILD_SPEC", json.dumps(_job_spec("v1")))

    with single_torch_thread():
        assert main(["--out", str(tmp_path / "g1"), "--no-benchmark"]) == 0
        report = BuildReport.read(tmp_path / "g1" / "tiny" / "report.json")
        assert report.source_commit == commits["v1"]
        message = TerminationMessage.parse(log.read_text())
        assert message.report is not None and message.report.source_commit == commits["v1"]
        load = next(step for step in report.steps if step.name == "load")
        assert "4 files downloaded, 0 cached" in load.detail

        online.requests.clear()  # a rebuild (new generation) of the same commit
        assert main(["--out", str(tmp_path / "g2"), "--no-benchmark"]) == 0
    assert _downloads(online) == []
    again = BuildReport.read(tmp_path / "g2" / "tiny" / "report.json")
    assert "0 files downloaded, 4 cached" in next(s.detail for s in again.steps if s.name == "load")


def test_builder_job_failure_names_the_field_and_exits_without_retry(
    online: HubMirror, commits: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))
    monkeypatch.setenv("OPTIMODEL_BUILD_SPEC", json.dumps(_job_spec("no-such-tag")))

    assert main(["--out", str(tmp_path / "out"), "--no-benchmark"]) == 4

    message = TerminationMessage.parse(log.read_text())
    assert message.reason == "SourceNotFound"
    assert message.message is not None and message.message.startswith("spec.source.revision:")
    assert not (tmp_path / "out" / "tiny").exists()


def test_an_adapter_repository_fetches_its_config_and_weights_only(
    online: HubMirror, tmp_path: Path
) -> None:
    folder = tmp_path / "lora"
    shutil.copytree(tiny_adapter_dir(), folder)
    (folder / "training_args.bin").write_bytes(b"not needed")
    commit = online.publish("acme/tiny-bert-lora", folder, tag="r1")

    fetched = fetch(
        SourceRequest(
            "hf://acme/tiny-bert-lora",
            "adapter",
            "spec.source.adapter.uri",
            "r1",
            "spec.source.adapter.revision",
        )
    )

    assert fetched.commit == commit
    assert sorted(p.name for p in fetched.path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
