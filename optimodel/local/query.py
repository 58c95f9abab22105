"""`optimodel query`: send texts to a served model and print what came back.

TARGET is a built repository (served here for the query, then stopped) or the URL of a running
Triton server (http://host:port for HTTP, grpc://host:port for gRPC). Texts go to the text-in
ensemble as a BYTES tensor of shape [rows, 1]; embeddings are printed as shape and norm, a
classifier's answers as label and score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from optimodel.model_builder.served.postprocess_model import EMBEDDINGS, LABEL, LOGITS, SCORE
from optimodel.model_builder.served.tokenize_model import TEXT_INPUT

Protocol = Literal["http", "grpc"]
Array = npt.NDArray[Any]


class QueryError(RuntimeError):
    """The server refused the query or could not be reached; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """Where a query goes: protocol and host:port."""

    protocol: Protocol
    address: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """`http://h:p`, `grpc://h:p` or a bare `h:p` (HTTP)."""
        if url.startswith("grpc://"):
            return cls("grpc", url.removeprefix("grpc://").rstrip("/"))
        address = url.removeprefix("http://").rstrip("/")
        if "://" in address or not address:
            raise ValueError(f"{url!r}: use http://host:port or grpc://host:port")
        return cls("http", address)


def text_array(texts: Sequence[str | bytes]) -> Array:
    """The `text` input: one row per text, UTF-8 bytes (bytes are sent as they are)."""
    rows = [t if isinstance(t, bytes) else t.encode() for t in texts]
    return np.array(rows, dtype=np.object_).reshape(-1, 1)


def infer_texts(
    endpoint: Endpoint, model: str, texts: Sequence[str | bytes], timeout_s: float = 60.0
) -> dict[str, Array]:
    """One request of all TEXTS to MODEL; every output by name."""
    from tritonclient.utils import InferenceServerException

    array = text_array(texts)
    try:
        if endpoint.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            grpc_client = grpcclient.InferenceServerClient(endpoint.address)
            try:
                tensor = grpcclient.InferInput(TEXT_INPUT, list(array.shape), "BYTES")
                tensor.set_data_from_numpy(array)
                result = grpc_client.infer(model, [tensor], client_timeout=timeout_s)
                names = [o.name for o in result.get_response().outputs]
                return {name: np.asarray(result.as_numpy(name)) for name in names}
            finally:
                grpc_client.close()
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(
            endpoint.address, network_timeout=timeout_s, connection_timeout=timeout_s
        )
        try:
            tensor = httpclient.InferInput(TEXT_INPUT, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array, binary_data=False)
            result = client.infer(model, [tensor])
            names = [o["name"] for o in result.get_response()["outputs"]]
            return {name: np.asarray(result.as_numpy(name)) for name in names}
        finally:
            client.close()
    except InferenceServerException as error:
        raise QueryError(f"{model} at {endpoint.address}: {error.message()}") from error
    except OSError as error:
        raise QueryError(f"cannot reach {endpoint.address}: {error}") from error


def text_models(endpoint: Endpoint) -> list[str]:
    """The text-in models (ensembles taking `text`) a running server serves."""
    from tritonclient.utils import InferenceServerException

    try:
        if endpoint.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            grpc_client = grpcclient.InferenceServerClient(endpoint.address)
            try:
                index = grpc_client.get_model_repository_index(as_json=True).get("models", [])
                configs = [
                    grpc_client.get_model_config(m["name"], as_json=True)["config"]
                    for m in index
                    if m.get("state") == "READY"
                ]
            finally:
                grpc_client.close()
        else:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(endpoint.address)
            try:
                index = client.get_model_repository_index()
                configs = [
                    client.get_model_config(m["name"]) for m in index if m.get("state") == "READY"
                ]
            finally:
                client.close()
    except InferenceServerException as error:
        raise QueryError(f"{endpoint.address}: {error.message()}") from error
    except OSError as error:
        raise QueryError(f"cannot reach {endpoint.address}: {error}") from error
    return sorted(
        config["name"]
        for config in configs
        if config.get("platform") == "ensemble"
        and any(tensor.get("name") == TEXT_INPUT for tensor in config.get("input", []))
    )


def describe_answers(texts: Sequence[str | bytes], outputs: dict[str, Array]) -> list[str]:
    """One line per text: embedding shape and norm, or label and score."""
    lines = []
    for row, text in enumerate(texts):
        shown = text.decode(errors="replace") if isinstance(text, bytes) else text
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        if LABEL in outputs:
            label = outputs[LABEL][row].reshape(-1)[0]
            label = label.decode() if isinstance(label, bytes) else str(label)
            score = float(outputs[SCORE][row].reshape(-1)[0])
            logits = np.round(outputs[LOGITS][row], 4).tolist() if LOGITS in outputs else []
            lines.append(f"{shown!r}: label {label}, score {score:.4f}, logits {logits}")
        elif EMBEDDINGS in outputs:
            vector = outputs[EMBEDDINGS][row]
            norm = float(np.linalg.norm(vector))
            head = np.round(vector[:4], 4).tolist()
            lines.append(
                f"{shown!r}: embedding shape {list(vector.shape)}, norm {norm:.6f}, "
                f"first values {head}"
            )
        else:
            shapes = {name: list(value.shape) for name, value in outputs.items()}
            lines.append(f"{shown!r}: outputs {shapes}")
    return lines


def query_target(
    target: str, texts: Sequence[str], model: str | None, protocol: Protocol
) -> tuple[str, dict[str, Array]]:
    """Serve TARGET here if it is a folder, else query the URL; (model, outputs)."""
    path = Path(target)
    if "://" not in target and path.exists():
        from optimodel.local.repository import find_built_models
        from optimodel.local.server import ServerPorts, free_ports, serve_built_repository

        built = find_built_models(path)
        name = model or built[0].name
        with serve_built_repository(path, ports=ServerPorts(*free_ports(3))) as running:
            server = running.server
            address = server.grpc_url if protocol == "grpc" else server.http_url
            return name, infer_texts(Endpoint(protocol, address), name, texts)
    endpoint = Endpoint.parse(target)
    if model is None:
        found = text_models(endpoint)
        if len(found) != 1:
            raise QueryError(
                f"{target} serves {len(found)} text-in models {found}: pass --model NAME"
            )
        model = found[0]
    return model, infer_texts(endpoint, model, texts)
