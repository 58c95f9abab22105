"""Derive the local Triton repository from a built served repository.

The builder writes the cluster's served repository (`served/layout.py`): the text-in ensemble,
the tokenizer and answer steps (python backend, as in the cluster) and the raw-tensor model
on the onnxruntime backend. The wheel's tritonserver has no onnxruntime backend, so locally
only the model step changes: the same `model.onnx` runs in the python-backend shim
(`triton_model.py`), configured by the same `render_triton_config` with the built batching
and instances and nothing the cluster lacks (no ragged batching: requests batch only when
their shapes are equal, as on the onnxruntime backend). Every other config is rendered by the
same renderers as the cluster's and the steps' files are the built ones.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from optimodel.local import triton_model
from optimodel.model_builder.report import CONFIG_FILE, MODEL_FILE, BuildReport
from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.served.layout import (
    PYTHON_MODEL_FILE,
    ServedNames,
    ServedRepository,
)
from optimodel.model_builder.served.postprocess_model import LABEL
from optimodel.model_builder.spec import Gpu, Serving, Task
from optimodel.model_builder.triton_config import (
    ModelSignature,
    TensorSpec,
    render_triton_config,
)

UNBATCHED_SUFFIX = "-unbatched"
LOCAL_MODEL_FILE = PYTHON_MODEL_FILE


class InvalidRepositoryError(ValueError):
    """A built repository cannot be served; the message names the file and the fix."""


@dataclass(frozen=True)
class BuiltModel:
    """One served text model of a built repository, as read from its files.

    `name` is the name it is served under: the built one, or a variant's (`<name>-unbatched`,
    a tuning configuration) over the same files in `layout`.
    """

    name: str
    layout: ServedRepository
    task: Task
    signature: ModelSignature
    serving: Serving
    warmup_sequence_length: int | None
    report: BuildReport | None
    # The TensorRT profile's longest input (its warmup sample), when the config has one.
    max_sequence_length: int | None = None

    @property
    def directory(self) -> Path:
        """The served repository folder (OUT/<name>)."""
        return self.layout.root

    @property
    def onnx_path(self) -> Path:
        return self.layout.onnx

    @property
    def tokenizer_dir(self) -> Path:
        return self.layout.tokenizer_dir

    @property
    def names(self) -> ServedNames:
        """The Triton names this model is served under."""
        return ServedNames.of(self.name)


@dataclass(frozen=True)
class LocalModel:
    """One served text model of the derived local repository."""

    name: str
    source: BuiltModel
    dynamic_batching: bool
    configs: dict[str, str]

    @property
    def names(self) -> ServedNames:
        return ServedNames.of(self.name)

    @property
    def config_text(self) -> str:
        """The model step's local config (python-backend shim)."""
        return self.configs[self.names.model]


def parse_config_text(text: str) -> Any:
    """A `config.pbtxt` text as Triton's ModelConfig protobuf (raises ParseError)."""
    from google.protobuf import text_format  # type: ignore[import-untyped]
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _parse_config(path: Path) -> Any:
    from google.protobuf.text_format import ParseError  # type: ignore[import-untyped]

    try:
        return parse_config_text(path.read_text())
    except ParseError as error:
        raise InvalidRepositoryError(
            f"{path}: not a valid Triton config ({error}); rebuild with `optimodel build`"
        ) from error


def _tensor_specs(tensors: Any, data_type_name: Any) -> list[TensorSpec]:
    return [
        TensorSpec(name=t.name, data_type=data_type_name(t.data_type), dims=list(t.dims))
        for t in tensors
    ]


def _served_layout(directory: Path) -> ServedRepository:
    """The served repository at DIRECTORY, or the one DIRECTORY is a model folder of."""
    for candidate in (directory, directory.parent):
        layout = ServedRepository.at(candidate)
        if layout.is_served_layout():
            return layout
    if (directory / CONFIG_FILE).is_file() and (directory / "1" / MODEL_FILE).is_file():
        raise InvalidRepositoryError(
            f"{directory}: a raw-tensor model folder from an older optimodel build (no text-in "
            f"ensemble); rebuild with `optimodel build` to get OUT/<name>/ with <name>, "
            f"<name>-tokenize, <name>-model and <name>-postprocess"
        )
    raise InvalidRepositoryError(
        f"{directory}: no served repository ({directory.name}/{CONFIG_FILE} and "
        f"{directory.name}-model/{CONFIG_FILE}); pass the folder `optimodel build` wrote "
        f"(OUT/<name>, or OUT holding such folders)"
    )


