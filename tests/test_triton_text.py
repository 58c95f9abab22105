"""The text path on the real tritonserver 2.51: texts in, answers out, batched, cached, and
bad input that fails alone.

One server per module serves two tiny built repositories (2-layer BERT, hidden 32, the real
MiniLM tokenizer): `tiny` (embeddings, response cache on, with its `-unbatched` twin) and
`tinycls` (a 2-class classifier). The model step runs as the cluster runs it: requests batch
only when their shapes are equal (no ragged batching), so mixed-length texts batch only
because the tokenizer step pads each length group alike.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from optimodel.local.loadtest import inference_counters
from optimodel.local.query import Endpoint, infer_texts, text_array, text_models
from optimodel.local.reference import TextReference
from optimodel.local.repository import find_built_models
from optimodel.local.server import LocalServer, ServerPorts, free_ports, metrics_text
from optimodel.local.text_load import mixed_lengths, texts_of_lengths
from optimodel.model_builder.spec import Gpu, Serving
from tests.triton_models import HIDDEN, MAX_LENGTH, export_tiny_bert, write_built_repository

pytestmark = pytest.mark.triton

Array = npt.NDArray[Any]
MAX_BATCH = 16
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    serving = Serving(
        gpu=Gpu(count=0),
        max_batch_size=MAX_BATCH,
        max_queue_delay_microseconds=2000,
        response_cache=True,
    )
    export_tiny_bert(root / "tiny.onnx")
    write_built_repository(root / "out", "tiny", root / "tiny.onnx", serving)
    export_tiny_bert(root / "cls.onnx", "text-classification")
    write_built_repository(
        root / "out",
        "tinycls",
        root / "cls.onnx",
        serving.model_copy(update={"response_cache": False}),
        task="text-classification",
    )
    return root / "out"


@pytest.fixture(scope="module")
def running(out: Path) -> Iterator[LocalServer]:
    from optimodel.local.server import serve_built_repository

    with serve_built_repository(
        out, ports=ServerPorts(*free_ports(3)), with_unbatched=True
    ) as server:
        yield server


@pytest.fixture(scope="module")
def reference(out: Path) -> TextReference:
    return TextReference(find_built_models(out / "tiny")[0])


def _texts(count: int, out: Path, seed: int = 0) -> list[str]:
    model = find_built_models(out / "tiny")[0]
    return texts_of_lengths(model.tokenizer_dir, mixed_lengths(count, 5, 120, seed)).texts


async def _one(client: Any, model: str, rows: list[bytes]) -> dict[str, Array] | Exception:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    array = np.array(rows, dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput("text", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    try:
        result: Any = await client.infer(model, [tensor])
    except InferenceServerException as error:
        failed: Exception = error
        return failed
    outputs: dict[str, Array] = {
        o.name: np.asarray(result.as_numpy(o.name)) for o in result.get_response().outputs
    }
    return outputs


def _concurrently(url: str, model: str, requests: list[list[bytes]]) -> list[Any]:
    """Every request in flight at once over gRPC aio; answers or errors, in order."""
    import tritonclient.grpc.aio as grpcaio

    async def run() -> list[Any]:
        client = grpcaio.InferenceServerClient(url)
        try:
            return list(await asyncio.gather(*(_one(client, model, r) for r in requests)))
        finally:
            await client.close()

    return asyncio.run(run())


def _counters(running: LocalServer, model: str) -> tuple[float, float]:
    return inference_counters(metrics_text(running.server.metrics_url), model)


def test_texts_in_normalized_embeddings_out_over_http_and_grpc(
    running: LocalServer, reference: TextReference, out: Path
) -> None:
    texts = [*_texts(6, out), "", "word " * 300]
    expected = np.concatenate([a["embeddings"] for a in reference.alone(texts)])
    for protocol, address in (("http", running.server.http_url), ("grpc", running.server.grpc_url)):
        endpoint = Endpoint(protocol, address)  # type: ignore[arg-type]
        for text, want in zip(texts, expected, strict=True):
            got = infer_texts(endpoint, "tiny", [text])["embeddings"]
            assert got.shape == (1, HIDDEN)
            np.testing.assert_allclose(got[0], want, atol=1e-5, rtol=0)
            assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
    # One request of several rows: padded to its longest row, as the reference pads it.
    rows = infer_texts(Endpoint("grpc", running.server.grpc_url), "tiny", texts)["embeddings"]
    np.testing.assert_allclose(rows, reference.answers(texts)["embeddings"], atol=1e-5)


def test_a_classifier_answers_label_and_score(running: LocalServer, out: Path) -> None:
    model = find_built_models(out / "tinycls")[0]
    texts = _texts(5, out, seed=3)
    expected = TextReference(model).alone(texts)
    got = infer_texts(Endpoint("http", running.server.http_url), "tinycls", texts)
    assert set(got) == {"logits", "label", "score"}
    for row, want in enumerate(expected):
        np.testing.assert_allclose(got["logits"][row], want["logits"][0], atol=1e-5)
        assert got["label"][row, 0] == want["label"][0, 0]
        assert got["label"][row, 0] in (b"negative", b"positive")
        np.testing.assert_allclose(got["score"][row], want["score"][0], atol=1e-5)


def test_mixed_length_texts_batch_on_the_model_step(
    running: LocalServer, reference: TextReference, out: Path
) -> None:
    texts = _texts(64, out, seed=1)
    before = {m: _counters(running, m) for m in ("tiny-tokenize", "tiny-model")}
    answers = _concurrently(running.server.grpc_url, "tiny", [[t.encode()] for t in texts])
    after = {m: _counters(running, m) for m in ("tiny-tokenize", "tiny-model")}
    expected = [a["embeddings"] for a in reference.alone(texts)]
    for answer, want in zip(answers, expected, strict=True):
        assert not isinstance(answer, Exception), answer
        # fp32 and padding masked out: batch-mates change nothing (to float rounding).
        np.testing.assert_allclose(answer["embeddings"], want, atol=1e-5, rtol=0)
    inferences = after["tiny-model"][0] - before["tiny-model"][0]
    executions = after["tiny-model"][1] - before["tiny-model"][1]
    assert inferences == len(texts)
    assert executions < len(texts) / 2, "lengths 5-120, yet the model step formed batches"
    assert after["tiny-tokenize"][1] - before["tiny-tokenize"][1] < len(texts)


def test_bad_input_fails_alone_and_batch_mates_are_answered(
    running: LocalServer, reference: TextReference, out: Path
) -> None:
    good = _texts(40, out, seed=2)
    huge = "lorem ipsum " * 9000  # ~100 KB: truncated at max length as the original does
    requests: list[list[bytes]] = [[t.encode()] for t in good]
    bad_at = {
        5: [b"\xff\xfe not UTF-8"],
        11: [b"fine row", b"\xc3\x28 broken second row"],
        17: [b"x"] * (MAX_BATCH + 1),
    }
    edge_at = {23: [b""], 29: [huge.encode()]}
    for index, rows in {**bad_at, **edge_at}.items():
        requests.insert(index, rows)
    answers = _concurrently(running.server.grpc_url, "tiny", requests)

    errors = {i: str(a) for i, a in enumerate(answers) if isinstance(a, Exception)}
    assert set(errors) == set(bad_at)
    assert re.search(r"text\[0\] is not valid UTF-8.*send the text encoded as UTF-8", errors[5])
    assert re.search(r"text\[1\] is not valid UTF-8", errors[11])
    assert re.search(rf"batch.size.*{MAX_BATCH}", errors[17], re.IGNORECASE), errors[17]
    for index, rows in edge_at.items():
        text = rows[0].decode()
        want = reference.alone([text])[0]["embeddings"]
        np.testing.assert_allclose(answers[index]["embeddings"], want, atol=1e-5)
    assert len(reference.tokenizer(huge, truncation=True, max_length=MAX_LENGTH)["input_ids"]) == (
        MAX_LENGTH
    )
    served_good = [a for i, a in enumerate(answers) if i not in bad_at and i not in edge_at]
    expected = [a["embeddings"] for a in reference.alone(good)]
    for answer, want in zip(served_good, expected, strict=True):
        np.testing.assert_allclose(answer["embeddings"], want, atol=1e-5, rtol=0)


def test_response_cache_hits_show_in_triton_metrics(running: LocalServer) -> None:
    assert any(a.startswith("--cache-config=local,size=") for a in running.server.command_line)
    endpoint = Endpoint("http", running.server.http_url)
    text = "A sentence asked twice should be answered from the cache the second time."

    def cache(metric: str) -> float:
        pattern = rf'^{metric}{{model="tiny",version="1"}} (\S+)$'
        found = re.search(pattern, metrics_text(running.server.metrics_url), re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    first = infer_texts(endpoint, "tiny", [text])
    hits, misses = cache("nv_cache_num_hits_per_model"), cache("nv_cache_num_misses_per_model")
    model_runs = _counters(running, "tiny-model")[0]
    second = infer_texts(endpoint, "tiny", [text])
    np.testing.assert_array_equal(first["embeddings"], second["embeddings"])
    assert cache("nv_cache_num_hits_per_model") == hits + 1
    assert cache("nv_cache_num_misses_per_model") == misses
    assert _counters(running, "tiny-model")[0] == model_runs, "a hit skips the model step"
    other = infer_texts(endpoint, "tiny", [text + " And now a different one."])
    assert other["embeddings"].shape == (1, HIDDEN)
    assert cache("nv_cache_num_misses_per_model") == misses + 1


def test_query_command_against_a_url_and_a_built_folder(running: LocalServer, out: Path) -> None:
    from typer.testing import CliRunner

    from optimodel.cli import app

    runner = CliRunner()
    http = runner.invoke(
        app, ["query", f"http://{running.server.http_url}", "Hello there", "--model", "tiny"]
    )
    assert http.exit_code == 0, http.output
    assert re.search(r"'Hello there': embedding shape \[32\], norm 1\.0000", http.output)
    grpc = runner.invoke(
        app, ["query", f"grpc://{running.server.grpc_url}", "Great!", "--model", "tinycls"]
    )
    assert grpc.exit_code == 0, grpc.output
    assert re.search(r"'Great!': label (negative|positive), score 0\.\d{4}", grpc.output)
    # No --model: a server with several text-in models asks for one.
    several = runner.invoke(app, ["query", f"http://{running.server.http_url}", "Hi"])
    assert several.exit_code == 1 and "pass --model NAME" in several.output
    assert text_models(Endpoint("http", running.server.http_url)) == [
        "tiny",
        "tiny-unbatched",
        "tinycls",
        "tinycls-unbatched",
    ]
    folder = runner.invoke(app, ["query", str(out / "tinycls"), "Served here for the query"])
    assert folder.exit_code == 0, folder.output
    assert "tinycls" in folder.output and "label" in folder.output
    bad_url = runner.invoke(app, ["query", "ftp://nowhere", "x"])
    assert bad_url.exit_code == 2 and "http://host:port or grpc://host:port" in bad_url.output


def test_readme_curl_request_is_answered(running: LocalServer) -> None:
    """The README's curl example, sent as it is written (only host and model differ)."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"curl -s (\S+)/v2/models/minilm/infer -d '(\{.*?\})'", readme)
    assert found, "README.md shows the V2 JSON text request"
    body = found.group(2).encode()
    url = f"http://{running.server.http_url}/v2/models/tiny/infer"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
        answer = json.loads(reply.read())
    (output,) = answer["outputs"]
    assert output["name"] == "embeddings" and output["datatype"] == "FP32"
    rows = len(json.loads(body)["inputs"][0]["data"])
    assert output["shape"] == [rows, HIDDEN]
    bad = json.dumps({"inputs": [{"name": "txt", "shape": [1, 1], "datatype": "BYTES"}]})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=bad.encode()), timeout=30)
    assert refused.value.code == 400


def test_python_client_example_sends_strings_over_http_and_grpc(running: LocalServer) -> None:
    example = ROOT / "examples" / "clients" / "text_client.py"
    server = running.server
    result = subprocess.run(
        [
            sys.executable, str(example), "--model", "tinycls", "--http", server.http_url,
            "--grpc", server.grpc_url, "A first review.", "A second, longer review text.",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("label ") == 4  # two texts, two protocols
    assert "HTTP and gRPC agree" in result.stdout


def test_text_array_keeps_bytes_as_sent() -> None:
    array = text_array(["é", b"\xff"])
    assert array.shape == (2, 1) and array[0, 0] == "é".encode() and array[1, 0] == b"\xff"
