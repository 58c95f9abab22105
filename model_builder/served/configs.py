"""Render the `config.pbtxt` of every model of the served repository, one renderer per kind.

Beside `render_triton_config` (the model step): the ensemble, the tokenizer step and the
answer step. The builder writes their output into the artifact, the operator's ConfigMap
holds the same texts, and local serving renders them the same way (only the model step runs
through the python-backend shim there), so the text path a cluster runs is the one tested.

The tokenizer and answer steps run on the CPU in every deployment (one python-backend
instance each) and batch like the model step (same queue delay), so a burst of texts becomes
one tokenizer execution whose length groups become model batches.
"""

from __future__ import annotations

from optimodel.model_builder.served.layout import ServedNames
from optimodel.model_builder.served.postprocess_model import EMBEDDINGS, LABEL, LOGITS, SCORE
from optimodel.model_builder.served.tokenize_model import (
    GROUP_OVERHEAD_PARAMETER,
    LENGTH_BUCKET_PARAMETER,
    TEXT_INPUT,
)
from optimodel.model_builder.spec import Serving, Task
from optimodel.model_builder.triton_config import (
    Backend,
    ModelSignature,
    TensorSpec,
    render_triton_config,
)

TEXT = TensorSpec(name=TEXT_INPUT, data_type="TYPE_STRING", dims=[1])
# What one more model execution costs, in token positions, when the tokenizer step splits a
# batch into length groups: small on a CPU (padding is the expensive part), large on a GPU
# (few large batches keep it busy).
CPU_GROUP_OVERHEAD_TOKENS = 256
GPU_GROUP_OVERHEAD_TOKENS = 8192
# Groups are padded up to a multiple of this many tokens, so requests of similar length from
# different tokenizer executions share a shape and batch on the model step. GPU artifacts are
# fp16/fp32 (int8-dynamic is refused there): masked padding leaves their answers as they are,
# and a fuller batch costs next to nothing. CPU artifacts are int8-dynamic, whose activation
# scale is taken over the whole tensor, pads included: a 16-token bucket moved a lone text's
# MiniLM embedding to cosine 0.975 of its unpadded answer and bought only 0.97x -> 1.13x
# batching on 2 cores, so CPUs pad to the group's longest text only.
CPU_LENGTH_BUCKET_TOKENS = 1
GPU_LENGTH_BUCKET_TOKENS = 32
# Triton's local response cache: `response_cache { enable: true }` does nothing unless the
# server starts with --cache-config. 256 MiB holds ~170k MiniLM embeddings (384 floats).
DEFAULT_RESPONSE_CACHE_BYTES = 256 * 1024 * 1024


def text_outputs(task: Task, signature: ModelSignature) -> list[TensorSpec]:
    """What the text-in ensemble answers: embeddings, or logits with label and score."""
    head = signature.outputs[0]
    if task == "text-classification":
        return [
            TensorSpec(name=LOGITS, data_type="TYPE_FP32", dims=head.dims),
            TensorSpec(name=LABEL, data_type="TYPE_STRING", dims=[1]),
            TensorSpec(name=SCORE, data_type="TYPE_FP32", dims=[1]),
        ]
    return [TensorSpec(name=EMBEDDINGS, data_type="TYPE_FP32", dims=head.dims)]


def response_cache_arguments(size_bytes: int) -> list[str]:
    """The tritonserver flags that turn the response cache on (locally and in the pod)."""
    if size_bytes < 1:
        raise ValueError(f"response cache size must be >= 1 byte, got {size_bytes}")
    return [f"--cache-config=local,size={size_bytes}"]


def group_overhead_tokens(serving: Serving) -> int:
    return GPU_GROUP_OVERHEAD_TOKENS if serving.gpu.count > 0 else CPU_GROUP_OVERHEAD_TOKENS


def length_bucket_tokens(serving: Serving) -> int:
    return GPU_LENGTH_BUCKET_TOKENS if serving.gpu.count > 0 else CPU_LENGTH_BUCKET_TOKENS


def _tensors(tensors: list[TensorSpec]) -> str:
    rows = [
        f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
        for t in tensors
    ]
    return "[\n" + ",\n".join(rows) + "\n]"


