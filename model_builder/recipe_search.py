"""`optimize.recipe: auto`: build every candidate for the serving target, gate each, time each,
publish the fastest that passes.

Candidates are built and scored one after another within `optimize.searchSeconds` (time for
the timing run is reserved up front; candidates that would not fit are skipped and recorded
as such), then every candidate that built is timed in one interleaved run, so their ratios
are comparable. fp16 candidates are scored with their fp16 weights, as served: on the CUDA
provider when this onnxruntime has one, else on the CPU provider, and each trial says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optimodel.model_builder.benchmark import (
    BenchmarkSettings,
    Runner,
    onnx_runner,
    time_runners,
    to_measurement,
)
from optimodel.model_builder.evaluate import (
    Device,
    Score,
    execution_providers,
    gate_verdict,
    shortfall,
)
from optimodel.model_builder.modeling import TokenBatch
from optimodel.model_builder.quantize import INT8_OPS, model_size_bytes, op_summary
from optimodel.model_builder.recipe import Recipe, RecipeInputs
from optimodel.model_builder.report import AccuracyResult, RecipeTrial
from optimodel.model_builder.spec import AccuracyGate

# The timing run of each candidate: short, interleaved, best round kept (benchmark.py).
SEARCH_BENCHMARK = BenchmarkSettings(
    batch_size=32, sequence_length=64, rounds=2, seconds_per_round=0.75, latency_calls_per_round=10
)
# Per round and candidate beyond seconds_per_round: warm-up calls and the batch-1 latencies.
ROUND_OVERHEAD_SECONDS = 0.5
# Throughputs this close to the fastest are noise on a shared machine: the earliest such
# candidate in search order (the plainest recipe) is published.
TIE_TOLERANCE = 0.03

SearchProgress = Callable[[float, float, str], None]  # completed, total, what is happening
Scorer = Callable[[Path, Device], Score]
Finish = Callable[[Path], None]  # what every artifact gets before it is scored (the input guard)


@dataclass(frozen=True)
class SearchSettings:
    """How long the search may take and how it times the candidates."""

    seconds: float = 180.0
    benchmark: BenchmarkSettings = SEARCH_BENCHMARK

    def timing_seconds(self, candidates: int) -> float:
        """Expected length of the timing run over `candidates`."""
        per_round = self.benchmark.seconds_per_round + ROUND_OVERHEAD_SECONDS
        return candidates * self.benchmark.rounds * per_round


@dataclass
class Candidate:
    """One recipe as the search saw it."""

    recipe: Recipe
    trial: RecipeTrial
    path: Path | None = None
    score: Score | None = None
    verdict: AccuracyResult | None = None


@dataclass
class SearchResult:
    """Every candidate in search order, the one published and the closest miss."""

    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    closest_failure: Candidate | None = None

    @property
    def trials(self) -> list[RecipeTrial]:
        return [candidate.trial for candidate in self.candidates]


def scored_on(device: Device, precision: str) -> str:
    """Which provider and precision a candidate's fidelity was measured with."""
    provider = execution_providers(device)[0]
    if precision == "fp16" and provider == "CPUExecutionProvider":
        return (
            "CPUExecutionProvider, fp16 weights as served (no GPU on the build machine: "
            "onnxruntime computes in fp32 around the casts it inserts)"
        )
    return f"{provider}, {precision}"


def choose_trial(trials: Sequence[RecipeTrial], tolerance: float = TIE_TOLERANCE) -> int | None:
    """Index of the published trial: the fastest (batch-32 throughput) of those that passed,
    where any within `tolerance` of the fastest counts as a tie won by the earliest in search
    order; the first that passed when none was timed; None when none passed."""
    passed = [index for index, trial in enumerate(trials) if trial.passed]
    if not passed:
        return None
    timed = [index for index in passed if trials[index].throughput is not None]
    if not timed:
        return passed[0]
    fastest = max(trials[index].throughput or 0.0 for index in timed)
    return next(
        index for index in timed if (trials[index].throughput or 0.0) >= fastest * (1 - tolerance)
    )


def why_not_published(
    trial: RecipeTrial, winner: RecipeTrial, tolerance: float = TIE_TOLERANCE
) -> str:
    """Why a trial that passed the gate lost to the published one: slower, or a tie."""
    if trial.throughput is None or winner.throughput is None:
        return f"passed; {winner.recipe} came first"
    versus = f"{winner.throughput:.1f}/s vs {trial.throughput:.1f}/s here"
    if trial.throughput <= winner.throughput:
        return f"passed; slower than {winner.recipe} ({versus})"
    return (
        f"passed; {winner.recipe} published ({versus}: within {tolerance:.0%}, a tie goes to "
        "the earlier candidate)"
    )


def budget_allows(
    elapsed: float, built: int, mean_build_seconds: float, settings: SearchSettings
) -> bool:
    """Whether one more candidate (built, then timed with the others) fits the budget.
    The first candidate is always built: a search never publishes nothing for lack of time."""
    if built == 0:
        return True
    needed = elapsed + mean_build_seconds + settings.timing_seconds(built + 1)
    return needed <= settings.seconds


