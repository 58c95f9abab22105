"""The builder's performance check on MiniLM-L6 (issues 3 and 11), in one alternating run:

PyTorch eager fp32 (the baseline: sdpa and eager attention, the faster one), the fp32 ONNX
export, today's default int8 (examples/minilm-int8.yaml: int8-dynamic per-channel), the
`recipe: auto` pick for CPU serving (examples/minilm-cpu.yaml) and, when the Optimum venv
exists (build/optimum-venv, made by `python -m benchmarks.compare` or --install-optimum),
Optimum's ORT quantizer presets. Batch 32 x 64 tokens, 2 threads; the rounds alternate their
order (A B C, C B A, ...) and each variant keeps its best round, so a burst of other load
hits all of them alike. Ratios are within this run; the machine (CPU model, ISA flags) and
the load average are recorded beside them.

Targets (issue 11): auto never slower than the default int8 (within the search's 3 % tie
band, when it publishes that same recipe), at least as fast as the fastest Optimum preset
that passes the gate, >= 2.2x PyTorch on an AVX2-only CPU (>= 3x with AVX-512 VNNI), the gate
met (cosine mean >= 0.99, worst >= 0.95), and the search adding <= 3 minutes to the build.

    python benchmarks/builder_speedup.py                  # both builds, then the timing run
    python benchmarks/builder_speedup.py --quick --source file:///tiny-model   # smoke run

Results: table on stdout, JSON in benchmarks/results/builder_speedup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from optimodel.manifest import build_spec_from_manifest
from optimodel.model_builder.benchmark import (
    BenchmarkSettings,
    Runner,
    RunnerTimings,
    benchmark_batch,
    onnx_runner,
    time_runners,
    to_measurement,
    torch_runner,
)
from optimodel.model_builder.data import DEFAULT_EVAL_DATA, load_text_set
from optimodel.model_builder.evaluate import cosine_similarities, onnx_outputs
from optimodel.model_builder.export import export_onnx
from optimodel.model_builder.load import LoadedModel, load_model
from optimodel.model_builder.machine import MachineInfo, describe_machine
from optimodel.model_builder.modeling import TaskModel, TokenBatch, torch_outputs
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.quantize import model_size_bytes
from optimodel.model_builder.recipe_search import TIE_TOLERANCE
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.served.layout import ServedRepository
from optimodel.model_builder.spec import AccuracyGate, BuildSpec

if TYPE_CHECKING:
    from benchmarks.compare.candidates import Contender

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "builder_speedup.json"
DEFAULT_INT8 = REPO / "examples" / "minilm-int8.yaml"
AUTO = REPO / "examples" / "minilm-cpu.yaml"
GATE = {"cosine_mean": 0.99, "cosine_min": 0.95}
SPEEDUP_TARGET = {"avx2": 2.2, "avx512_vnni": 3.0}
SEARCH_SECONDS_TARGET = 180.0
BASELINES = ("PyTorch eager fp32 (sdpa attention)", "PyTorch eager fp32 (eager attention)")


def speedup_target(machine: MachineInfo) -> tuple[float, str]:
    """The issue's target for this ISA: 3x with AVX-512 VNNI, else 2.2x (AVX2)."""
    if "avx512_vnni" in machine.isa or "avx512vnni" in machine.isa:
        return SPEEDUP_TARGET["avx512_vnni"], "AVX-512 VNNI"
    return SPEEDUP_TARGET["avx2"], "AVX2"


def _spec(manifest: Path, source: str | None) -> BuildSpec:
    spec = build_spec_from_manifest(manifest)
    if source is not None:  # --source: the same manifests on another model (smoke runs),
        spec.source.uri = source  # whose fidelity MiniLM's gate does not describe
        spec.optimize.accuracy = AccuracyGate(metric="cosine", min=0.5)
    return spec


def _build(spec: BuildSpec, out: Path, console: Console) -> tuple[BuildReport, float]:
    console.print(f"building {spec.name} ({spec.optimize.quantize.mode or 'recipe auto'}) …")
    started = time.perf_counter()
    report = run_build(spec, out, benchmark=False)
    seconds = time.perf_counter() - started
    console.print(f"  built in {seconds:.0f} s, recipe {report.recipe}")
    return report, seconds


