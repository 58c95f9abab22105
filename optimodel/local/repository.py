"""Derive the local python-backend Triton repository from a built (onnxruntime) repository.

The builder writes a cluster repository: `config.pbtxt` for the onnxruntime backend and
`1/model.onnx`. Locally the same `model.onnx` is served through the python-backend model in
`triton_model.py`; its `config.pbtxt` is rendered by the same `render_triton_config` with
`backend="python"`, from the serving settings read back out of the built config, so the
dynamic batching and instance count tested locally are the ones a cluster runs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from optimodel.local import triton_model
from optimodel.model_builder.report import CONFIG_FILE, MODEL_FILE, REPORT_FILE, BuildReport
from optimodel.model_builder.spec import Gpu, Serving
from optimodel.model_builder.triton_config import (
    ModelSignature,
    TensorSpec,
    render_triton_config,
)

UNBATCHED_SUFFIX = "-unbatched"
LOCAL_MODEL_FILE = "model.py"


class InvalidRepositoryError(ValueError):
    """A built repository cannot be served; the message names the file and the fix."""


@dataclass(frozen=True)
class BuiltModel:
    """One model of a built repository, as read from its files."""

    name: str
    directory: Path
    onnx_path: Path
    signature: ModelSignature
    serving: Serving
    warmup_sequence_length: int | None
    report: BuildReport | None


@dataclass(frozen=True)
class LocalModel:
    """One model of the derived local repository."""

    name: str
    source: BuiltModel
    dynamic_batching: bool
    config_text: str


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


def read_built_model(directory: Path) -> BuiltModel:
    """Read one built model folder (`config.pbtxt`, `<version>/model.onnx`, `report.json`)."""
    from tritonclient.grpc import model_config_pb2

    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise InvalidRepositoryError(
            f"{directory}: no {CONFIG_FILE}; pass the folder `optimodel build` wrote "
            f"(OUT/<name>, or OUT holding such folders)"
        )
    config = _parse_config(config_path)
    name = config.name or directory.name
    if config.max_batch_size < 1:
        raise InvalidRepositoryError(
            f"{config_path}: max_batch_size is {config.max_batch_size}; local serving batches "
            f"requests, set spec.serving.maxBatchSize >= 1 and rebuild"
        )
    versions = sorted(
        (int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()),
        reverse=True,
    )
    onnx_path = next(
        (
            directory / str(v) / MODEL_FILE
            for v in versions
            if (directory / str(v) / MODEL_FILE).is_file()
        ),
        None,
    )
    if onnx_path is None:
        raise InvalidRepositoryError(
            f"{directory}: no <version>/{MODEL_FILE} (expected {directory / '1' / MODEL_FILE}); "
            f"the build did not finish, run `optimodel build` again"
        )
    report: BuildReport | None = None
    report_path = directory / REPORT_FILE
    if report_path.is_file():
        try:
            report = BuildReport.read(report_path)
        except ValidationError as error:
            raise InvalidRepositoryError(
                f"{report_path}: not a build report ({error.error_count()} errors); rebuild"
            ) from error
        if not report.passed:
            raise InvalidRepositoryError(
                f"{report_path}: the build did not pass ({report.failure or 'no reason given'}); "
                f"nothing to serve, fix spec.optimize and rebuild"
            )
    data_type_name = model_config_pb2.DataType.Name
    signature = (
        report.signature
        if report is not None and report.signature is not None
        else ModelSignature(
            inputs=_tensor_specs(config.input, data_type_name),
            outputs=_tensor_specs(config.output, data_type_name),
        )
    )
    batching = config.HasField("dynamic_batching")
    serving = Serving(
        gpu=Gpu(count=0),
        max_batch_size=config.max_batch_size,
        dynamic_batching=batching,
        preferred_batch_sizes=list(config.dynamic_batching.preferred_batch_size),
        max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds,
        instances=max(1, sum(group.count or 1 for group in config.instance_group)),
        response_cache=config.response_cache.enable,
    )
    warmup: int | None = None
    for sample in config.model_warmup:
        for tensor in sample.inputs.values():
            if len(tensor.dims) >= 1:
                warmup = int(tensor.dims[0])
    return BuiltModel(
        name=name,
        directory=directory,
        onnx_path=onnx_path,
        signature=signature,
        serving=serving,
        warmup_sequence_length=warmup,
        report=report,
    )


def find_built_models(path: Path) -> list[BuiltModel]:
    """The models under PATH: a model folder itself, or a repository of model folders."""
    if not path.exists():
        raise InvalidRepositoryError(f"{path}: no such folder; build first with `optimodel build`")
    if (path / CONFIG_FILE).is_file():
        return [read_built_model(path)]
    models = [read_built_model(p.parent) for p in sorted(path.glob(f"*/{CONFIG_FILE}"))]
    if not models:
        raise InvalidRepositoryError(
            f"{path}: no {CONFIG_FILE} in it or its subfolders; pass the output folder of "
            f"`optimodel build` (OUT or OUT/<name>)"
        )
    return models


def render_local_config(
    model: BuiltModel,
    name: str,
    *,
    dynamic_batching: bool,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> str:
    """The python-backend `config.pbtxt`: the built serving settings, CPU instances."""
    serving = model.serving.model_copy(
        update={
            "dynamic_batching": dynamic_batching,
            "preferred_batch_sizes": model.serving.preferred_batch_sizes
            if dynamic_batching
            else [],
        }
    )
    text = render_triton_config(
        name,
        model.signature,
        serving,
        backend="python",
        instance_kind="KIND_CPU",
        warmup_sequence_length=model.warmup_sequence_length,
        # Real texts differ in length and Triton batches only equal shapes: the python
        # backend pads each batch to its longest request (see triton_model.py).
        ragged_batch=dynamic_batching,
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


def derive_local_repository(
    built: list[BuiltModel],
    destination: Path,
    *,
    with_unbatched: bool = False,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
) -> list[LocalModel]:
    """Write the python-backend repository for BUILT into DESTINATION (replacing it).

    With `with_unbatched`, every model that batches also gets a `<name>-unbatched` twin with
    dynamic batching off, over the same model.onnx, for on/off comparisons in one server.
    """
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    model_source = Path(triton_model.__file__)
    local: list[LocalModel] = []
    for model in built:
        variants = [(model.name, model.serving.dynamic_batching)]
        if with_unbatched and model.serving.dynamic_batching:
            variants.append((model.name + UNBATCHED_SUFFIX, False))
        for name, batching in variants:
            text = render_local_config(
                model,
                name,
                dynamic_batching=batching,
                intra_op_threads=intra_op_threads,
                allow_spinning=allow_spinning,
            )
            parse_config_text(text)  # fails loudly if rendering ever goes wrong
            version_dir = destination / name / "1"
            version_dir.mkdir(parents=True)
            (destination / name / CONFIG_FILE).write_text(text)
            shutil.copyfile(model_source, version_dir / LOCAL_MODEL_FILE)
            # A link, not a copy: the artifact is served byte for byte as built.
            (version_dir / MODEL_FILE).symlink_to(model.onnx_path.resolve())
            local.append(LocalModel(name, model, batching, text))
    return local