def gate_miss(verdict: AccuracyResult) -> str:
    """How a verdict missed the gate, in words (empty when it passed)."""
    parts = []
    if verdict.mean < verdict.threshold:
        parts.append(
            f"{verdict.metric} {verdict.mean:.4f} is {verdict.threshold - verdict.mean:.4f} "
            f"below min {verdict.threshold}"
        )
    worst, floor = verdict.min, verdict.worst_case_threshold
    if worst is not None and floor is not None and worst < floor:
        parts.append(f"worst example {worst:.4f} is {floor - worst:.4f} below worstCaseMin {floor}")
    return "; ".join(parts)


def _build_and_score(
    candidate: Candidate,
    inputs: RecipeInputs,
    scorer: Scorer,
    gate: AccuracyGate,
    device: Device,
    finish: Finish,
) -> None:
    recipe, trial = candidate.recipe, candidate.trial
    path = inputs.work / f"recipe-{recipe.name}.onnx"
    try:
        trial.detail = recipe.make(inputs, path)
        finish(path)
    except Exception as error:  # a candidate that cannot be built loses, the search goes on
        trial.rejected = f"could not be built: {type(error).__name__}: {error}"
        return
    trial.op_summary = op_summary(path)
    trial.size_bytes = model_size_bytes(path)
    int8 = {op: n for op, n in trial.op_summary.items() if op in INT8_OPS}
    if recipe.target == "gpu" and int8:
        trial.rejected = f"holds int8 ops the CUDA provider runs on the CPU: {int8}"
        return
    trial.scored_on = scored_on(device, recipe.precision)
    try:
        score = scorer(path, device)
    except Exception as error:  # e.g. a kernel the scoring provider lacks
        trial.rejected = f"could not be scored: {type(error).__name__}: {error}"
        return
    verdict = gate_verdict(score, gate)
    candidate.path, candidate.score, candidate.verdict = path, score, verdict
    trial.fidelity_metric = score.metric
    trial.fidelity_mean = round(score.mean, 6)
    trial.fidelity_worst = None if score.min is None else round(score.min, 6)
    trial.passed = verdict.passed
    if not verdict.passed:
        trial.rejected = f"accuracy gate: {gate_miss(verdict)}"


def _time_candidates(
    timed: list[Candidate],
    batches: tuple[TokenBatch, TokenBatch],
    settings: SearchSettings,
    device: Device,
) -> None:
    bench = settings.benchmark
    runners: dict[str, Runner] = {
        candidate.recipe.name: onnx_runner(candidate.path, bench.thread_count, device)
        for candidate in timed
        if candidate.path is not None
    }
    single, full = batches
    timings = time_runners(runners, single, full, bench)
    for candidate in timed:
        measured = to_measurement(timings[candidate.recipe.name], 0, bench)
        candidate.trial.throughput = measured.throughput
        candidate.trial.latency_p50_ms = measured.latency_p50_ms


def search_recipes(
    recipes: Sequence[Recipe],
    inputs: RecipeInputs,
    *,
    scorer: Scorer,
    gate: AccuracyGate,
    batches: tuple[TokenBatch, TokenBatch],
    settings: SearchSettings,
    device: Device = "cpu",
    progress: SearchProgress | None = None,
    finish: Finish = lambda path: None,
    clock: Callable[[], float] = time.perf_counter,
) -> SearchResult:
    """Build, gate and time `recipes` in order; choose the fastest that passed. `finish` runs
    on every artifact right after it is made, so it is scored and timed as it will be served."""

    def report(done: float, detail: str) -> None:
        if progress is not None:
            progress(done, len(recipes) + 1, detail)

    result = SearchResult()
    started = clock()
    build_seconds: list[float] = []
    for index, recipe in enumerate(recipes):
        candidate = Candidate(recipe, RecipeTrial(recipe=recipe.name, summary=recipe.summary))
        result.candidates.append(candidate)
        mean_build = sum(build_seconds) / len(build_seconds) if build_seconds else 0.0
        if not budget_allows(clock() - started, len(build_seconds), mean_build, settings):
            candidate.trial.rejected = (
                f"not tried: the search budget (optimize.searchSeconds {settings.seconds:g}) "
                "was spent"
            )
            continue
        report(index, f"{index + 1}/{len(recipes)} {recipe.name}")
        began = clock()
        _build_and_score(candidate, inputs, scorer, gate, device, finish)
        candidate.trial.build_seconds = round(clock() - began, 3)
        build_seconds.append(candidate.trial.build_seconds)

    timed = [candidate for candidate in result.candidates if candidate.path is not None]
    if timed:
        report(len(recipes), f"timing {len(timed)} candidate(s)")
        _time_candidates(timed, batches, settings, device)

    chosen = choose_trial(result.trials)
    if chosen is not None:
        result.chosen = result.candidates[chosen]
        winner = result.chosen.trial
        winner.chosen = True
        for trial in result.trials:
            if trial.passed and not trial.chosen:
                trial.rejected = why_not_published(trial, winner)
    failed = [c for c in result.candidates if c.verdict is not None and not c.verdict.passed]
    if failed:
        result.closest_failure = min(
            failed, key=lambda c: shortfall(c.verdict) if c.verdict else float("inf")
        )
    report(len(recipes) + 1, "done")
    return result
