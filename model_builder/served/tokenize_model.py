"""The tokenizer step of the text-in ensemble: a Triton python-backend model, text in, ids out.

The builder copies this file as `<name>-tokenize/1/model.py`; it runs in Triton's python
backend stub, in the cluster image (images/triton.Dockerfile, Python 3.10) and locally. It
imports only numpy, `tokenizers` (the Rust library behind the model's fast tokenizer, so the
ids equal the original pipeline's) and, inside the server, `triton_python_backend_utils`.

Triton's dynamic batcher merges requests of equal shape only (the onnxruntime backend never
pads). So one execute tokenizes every request Triton batched here, groups the requests by
length (`plan_length_groups`), pads each group to its longest text rounded up to a length
bucket (`bucketed_length`) and answers group by group, shortest first: the model step's
batcher sees runs of equal shape and makes each group one model batch, and groups from
different executions that fall in one bucket batch together while they wait for the model.
A request that cannot be tokenized (not UTF-8) gets its own error; its batch-mates are
answered as if it had not been there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TEXT_INPUT = "text"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
SETTINGS_FILE = "tokenize.json"
# Config `parameters` this model reads (rendered by served/configs.py).
GROUP_OVERHEAD_PARAMETER = "group_overhead_tokens"
DEFAULT_GROUP_OVERHEAD_TOKENS = 256
LENGTH_BUCKET_PARAMETER = "length_bucket_tokens"
DEFAULT_LENGTH_BUCKET_TOKENS = 1

Int64Array = npt.NDArray[np.int64]


class TextRowError(ValueError):
    """One row of a request cannot be tokenized; the message names the row and the fix."""


@dataclass(frozen=True)
class TokenizeSettings:
    """What the builder knew about the original pipeline's tokenization (tokenize.json)."""

    max_length: int
    pad_id: int
    pad_type_id: int = 0
    truncation_side: str = "right"

    @classmethod
    def read(cls, path: Path) -> TokenizeSettings:
        data = json.loads(path.read_text())
        return cls(
            max_length=int(data["max_length"]),
            pad_id=int(data["pad_id"]),
            pad_type_id=int(data.get("pad_type_id", 0)),
            truncation_side=str(data.get("truncation_side", "right")),
        )

    def write(self, path: Path) -> None:
        payload = {
            "max_length": self.max_length,
            "pad_id": self.pad_id,
            "pad_type_id": self.pad_type_id,
            "truncation_side": self.truncation_side,
        }
        path.write_text(json.dumps(payload, indent=2) + "\n")


def load_tokenizer(folder: Path, settings: TokenizeSettings) -> Any:
    """The model's own fast tokenizer, truncating as the original pipeline does, no padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    tokenizer.no_padding()
    # transformers calls it with truncation=True, max_length=L: longest_first, stride 0.
    tokenizer.enable_truncation(
        max_length=settings.max_length, stride=0, direction=settings.truncation_side
    )
    return tokenizer


def decode_rows(raw: npt.NDArray[Any]) -> list[str]:
    """The texts of one request's `text` tensor ([rows, 1] of bytes), decoded as UTF-8."""
    if raw.size == 0:
        raise TextRowError(f"{TEXT_INPUT} has no rows: send at least one text per request")
    texts = []
    for row, value in enumerate(raw.reshape(-1)):
        data = value if isinstance(value, bytes) else str(value).encode()
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise TextRowError(
                f"{TEXT_INPUT}[{row}] is not valid UTF-8 (byte {data[error.start]:#04x} at "
                f"offset {error.start}): send the text encoded as UTF-8"
            ) from None
    return texts


