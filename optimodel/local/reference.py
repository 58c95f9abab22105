"""The text path computed in this process, as the original pipeline computes it: what the
served answers are checked against (the demo, the tests).

The model's own tokenizer through transformers (truncation at the built max length, padded
to the longest text), onnxruntime on the built model.onnx, then the answer step's math.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from optimodel.local.repository import BuiltModel
from optimodel.model_builder.served.postprocess_model import PostprocessSettings, answers
from optimodel.model_builder.served.tokenize_model import TokenizeSettings

Array = npt.NDArray[Any]


class TextReference:
    """The original tokenizer and the built model.onnx of one built model, in process."""

    def __init__(self, model: BuiltModel) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model = model
        self.settings = TokenizeSettings.read(model.layout.tokenize_settings)
        self.postprocess = PostprocessSettings.read(model.layout.postprocess_settings)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model.tokenizer_dir))
        self.session = ort.InferenceSession(
            str(model.onnx_path), providers=["CPUExecutionProvider"]
        )
        self.inputs = [tensor.name for tensor in model.signature.inputs]
        self.output = model.signature.outputs[0].name

    def token_ids(self, texts: Sequence[str]) -> dict[str, Array]:
        """The model's inputs for TEXTS as one batch padded to its longest text."""
        encoded = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.settings.max_length,
            return_tensors="np",
        )
        return {name: np.asarray(encoded[name], dtype=np.int64) for name in self.inputs}

    def answers(self, texts: Sequence[str]) -> dict[str, Array]:
        """The ensemble's outputs for TEXTS run as one batch."""
        output = self.session.run([self.output], self.token_ids(texts))[0]
        return answers(self.postprocess, np.asarray(output, dtype=np.float32))

    def alone(self, texts: Sequence[str]) -> list[dict[str, Array]]:
        """Each text's outputs run on its own (no padding at all)."""
        return [self.answers([text]) for text in texts]
