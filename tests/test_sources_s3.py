"""s3:// sources and the S3 artifact store against a real S3 API server (moto's server mode on
127.0.0.1, IAM enforced): the builder reads a model folder and its eval data from one bucket,
the upload container publishes the repository to another, and the serving Deployment's fetch
step, run with the real aws CLI, reads exactly the keys the upload wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimodel.model_builder import publish
from optimodel.model_builder.__main__ import main as build_main
from optimodel.model_builder.errors import (
    SourceAccessDeniedError,
    SourceError,
    SourceNotFoundError,
    SourceUnavailableError,
)
from optimodel.model_builder.report import BuildReport, TerminationMessage
from optimodel.model_builder.sources import SourceRequest, fetch
from optimodel.operator import api, naming
from optimodel.operator.artifacts import ArtifactStore
from optimodel.operator.builds import build_status
from optimodel.operator.render import ModelRef
from optimodel.operator.render.deployment import (
    CONFIG_MOUNT,
    TritonDeploymentInputs,
    render_triton_deployment,
    served_models,
)
from optimodel.operator.settings import OperatorSettings
from tests.builder_models import single_torch_thread, tiny_adapter_dir, tiny_model_dir
from tests.hub_server import free_port
from tests.s3_server import Keys, S3Server, s3_server

pytestmark = pytest.mark.slow

MODEL = ModelRef(name="tiny", namespace="ml", uid="11111111-2222-3333-4444-555555555555")
EVAL_TEXTS = [f"review number {n}: the product was {w}" for n, w in enumerate(["fine"] * 12)]


class Store:
    """The buckets and the IAM users of the tests."""

    def __init__(self, server: S3Server) -> None:
        self.server = server
        admin = server.client()
        for bucket in ("models", "datasets", "artifacts", "elsewhere"):
            admin.create_bucket(Bucket=bucket)
        server.upload_folder("models", "tiny-bert", tiny_model_dir("bert"))
        lines = "".join(json.dumps({"text": text}) + "\n" for text in EVAL_TEXTS)
        admin.put_object(Bucket="datasets", Key="reviews/eval.jsonl", Body=lines.encode())
        self.reader = server.user("model-reader", buckets=["*"])  # may name missing buckets
        self.uploader = server.user("artifact-writer", buckets=["artifacts"])
        self.outsider = server.user("outsider", buckets=["elsewhere"])
        server.enforce_iam(True)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with s3_server() as server:
        yield Store(server)


@pytest.fixture
def builder_env(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The build container's environment: the source readers' keys, a fresh cache."""
    for name, value in store.server.env(store.reader).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPTIMODEL_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPTIMODEL_FETCH_BACKOFF_SECONDS", "0.01")
    return store


