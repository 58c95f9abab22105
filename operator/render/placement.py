"""Where serving pods run: the node selection for the GPU type a model is served on. Pure.

The cluster names its GPU types with one node label (settings serving.gpuNodeLabel, e.g.
cloud.google.com/gke-accelerator on GKE, or nvidia.com/gpu.product from NVIDIA's GPU feature
discovery), whose values are the provider's names (serving.gpuNodeLabelValues maps a catalog
type to its value where they differ). The served type is spec.serving.gpu.type, or the type
`gpu.type: auto` chose (operator/hardware_choice.py) before rendering.
"""

from __future__ import annotations

from optimodel.operator.settings import ServingSettings


def gpu_node_selector(gpu_type: str, gpu_count: int, settings: ServingSettings) -> dict[str, str]:
    """The nodeSelector that keeps a replica on nodes of its GPU type (empty: no GPU, or the
    settings name no label)."""
    label = settings.gpu_node_label
    if not gpu_count or not label:
        return {}
    return {label: settings.gpu_node_label_values.get(gpu_type, gpu_type)}
