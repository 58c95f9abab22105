"""The build pipeline: load → prune → recover → export → quantize → evaluate → benchmark →
publish a Triton model repository. `run_build` is the one public entry point (the CLI, the
builder Job and `optimodel demo` all call it).

The gate metric is measured after every step that changes the model, so a failed build says
which step caused the drop. Nothing is written outside a staging folder until the gate has
passed; then the model folder appears in one rename.
"""

from __future__ import annotations

import copy
import importlib.metadata
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import onnx

from optimodel.model_builder.benchmark import (
    BenchmarkSettings,
    benchmark_batch,
    measure,
    onnx_runner,
    torch_runner,
)
from optimodel.model_builder.cpu_recipe import CPU_RECIPES
from optimodel.model_builder.data import (
    DEFAULT_CALIBRATION_DATA,
    DEFAULT_EVAL_DATA,
    TextSet,
    load_text_set,
)
from optimodel.model_builder.errors import (
    AccuracyGateError,
    BuildError,
    InvalidBuildSpecError,
    UnsupportedQuantizationError,
)
from optimodel.model_builder.evaluate import (
    Device,
    Score,
    cuda_provider_available,
    gate_verdict,
    label_ids,
    onnx_outputs,
    score_outputs,
    shortfall,
)
from optimodel.model_builder.export import export_onnx
from optimodel.model_builder.fusion import attention_shape
from optimodel.model_builder.gpu_recipe import GPU_RECIPES
from optimodel.model_builder.input_guard import guard_model_file
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.machine import describe_machine
from optimodel.model_builder.modeling import (
    FloatArray,
    TaskModel,
    length_sorted_batches,
    torch_outputs,
)
from optimodel.model_builder.prune import prune_magnitude, prune_structured
from optimodel.model_builder.quantize import (
    copy_unquantized,
    matmul_sensitivity,
    model_size_bytes,
    quantize_fp16,
    quantize_int8_dynamic,
    quantize_int8_static,
    quantize_weight_only,
    weight_matmuls,
)
from optimodel.model_builder.recipe import Recipe, RecipeInputs
from optimodel.model_builder.recipe_search import (
    SEARCH_BENCHMARK,
    SearchResult,
    SearchSettings,
    gate_miss,
    search_recipes,
)
from optimodel.model_builder.recover import distill
from optimodel.model_builder.report import (
    AccuracyResult,
    BuildReport,
    InputLimits,
    Measurement,
    StepName,
    StepRecord,
    build_inputs_hash,
)
from optimodel.model_builder.repository import (
    file_hashes,
    publish_model_folder,
    staging_directory,
)
from optimodel.model_builder.served.artifact import assemble_served_repository
from optimodel.model_builder.serving_target import Target, serving_target
from optimodel.model_builder.spec import BuildSpec, build_spec_problems
from optimodel.model_builder.triton_config import ModelSignature
from optimodel.model_builder.work import count_work

ProgressState = Literal["started", "advanced", "finished", "skipped"]
SENSITIVITY_TEXTS = 64  # calibration texts used to rank MatMuls for keepFp32Nodes


@dataclass(frozen=True)
class BuildProgress:
    """A step started, advanced (completed of total), finished or was skipped."""

    step: StepName
    state: ProgressState
    completed: float = 0.0
    total: float = 1.0
    detail: str = ""


ProgressCallback = Callable[[BuildProgress], None]


@dataclass
class _Run:
    """Bookkeeping of one build: step records and the gate metric after each step."""

    spec: BuildSpec
    progress: ProgressCallback | None
    steps: list[StepRecord] = field(default_factory=list)
    scores: list[tuple[StepName, Score]] = field(default_factory=list)

    def emit(self, event: BuildProgress) -> None:
        if self.progress is not None:
            self.progress(event)

    def skip(self, step: StepName, why: str) -> None:
        self.emit(BuildProgress(step, "skipped", detail=why))

    @contextmanager
    def step(self, name: StepName) -> Iterator[_StepOutcome]:
        self.emit(BuildProgress(name, "started"))
        outcome = _StepOutcome()
        started = time.perf_counter()
        yield outcome
        seconds = time.perf_counter() - started
        detail = outcome.detail
        if outcome.score is not None:
            self.scores.append((name, outcome.score))
            detail += f"; {_describe(outcome.score)}"
        self.steps.append(
            StepRecord(
                name=name,
                detail=detail,
                seconds=round(seconds, 3),
                size_bytes=outcome.size_bytes,
                accuracy=None if outcome.score is None else round(outcome.score.mean, 6),
            )
        )
        self.emit(BuildProgress(name, "finished", 1.0, 1.0, detail))