def _read_report(layout: ServedRepository) -> BuildReport | None:
    if not layout.report.is_file():
        return None
    try:
        report = BuildReport.read(layout.report)
    except ValidationError as error:
        raise InvalidRepositoryError(
            f"{layout.report}: not a build report ({error.error_count()} errors); rebuild"
        ) from error
    if not report.passed:
        raise InvalidRepositoryError(
            f"{layout.report}: the build did not pass ({report.failure or 'no reason given'}); "
            f"nothing to serve, fix spec.optimize and rebuild"
        )
    return report


def read_built_model(directory: Path) -> BuiltModel:
    """Read one served repository (OUT/<name>): its configs, model.onnx and report.json."""
    from tritonclient.grpc import model_config_pb2

    layout = _served_layout(directory)
    names = layout.names
    model_config = _parse_config(layout.config(names.model))
    ensemble_config = _parse_config(layout.config(names.ensemble))
    if model_config.max_batch_size < 1:
        raise InvalidRepositoryError(
            f"{layout.config(names.model)}: max_batch_size is {model_config.max_batch_size}; "
            f"serving batches requests, set spec.serving.maxBatchSize >= 1 and rebuild"
        )
    if not layout.onnx.is_file():
        raise InvalidRepositoryError(
            f"{layout.root}: no {layout.onnx.relative_to(layout.root)}; the build did not "
            f"finish, run `optimodel build` again"
        )
    report = _read_report(layout)
    data_type_name = model_config_pb2.DataType.Name
    signature = (
        report.signature
        if report is not None and report.signature is not None
        else ModelSignature(
            inputs=_tensor_specs(model_config.input, data_type_name),
            outputs=_tensor_specs(model_config.output, data_type_name),
        )
    )
    outputs = {tensor.name for tensor in ensemble_config.output}
    task: Task = "text-classification" if LABEL in outputs else "feature-extraction"
    on_gpu = any(
        group.kind == model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU
        for group in model_config.instance_group
    )
    batching = model_config.HasField("dynamic_batching")
    gpus = max((len(group.gpus) for group in model_config.instance_group), default=0)
    accelerators = model_config.optimization.execution_accelerators.gpu_execution_accelerator
    serving = Serving(
        # The model step lists the replica's GPUs (older builds only its kind) and keeps the
        # TensorRT accelerator, so a re-render (optimodel tune) keeps both.
        gpu=Gpu(count=(gpus or 1) if on_gpu else 0),
        accelerator="tensorrt" if any(a.name == "tensorrt" for a in accelerators) else "none",
        max_batch_size=model_config.max_batch_size,
        dynamic_batching=batching,
        preferred_batch_sizes=list(model_config.dynamic_batching.preferred_batch_size),
        max_queue_delay_microseconds=model_config.dynamic_batching.max_queue_delay_microseconds,
        instances=max(1, sum(group.count or 1 for group in model_config.instance_group)),
        response_cache=ensemble_config.response_cache.enable,
    )
    warmup: int | None = None
    longest: int | None = None
    for index, sample in enumerate(model_config.model_warmup):
        for tensor in sample.inputs.values():
            if len(tensor.dims) >= 1 and index == 0:
                warmup = int(tensor.dims[0])
            elif len(tensor.dims) >= 1:
                longest = int(tensor.dims[0])
    return BuiltModel(
        name=names.ensemble,
        layout=layout,
        task=task,
        signature=signature,
        serving=serving,
        warmup_sequence_length=warmup,
        report=report,
        max_sequence_length=longest,
    )


def find_built_models(path: Path) -> list[BuiltModel]:
    """The models under PATH: a served repository itself, or a folder of served repositories."""
    if not path.exists():
        raise InvalidRepositoryError(f"{path}: no such folder; build first with `optimodel build`")
    if ServedRepository.at(path).is_served_layout() or (path / CONFIG_FILE).is_file():
        return [read_built_model(path)]
    candidates = sorted(
        p for p in path.iterdir() if p.is_dir() and ServedRepository.at(p).is_served_layout()
    )
    if not candidates:
        if ServedRepository.at(path.parent).is_served_layout():
            return [read_built_model(path)]
        raise InvalidRepositoryError(
            f"{path}: no served repository in it or its subfolders; pass the output folder of "
            f"`optimodel build` (OUT or OUT/<name>)"
        )
    return [read_built_model(p) for p in candidates]