def _eager_attention_twin(task_model: TaskModel, model_dir: Path) -> TaskModel:
    import transformers

    auto: Any = (
        transformers.AutoModelForSequenceClassification
        if task_model.task == "text-classification"
        else transformers.AutoModel
    )
    model = auto.from_pretrained(
        model_dir, local_files_only=True, attn_implementation="eager"
    ).eval()
    return TaskModel(
        model, task_model.task, pooling=task_model.pooling, normalize=task_model.normalize
    ).eval()


def alternating_timings(
    runners: dict[str, Runner], single: TokenBatch, full: TokenBatch, settings: BenchmarkSettings
) -> dict[str, RunnerTimings]:
    """`settings.rounds` rounds, every other one in reverse order (A B C, C B A, ...)."""
    merged = {name: RunnerTimings(latencies=[], round_throughputs=[]) for name in runners}
    one_round = BenchmarkSettings(
        batch_size=settings.batch_size,
        sequence_length=settings.sequence_length,
        threads=settings.threads,
        rounds=1,
        seconds_per_round=settings.seconds_per_round,
        latency_calls_per_round=settings.latency_calls_per_round,
    )
    names = list(runners)
    for index in range(settings.rounds):
        order = names if index % 2 == 0 else names[::-1]
        timings = time_runners({name: runners[name] for name in order}, single, full, one_round)
        for name, timing in timings.items():
            merged[name].latencies.extend(timing.latencies)
            merged[name].round_throughputs.extend(timing.round_throughputs)
    return merged


