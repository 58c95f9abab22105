"""Local serving without a server: the python-backend repository derived from a built one,
the batching arithmetic of the python-backend model, metrics parsing, and input errors."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from optimodel.local.loadtest import average_batch, inference_counters, stack
from optimodel.local.repository import (
    UNBATCHED_SUFFIX,
    InvalidRepositoryError,
    derive_local_repository,
    find_built_models,
    parse_config_text,
)
from optimodel.local.server import PortInUseError, ServerPorts, check_ports_free
from optimodel.local.triton_model import pad_and_concatenate, split_outputs
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.spec import Gpu, Serving
from optimodel.model_builder.triton_config import render_triton_config
from tests.triton_models import MAX_LENGTH, tiny_signature, write_built_repository


def _built(tmp_path: Path, serving: Serving, *, passed: bool = True, onnx: bool = True) -> Path:
    """A served repository with a placeholder model.onnx (never loaded here)."""
    placeholder = tmp_path / "placeholder.onnx"
    placeholder.write_bytes(b"onnx")
    folder = write_built_repository(tmp_path / "out", "tiny", placeholder, serving)
    if not onnx:
        (folder / "tiny-model" / "1" / "model.onnx").unlink()
    if not passed:
        report = BuildReport.read(folder / "report.json")
        report.passed, report.failure = False, "cosine 0.91 below min 0.99"
        report.write(folder / "report.json")
    return folder


def test_local_repository_keeps_the_built_batching_and_instances(tmp_path: Path) -> None:
    serving = Serving(
        gpu=Gpu(count=0),  # a CPU deployment: the cluster's configs equal the local ones
        max_batch_size=24,
        preferred_batch_sizes=[8, 24],
        max_queue_delay_microseconds=1500,
        instances=2,
        response_cache=True,
    )
    built = _built(tmp_path, serving)
    models = derive_local_repository(
        find_built_models(built.parent), tmp_path / "local", with_unbatched=True
    )

    local = tmp_path / "local"
    assert [m.name for m in models] == ["tiny", "tiny" + UNBATCHED_SUFFIX]
    assert sorted(p.name for p in local.iterdir()) == sorted(
        ServedNames.of("tiny").all() + ServedNames.of("tiny" + UNBATCHED_SUFFIX).all()
    )
    config = parse_config_text((local / "tiny-model" / "config.pbtxt").read_text())
    assert config.backend == "python"
    assert config.max_batch_size == 24
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 24]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, 2)]  # 2 = KIND_CPU
    # The cluster's onnxruntime backend batches only equal shapes: so does the local shim.
    assert not any(tensor.allow_ragged_batch for tensor in config.input)
    assert not config.response_cache.enable, "the cache sits on the ensemble only"
    assert config.parameters["onnx_file"].string_value == "model.onnx"
    twin = parse_config_text((local / "tiny-unbatched-model" / "config.pbtxt").read_text())
    assert not twin.HasField("dynamic_batching")
    twin_ensemble = parse_config_text((local / "tiny-unbatched" / "config.pbtxt").read_text())
    assert [step.model_name for step in twin_ensemble.ensemble_scheduling.step] == [
        "tiny-unbatched-tokenize",
        "tiny-unbatched-model",
        "tiny-unbatched-postprocess",
    ]
    # Only the model step differs from what a cluster runs; the text steps are its configs.
    cluster = render_served_configs("tiny", "feature-extraction", tiny_signature(), serving)
    for name in ("tiny", "tiny-tokenize", "tiny-postprocess"):
        assert (local / name / "config.pbtxt").read_text() == cluster[name]
        assert (built / name / "config.pbtxt").read_text() == cluster[name]
    # Served byte for byte as built: links to the artifact's files, and the shim's model.py.
    version = local / "tiny-model" / "1"
    assert (version / "model.onnx").resolve() == (built / "tiny-model" / "1" / "model.onnx")
    assert "class TritonPythonModel" in (version / "model.py").read_text()
    for step in ("tiny-tokenize", "tiny-postprocess", "tiny-unbatched-tokenize"):
        built_step = step.replace("-unbatched", "")
        assert (local / step / "1").resolve() == (built / built_step / "1").resolve()
    assert (local / "tiny" / "1").is_dir()


def test_cluster_configs_are_untouched_by_local_serving(tmp_path: Path) -> None:
    built = _built(tmp_path, Serving())
    before = {p: p.read_text() for p in built.glob("*/config.pbtxt")}
    derive_local_repository(find_built_models(built), tmp_path / "local")
    assert {p: p.read_text() for p in built.glob("*/config.pbtxt")} == before
    model_step = before[built / "tiny-model" / "config.pbtxt"]
    assert 'backend: "onnxruntime"' in model_step and "allow_ragged_batch" not in model_step


def _old_layout(tmp_path: Path) -> Path:
    folder = tmp_path / "out" / "tiny"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"onnx")
    (folder / "config.pbtxt").write_text(render_triton_config("tiny", tiny_signature(), Serving()))
    return folder


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such folder"),
        ("empty", "no served repository"),
        ("no-onnx", "model.onnx"),
        ("failed-build", "did not pass"),
        ("bad-config", "not a valid Triton config"),
        ("old-layout", "older optimodel build"),
    ],
)
def test_invalid_repositories_say_what_to_fix(tmp_path: Path, setup: str, message: str) -> None:
    target = tmp_path / "out"
    if setup == "empty":
        target.mkdir()
    elif setup == "no-onnx":
        target = _built(tmp_path, Serving(), onnx=False)
    elif setup == "failed-build":
        target = _built(tmp_path, Serving(), passed=False)
    elif setup == "bad-config":
        target = _built(tmp_path, Serving())
        (target / "tiny-model" / "config.pbtxt").write_text("max_batch_size: [oops")
    elif setup == "old-layout":
        target = _old_layout(tmp_path)
    with pytest.raises(InvalidRepositoryError, match=message) as raised:
        find_built_models(target)
    assert str(target) in str(raised.value)
    assert "build" in str(raised.value)  # every message points at (re)building


def test_a_step_folder_finds_its_served_repository(tmp_path: Path) -> None:
    built = _built(tmp_path, Serving(response_cache=True))
    (model,) = find_built_models(built / "tiny-model")
    assert model.directory == built and model.name == "tiny"
    assert model.serving.response_cache and model.task == "feature-extraction"


def test_pad_concatenate_split_round_trip() -> None:
    short = {"ids": np.array([[1, 2, 3]]), "mask": np.ones((1, 3), dtype=np.int64)}
    long = {"ids": np.array([[4, 5, 6, 7, 8], [9, 9, 9, 9, 9]]), "mask": np.ones((2, 5))}
    stacked, sizes, lengths = pad_and_concatenate(
        [[short["ids"], short["mask"]], [long["ids"], long["mask"]]], [True, True]
    )
    assert sizes == [1, 2] and lengths == [3, 5]
    assert stacked[0].tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 9, 9, 9, 9]]
    assert stacked[1][0].tolist() == [1, 1, 1, 0, 0]  # padding is masked out
    pooled = np.arange(6, dtype=np.float32).reshape(3, 2)
    per_token = np.zeros((3, 5, 2), dtype=np.float32)
    parts = split_outputs([pooled, per_token], sizes, lengths, [False, True])
    assert parts[0][0].tolist() == [[0.0, 1.0]]
    assert parts[1][0].tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert parts[0][1].shape == (1, 3, 2) and parts[1][1].shape == (2, 5, 2)


def test_inference_counters_and_average_batch() -> None:
    text = "\n".join(
        [
            "# HELP nv_inference_count Number of inferences performed",
            'nv_inference_count{model="tiny",version="1"} 96',
            'nv_inference_exec_count{model="tiny",version="1"} 4',
            'nv_inference_count{model="tiny-unbatched",version="1"} 50',
            'nv_inference_exec_count{model="tiny-unbatched",version="1"} 50',
        ]
    )
    assert inference_counters(text, "tiny") == (96.0, 4.0)
    assert average_batch((0.0, 0.0), inference_counters(text, "tiny")) == 24.0
    assert average_batch((10.0, 10.0), (10.0, 10.0)) is None


def test_stack_groups_equal_length_requests() -> None:
    payloads = [{"input_ids": np.full((1, 4), i)} for i in range(5)]
    batches = stack(payloads, 2)
    assert [b["input_ids"].shape for b in batches] == [(2, 4), (2, 4)]
    with pytest.raises(ValueError, match="at least 8"):
        stack(payloads, 8)


def test_taken_port_is_named_with_its_option() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"grpc port {port}.*--grpc-port"):
            check_ports_free(ServerPorts(http=_free(), grpc=port, metrics=_free()))
    with pytest.raises(PortInUseError, match="must differ"):
        check_ports_free(ServerPorts(http=9000, grpc=9000, metrics=9001))


def _free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_tensorrt_config_reads_back_and_rerenders_the_same(tmp_path: Path) -> None:
    """`optimodel tune` re-renders the built configs from what it reads back: the GPUs, the
    TensorRT block and the largest-profile warmup of the model step survive."""
    serving = Serving(gpu=Gpu(count=2), accelerator="tensorrt", max_batch_size=16)
    (model,) = find_built_models(_built(tmp_path, serving))
    names = ServedNames.of("tiny")
    text = model.layout.config(names.model).read_text()
    accelerator = parse_config_text(text).optimization.execution_accelerators
    assert accelerator.gpu_execution_accelerator[0].name == "tensorrt"

    assert model.serving.accelerator == "tensorrt" and model.serving.gpu.count == 2
    assert model.warmup_sequence_length == 16 and model.max_sequence_length == MAX_LENGTH
    again = render_served_configs(
        "tiny",
        model.task,
        model.signature,
        model.serving,
        max_sequence_length=model.max_sequence_length,
    )
    assert again[names.model] == text
