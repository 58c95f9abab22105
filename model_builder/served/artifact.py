"""Write one served repository into the build's staging folder: the four models of the text
path, their configs, the tokenizer files and the facts the python steps read.

Facts of the build (truncation length, padding ids, class labels) go into the steps' own
files; serving settings (batching, instances, cache) only into the configs, which the
operator re-renders into its ConfigMap, so a batching change never needs a rebuild.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimodel.model_builder.errors import UnsupportedModelError
from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.served.layout import (
    PYTHON_MODEL_FILE,
    ServedRepository,
    step_sources,
)
from optimodel.model_builder.served.postprocess_model import PostprocessSettings
from optimodel.model_builder.served.tokenize_model import (
    TOKENIZER_FILE,
    TokenizeSettings,
    load_tokenizer,
)
from optimodel.model_builder.spec import Serving, Task
from optimodel.model_builder.triton_config import ModelSignature

CHECKED_TEXTS = 256  # eval texts tokenized both ways at build time


def tokenize_settings(tokenizer: Any, max_length: int) -> TokenizeSettings:
    """How the original pipeline tokenizes: truncation at `max_length`, its padding ids."""
    if not getattr(tokenizer, "is_fast", False):
        raise UnsupportedModelError(
            f"tokenizer {type(tokenizer).__name__} is not a fast (Rust) tokenizer",
            field="spec.source.uri",
            fix="use a model whose tokenizer ships tokenizer.json (every supported encoder "
            "family has one); the served tokenizer step needs it",
        )
    return TokenizeSettings(
        max_length=max_length,
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        truncation_side=str(getattr(tokenizer, "truncation_side", "right")),
    )


def postprocess_settings(task: Task, model_config: Any) -> PostprocessSettings:
    """The task head's labels and score function, as the HF pipeline reads them."""
    if task != "text-classification":
        return PostprocessSettings(task=task)
    id2label = dict(getattr(model_config, "id2label", None) or {})
    count = int(getattr(model_config, "num_labels", len(id2label)) or len(id2label))
    labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(count)]
    multi = getattr(model_config, "problem_type", None) == "multi_label_classification"
    function = "sigmoid" if multi or count == 1 else "softmax"
    return PostprocessSettings(task=task, labels=labels, function=function)


def assemble_served_repository(
    staging: Path,
    name: str,
    *,
    task: Task,
    signature: ModelSignature,
    serving: Serving,
    model: Path,
    tokenizer: Any,
    max_length: int,
    model_config: Any,
    check_texts: Sequence[str] = (),
) -> Path:
    """Lay out `staging/<name>/` (the served repository of `name`) and return it."""
    layout = ServedRepository.at(staging / name)
    tokenize = tokenize_settings(tokenizer, max_length)
    configs = render_served_configs(name, task, signature, serving, max_sequence_length=max_length)
    for model_name, text in configs.items():
        layout.version(model_name).mkdir(parents=True)
        layout.config(model_name).write_text(text)
    shutil.copyfile(model, layout.onnx)
    for suffix, source in step_sources().items():
        shutil.copyfile(source, layout.version(name + suffix) / PYTHON_MODEL_FILE)
    tokenizer.save_pretrained(str(layout.tokenizer_dir))
    if not (layout.tokenizer_dir / TOKENIZER_FILE).is_file():
        raise UnsupportedModelError(
            f"saving the tokenizer of {name!r} wrote no {TOKENIZER_FILE}",
            field="spec.source.uri",
            fix="use a model with a fast tokenizer (tokenizer.json)",
        )
    tokenize.write(layout.tokenize_settings)
    postprocess_settings(task, model_config).write(layout.postprocess_settings)
    check_served_tokenizer(layout, tokenizer, check_texts)
    return layout.root


def check_served_tokenizer(layout: ServedRepository, tokenizer: Any, texts: Sequence[str]) -> None:
    """The tokenizer step's ids equal the original pipeline's on TEXTS, or the build fails."""
    settings = TokenizeSettings.read(layout.tokenize_settings)
    served = load_tokenizer(layout.tokenizer_dir, settings)
    # The joined texts run past max_length: truncation is checked too.
    for text in [*list(texts)[:CHECKED_TEXTS], " ".join(texts)[:20_000]]:
        expected = tokenizer(text, truncation=True, max_length=settings.max_length)["input_ids"]
        got = served.encode(text, add_special_tokens=True).ids
        if list(expected) != list(got):
            raise UnsupportedModelError(
                f"the served tokenizer differs from the original on {text[:60]!r}: "
                f"{list(got)[:12]}… vs {list(expected)[:12]}…",
                field="spec.source.uri",
                fix="report this model; its tokenizer.json does not reproduce its tokenizer",
            )
