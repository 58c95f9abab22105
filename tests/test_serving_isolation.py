"""A bad request fails alone, and tritonserver dies with `optimodel serve` however it dies.

Locally (the python-backend shim on the real tritonserver): requests are checked before
batching and a failed batch falls back to one run per request. On the cluster path (the
onnxruntime backend, one session.run per batch) the guard the builder puts in the graph keeps
every batch runnable: the bad request's rows come back NaN, the others exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from optimodel.local.loadtest import inference_counters
from optimodel.local.server import (
    SHM_ROOT,
    LocalServer,
    ServerPorts,
    free_ports,
    metrics_text,
    serve_built_repository,
)
from optimodel.local.triton_model import request_problem
from optimodel.model_builder.input_guard import GUARD_PREFIX, guard_model_file
from optimodel.model_builder.report import InputLimits
from optimodel.model_builder.spec import Serving
from tests.triton_models import HIDDEN, VOCAB, export_tiny_bert, write_built_repository

Array = npt.NDArray[Any]
POSITIONS = 256
LIMITS = InputLimits(vocab_size=VOCAB, max_sequence_length=POSITIONS)


def _ids(length: int, seed: int) -> dict[str, Array]:
    ids = np.random.default_rng(seed).integers(1, VOCAB, size=(1, length), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _solo(path: Path, payload: dict[str, Array]) -> Array:
    import onnxruntime as ort

    return np.asarray(ort.InferenceSession(str(path)).run(["embeddings"], payload)[0])


# --- the checks, as a pure function ---

NAMES = ["input_ids", "attention_mask"]
VARIABLE = [True, True]
OK = np.ones((2, 5), dtype=np.int64)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ([OK, OK], None),
        ([OK * 999, OK], None),
        ([OK * VOCAB, OK], f"id {VOCAB} at [0, 0], outside the vocabulary 0..{VOCAB - 1}"),
        ([OK * -1, OK], "id -1"),
        ([np.ones((1, 300), dtype=np.int64)] * 2, "longer than the model's 256 positions"),
        ([OK, None], "input attention_mask is missing"),
        ([OK[0], OK[0]], "has shape [5]"),
        ([np.ones((2, 0), dtype=np.int64)] * 2, "has shape [2, 0]"),
        ([OK, np.ones((2, 4), dtype=np.int64)], "must share [batch, sequence] shape"),
    ],
)
def test_request_checks_name_the_input_the_value_and_the_limit(
    arrays: list[Array | None], fragment: str | None
) -> None:
    problem = request_problem(arrays, NAMES, VARIABLE, VOCAB, POSITIONS)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem, problem


# --- the cluster path: the guarded graph in onnxruntime, one run per batch ---


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("isolation")
    plain = root / "plain.onnx"
    export_tiny_bert(plain)
    guarded = root / "guarded.onnx"
    shutil.copyfile(plain, guarded)
    guard_model_file(guarded, LIMITS)
    return plain, guarded


def test_the_guarded_graph_runs_a_poisoned_batch_and_marks_only_the_bad_rows(
    models: tuple[Path, Path],
) -> None:
    import onnxruntime as ort

    plain, guarded = models
    rng = np.random.default_rng(3)
    ids = rng.integers(1, VOCAB, size=(4, 12), dtype=np.int64)
    mask = np.ones_like(ids)
    ids[2, 5] = VOCAB + 41  # a client's id past the embedding table
    with pytest.raises(Exception, match="out of data bounds"):
        ort.InferenceSession(str(plain)).run(None, {"input_ids": ids, "attention_mask": mask})
    out = ort.InferenceSession(str(guarded)).run(None, {"input_ids": ids, "attention_mask": mask})
    embeddings = np.asarray(out[0])
    assert np.isnan(embeddings[2]).all()
    for row in (0, 1, 3):
        alone = {"input_ids": ids[row : row + 1], "attention_mask": mask[row : row + 1]}
        solo = _solo(plain, alone)
        np.testing.assert_allclose(embeddings[row : row + 1], solo, atol=1e-5, rtol=0)


def test_the_guard_cuts_overlong_input_and_ignores_masked_padding(
    models: tuple[Path, Path],
) -> None:
    plain, guarded = models
    long = _ids(POSITIONS + 40, seed=5)
    cut = {name: array[:, :POSITIONS] for name, array in long.items()}
    np.testing.assert_allclose(_solo(guarded, long), _solo(plain, cut), atol=1e-6, rtol=0)
    padded = _ids(10, seed=6)
    padded["input_ids"][0, 8:] = -7  # a client's pad id, under attention_mask 0
    padded["attention_mask"][0, 8:] = 0
    clean = {name: array[:, :8] for name, array in padded.items()}
    np.testing.assert_allclose(_solo(guarded, padded), _solo(plain, clean), atol=1e-5, rtol=0)


# --- the local shim on the real tritonserver ---

QUEUE_DELAY_US = 300_000  # long enough that every request sent at once joins one batch


@pytest.fixture(scope="module")
def running(
    models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    plain, guarded = models
    out = tmp_path_factory.mktemp("isolation-repo") / "out"
    serving = Serving(max_batch_size=32, max_queue_delay_microseconds=QUEUE_DELAY_US)
    write_built_repository(out, "tiny", guarded, serving, input_limits=LIMITS)
    # An older build: no recorded limits and no guard, so only the fallback can isolate.
    write_built_repository(out, "tiny-unguarded", plain, serving)
    with serve_built_repository(out, ports=ServerPorts(*free_ports(3))) as server:
        yield server


def _send_all(url: str, model: str, payloads: list[dict[str, Array]]) -> list[Array | str]:
    """Every payload in flight at once (gRPC aio); an array or the error message each."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    async def run() -> list[Array | str]:
        client = grpcaio.InferenceServerClient(url)

        async def one(payload: dict[str, Array]) -> Array | str:
            inputs = []
            for name, array in payload.items():
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            try:
                result = await client.infer(model, inputs)
            except Exception as error:
                return str(error)
            return np.asarray(result.as_numpy("embeddings"))

        try:
            return list(await asyncio.gather(*(one(p) for p in payloads)))
        finally:
            await client.close()

    return asyncio.run(run())