def _python_step(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    serving: Serving,
    parameters: dict[str, str] | None = None,
) -> str:
    parts = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {serving.max_batch_size}",
        f"input {_tensors(inputs)}",
        f"output {_tensors(outputs)}",
    ]
    if serving.dynamic_batching:
        delay = serving.max_queue_delay_microseconds
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay}\n}}")
    parts.append("instance_group [\n  { count: 1 kind: KIND_CPU }\n]")
    if parameters:
        rows = ",\n".join(
            f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
            for key, value in parameters.items()
        )
        parts.append(f"parameters [\n{rows}\n]")
    return "\n".join(parts) + "\n"


def render_tokenizer_config(names: ServedNames, signature: ModelSignature, serving: Serving) -> str:
    """`<name>-tokenize`: text in, the model step's inputs out (padded per length group)."""
    return _python_step(
        names.tokenize,
        [TEXT],
        signature.inputs,
        serving,
        {
            GROUP_OVERHEAD_PARAMETER: str(group_overhead_tokens(serving)),
            LENGTH_BUCKET_PARAMETER: str(length_bucket_tokens(serving)),
        },
    )


def render_postprocess_config(
    names: ServedNames, task: Task, signature: ModelSignature, serving: Serving
) -> str:
    """`<name>-postprocess`: the model step's output in, the ensemble's answers out."""
    return _python_step(
        names.postprocess, signature.outputs[:1], text_outputs(task, signature), serving
    )


def _map(kind: str, pairs: list[tuple[str, str]]) -> str:
    return " ".join(f'{kind} {{ key: "{key}" value: "{value}" }}' for key, value in pairs)


def render_ensemble_config(
    names: ServedNames, task: Task, signature: ModelSignature, serving: Serving
) -> str:
    """`<name>`: the text-in ensemble chaining tokenize → model → postprocess.

    The response cache, when enabled, sits here: a repeated text is answered from the cache
    without tokenizing or running the model (Triton caches top-level ensemble requests).
    """
    head = signature.outputs[0].name
    inner = f"{head}_raw"
    token_inputs = [(t.name, t.name) for t in signature.inputs]
    outputs = text_outputs(task, signature)
    steps = [
        (names.tokenize, [(TEXT_INPUT, TEXT_INPUT)], token_inputs),
        (names.model, token_inputs, [(head, inner)]),
        (names.postprocess, [(head, inner)], [(t.name, t.name) for t in outputs]),
    ]
    rendered = ",\n".join(
        f'    {{ model_name: "{model}" model_version: -1 '
        f"{_map('input_map', inputs)} {_map('output_map', outs)} }}"
        for model, inputs, outs in steps
    )
    parts = [
        f'name: "{names.ensemble}"',
        'platform: "ensemble"',
        f"max_batch_size: {serving.max_batch_size}",
        f"input {_tensors([TEXT])}",
        f"output {_tensors(outputs)}",
        f"ensemble_scheduling {{\n  step [\n{rendered}\n  ]\n}}",
    ]
    if serving.response_cache:
        parts.append("response_cache { enable: true }")
    return "\n".join(parts) + "\n"


def render_model_step_config(
    names: ServedNames,
    signature: ModelSignature,
    serving: Serving,
    backend: Backend = "onnxruntime",
    max_sequence_length: int | None = None,
) -> str:
    """`<name>-model`: the raw-tensor model (the cache lives on the ensemble, not here); the
    TensorRT accelerator's profile shapes need the source's `max_sequence_length`."""
    return render_triton_config(
        names.model,
        signature,
        serving.model_copy(update={"response_cache": False}),
        backend=backend,
        max_sequence_length=max_sequence_length,
    )


def render_text_model_config(
    name: str,
    task: Task,
    signature: ModelSignature,
    serving: Serving,
    parameters: dict[str, str] | None = None,
) -> str:
    """A python-backend model with the ensemble's interface (text in, the same answers): what
    a single-model text server looks like, e.g. the PyTorch baseline of the benchmarks."""
    return _python_step(name, [TEXT], text_outputs(task, signature), serving, parameters)


def render_served_configs(
    name: str,
    task: Task,
    signature: ModelSignature,
    serving: Serving,
    max_sequence_length: int | None = None,
) -> dict[str, str]:
    """Every config of the served repository of `name`, by model name (the cluster's set)."""
    names = ServedNames.of(name)
    return {
        names.ensemble: render_ensemble_config(names, task, signature, serving),
        names.tokenize: render_tokenizer_config(names, signature, serving),
        names.model: render_model_step_config(
            names, signature, serving, max_sequence_length=max_sequence_length
        ),
        names.postprocess: render_postprocess_config(names, task, signature, serving),
    }