def bucketed_length(length: int, bucket_tokens: int, max_length: int) -> int:
    """The padded length of a request `length` tokens long: the next multiple of
    `bucket_tokens`, never beyond `max_length` (what the tokenizer truncates to)."""
    length = max(1, length)
    bucket = max(1, bucket_tokens)
    return max(length, min(-(-length // bucket) * bucket, max_length))


def plan_length_groups(
    lengths: Sequence[int], rows: Sequence[int], overhead_tokens: int
) -> list[list[int]]:
    """Requests (their indices) in groups of similar length, shortest group first.

    A group costs rows × its longest length (padding included) plus `overhead_tokens` (what one
    more model execution costs, in token positions); this picks the cheapest split of the
    length-sorted requests (dynamic programming over the sorted order, O(n²) numpy).
    """
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    sorted_lengths = np.array([lengths[i] for i in order], dtype=np.float64)
    cumulative_rows = np.concatenate([[0.0], np.cumsum([rows[i] for i in order])])
    count = len(order)
    best = np.zeros(count + 1)
    start_of = np.zeros(count + 1, dtype=np.int64)
    for end in range(1, count + 1):
        # A group over sorted positions [start, end) is padded to sorted_lengths[end - 1].
        costs = (
            best[:end]
            + (cumulative_rows[end] - cumulative_rows[:end]) * sorted_lengths[end - 1]
            + overhead_tokens
        )
        start = int(np.argmin(costs))
        best[end], start_of[end] = costs[start], start
    groups: list[list[int]] = []
    end = count
    while end > 0:
        start = int(start_of[end])
        groups.append([order[position] for position in range(start, end)])
        end = start
    groups.reverse()
    return groups


def pad_ids(sequences: Sequence[Sequence[int]], length: int, value: int) -> Int64Array:
    """Rows of ids right-padded with `value` to `length` (int64, [rows, length])."""
    padded = np.full((len(sequences), length), value, dtype=np.int64)
    for row, ids in enumerate(sequences):
        padded[row, : len(ids)] = ids
    return padded


def model_inputs(
    encodings: Sequence[Any], names: Sequence[str], length: int, settings: TokenizeSettings
) -> list[Int64Array]:
    """The model step's inputs for one request's encodings, padded to `length`."""
    tensors = []
    for name in names:
        if name == "input_ids":
            tensors.append(pad_ids([e.ids for e in encodings], length, settings.pad_id))
        elif name == "attention_mask":
            tensors.append(pad_ids([e.attention_mask for e in encodings], length, 0))
        elif name == "token_type_ids":
            tensors.append(pad_ids([e.type_ids for e in encodings], length, settings.pad_type_id))
        else:
            raise ValueError(f"the tokenizer step cannot produce model input {name!r}")
    return tensors


def _parameter(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return str(value) if value else default


class TritonPythonModel:
    """Triton's python-backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils  # type: ignore[import-not-found]

        self.pb = triton_python_backend_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.settings = TokenizeSettings.read(version_dir / SETTINGS_FILE)
        self.tokenizer = load_tokenizer(version_dir / TOKENIZER_DIR, self.settings)
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.overhead_tokens = int(
            _parameter(config, GROUP_OVERHEAD_PARAMETER, str(DEFAULT_GROUP_OVERHEAD_TOKENS))
        )
        self.bucket_tokens = int(
            _parameter(config, LENGTH_BUCKET_PARAMETER, str(DEFAULT_LENGTH_BUCKET_TOKENS))
        )

    def _encode(self, texts: list[str]) -> list[Any]:
        return list(self.tokenizer.encode_batch(texts, add_special_tokens=True))

    def execute(self, requests: list[Any]) -> None:
        pb = self.pb
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        invalid_argument = pb.TritonError.INVALID_ARG
        texts: dict[int, list[str]] = {}
        errors: dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                texts[index] = decode_rows(
                    pb.get_input_tensor_by_name(request, TEXT_INPUT).as_numpy()
                )
            except TextRowError as error:
                errors[index] = str(error)
        encodings: dict[int, list[Any]] = {}
        try:
            flat = self._encode([text for index in texts for text in texts[index]])
            start = 0
            for index, rows in texts.items():
                encodings[index] = flat[start : start + len(rows)]
                start += len(rows)
        except Exception:  # one bad request must not fail its batch-mates: retry one by one
            for index, rows in texts.items():
                try:
                    encodings[index] = self._encode(rows)
                except Exception as error:
                    errors[index] = f"{TEXT_INPUT}: cannot be tokenized ({error})"
        for index, message in errors.items():
            # INVALID_ARG: the client's input is wrong (HTTP 400), not the server.
            response = pb.InferenceResponse(error=pb.TritonError(message, invalid_argument))
            requests[index].get_response_sender().send(response, flags=final)
        ready = [index for index in encodings if index not in errors]
        # At least one position, so even a tokenizer without special tokens feeds a valid shape.
        lengths = [
            bucketed_length(
                max(len(e.ids) for e in encodings[i]), self.bucket_tokens, self.settings.max_length
            )
            for i in ready
        ]
        row_counts = [len(encodings[i]) for i in ready]
        for group in plan_length_groups(lengths, row_counts, self.overhead_tokens):
            length = max(lengths[position] for position in group)
            for position in group:
                index = ready[position]
                arrays = model_inputs(encodings[index], self.output_names, length, self.settings)
                tensors = [
                    pb.Tensor(name, array)
                    for name, array in zip(self.output_names, arrays, strict=True)
                ]
                response = pb.InferenceResponse(output_tensors=tensors)
                requests[index].get_response_sender().send(response, flags=final)

    def finalize(self) -> None:
        self.tokenizer = None