@dataclass
class _StepOutcome:
    detail: str = ""
    size_bytes: int | None = None
    score: Score | None = None


def _describe(score: Score) -> str:
    text = f"{score.metric} {score.mean:.4f}"
    return text + (f" (worst {score.min:.4f})" if score.min is not None else "")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("optimodel", "torch", "transformers", "onnx", "onnxruntime", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def culprit_step(
    scores: list[tuple[StepName, Score]], baseline: Score, worst_case: bool
) -> tuple[StepName | None, float, float]:
    """The step whose output lost the most of the gate metric: (step, before, after).

    With `worst_case`, drops are measured on the worst example instead of the mean.
    """

    def value(score: Score) -> float:
        return score.min if worst_case and score.min is not None else score.mean

    previous = value(baseline)
    found: tuple[StepName | None, float, float] = (None, previous, previous)
    largest = 0.0
    for name, score in scores:
        current = value(score)
        if previous - current > largest:
            largest = previous - current
            found = (name, previous, current)
        previous = current
    return found


def gate_failure_message(
    result: AccuracyResult, scores: list[tuple[StepName, Score]], baseline: Score
) -> tuple[str, StepName | None]:
    """Say by how much the gate was missed and which step caused it."""
    parts = []
    worst_case_failed = (
        result.worst_case_threshold is not None
        and result.min is not None
        and result.min < result.worst_case_threshold
    )
    if result.mean < result.threshold:
        parts.append(
            f"{result.metric} {result.mean:.4f} is {result.threshold - result.mean:.4f} below "
            f"accuracy.min {result.threshold}"
        )
    if worst_case_failed and result.min is not None and result.worst_case_threshold is not None:
        parts.append(
            f"worst example {result.min:.4f} is {result.worst_case_threshold - result.min:.4f} "
            f"below accuracy.worstCaseMin {result.worst_case_threshold}"
        )
    step, before, after = culprit_step(
        scores, baseline, worst_case=worst_case_failed and result.mean >= result.threshold
    )
    if step is not None:
        parts.append(f"the largest drop came from step {step} ({before:.4f} → {after:.4f})")
    return "; ".join(parts), step


@dataclass
class _Reference:
    """The original model's outputs on the eval set: what every variant is scored against."""

    loaded: LoadedModel
    eval_set: TextSet
    labels: list[int] | None
    outputs: FloatArray
    metric: str

    @property
    def max_length(self) -> int:
        return self.loaded.max_sequence_length

    def score(self, outputs: FloatArray) -> Score:
        return score_outputs(self.metric, self.outputs, outputs, self.labels)

    def score_torch(self, model: TaskModel) -> Score:
        texts = self.eval_set.texts
        return self.score(torch_outputs(model, self.loaded.tokenizer, texts, self.max_length))

    def score_onnx(self, path: Path, device: Device = "cpu") -> Score:
        texts = self.eval_set.texts
        outputs = onnx_outputs(path, self.loaded.tokenizer, texts, self.max_length, device=device)
        return self.score(outputs)


def _load_eval(loaded: LoadedModel, spec: BuildSpec) -> tuple[TextSet, list[int] | None]:
    ref = spec.optimize.eval_data or DEFAULT_EVAL_DATA
    eval_set = load_text_set(ref, field="spec.optimize.evalData")
    labels = None
    if eval_set.labels is not None and loaded.task == "text-classification":
        id2label = {int(k): str(v) for k, v in loaded.config.id2label.items()}
        labels = label_ids(eval_set.labels, id2label, field="spec.optimize.evalData.labelField")
    return eval_set, labels


def _calibration_texts(spec: BuildSpec) -> list[str]:
    """Texts for pruning importance, distillation, calibration and sensitivity (if needed)."""
    optimize = spec.optimize
    needed = (
        optimize.prune.method == "structured"
        or optimize.quantize.mode == "int8-static"
        or optimize.quantize.keep_fp32_nodes > 0
        # recipe auto's keep-fp32 ladder ranks MatMuls on calibration texts
        or (optimize.quantize.mode is None and serving_target(spec.serving.gpu.count) == "cpu")
    )
    if not needed:
        return []
    ref = optimize.calibration_data or DEFAULT_CALIBRATION_DATA
    return load_text_set(ref, field="spec.optimize.calibrationData").texts


def _check_quantize_applies(spec: BuildSpec, matmuls: int) -> None:
    quantize = spec.optimize.quantize
    if quantize.keep_fp32_nodes >= matmuls > 0:
        raise UnsupportedQuantizationError(
            f"keepFp32Nodes {quantize.keep_fp32_nodes} keeps every one of the model's "
            f"{matmuls} weight MatMuls in fp32, so nothing would be quantized",
            field="spec.optimize.quantize.keepFp32Nodes",
            fix=f"use fewer than {matmuls} (a handful is typical), or quantize.mode: none",
        )
    if quantize.mode != "none" and matmuls == 0:
        raise UnsupportedQuantizationError(
            f"quantize.mode {quantize.mode!r} finds no MatMul with constant weights to quantize",
            field="spec.optimize.quantize.mode",
            fix="use quantize.mode: none for this model",
        )


def _load_step(run: _Run) -> tuple[_Reference, Score]:
    """Load the original and compute its outputs on the eval set (and its own score)."""
    spec = run.spec
    with run.step("load") as outcome:
        loaded = load_model(spec.source)
        eval_set, labels = _load_eval(loaded, spec)
        outputs = torch_outputs(
            loaded.task_model, loaded.tokenizer, eval_set.texts, loaded.max_sequence_length
        )
        reference = _Reference(loaded, eval_set, labels, outputs, spec.optimize.accuracy.metric)
        baseline = reference.score(outputs)
        outcome.size_bytes = loaded.size_bytes
        outcome.detail = f"{loaded.model_type} from {_fetched_from(loaded)}"
        if loaded.adapter_detail:
            outcome.detail += f"; {loaded.adapter_detail}"
        outcome.detail += f"; {len(eval_set)} eval texts from {eval_set.origin}"
        if reference.metric == "accuracy":  # the original's own accuracy on the labels
            outcome.score = baseline
    return reference, baseline


def _fetched_from(loaded: LoadedModel) -> str:
    """Where the model came from and what the fetch downloaded or reused from the cache."""
    fetched = loaded.fetched
    if fetched is None or not fetched.origin:
        return str(loaded.source_dir)
    if not fetched.files:
        return fetched.origin
    return f"{fetched.origin} ({fetched.downloaded} files downloaded, {fetched.reused} cached)"


def _prune_step(run: _Run, reference: _Reference, calibration: list[str]) -> TaskModel:
    """The pruned copy of the original (the original itself when there is nothing to prune)."""
    prune = run.spec.optimize.prune
    original = reference.loaded.task_model
    if prune.method == "none":
        run.skip("prune", "prune.method: none")
        return original
    with run.step("prune") as outcome:
        model = copy.deepcopy(original)
        if prune.method == "magnitude":
            outcome.detail = prune_magnitude(model, prune.sparsity)
        else:
            outcome.detail = prune_structured(
                model,
                reference.loaded.tokenizer,
                calibration,
                sparsity=prune.sparsity,
                target=prune.target,
                max_length=reference.max_length,
            )
        outcome.score = reference.score_torch(model)
    return model


def _recover_step(
    run: _Run, reference: _Reference, model: TaskModel, calibration: list[str]
) -> None:
    prune = run.spec.optimize.prune
    if prune.method != "structured" or prune.recovery.method == "none":
        run.skip("recover", "prune.recovery.method: none")
        return
    steps = prune.recovery.steps

    def on_step(done: int, loss: float) -> None:
        run.emit(BuildProgress("recover", "advanced", done, steps, f"loss {loss:.4f}"))

    with run.step("recover") as outcome:
        outcome.detail = distill(
            model,
            reference.loaded.task_model,
            reference.loaded.tokenizer,
            calibration,
            steps=steps,
            max_length=reference.max_length,
            on_step=on_step,
        )
        outcome.score = reference.score_torch(model)


def _export_step(
    run: _Run, reference: _Reference, model: TaskModel, exported: Path
) -> ModelSignature:
    with run.step("export") as outcome:
        signature = export_onnx(
            model, reference.loaded.tokenizer, exported, max_length=reference.max_length
        )
        outcome.detail = (
            f"ONNX opset 17, dynamic batch and sequence axes, output {model.output_name}"
        )
        outcome.size_bytes = model_size_bytes(exported)
        outcome.score = reference.score_onnx(exported)
    return signature


def input_limits(loaded: LoadedModel) -> InputLimits:
    """The ids and lengths the built model accepts (its guard and serving check them)."""
    return InputLimits(vocab_size=loaded.vocab_size, max_sequence_length=loaded.max_positions)


def recipes_for(spec: BuildSpec) -> tuple[Recipe, ...]:
    """The candidates of the spec's serving target, or the one recipe it names."""
    target = serving_target(spec.serving.gpu.count)
    recipes = CPU_RECIPES if target == "cpu" else GPU_RECIPES
    if spec.optimize.recipe == "auto":
        return recipes
    return tuple(recipe for recipe in recipes if recipe.name == spec.optimize.recipe)


def _sensitivity_ranking(
    exported: Path, reference: _Reference, calibration: list[str]
) -> Callable[[], list[str]]:
    def rank() -> list[str]:
        texts = calibration[:SENSITIVITY_TEXTS]
        tokenizer, max_length = reference.loaded.tokenizer, reference.max_length
        batches = [b for _, b in length_sorted_batches(tokenizer, texts, max_length, 32)]
        return [name for name, _ in matmul_sensitivity(exported, batches, per_channel=True)]

    return rank


def _search_step(
    run: _Run,
    reference: _Reference,
    model: TaskModel,
    exported: Path,
    artifact: Path,
    calibration: list[str],
    search_benchmark: BenchmarkSettings,
) -> SearchResult:
    """recipe auto (or a named recipe): build, gate and time the target's candidates."""
    spec = run.spec
    target = serving_target(spec.serving.gpu.count)
    device: Device = "gpu" if target == "gpu" and cuda_provider_available() else "cpu"
    recipes = recipes_for(spec)
    tokenizer, texts = reference.loaded.tokenizer, reference.eval_set.texts
    length = search_benchmark.sequence_length
    batches = (
        benchmark_batch(tokenizer, texts, 1, length),
        benchmark_batch(tokenizer, texts, search_benchmark.batch_size, length),
    )

    def on_progress(done: float, total: float, detail: str) -> None:
        run.emit(BuildProgress("quantize", "advanced", done, total, f"recipe {detail}"))

    with run.step("quantize") as outcome:
        result = search_recipes(
            recipes,
            RecipeInputs(
                exported=exported,
                work=exported.parent,
                attention=attention_shape(model),
                rank_sensitive_matmuls=_sensitivity_ranking(exported, reference, calibration),
            ),
            scorer=reference.score_onnx,
            gate=spec.optimize.accuracy,
            batches=batches,
            settings=SearchSettings(
                seconds=float(spec.optimize.search_seconds), benchmark=search_benchmark
            ),
            device=device,
            progress=on_progress,
            # The served graph carries the input guard: candidates are scored and timed with it.
            finish=lambda path: guard_model_file(path, input_limits(reference.loaded)),
        )
        picked = result.chosen or result.closest_failure
        if picked is None or picked.path is None:
            reasons = "; ".join(f"{t.recipe}: {t.rejected}" for t in result.trials)
            raise BuildError(
                f"no candidate recipe for {target.upper()} serving could be built and scored "
                f"({reasons})",
                field="spec.optimize.recipe",
                fix="name a quantize.mode explicitly, or report the model architecture",
            )
        shutil.copyfile(picked.path, artifact)
        tried = sum(1 for t in result.trials if t.build_seconds > 0)
        outcome.detail = (
            f"recipe {spec.optimize.recipe} for {target.upper()} serving: {tried} of "
            f"{len(recipes)} candidate(s) tried, "
            + (
                f"published {picked.recipe.name} ({picked.trial.detail})"
                if result.chosen is not None
                else f"none passed, closest {picked.recipe.name}"
            )
        )
        outcome.size_bytes = model_size_bytes(artifact)
        outcome.score = picked.score
    return result


def _quantize_step(
    run: _Run, reference: _Reference, exported: Path, target: Path, calibration: list[str]
) -> None:
    # The served graph carries the input guard (input_guard.py); the gate scores it as served.
    if run.spec.optimize.quantize.mode == "none":
        run.skip("quantize", "quantize.mode: none")
        copy_unquantized(exported, target)
        guard_model_file(target, input_limits(reference.loaded))
        return
    with run.step("quantize") as outcome:
        outcome.detail = _quantize(exported, target, run.spec, reference, calibration)
        guard_model_file(target, input_limits(reference.loaded))
        outcome.size_bytes = model_size_bytes(target)
        outcome.score = reference.score_onnx(target)


def _benchmark_step(
    run: _Run, reference: _Reference, artifact: Path, settings: BenchmarkSettings
) -> dict[str, Measurement]:
    """PyTorch eager fp32 (the original) vs the artifact, timed in the same run."""
    loaded = reference.loaded
    texts = reference.eval_set.texts
    with run.step("benchmark") as outcome:
        single = benchmark_batch(loaded.tokenizer, texts, 1, settings.sequence_length)
        full = benchmark_batch(
            loaded.tokenizer, texts, settings.batch_size, settings.sequence_length
        )
        measured = measure(
            {
                "original": torch_runner(loaded.task_model),
                "optimized": onnx_runner(artifact, settings.thread_count),
            },
            {"original": loaded.size_bytes, "optimized": model_size_bytes(artifact)},
            single,
            full,
            settings,
        )
        speedup = (measured["optimized"].throughput or 0.0) / max(
            1e-9, measured["original"].throughput or 0.0
        )
        outcome.detail = (
            f"PyTorch eager fp32 vs optimized ONNX, batch {settings.batch_size} x "
            f"{settings.sequence_length} tokens, {settings.thread_count} threads: "
            f"{speedup:.2f}x throughput"
        )
    return measured


def run_build(
    spec: BuildSpec,
    out_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    benchmark: bool = True,
    benchmark_settings: BenchmarkSettings | None = None,
    search_benchmark: BenchmarkSettings = SEARCH_BENCHMARK,
) -> BuildReport:
    """Build, gate and publish `spec` as the Triton model folder `out_dir/<spec.name>`.

    Without an explicit quantize.mode, the recipe search builds the serving target's
    candidates and times each with `search_benchmark` (also when `benchmark` is off: timing
    is how it chooses); `benchmark` is the final PyTorch-vs-artifact run.

    Raises AccuracyGateError (carrying the failed report) when the gate is missed, and other
    BuildErrors for bad input; in every failure case nothing is written to `out_dir`.
    """
    problems = build_spec_problems(spec.source, spec.optimize, spec.serving)
    if problems:
        raise InvalidBuildSpecError(
            "; ".join(f"{p.path}: {p.message}" for p in problems),
            field=problems[0].path,
            fix="; ".join(p.fix for p in problems),
        )
    run = _Run(spec, progress)
    created_at = datetime.now(UTC)
    with staging_directory(out_dir, spec.name) as staging:
        work = staging / "work"
        work.mkdir()
        exported, artifact = work / "exported.onnx", work / "quantized.onnx"

        reference, baseline = _load_step(run)
        calibration = _calibration_texts(spec)
        model = _prune_step(run, reference, calibration)
        _recover_step(run, reference, model, calibration)
        signature = _export_step(run, reference, model, exported)
        search: SearchResult | None = None
        if spec.optimize.quantize.mode is None:
            search = _search_step(
                run, reference, model, exported, artifact, calibration, search_benchmark
            )
        else:
            _quantize_step(run, reference, exported, artifact, calibration)
        with run.step("evaluate") as outcome:
            verdict = gate_verdict(run.scores[-1][1], spec.optimize.accuracy)
            outcome.detail = (
                f"gate {'passed' if verdict.passed else 'FAILED'} on "
                f"{len(reference.eval_set)} texts"
            )

        target: Target = serving_target(spec.serving.gpu.count)
        report = BuildReport(
            name=spec.name,
            spec_hash=build_inputs_hash(spec.source, spec.optimize, spec.serving),
            passed=False,
            source_uri=spec.source.uri,
            source_commit=reference.loaded.fetched.commit if reference.loaded.fetched else None,
            adapter_uri=spec.source.adapter.uri if spec.source.adapter else None,
            adapter_commit=reference.loaded.adapter.commit if reference.loaded.adapter else None,
            task=spec.source.task,
            steps=run.steps,
            original=Measurement(size_bytes=reference.loaded.size_bytes),
            optimized=Measurement(size_bytes=model_size_bytes(artifact)),
            accuracy=verdict,
            signature=signature,
            versions=_versions(),
            created_at=created_at,
            input_limits=input_limits(reference.loaded),
            target=target,
            recipe=_published_recipe(spec, search),
            trials=[] if search is None else search.trials,
            machine=describe_machine(),
        )
        if not verdict.passed:
            message, step = gate_failure_message(verdict, run.scores, baseline)
            if search is not None:
                message = f"{search_failure_message(search, verdict)}; {message}"
            report.failure = message
            raise AccuracyGateError(
                message, report=report, shortfall=shortfall(verdict), culprit=step
            )

        if benchmark:
            settings = benchmark_settings or BenchmarkSettings()
            measured = _benchmark_step(run, reference, artifact, settings)
            report.original, report.optimized = measured["original"], measured["optimized"]
        else:
            run.skip("benchmark", "benchmark disabled")
        report.steps = run.steps

        folder = assemble_served_repository(
            staging,
            spec.name,
            task=spec.source.task,
            signature=signature,
            serving=spec.serving,
            model=artifact,
            tokenizer=reference.loaded.tokenizer,
            max_length=reference.max_length,
            model_config=reference.loaded.config,
            check_texts=reference.eval_set.texts,
        )
        report.work = count_work(
            # Shapes and dims are all it reads: large weights may stay on disk.
            onnx.load(str(artifact), load_external_data=False),
            sequence_length=spec.source.max_sequence_length,
            batch_size=spec.serving.max_batch_size,
        )
        report.hashes = file_hashes(folder)
        report.passed = True
        publish_model_folder(folder, report, out_dir)
    return report


def _published_recipe(spec: BuildSpec, search: SearchResult | None) -> str | None:
    if search is None:
        return spec.optimize.quantize.mode
    return None if search.chosen is None else search.chosen.recipe.name


def search_failure_message(search: SearchResult, verdict: AccuracyResult) -> str:
    """Which candidate came closest to the gate, and by how much it missed."""
    tried = sum(1 for trial in search.trials if trial.build_seconds > 0)
    closest = search.closest_failure
    name = closest.recipe.name if closest is not None else "none"
    return (
        f"no candidate recipe passed the accuracy gate ({tried} tried); the closest, {name}: "
        f"{gate_miss(verdict)}"
    )


def _quantize(
    exported: Path, target: Path, spec: BuildSpec, reference: _Reference, calibration: list[str]
) -> str:
    """Apply spec.optimize.quantize to `exported`; returns what was done, in words."""
    quantize = spec.optimize.quantize
    tokenizer, max_length = reference.loaded.tokenizer, reference.max_length
    matmuls = len(weight_matmuls(onnx.load(str(exported), load_external_data=False)))
    _check_quantize_applies(spec, matmuls)
    keep: list[str] = []
    if quantize.keep_fp32_nodes:
        texts = calibration[:SENSITIVITY_TEXTS]
        batches = [batch for _, batch in length_sorted_batches(tokenizer, texts, max_length, 32)]
        ranked = matmul_sensitivity(exported, batches, per_channel=quantize.per_channel)
        keep = [name for name, _ in ranked[: quantize.keep_fp32_nodes]]
    match quantize.mode:
        case "int8-dynamic":
            return quantize_int8_dynamic(
                exported, target, per_channel=quantize.per_channel, keep_fp32=keep
            )
        case "int8-static":
            batches = [
                batch for _, batch in length_sorted_batches(tokenizer, calibration, max_length, 16)
            ]
            return quantize_int8_static(
                exported,
                target,
                calibration=batches,
                per_channel=quantize.per_channel,
                keep_fp32=keep,
            )
        case "fp16":
            return quantize_fp16(exported, target)
        case "int8-weight-only":
            return quantize_weight_only(exported, target, bits=8)
        case "int4-weight-only":
            return quantize_weight_only(exported, target, bits=4)
        case _:
            return copy_unquantized(exported, target)
