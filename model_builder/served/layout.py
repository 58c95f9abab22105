"""Names and paths of the served repository: the one layout the builder writes, the cluster
copies and local serving reads.

    OUT/<name>/                           the served repository (Triton --model-repository)
      report.json                         the build report
      <name>/config.pbtxt                 ensemble: text in, answers out
      <name>/1/                           (empty: Triton wants a version folder)
      <name>-tokenize/config.pbtxt        python backend: the model's own tokenizer
      <name>-tokenize/1/model.py          served/tokenize_model.py
      <name>-tokenize/1/tokenizer/        the source model's tokenizer files
      <name>-tokenize/1/tokenize.json     truncation length and padding ids
      <name>-model/config.pbtxt           onnxruntime backend: the raw-tensor model
      <name>-model/1/model.onnx           the optimized model
      <name>-postprocess/config.pbtxt     python backend: normalize, or label and score
      <name>-postprocess/1/model.py       served/postprocess_model.py
      <name>-postprocess/1/postprocess.json

Clients send text to `<name>`; clients that tokenize themselves call `<name>-model` with
input_ids/attention_mask as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optimodel.model_builder.report import CONFIG_FILE, MODEL_FILE, REPORT_FILE
from optimodel.model_builder.served import postprocess_model, tokenize_model

VERSION = "1"
PYTHON_MODEL_FILE = "model.py"
TOKENIZE_SUFFIX = "-tokenize"
MODEL_SUFFIX = "-model"
POSTPROCESS_SUFFIX = "-postprocess"


@dataclass(frozen=True)
class ServedNames:
    """The Triton model names of one served text model."""

    ensemble: str
    tokenize: str
    model: str
    postprocess: str

    @classmethod
    def of(cls, name: str) -> ServedNames:
        return cls(
            ensemble=name,
            tokenize=name + TOKENIZE_SUFFIX,
            model=name + MODEL_SUFFIX,
            postprocess=name + POSTPROCESS_SUFFIX,
        )

    def all(self) -> list[str]:
        """Every model of the repository, the ensemble first."""
        return [self.ensemble, self.tokenize, self.model, self.postprocess]


@dataclass(frozen=True)
class ServedRepository:
    """Paths inside one served repository folder (OUT/<name>)."""

    root: Path
    names: ServedNames

    @classmethod
    def at(cls, root: Path, name: str | None = None) -> ServedRepository:
        return cls(root, ServedNames.of(name or root.name))

    def config(self, model: str) -> Path:
        return self.root / model / CONFIG_FILE

    def version(self, model: str) -> Path:
        return self.root / model / VERSION

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def onnx(self) -> Path:
        return self.version(self.names.model) / MODEL_FILE

    @property
    def tokenizer_dir(self) -> Path:
        return self.version(self.names.tokenize) / tokenize_model.TOKENIZER_DIR

    @property
    def tokenize_settings(self) -> Path:
        return self.version(self.names.tokenize) / tokenize_model.SETTINGS_FILE

    @property
    def postprocess_settings(self) -> Path:
        return self.version(self.names.postprocess) / postprocess_model.SETTINGS_FILE

    def is_served_layout(self) -> bool:
        """Whether the folder holds this layout's ensemble and raw-tensor model."""
        return (
            self.config(self.names.ensemble).is_file() and self.config(self.names.model).is_file()
        )


def step_sources() -> dict[str, Path]:
    """Which python-backend file becomes `<step>/1/model.py`, by name suffix."""
    return {
        TOKENIZE_SUFFIX: Path(tokenize_model.__file__),
        POSTPROCESS_SUFFIX: Path(postprocess_model.__file__),
    }