def _optimum_contenders(
    loaded: LoadedModel, work: Path, install: bool, threads: int, console: Console
) -> tuple[dict[str, Contender], str]:
    """Optimum's presets of the model, fed and pooled by the peers harness (their files
    take token_type_ids and answer hidden states)."""
    # Run as `python benchmarks/builder_speedup.py`, only benchmarks/ is on the path.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from benchmarks.compare.candidates import foreign_onnx_contender
    from benchmarks.compare.optimum_presets import PRESETS
    from benchmarks.compare.optimum_venv import ensure_optimum, quantize_with_presets

    status = ensure_optimum(install=install)
    if not status.available:
        return {}, status.detail
    console.print("quantizing with Optimum's presets (separate venv) …")
    artifacts, versions = quantize_with_presets(
        loaded.source_dir, "feature-extraction", work / "optimum", list(PRESETS)
    )
    detail = ", ".join(f"{k} {v}" for k, v in versions.items() if k.startswith("optimum"))
    names = {f"Optimum ORTQuantizer {a.name}": a.path for a in artifacts}
    contenders = {
        name: foreign_onnx_contender(name, name, path, loaded, threads, "")
        for name, path in names.items()
    }
    return contenders, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per round and variant")
    parser.add_argument("--source", help="override both manifests' source.uri")
    parser.add_argument("--quick", action="store_true", help="2 short rounds, 64 eval texts")
    parser.add_argument("--no-optimum", action="store_true", help="leave Optimum out")
    parser.add_argument("--install-optimum", action="store_true", help="create its venv")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=150)  # the table is wide; logs are not ttys
    machine = describe_machine()
    load_before = os.getloadavg()
    rounds, seconds = (2, 0.2) if args.quick else (args.rounds, args.seconds)

    with tempfile.TemporaryDirectory(prefix="builder-speedup-") as scratch:
        work = Path(scratch)
        int8_spec, auto_spec = _spec(DEFAULT_INT8, args.source), _spec(AUTO, args.source)
        if args.quick:
            auto_spec.optimize.search_seconds = 20
        int8_report, int8_seconds = _build(int8_spec, work / "int8", console)
        auto_report, auto_seconds = _build(auto_spec, work / "auto", console)
        search_seconds = next(s.seconds for s in auto_report.steps if s.name == "quantize")

        loaded = load_model(auto_spec.source)
        fp32 = work / "fp32.onnx"
        export_onnx(
            loaded.task_model, loaded.tokenizer, fp32, max_length=loaded.max_sequence_length
        )
        optimum: dict[str, Contender] = {}
        optimum_detail = "left out: --no-optimum"
        if not args.no_optimum:
            optimum, optimum_detail = _optimum_contenders(
                loaded, work, args.install_optimum, args.threads, console
            )
        int8_name = "default int8 (int8-dynamic per-channel)"
        auto_name = f"recipe auto → {auto_report.recipe}"
        onnx_variants = {
            "ONNX fp32 (plain export)": fp32,
            int8_name: ServedRepository.at(work / "int8" / int8_spec.name).onnx,
            auto_name: ServedRepository.at(work / "auto" / auto_spec.name).onnx,
        }
        texts = load_text_set(DEFAULT_EVAL_DATA, field="evalData").texts
        eval_texts = texts[: 64 if args.quick else DEFAULT_EVAL_DATA.max_samples]
        length = loaded.max_sequence_length
        reference = torch_outputs(loaded.task_model, loaded.tokenizer, eval_texts, length)
        cosines = {
            name: cosine_similarities(
                reference, onnx_outputs(path, loaded.tokenizer, eval_texts, length)
            )
            for name, path in onnx_variants.items()
        }
        cosines.update(
            {
                name: cosine_similarities(reference, contender.outputs(eval_texts))
                for name, contender in optimum.items()
            }
        )
        settings = BenchmarkSettings(
            batch_size=32,
            sequence_length=64,
            threads=args.threads,
            rounds=rounds,
            seconds_per_round=seconds,
        )
        single = benchmark_batch(loaded.tokenizer, texts, 1, settings.sequence_length)
        full = benchmark_batch(
            loaded.tokenizer, texts, settings.batch_size, settings.sequence_length
        )
        runners: dict[str, Runner] = {
            BASELINES[0]: torch_runner(loaded.task_model),
            BASELINES[1]: torch_runner(_eager_attention_twin(loaded.task_model, loaded.source_dir)),
        }
        runners.update(
            {name: onnx_runner(path, settings.thread_count) for name, path in onnx_variants.items()}
        )
        runners.update({name: contender.runner for name, contender in optimum.items()})
        sizes = {BASELINES[0]: loaded.size_bytes, BASELINES[1]: loaded.size_bytes}
        sizes.update({name: model_size_bytes(path) for name, path in onnx_variants.items()})
        sizes.update({name: contender.size_bytes for name, contender in optimum.items()})
        console.print(
            f"timing {len(runners)} variants: {rounds} alternating rounds of {seconds:g} s, "
            f"batch 32 x 64 tokens, {settings.thread_count} threads on {machine.label} …"
        )
        timings = alternating_timings(runners, single, full, settings)
    load_after = os.getloadavg()

    measured = {name: to_measurement(timings[name], sizes[name], settings) for name in runners}
    baseline_name = max(BASELINES, key=lambda name: measured[name].throughput or 0.0)
    baseline = measured[baseline_name].throughput or 1.0
    names = list(runners)

    def throughput(name: str) -> float:
        return measured[name].throughput or 0.0

    def passes(name: str) -> bool:
        cosine = cosines[name]
        return bool(cosine.mean() >= GATE["cosine_mean"] and cosine.min() >= GATE["cosine_min"])

    passing_optimum = [name for name in optimum if passes(name)]
    best_optimum = max(passing_optimum, key=throughput, default=None)
    target, isa = speedup_target(machine)
    results: dict[str, Any] = {
        "auto_vs_pytorch": throughput(auto_name) / baseline,
        "default_int8_vs_pytorch": throughput(int8_name) / baseline,
        "auto_vs_default_int8": throughput(auto_name) / max(throughput(int8_name), 1e-9),
        "auto_vs_best_optimum_at_gate": (
            None
            if best_optimum is None
            else throughput(auto_name) / max(throughput(best_optimum), 1e-9)
        ),
        "auto_cosine_mean": float(cosines[auto_name].mean()),
        "auto_cosine_min": float(cosines[auto_name].min()),
        "search_seconds": search_seconds,
        "search_adds_seconds": auto_seconds - int8_seconds,
        "auto_size_reduction": loaded.size_bytes / sizes[auto_name],
    }
    same_recipe = auto_report.recipe == "int8-per-channel"
    met = {
        "auto_not_slower_than_default_int8": results["auto_vs_default_int8"]
        >= (1.0 - TIE_TOLERANCE if same_recipe else 1.0),
        "auto_at_least_best_optimum_at_gate": best_optimum is None
        or results["auto_vs_best_optimum_at_gate"] >= 1.0,
        f"auto_vs_pytorch_at_least_{target}x_on_{isa}": results["auto_vs_pytorch"] >= target,
        "auto_meets_the_gate": passes(auto_name),
        "search_adds_at_most_3_minutes": results["search_adds_seconds"] <= SEARCH_SECONDS_TARGET,
    }

    table = Table(title=f"MiniLM-L6 on {machine.label}: batch 32 x 64 tokens, best round")
    columns = ("variant", "sent/s", "vs PyTorch", "rounds sent/s", "p50 b1 ms", "MB", "cosine")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name in names:
        m = measured[name]
        cosine = cosines.get(name)
        table.add_row(
            name + (" [baseline]" if name == baseline_name else ""),
            f"{throughput(name):.1f}",
            f"{throughput(name) / baseline:.2f}x",
            ", ".join(f"{value:.0f}" for value in timings[name].round_throughputs),
            f"{m.latency_p50_ms:.1f}",
            f"{m.size_bytes / 1e6:.1f}",
            "–" if cosine is None else f"{cosine.mean():.4f} (min {cosine.min():.3f})",
        )
    console.print(table)
    checks = Table(title="issue 11 targets")
    for column in ("check", "measured", "met"):
        checks.add_column(column)
    shown = {
        "auto_not_slower_than_default_int8": f"{results['auto_vs_default_int8']:.3f}x"
        + (" (same recipe: noise band 3%)" if same_recipe else ""),
        "auto_at_least_best_optimum_at_gate": "no Optimum preset passes the gate"
        if best_optimum is None
        else f"{results['auto_vs_best_optimum_at_gate']:.3f}x vs {best_optimum}",
        f"auto_vs_pytorch_at_least_{target}x_on_{isa}": f"{results['auto_vs_pytorch']:.2f}x",
        "auto_meets_the_gate": f"cosine {results['auto_cosine_mean']:.4f}, worst "
        f"{results['auto_cosine_min']:.4f}",
        "search_adds_at_most_3_minutes": f"{results['search_adds_seconds']:.0f} s "
        f"(search step {search_seconds:.0f} s)",
    }
    for key, ok in met.items():
        checks.add_row(key.replace("_", " "), shown[key], "yes" if ok else "NO")
    console.print(checks)
    console.print(f"Optimum: {optimum_detail}")
    console.print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    payload = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {
            **machine.model_dump(mode="json", by_alias=True),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "settings": {
            "batch_size": 32,
            "sequence_length": 64,
            "threads": settings.thread_count,
            "rounds": rounds,
            "seconds_per_round": seconds,
            "order": "alternating",
            "eval_texts": len(eval_texts),
        },
        "baseline": baseline_name,
        "variants": {
            name: {
                **measured[name].model_dump(mode="json", by_alias=True),
                "round_throughputs": [round(v, 2) for v in timings[name].round_throughputs],
                "cosine_mean": None
                if name not in cosines
                else round(float(cosines[name].mean()), 5),
                "cosine_min": None if name not in cosines else round(float(cosines[name].min()), 5),
            }
            for name in names
        },
        "builds": {
            "default_int8": {"seconds": round(int8_seconds, 1), "recipe": int8_report.recipe},
            "auto": {
                "seconds": round(auto_seconds, 1),
                "recipe": auto_report.recipe,
                "trials": [t.model_dump(mode="json", by_alias=True) for t in auto_report.trials],
            },
        },
        "optimum": optimum_detail,
        "results": {key: None if v is None else round(float(v), 4) for key, v in results.items()},
        "targets": {
            "speedup_vs_pytorch": target,
            "isa": isa,
            "gate": GATE,
            "search_adds_seconds": SEARCH_SECONDS_TARGET,
        },
        "met": met,
        "versions": auto_report.versions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