def _bad_batch() -> tuple[list[dict[str, Array]], dict[int, str]]:
    # One length: the model step batches only equal shapes (as the onnxruntime backend does).
    good = [_ids(8, seed) for seed in range(6)]
    out_of_vocabulary = _ids(8, seed=40)
    out_of_vocabulary["input_ids"][0, 2] = VOCAB + 5
    too_long = _ids(POSITIONS + 10, seed=41)
    payloads = [*good[:3], out_of_vocabulary, *good[3:], too_long]
    return payloads, {3: "outside the vocabulary", 7: "positions"}


@pytest.mark.triton
@pytest.mark.parametrize(
    ("model", "messages"),
    [
        # The raw-tensor model (`<name>-model`) of each served repository.
        (
            "tiny-model",
            {
                3: f"outside the vocabulary 0..{VOCAB - 1}",
                7: "longer than the model's 256 positions",
            },
        ),
        ("tiny-unguarded-model", {3: "inference failed", 7: "inference failed"}),
    ],
    ids=["checked-before-batching", "fallback-per-request"],
)
def test_concurrent_good_and_bad_requests_only_the_bad_fail(
    running: LocalServer, models: tuple[Path, Path], model: str, messages: dict[int, str]
) -> None:
    plain, _ = models
    payloads, _ = _bad_batch()
    server = running.server
    before = inference_counters(metrics_text(server.metrics_url), model)
    results = _send_all(server.grpc_url, model, payloads)
    after = inference_counters(metrics_text(server.metrics_url), model)
    for index, (payload, result) in enumerate(zip(payloads, results, strict=True)):
        if index in messages:
            assert isinstance(result, str) and messages[index] in result, (index, result)
            continue
        assert isinstance(result, np.ndarray), (index, result)
        assert result.shape == (1, HIDDEN)
        np.testing.assert_allclose(result, _solo(plain, payload), atol=1e-5, rtol=0)
    # They were batched together: fewer model executions than requests.
    executions = after[1] - before[1]
    assert 0 < executions < len(payloads), (before, after)


# --- the server's lifetime ---


