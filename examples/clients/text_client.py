"""Send texts to an optimodel text-in model with tritonclient, over HTTP and over gRPC.

The served model takes `text` (BYTES, shape [rows, 1], UTF-8) and answers `embeddings`
(L2-normalized) or, for a classifier, `logits`, `label` and `score`. No tokenizer needed here.

    optimodel serve build/minilm &
    python examples/clients/text_client.py --model minilm "A first sentence." "A second one."

Prints one line per text and protocol; exits 1 if HTTP and gRPC disagree.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

Array = npt.NDArray[Any]


def text_tensor(module: Any, texts: list[str]) -> Any:
    """The `text` input: one row per text, as UTF-8 bytes."""
    array = np.array([text.encode("utf-8") for text in texts], dtype=np.object_).reshape(-1, 1)
    tensor = module.InferInput("text", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def over_http(url: str, model: str, texts: list[str]) -> dict[str, Array]:
    client = httpclient.InferenceServerClient(url)
    try:
        result = client.infer(model, [text_tensor(httpclient, texts)])
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}
    finally:
        client.close()


def over_grpc(url: str, model: str, texts: list[str]) -> dict[str, Array]:
    client = grpcclient.InferenceServerClient(url)
    try:
        result = client.infer(model, [text_tensor(grpcclient, texts)])
        return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
    finally:
        client.close()


def describe(outputs: dict[str, Array], row: int) -> str:
    if "label" in outputs:
        label = outputs["label"][row, 0].decode()
        return f"label {label}, score {float(outputs['score'][row, 0]):.4f}"
    vector = outputs["embeddings"][row]
    return f"embedding of {vector.shape[0]} floats, norm {float(np.linalg.norm(vector)):.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--http", default="localhost:8000", help="HTTP host:port")
    parser.add_argument("--grpc", default="localhost:8001", help="gRPC host:port")
    args = parser.parse_args()
    answers = {
        "http": over_http(args.http, args.model, args.texts),
        "grpc": over_grpc(args.grpc, args.model, args.texts),
    }
    for row, text in enumerate(args.texts):
        for protocol, outputs in answers.items():
            print(f"{protocol}: {text[:40]!r}: {describe(outputs, row)}")
    main_output = "logits" if "logits" in answers["http"] else "embeddings"
    agree = np.allclose(answers["http"][main_output], answers["grpc"][main_output], atol=1e-6)
    print("HTTP and gRPC agree" if agree else "HTTP and gRPC DISAGREE")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
