"""The python-backend model that serves a built `model.onnx` with onnxruntime inside Triton.

The tritonserver in the nvidia-pytriton wheel has only the python backend, so local serving
copies this file as `<name>-model/1/model.py` beside (a link to) the built `model.onnx`: the
model step of the text-in ensemble, and the raw-tensor model clients may call directly.
Triton's dynamic batcher hands `execute` every request of a batch at once; they run as ONE
onnxruntime call: inputs are concatenated, run, and the outputs split back per request. As on
the cluster's onnxruntime backend, the batcher merges only requests of equal shape (no ragged
batching here), so the zero-padding below only matters to callers of these functions; zeros
in the attention mask mean "ignore this position", so results equal each request alone.

A bad request fails alone: each is checked before batching (inputs present, 2-D, one shape,
ids inside the vocabulary, no longer than the model's positions: the limits the builder
recorded), and if the batched run still fails, every request of the batch runs on its own,
so only the one that cannot run gets an error.

This file runs inside the backend stub: it imports only numpy, onnxruntime and (inside the
server only, hence imported in `initialize`) Triton's `triton_python_backend_utils`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

Array = npt.NDArray[Any]

# Config `parameters` this model reads (rendered by optimodel.local.repository).
THREADS_PARAMETER = "intra_op_threads"
SPINNING_PARAMETER = "allow_spinning"
MODEL_FILE_PARAMETER = "onnx_file"
VOCAB_SIZE_PARAMETER = "vocab_size"
MAX_SEQUENCE_PARAMETER = "max_sequence_length"


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value else default


def pad_and_concatenate(
    per_request: list[list[Array]], variable_axes: list[bool]
) -> tuple[list[Array], list[int], list[int]]:
    """Stack each input over requests, zero-padding axis 1 where it is variable.

    Returns the stacked inputs, each request's batch size and each request's sequence length.
    """
    sizes = [arrays[0].shape[0] for arrays in per_request]
    lengths = [arrays[0].shape[1] if arrays[0].ndim > 1 else 0 for arrays in per_request]
    stacked: list[Array] = []
    for index, variable in enumerate(variable_axes):
        parts = [arrays[index] for arrays in per_request]
        if variable:
            longest = max(part.shape[1] for part in parts)
            parts = [
                part
                if part.shape[1] == longest
                else np.pad(
                    part, [(0, 0), (0, longest - part.shape[1])] + [(0, 0)] * (part.ndim - 2)
                )
                for part in parts
            ]
        stacked.append(parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0))
    return stacked, sizes, lengths


def request_problem(
    arrays: list[Array | None],
    names: list[str],
    variable_axes: list[bool],
    vocab_size: int,
    max_sequence_length: int,
) -> str | None:
    """Why one request cannot run (named inputs, the value, the limit), or None."""
    for name, array in zip(names, arrays, strict=True):
        if array is None:
            return f"input {name} is missing: send {', '.join(names)}"
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
            return f"{name} has shape {list(array.shape)}: send [batch, sequence], both >= 1"
    present = [a for a in arrays if a is not None]
    shapes = {a.shape[:2] for a, v in zip(present, variable_axes, strict=True) if v}
    if len(shapes) > 1:
        return (
            f"inputs {names} must share [batch, sequence] shape, got {sorted(shapes)}: "
            "send one attention_mask per input_ids row"
        )
    ids = present[0]
    if max_sequence_length and ids.shape[1] > max_sequence_length:
        return (
            f"sequence length {ids.shape[1]} is longer than the model's "
            f"{max_sequence_length} positions: truncate to {max_sequence_length} tokens"
        )
    if vocab_size and ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = np.argwhere((ids < 0) | (ids >= vocab_size))[0]
        return (
            f"{names[0]} holds id {int(ids[tuple(bad)])} at {bad.tolist()}, outside the "
            f"vocabulary 0..{vocab_size - 1}: tokenize with the model's tokenizer"
        )
    return None


def split_outputs(
    outputs: list[Array], sizes: list[int], lengths: list[int], variable_axes: list[bool]
) -> list[list[Array]]:
    """Cut the batched outputs back into one list per request (trimming padded axes)."""
    per_request: list[list[Array]] = []
    start = 0
    for size, length in zip(sizes, lengths, strict=True):
        parts = []
        for output, variable in zip(outputs, variable_axes, strict=True):
            part = output[start : start + size]
            if variable:
                part = part[:, :length]
            parts.append(np.ascontiguousarray(part))
        per_request.append(parts)
        start += size
    return per_request


class TritonPythonModel:
    """Triton's python-backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils  # type: ignore[import-not-found]

        self.pb = triton_python_backend_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        model_path = version_dir / _parameter(config, MODEL_FILE_PARAMETER, "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, THREADS_PARAMETER, "0"))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning intra-op threads keep cores busy between batches; on a small machine that
        # starves Triton's frontend and the clients sharing the cores. Off unless asked.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", _parameter(config, SPINNING_PARAMETER, "0")
        )
        self.session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        # A -1 as the first non-batch dim is the sequence axis: padded in, trimmed out.
        self.input_variable = [tensor["dims"][0] == -1 for tensor in config["input"]]
        self.output_variable = [tensor["dims"][0] == -1 for tensor in config["output"]]
        self.vocab_size = int(_parameter(config, VOCAB_SIZE_PARAMETER, "0"))
        self.max_sequence_length = int(_parameter(config, MAX_SEQUENCE_PARAMETER, "0"))

    def _error(self, message: str) -> Any:
        return self.pb.InferenceResponse(error=self.pb.TritonError(message))

    def _respond(self, parts: list[Array]) -> Any:
        tensors = [
            self.pb.Tensor(name, part) for name, part in zip(self.output_names, parts, strict=True)
        ]
        return self.pb.InferenceResponse(output_tensors=tensors)

    def _run(self, per_request: list[list[Array]]) -> list[list[Array]]:
        stacked, sizes, lengths = pad_and_concatenate(per_request, self.input_variable)
        outputs = self.session.run(
            self.output_names, dict(zip(self.input_names, stacked, strict=True))
        )
        return split_outputs(outputs, sizes, lengths, self.output_variable)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = self.pb
        responses: list[Any] = [None] * len(requests)
        valid: list[int] = []
        per_request: list[list[Array]] = []
        for position, request in enumerate(requests):
            arrays: list[Array | None] = []
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                arrays.append(None if tensor is None else tensor.as_numpy())
            problem = request_problem(
                arrays,
                self.input_names,
                self.input_variable,
                self.vocab_size,
                self.max_sequence_length,
            )
            if problem is not None:
                responses[position] = self._error(problem)
                continue
            valid.append(position)
            per_request.append([a for a in arrays if a is not None])
        if not per_request:
            return responses
        try:
            results = self._run(per_request)
        except Exception:  # one request the checks did not catch: run each alone
            for position, inputs in zip(valid, per_request, strict=True):
                try:
                    responses[position] = self._respond(self._run([inputs])[0])
                except Exception as error:
                    responses[position] = self._error(f"inference failed: {error}")
            return responses
        for position, parts in zip(valid, results, strict=True):
            responses[position] = self._respond(parts)
        return responses

    def finalize(self) -> None:
        self.session = None