def _pids_with(argument: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argument.encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.mark.triton
def test_sigkill_of_optimodel_serve_takes_tritonserver_with_it(
    running: LocalServer, tmp_path: Path
) -> None:
    built = running.models[0].source.directory
    http, grpc, metrics = free_ports(3)
    command = [
        sys.executable, "-m", "optimodel.cli", "serve", str(built),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
    ]  # fmt: skip
    cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(cli.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("stops the server" in line for line in lines):
            assert cli.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5) as r:
            assert r.status == 200
        servers = _pids_with(f"--http-port={http}")
        assert servers, "tritonserver runs as a child of the command"
        workdirs = [line.split("log", 1)[1].strip() for line in lines if "  log " in line]
        prefix = f"optimodel_{cli.pid}_{http}_"
        assert any(SHM_ROOT.glob(f"{prefix}*"))
        cli.send_signal(signal.SIGKILL)  # no handler, no atexit, no finally runs
        cli.wait(timeout=10)
        deadline = time.monotonic() + 40
        while _pids_with(f"--http-port={http}") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _pids_with(f"--http-port={http}"), "tritonserver outlived `optimodel serve`"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2)
        while any(SHM_ROOT.glob(f"{prefix}*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(SHM_ROOT.glob(f"{prefix}*"))
        folders = [Path(log).parent for log in workdirs]
        assert folders, "".join(lines)
        while any(f.exists() for f in folders) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(f.exists() for f in folders), "the serve work folder was left behind"
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in _pids_with(f"--http-port={http}"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.triton
def test_a_normal_stop_releases_the_watchdog(running: LocalServer) -> None:
    built = running.models[0].source.directory
    with serve_built_repository(built, ports=ServerPorts(*free_ports(3))) as local:
        watchdog = local.server.watchdog
        assert watchdog is not None and watchdog.poll() is None
        assert _pids_with(f"--pgid={local.server.pid}") == [watchdog.pid]
        pgid = local.server.pid
    assert watchdog.poll() == 0, "the watchdog exits once told the server was stopped"
    assert not _pids_with(f"--pgid={pgid}")


def test_the_built_artifact_is_guarded(models: tuple[Path, Path]) -> None:
    import onnx

    _, guarded = models
    names = {node.name for node in onnx.load(str(guarded)).graph.node}
    assert any(name.startswith(GUARD_PREFIX) for name in names)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8-dynamic", "fp16", "int4-weight-only"])
def test_the_builder_publishes_a_guarded_artifact_with_its_limits(
    tmp_path: Path, mode: str
) -> None:
    import onnx
    import onnxruntime as ort

    from optimodel.model_builder.pipeline import run_build
    from optimodel.model_builder.quantize import EMBEDDING_SUFFIX
    from optimodel.model_builder.spec import BuildSpec
    from tests.builder_models import single_torch_thread, tiny_model_dir

    spec = BuildSpec.model_validate(
        {
            "name": "tiny",
            "source": {"uri": f"file://{tiny_model_dir('bert')}", "task": "feature-extraction"},
            "optimize": {
                "quantize": {"mode": mode},
                "accuracy": {"metric": "cosine", "min": 0.5},
                "evalData": {"uri": "builtin://eval-texts", "maxSamples": 16},
            },
            # int8-dynamic runs on CPU serving only (serving_target.py)
            "serving": {"gpu": {"count": 0 if mode == "int8-dynamic" else 1}},
        }
    )
    with single_torch_thread():
        report = run_build(spec, tmp_path, benchmark=False)
    assert report.input_limits == InputLimits(vocab_size=30522, max_sequence_length=128)
    artifact = tmp_path / "tiny" / "tiny-model" / "1" / "model.onnx"
    graph = onnx.load(str(artifact)).graph
    assert any(node.name.startswith(GUARD_PREFIX) for node in graph.node)
    if mode == "int8-dynamic":  # the embedding table is still stored int8 behind the guard
        assert any(init.name.endswith(EMBEDDING_SUFFIX) for init in graph.initializer)
    session = ort.InferenceSession(str(artifact))
    ids = np.array([[101, 7592, 2088, 102], [101, 40000, 2088, 102]], dtype=np.int64)
    out = np.asarray(session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0])
    assert not np.isnan(out[0]).any() and np.isnan(out[1]).all()
