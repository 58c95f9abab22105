"""Against the real tritonserver 2.51 (nvidia-pytriton wheel), with real tritonclient.

One server per module serves a tiny built repository (2-layer BERT, hidden 32, built from a
config): the text-in ensemble as built (dynamic batching on) and its `-unbatched` twin. Tests
here call the raw-tensor model `tiny-model` with token ids; tests/test_triton_text.py covers
the text path.
"""

from __future__ import annotations

import asyncio
import json
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

from optimodel.local.installation import find_perf_analyzer
from optimodel.local.loadtest import (
    fit_to_signature,
    inference_counters,
    run_client_load,
    run_perf_analyzer,
    synthetic_tokens,
)
from optimodel.local.repository import (
    UNBATCHED_SUFFIX,
    derive_local_repository,
    find_built_models,
)
from optimodel.local.server import (
    SHM_ROOT,
    LocalServer,
    PortInUseError,
    ServerError,
    ServerPorts,
    TritonServer,
    free_ports,
    metrics_text,
    serve_built_repository,
)
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.spec import Serving
from tests.triton_models import HIDDEN, export_tiny_bert, write_built_repository

pytestmark = pytest.mark.triton

Array = npt.NDArray[Any]
QUEUE_DELAY_US = 2000
MAX_BATCH = 16


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton")
    onnx = root / "tiny.onnx"
    export_tiny_bert(onnx)
    serving = Serving(
        max_batch_size=MAX_BATCH,
        preferred_batch_sizes=[8, 16],
        max_queue_delay_microseconds=QUEUE_DELAY_US,
    )
    return write_built_repository(root / "out", "tiny", onnx, serving)


@pytest.fixture(scope="module")
def running(built: Path) -> Iterator[LocalServer]:
    with serve_built_repository(
        built, ports=ServerPorts(*free_ports(3)), with_unbatched=True
    ) as server:
        yield server


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _payloads(lengths: list[int]) -> list[dict[str, Array]]:
    rng = np.random.default_rng(7)
    out = []
    for length in lengths:
        ids = rng.integers(1, 1000, size=(1, length), dtype=np.int64)
        out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return out


def _in_process(built: Path, payloads: list[dict[str, Array]]) -> list[Array]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(built / "tiny-model" / "1" / "model.onnx"))
    return [np.asarray(session.run(["embeddings"], p)[0]) for p in payloads]


