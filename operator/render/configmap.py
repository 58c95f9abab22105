"""The ConfigMap holding every config.pbtxt of the served repository, rendered by the builder's
own renderers (the text-in ensemble, its tokenizer and answer steps, the model step).

Serving settings (batching, instances, GPUs, the response cache) live here and not in the
artifact, so changing them rolls the pods (the configs' hash is in the pod template) without a
rebuild. One key per Triton model: `<model>.config.pbtxt` (keys cannot hold a '/').
"""

from __future__ import annotations

import json

from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.spec import Serving, Task
from optimodel.model_builder.triton_config import ModelSignature
from optimodel.operator import naming
from optimodel.operator.render.common import Manifest, ModelRef, content_hash, metadata


def served_triton_configs(
    model: str,
    task: Task,
    signature: ModelSignature,
    serving: Serving,
    max_sequence_length: int | None = None,
) -> dict[str, str]:
    """Every config.pbtxt for the cluster image (onnxruntime model step), by Triton model; the
    TensorRT accelerator's profile shapes need the source's max_sequence_length."""
    return render_served_configs(
        model, task, signature, serving, max_sequence_length=max_sequence_length
    )


def configs_hash(configs: dict[str, str]) -> str:
    """One hash over every config: any change rolls the pods."""
    return content_hash(json.dumps(configs, sort_keys=True))


def render_config_map(model: ModelRef, configs: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(model, naming.config_map_name(model.name), naming.SERVER),
        "data": {naming.config_key(name): text for name, text in sorted(configs.items())},
    }
