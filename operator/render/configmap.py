"""The ConfigMap holding the served config.pbtxt, rendered by the builder's own function.

Serving settings (batching, instances, GPUs) live here and not in the artifact, so changing
them rolls the pods (the config hash is in the pod template) without a rebuild.
"""

from __future__ import annotations

from optimodel.model_builder.spec import Serving
from optimodel.model_builder.triton_config import ModelSignature, render_triton_config
from optimodel.operator import naming
from optimodel.operator.render.common import Manifest, ModelRef, metadata


def served_triton_config(model: str, signature: ModelSignature, serving: Serving) -> str:
    """config.pbtxt for the cluster image (onnxruntime backend)."""
    return render_triton_config(model, signature, serving, backend="onnxruntime")


def render_config_map(model: ModelRef, config_text: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(model, naming.config_map_name(model.name), naming.SERVER),
        "data": {naming.CONFIG_FILE: config_text},
    }