def _grpc_infer(url: str, model: str, payloads: list[dict[str, Array]]) -> list[Array]:
    """All payloads in flight at once over gRPC aio."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio

    async def run() -> list[Array]:
        client = grpcaio.InferenceServerClient(url)

        async def one(payload: dict[str, Array]) -> Array:
            inputs = []
            for name, array in payload.items():
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            result = await client.infer(model, inputs)
            return np.asarray(result.as_numpy("embeddings"))

        try:
            return list(await asyncio.gather(*(one(p) for p in payloads)))
        finally:
            await client.close()

    return asyncio.run(run())


def test_server_and_both_models_are_ready(running: LocalServer) -> None:
    base = f"http://{running.server.http_url}"
    names = ServedNames.of("tiny").all() + ServedNames.of(f"tiny{UNBATCHED_SUFFIX}").all()
    for path in ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in names)]:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            assert response.status == 200
    metadata = _get_json(base + "/v2")
    assert metadata["version"] == "2.51.0"


def test_config_endpoint_shows_the_batching_block(running: LocalServer) -> None:
    base = f"http://{running.server.http_url}/v2/models"
    config = _get_json(f"{base}/tiny-model/config")
    assert config["backend"] == "python"
    assert config["max_batch_size"] == MAX_BATCH
    assert config["dynamic_batching"]["preferred_batch_size"] == [8, 16]
    assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == QUEUE_DELAY_US
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    # As on the cluster's onnxruntime backend: only requests of equal shape batch.
    assert [t["allow_ragged_batch"] for t in config["input"]] == [False, False]
    twin = _get_json(f"{base}/tiny{UNBATCHED_SUFFIX}-model/config")
    assert "dynamic_batching" not in twin
    assert twin["max_batch_size"] == MAX_BATCH


def test_outputs_match_onnxruntime_over_http_and_grpc(running: LocalServer, built: Path) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    payloads = _payloads([3, 7, 12, 30])
    expected = _in_process(built, payloads)
    http = httpclient.InferenceServerClient(running.server.http_url)
    grpc = grpcclient.InferenceServerClient(running.server.grpc_url)
    try:
        for payload, want in zip(payloads, expected, strict=True):
            for module, client in ((httpclient, http), (grpcclient, grpc)):
                inputs = []
                for name, array in payload.items():
                    tensor = module.InferInput(name, list(array.shape), "INT64")
                    tensor.set_data_from_numpy(array)
                    inputs.append(tensor)
                got = client.infer("tiny-model", inputs).as_numpy("embeddings")
                assert got.shape == (1, HIDDEN)
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    finally:
        http.close()
        grpc.close()


def test_concurrent_raw_requests_batch_by_shape_and_still_match(
    running: LocalServer, built: Path
) -> None:
    payloads = _payloads([3, 9, 17, 4, 25, 11, 6, 30] * 4 + [12] * 32)
    expected = _in_process(built, payloads)
    before = inference_counters(metrics_text(running.server.metrics_url), "tiny-model")
    got = _grpc_infer(running.server.grpc_url, "tiny-model", payloads)
    after = inference_counters(metrics_text(running.server.metrics_url), "tiny-model")
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), atol=1e-5, rtol=0)
    assert after[0] - before[0] == len(payloads)
    assert after[1] - before[1] < len(payloads)  # the 32 of equal length batched


def test_metrics_show_batching_only_where_it_is_on(running: LocalServer, built: Path) -> None:
    (model,) = find_built_models(built)
    payloads = fit_to_signature(synthetic_tokens(64, 16), model.signature)
    server = running.server
    batched = run_client_load(
        server.grpc_url, "tiny-model", payloads, concurrency=32, duration_s=1.5, warmup_s=0.3,
        processes=1, metrics_url=server.metrics_url,
    )  # fmt: skip
    unbatched = run_client_load(
        server.grpc_url, f"tiny{UNBATCHED_SUFFIX}-model", payloads, concurrency=32,
        duration_s=1.5, warmup_s=0.3, processes=1, metrics_url=server.metrics_url,
    )  # fmt: skip
    assert batched.errors == 0 and unbatched.errors == 0
    assert batched.requests > 50 and unbatched.requests > 50
    assert batched.average_batch is not None and batched.average_batch > 2.0
    # Triton bumps its inference and execution counters apart, so a scrape while requests are
    # in flight may catch one without the other: one batch in thousands, never a real batch.
    assert unbatched.average_batch == pytest.approx(1.0, abs=0.01)
    assert batched.latency_p50_ms <= batched.latency_p99_ms


def test_perf_analyzer_measures_the_served_model(running: LocalServer, built: Path) -> None:
    perf_analyzer = find_perf_analyzer()
    assert perf_analyzer is not None, "perf_analyzer ships in tritonclient==2.51.0 (serve extra)"
    (model,) = find_built_models(built)
    payloads = fit_to_signature(synthetic_tokens(32, 8), model.signature)
    result = run_perf_analyzer(
        perf_analyzer, running.server.grpc_url, "tiny-model", payloads, concurrency=16,
        duration_s=1.0, metrics_url=running.server.metrics_url,
    )  # fmt: skip
    assert result.tool == "perf_analyzer"
    assert result.throughput > 0
    assert result.average_batch is not None and result.average_batch > 1.0


def test_stop_leaves_no_process_and_no_shared_memory(built: Path, tmp_path: Path) -> None:
    (model,) = find_built_models(built)
    derive_local_repository([model], tmp_path / "repository")
    server = TritonServer(tmp_path / "repository", ServerPorts(*free_ports(3)))
    server.start()
    pid = server.pid
    assert pid is not None
    segments = server.shm_segments()
    assert segments, "the python backend keeps its tensors in /dev/shm while serving"
    assert all(path.parent == SHM_ROOT for path in segments)
    removed = server.stop()
    assert removed == []  # Triton released its segments itself; nothing had to be cleaned
    assert not any(SHM_ROOT.glob(f"{server.shm_prefix}*"))
    assert not server.group_alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_stops_cleanly_on_ctrl_c_and_sigterm(
    built: Path, stop_signal: signal.Signals
) -> None:
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
        deadline = time.monotonic() + 60
        while not any("stops the server" in line for line in lines):
            assert cli.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5) as r:
            assert r.status == 200
        prefix = f"optimodel_{cli.pid}_{http}_"
        assert any(SHM_ROOT.glob(f"{prefix}*"))
        assert _pids_with(f"--http-port={http}"), "tritonserver runs as a child of the command"
        cli.send_signal(stop_signal)  # what Ctrl-C (SIGINT) or `kill` (SIGTERM) sends
        cli.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
    output = "".join(lines)
    assert cli.returncode == 0, output
    assert "no server process, no shared memory left" in output
    assert not any(SHM_ROOT.glob(f"{prefix}*"))
    assert not _pids_with(f"--http-port={http}")


def _pids_with(argument: str) -> list[int]:
    """Live processes whose command line holds ARGUMENT."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if argument.encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_port_taken_by_a_running_server_is_reported(running: LocalServer, built: Path) -> None:
    ports = ServerPorts(running.server.ports.http, *free_ports(2))
    with (
        pytest.raises(PortInUseError, match=rf"http port {ports.http} .*--http-port"),
        serve_built_repository(built, ports=ports),
    ):
        pass


def test_a_model_that_fails_to_load_stops_startup_with_its_log(built: Path, tmp_path: Path) -> None:
    broken = tmp_path / "out" / "tiny"
    shutil.copytree(built, broken)
    (broken / "tiny-model" / "1" / "model.onnx").unlink()
    (broken / "tiny-model" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    failed = r"(?s)exited with code 1.*model 'tiny-model' failed to load: .*INVALID_PROTOBUF.*fix:"
    with (
        pytest.raises(ServerError, match=failed),
        serve_built_repository(broken, ports=ServerPorts(*free_ports(3))),
    ):
        pass


def test_loadtest_command_sweeps_batching_on_and_off(built: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from optimodel.cli import app

    http, grpc, metrics = free_ports(3)
    numbers, plot = tmp_path / "load.json", tmp_path / "load.png"
    result = CliRunner().invoke(
        app,
        [
            "loadtest", str(built), "--concurrency", "1,16", "--duration", "1",
            "--tool", "tritonclient", "--json", str(numbers), "--plot", str(plot),
            "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(numbers.read_text())
    assert [(r["model"], r["concurrency"]) for r in rows] == [
        ("tiny", 1),
        (f"tiny{UNBATCHED_SUFFIX}", 1),
        ("tiny", 16),
        (f"tiny{UNBATCHED_SUFFIX}", 16),
    ]
    assert all(r["throughput"] > 0 and r["errors"] == 0 for r in rows)
    assert rows[2]["average_batch"] > 1.0 and rows[3]["average_batch"] == 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
