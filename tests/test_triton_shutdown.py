"""What the rendered shutdown relies on, against the real tritonserver 2.51 (the version of the
cluster's image): after SIGTERM, Triton with the rendered `--exit-timeout-secs` answers the
request it had accepted, refuses new connections, and exits within the timeout. Hence the
preStop drain before SIGTERM (no new request may reach it then) and a grace period of drain
+ exit timeout + 5 s (render/deployment.py)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from optimodel.local.server import ServerPorts, TritonServer, free_ports
from optimodel.operator.preview import render_model
from optimodel.operator.settings import OperatorSettings
from tests.test_capacity_render import manifest, report

pytestmark = pytest.mark.triton

BATCH_SECONDS = 3.0
CONFIG = """name: "slow"
backend: "python"
max_batch_size: 0
input [{ name: "INPUT" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "OUTPUT" data_type: TYPE_FP32 dims: [1] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
MODEL = f"""import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({BATCH_SECONDS})  # a long batch, still running when SIGTERM comes
        doubled = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() * 2 for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x)]) for x in doubled]
"""


def rendered_exit_timeout(settings: OperatorSettings) -> int:
    """--exit-timeout-secs of the Triton container the operator renders."""
    children = render_model(manifest(), settings, report()).manifests
    deployment = next(c for c in children if c["kind"] == "Deployment")
    [argument] = [
        a
        for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if a.startswith("--exit-timeout-secs=")
    ]
    return int(argument.split("=", 1)[1])


def infer(url: str, value: float) -> tuple[int | None, Any]:
    body = {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "FP32", "data": [value]}]}
    request = urllib.request.Request(
        f"{url}/v2/models/slow/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:  # refused or reset: no answer at all
        return None, repr(error)


def test_sigterm_answers_the_accepted_request_and_refuses_new_ones(tmp_path: Path) -> None:
    settings = OperatorSettings.model_validate({"serving": {"shutdown": {"exitTimeoutSeconds": 8}}})
    timeout = rendered_exit_timeout(settings)
    assert timeout == 8
    (tmp_path / "repo" / "slow" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "slow" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "repo" / "slow" / "1" / "model.py").write_text(MODEL)
    server = TritonServer(
        tmp_path / "repo", ports=ServerPorts(*free_ports(3)), exit_timeout_s=timeout
    )
    with server:
        assert f"--exit-timeout-secs={timeout}" in server.command_line
        url = f"http://{server.http_url}"
        answers: list[tuple[int | None, Any]] = []
        accepted = threading.Thread(target=lambda: answers.append(infer(url, 1.5)))
        accepted.start()
        time.sleep(BATCH_SECONDS / 4)  # the request is in its batch now
        assert server.process is not None
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        status, detail = infer(url, 2.0)
        assert status is None, f"a request after SIGTERM was answered: {status} {detail}"
        accepted.join(30)
        [(status, answer)] = answers
        assert status == 200 and answer["outputs"][0]["data"] == [3.0]
        assert server.process.wait(timeout + 5) == 0
        assert time.monotonic() - signalled < timeout + 5