def local_serving(model: BuiltModel, dynamic_batching: bool) -> Serving:
    """MODEL's serving settings on this machine: CPU instances, batching as asked."""
    return model.serving.model_copy(
        update={
            "gpu": Gpu(count=0),
            "dynamic_batching": dynamic_batching,
            "preferred_batch_sizes": model.serving.preferred_batch_sizes
            if dynamic_batching
            else [],
        }
    )


def render_local_config(
    model: BuiltModel,
    name: str,
    *,
    dynamic_batching: bool,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> str:
    """The model step's python-backend `config.pbtxt`: built serving settings, CPU instances.

    NAME is the model step's Triton name (`<name>-model`).
    """
    text = render_triton_config(
        name,
        model.signature,
        local_serving(model, dynamic_batching).model_copy(update={"response_cache": False}),
        backend="python",
        instance_kind="KIND_CPU",
        warmup_sequence_length=model.warmup_sequence_length,
    )
    parameters = {
        triton_model.THREADS_PARAMETER: str(intra_op_threads),
        triton_model.SPINNING_PARAMETER: "1" if allow_spinning else "0",
        triton_model.MODEL_FILE_PARAMETER: MODEL_FILE,
    }
    limits = model.report.input_limits if model.report is not None else None
    if limits is not None:  # builds before limits were recorded: the fallback still isolates
        parameters[triton_model.VOCAB_SIZE_PARAMETER] = str(limits.vocab_size)
        parameters[triton_model.MAX_SEQUENCE_PARAMETER] = str(limits.max_sequence_length)
    rows = ",\n".join(
        f'  {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
        for key, value in parameters.items()
    )
    return text + f"parameters [\n{rows}\n]\n"


def local_configs(
    model: BuiltModel,
    *,
    dynamic_batching: bool,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> dict[str, str]:
    """Every config of MODEL served here: the cluster's renderers, the shim for the model step."""
    names = model.names
    configs = render_served_configs(
        model.name, model.task, model.signature, local_serving(model, dynamic_batching)
    )
    configs[names.model] = render_local_config(
        model,
        names.model,
        dynamic_batching=dynamic_batching,
        intra_op_threads=intra_op_threads,
        allow_spinning=allow_spinning,
    )
    return configs


def _write_model(destination: Path, model: BuiltModel, configs: dict[str, str]) -> None:
    source, names = model.layout, model.names
    built = source.names
    for served, config_text in configs.items():
        parse_config_text(config_text)  # fails loudly if rendering ever goes wrong
        (destination / served).mkdir(parents=True)
        (destination / served / CONFIG_FILE).write_text(config_text)
    (destination / names.ensemble / "1").mkdir()
    # Links, not copies: the steps' files and the artifact are served byte for byte as built.
    for served, original in (
        (names.tokenize, built.tokenize),
        (names.postprocess, built.postprocess),
    ):
        (destination / served / "1").symlink_to(source.version(original).resolve())
    version_dir = destination / names.model / "1"
    version_dir.mkdir()
    shutil.copyfile(Path(triton_model.__file__), version_dir / LOCAL_MODEL_FILE)
    (version_dir / MODEL_FILE).symlink_to(source.onnx.resolve())


def derive_local_repository(
    built: list[BuiltModel],
    destination: Path,
    *,
    with_unbatched: bool = False,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> list[LocalModel]:
    """Write the local repository for BUILT into DESTINATION (replacing it).

    With `with_unbatched`, every model that batches also gets a `<name>-unbatched` twin of its
    whole text path with dynamic batching off, over the same files, for on/off comparisons in
    one server.
    """
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    local: list[LocalModel] = []
    for model in built:
        variants = [(model, model.serving.dynamic_batching)]
        if with_unbatched and model.serving.dynamic_batching:
            variants.append((dataclasses.replace(model, name=model.name + UNBATCHED_SUFFIX), False))
        for variant, batching in variants:
            configs = local_configs(
                variant,
                dynamic_batching=batching,
                intra_op_threads=intra_op_threads,
                allow_spinning=allow_spinning,
            )
            _write_model(destination, variant, configs)
            local.append(LocalModel(variant.name, variant, batching, configs))
    return local
