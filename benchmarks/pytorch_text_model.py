"""What users run without optimodel: the original PyTorch fp32 model behind the same Triton.

A python-backend model (copied as `<name>-pytorch/1/model.py` by benchmarks/serving_batching.py)
that takes `text` like the ensemble and answers the same outputs, computed the plain way: the
builder's own reference (`load_model`: the source model, its tokenizer, its pooling head, fp32,
default attention), one request at a time (the config has no dynamic batching), each request's
texts tokenized with truncation at max length and run by torch, then the same answer math as
the ensemble's last step. Runs in the local stub, which uses this environment's Python.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

SOURCE_PARAMETER = "source_uri"
TASK_PARAMETER = "task"
MAX_LENGTH_PARAMETER = "max_sequence_length"


def _parameter(config: dict[str, Any], key: str) -> str:
    return str(config["parameters"][key]["string_value"])


class TritonPythonModel:
    """Triton's python-backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch
        import triton_python_backend_utils  # type: ignore[import-not-found]

        from optimodel.model_builder.load import load_model
        from optimodel.model_builder.served.postprocess_model import PostprocessSettings
        from optimodel.model_builder.served.tokenize_model import decode_rows
        from optimodel.model_builder.spec import Source

        self.pb = triton_python_backend_utils
        self.torch = torch
        config = json.loads(args["model_config"])
        source = Source(
            uri=_parameter(config, SOURCE_PARAMETER),
            task=_parameter(config, TASK_PARAMETER),
            max_sequence_length=int(_parameter(config, MAX_LENGTH_PARAMETER)),
        )
        self.loaded = load_model(source)
        self.loaded.task_model.eval()
        self.decode_rows = decode_rows
        id2label = getattr(self.loaded.config, "id2label", None) or {}
        self.settings = PostprocessSettings(
            task=source.task, labels=[str(id2label[i]) for i in sorted(id2label)]
        )
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        from optimodel.model_builder.served.postprocess_model import answers

        pb, torch = self.pb, self.torch
        responses = []
        for request in requests:
            texts = self.decode_rows(pb.get_input_tensor_by_name(request, "text").as_numpy())
            encoded = self.loaded.tokenizer(
                texts,
                padding="longest",
                truncation=True,
                max_length=self.loaded.max_sequence_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                output = self.loaded.task_model(encoded["input_ids"], encoded["attention_mask"])
            computed = answers(self.settings, output.float().numpy().astype(np.float32))
            tensors = [pb.Tensor(name, computed[name]) for name in self.output_names]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
