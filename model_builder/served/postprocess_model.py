"""The answer step of the text-in ensemble: a Triton python-backend model after the model step.

The builder copies this file as `<name>-postprocess/1/model.py`. Feature extraction: the
model's embeddings, L2-normalized. Text classification: the logits as they are, plus the
label and its score, as the Hugging Face text-classification pipeline computes them
(softmax over the classes, or a sigmoid for one-logit and multi-label models).

Runs in Triton's python backend stub (cluster image: Python 3.10); imports only numpy and,
inside the server, `triton_python_backend_utils`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

SETTINGS_FILE = "postprocess.json"
EMBEDDINGS = "embeddings"
LOGITS = "logits"
LABEL = "label"
SCORE = "score"

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PostprocessSettings:
    """What the builder knew about the task head (postprocess.json)."""

    task: str
    labels: list[str] = field(default_factory=list)
    function: str = "softmax"  # or "sigmoid"

    @classmethod
    def read(cls, path: Path) -> PostprocessSettings:
        data = json.loads(path.read_text())
        return cls(
            task=str(data["task"]),
            labels=[str(label) for label in data.get("labels", [])],
            function=str(data.get("function", "softmax")),
        )

    def write(self, path: Path) -> None:
        payload = {"task": self.task, "labels": self.labels, "function": self.function}
        path.write_text(json.dumps(payload, indent=2) + "\n")


def normalize(embeddings: FloatArray) -> FloatArray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return np.asarray(embeddings / np.maximum(norms, 1e-12), dtype=np.float32)


def class_scores(logits: FloatArray, function: str) -> FloatArray:
    """Per-class scores: softmax over the classes, or an element-wise sigmoid."""
    values = logits.astype(np.float64)
    if function == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-values)), dtype=np.float32)
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


def classify(
    logits: FloatArray, labels: Sequence[str], function: str
) -> tuple[npt.NDArray[np.object_], FloatArray]:
    """Each row's best label ([rows, 1] bytes) and its score ([rows, 1] float32)."""
    scores = class_scores(logits, function)
    best = scores.argmax(axis=-1)
    names = [(labels[i] if i < len(labels) else f"LABEL_{i}").encode() for i in best.tolist()]
    label = np.array(names, dtype=np.object_).reshape(-1, 1)
    score = np.take_along_axis(scores, best.reshape(-1, 1), axis=-1).astype(np.float32)
    return label, score


def answers(settings: PostprocessSettings, output: FloatArray) -> dict[str, npt.NDArray[Any]]:
    """The ensemble's outputs for one request from the model step's output."""
    if settings.task == "text-classification":
        label, score = classify(output, settings.labels, settings.function)
        return {LOGITS: output.astype(np.float32), LABEL: label, SCORE: score}
    return {EMBEDDINGS: normalize(output)}


class TritonPythonModel:
    """Triton's python-backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils  # type: ignore[import-not-found]

        self.pb = triton_python_backend_utils
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.settings = PostprocessSettings.read(version_dir / SETTINGS_FILE)
        self.input_name = config["input"][0]["name"]
        self.output_names = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses = []
        for request in requests:
            output = pb.get_input_tensor_by_name(request, self.input_name).as_numpy()
            computed = answers(self.settings, output)
            tensors = [pb.Tensor(name, computed[name]) for name in self.output_names]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
