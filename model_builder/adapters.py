"""LoRA adapters: merge a PEFT adapter into its base model before anything else runs.

After `merge_and_unload` the model is an ordinary transformers model whose weights are
base + B·A·scale, so pruning, export and quantization see one dense model and the accuracy
gate compares the optimized artifact with base + adapter. An adapter trained for another
base (other name, other module names, other shapes) is refused with AdapterMismatchError.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from optimodel.model_builder.errors import AdapterMismatchError
from optimodel.model_builder.sources.files import ADAPTER_CONFIG_FILE

MERGEABLE_PEFT_TYPES = ("LORA",)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MISMATCH_FIX = (
    "use the adapter trained for this source.uri, or set source.uri to the adapter's base; if "
    "the adapter was trained on this very model under another name, correct "
    "base_model_name_or_path in its adapter_config.json"
)


def adapter_config(adapter_dir: Path) -> dict[str, Any]:
    data = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text())
    return data if isinstance(data, dict) else {}


def declared_base_conflict(declared: object, base_uri: str) -> str | None:
    """Why the adapter's declared base is not `base_uri`, when both are Hub ids (pure).

    A declared base that is a local path (trained from a folder) cannot be compared."""
    if not isinstance(declared, str) or not _HUB_ID.match(declared):
        return None
    if not base_uri.startswith("hf://"):
        return None
    base = base_uri.removeprefix("hf://").strip("/")
    if base.lower() == declared.lower():
        return None
    return f"it was trained for {declared!r}, not {base!r}"


def merge_lora_adapter(
    model: Any, adapter_dir: Path, *, base_uri: str, adapter_uri: str, field: str
) -> tuple[Any, str]:
    """`model` with the adapter in `adapter_dir` merged in, and what was merged, in words."""
    config = adapter_config(adapter_dir)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in MERGEABLE_PEFT_TYPES:
        raise AdapterMismatchError(
            f"{adapter_uri!r} is a {peft_type or 'unknown'} adapter; only LoRA adapters are merged",
            field=field,
            fix="train a LoRA adapter (peft.LoraConfig), or merge the adapter yourself and "
            "point source.uri at the merged model",
        )
    conflict = declared_base_conflict(config.get("base_model_name_or_path"), base_uri)
    if conflict is not None:
        raise AdapterMismatchError(
            f"{adapter_uri!r} does not fit {base_uri!r}: {conflict}", field=field, fix=MISMATCH_FIX
        )
    import peft

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wrapped = peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        except (ValueError, RuntimeError, KeyError, AttributeError) as error:
            detail = " ".join(str(error).split())
            raise AdapterMismatchError(
                f"{adapter_uri!r} does not fit {base_uri!r}: {detail[:600]}",
                field=field,
                fix=MISMATCH_FIX,
            ) from error
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise AdapterMismatchError(
            f"{adapter_uri!r} does not fit {base_uri!r}: {missing[0][:600]}",
            field=field,
            fix=MISMATCH_FIX,
        )
    merged = wrapped.merge_and_unload()
    rank = config.get("r")
    targets = config.get("target_modules")
    shown = ", ".join(sorted(targets)) if isinstance(targets, list) else str(targets)
    return merged.eval(), f"LoRA adapter {adapter_uri} (rank {rank}, {shown}) merged"