def _use(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in keys.env().items():
        monkeypatch.setenv(name, value)


def _model(uri: str) -> SourceRequest:
    return SourceRequest(uri, "model", "spec.source.uri")


def test_a_model_folder_is_fetched_once_and_then_reused(builder_env: Store) -> None:
    first = fetch(_model("s3://models/tiny-bert"))
    names = sorted(p.name for p in first.path.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    original = tiny_model_dir("bert") / "model.safetensors"
    assert (first.path / "model.safetensors").read_bytes() == original.read_bytes()
    assert (first.downloaded, first.reused) == (4, 0)

    again = fetch(_model("s3://models/tiny-bert"))
    assert (again.downloaded, again.reused) == (0, 4)


def _fails(request: SourceRequest) -> SourceError:
    with pytest.raises(SourceError) as caught:
        fetch(request)
    return caught.value


def test_missing_bucket_prefix_and_key_are_not_found_errors(builder_env: Store) -> None:
    bucket = _fails(_model("s3://no-such-bucket/tiny-bert"))
    assert isinstance(bucket, SourceNotFoundError) and "NoSuchBucket" in bucket.message
    prefix = _fails(_model("s3://models/no-such-model"))
    assert isinstance(prefix, SourceNotFoundError) and "no objects" in prefix.message
    key = _fails(SourceRequest("s3://datasets/reviews/missing.jsonl", "data", "spec.x.uri"))
    assert isinstance(key, SourceNotFoundError) and key.field == "spec.x.uri"


def test_wrong_or_narrow_credentials_are_access_errors(
    builder_env: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(builder_env.outsider, monkeypatch)
    narrow = _fails(_model("s3://models/tiny-bert"))
    assert isinstance(narrow, SourceAccessDeniedError) and "AccessDenied" in narrow.message
    assert narrow.fix is not None and "sources.s3.credentialsSecret" in narrow.fix

    _use(Keys("AKIANOSUCHKEY0000000", "wrong"), monkeypatch)
    unknown = _fails(_model("s3://models/tiny-bert"))
    assert isinstance(unknown, SourceAccessDeniedError)
    assert "InvalidAccessKeyId" in unknown.message


def test_an_unreachable_store_is_retried_then_reported(
    builder_env: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OPTIMODEL_FETCH_ATTEMPTS", "2")
    down = _fails(_model("s3://models/tiny-bert"))
    assert isinstance(down, SourceUnavailableError) and "2 attempts" in down.message


def _spec(store_uri: str) -> dict[str, Any]:
    return {
        "name": MODEL.name,
        "source": {"uri": "s3://models/tiny-bert", "task": "feature-extraction"},
        "optimize": {
            "quantize": {"mode": "none"},
            "accuracy": {"metric": "cosine", "min": 0.99},
            "evalData": {"uri": "s3://datasets/reviews/eval.jsonl"},
        },
        "storage": {"s3": {"uri": store_uri}},
    }


def _run_fetch_step(
    deployment: dict[str, Any], env: dict[str, str], configs: dict[str, str], root: Path
) -> Path:
    """The serving pod's fetch-model init container, run here: its own script and env, the
    volumes (model repository, ConfigMap) mapped into `root`, the real aws CLI on PATH."""
    pod = deployment["spec"]["template"]["spec"]
    fetch_step = next(c for c in pod["initContainers"] if c["name"] == "fetch-model")
    config_dir = root / "triton-config"
    config_dir.mkdir(parents=True)
    for model, text in configs.items():
        (config_dir / naming.config_key(model)).write_text(text)
    rendered = {e["name"]: e["value"] for e in fetch_step["env"] if "value" in e}
    secrets = [e["name"] for e in fetch_step["env"] if "valueFrom" in e]
    assert secrets == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    models = root / "models"
    models.mkdir()
    run_env = {
        **rendered,
        **env,
        "MODELS": str(models),
        "CONFIGS": str(config_dir),
        "HOME": str(root),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    script = fetch_step["command"][2]
    assert CONFIG_MOUNT not in script and "/models" not in script  # only through the env
    done = subprocess.run(
        ["sh", "-c", script], env=run_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return models


def test_build_from_s3_publish_to_another_bucket_and_serve_those_keys(
    builder_env: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_uri = "s3://artifacts/optimodel"
    settings = OperatorSettings()
    spec = api.OptimizedModelSpec.model_validate(
        {k: v for k, v in _spec(store_uri).items() if k != "name"}
        | {
            "storage": {
                "s3": {
                    "uri": store_uri,
                    "endpoint": builder_env.server.endpoint,
                    "credentialsSecret": {"name": "artifact-keys"},
                }
            }
        }
    )
    artifacts = ArtifactStore.for_model(spec.storage, settings)
    artifact_uri = artifacts.artifact_uri(MODEL.namespace, MODEL.name, 1)
    out = tmp_path / "out" / "g1"
    log = tmp_path / "termination-log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))
    monkeypatch.setenv(
        "OPTIMODEL_BUILD_SPEC",
        json.dumps({k: v for k, v in _spec(store_uri).items() if k != "storage"}),
    )

    with single_torch_thread():
        assert build_main(["--out", str(out), "--no-benchmark"]) == 0
    report = BuildReport.read(out / MODEL.name / "report.json")
    load = next(step for step in report.steps if step.name == "load")
    assert "s3://models/tiny-bert" in load.detail and "s3://datasets" in load.detail
    summary = TerminationMessage.parse(log.read_text()).report
    assert summary is not None

    # The upload container: the store's own keys, which may write artifacts only.
    _use(builder_env.uploader, monkeypatch)
    assert publish.main(["--from", str(out), "--to", artifact_uri]) == 0
    written = builder_env.server.keys_under("artifacts", "optimodel/")
    prefix = f"optimodel/{MODEL.namespace}/{MODEL.name}/g1/{MODEL.name}"
    built = out / MODEL.name
    local = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert written == sorted(f"{prefix}/{name}" for name in local)

    # The serving Deployment for that build fetches exactly what was written.
    build = build_status(summary, artifact_uri, 1)
    inputs = TritonDeploymentInputs(MODEL, spec, build, artifacts, "hash", 1)
    deployment = render_triton_deployment(inputs, settings)
    configs = {model: f"# config of {model}\n" for model in served_models(inputs)}
    served = _run_fetch_step(deployment, builder_env.uploader.env(), configs, tmp_path / "pod")
    fetched = {p.relative_to(served).as_posix(): p for p in served.rglob("*") if p.is_file()}
    assert set(fetched) >= set(local)
    for name in local:  # every file the upload wrote, byte for byte (configs: the ConfigMap's)
        if not name.endswith(naming.CONFIG_FILE):
            assert fetched[name].read_bytes() == (built / name).read_bytes()
    for model, text in configs.items():  # and each model's config from the ConfigMap
        assert fetched[f"{model}/{naming.CONFIG_FILE}"].read_text() == text


def test_an_upload_the_store_refuses_fails_with_its_reason(
    builder_env: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = tmp_path / "g1"
    shutil.copytree(tiny_model_dir("bert"), repository / MODEL.name)
    (repository / MODEL.name / "report.json").write_text("{}")
    log = tmp_path / "termination-log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))

    _use(builder_env.outsider, monkeypatch)
    assert publish.main(["--from", str(repository), "--to", "s3://artifacts/x/g1"]) == 4
    denied = TerminationMessage.parse(log.read_text())
    assert denied.reason == "StorageAccessDenied"
    assert denied.message is not None and denied.message.startswith("spec.storage.s3.uri:")

    _use(builder_env.reader, monkeypatch)
    assert publish.main(["--from", str(repository), "--to", "s3://no-such-bucket/g1"]) == 4
    assert TerminationMessage.parse(log.read_text()).reason == "StorageNotFound"
    assert builder_env.server.keys_under("artifacts", "x/") == []


def test_an_adapter_folder_is_fetched_from_s3(builder_env: Store) -> None:
    builder_env.server.upload_folder("models", "adapters/reviews", tiny_adapter_dir())
    fetched = fetch(SourceRequest("s3://models/adapters/reviews", "adapter", "spec.x.uri"))
    names = sorted(p.name for p in fetched.path.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors"]
