"""recipe auto on tiny models: the candidates' graphs, the choice, the budget, all-fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto

from optimodel.model_builder.benchmark import BenchmarkSettings
from optimodel.model_builder.errors import AccuracyGateError
from optimodel.model_builder.input_guard import GUARD_PREFIX
from optimodel.model_builder.pipeline import run_build
from optimodel.model_builder.quantize import INT8_OPS, op_counts
from optimodel.model_builder.recipe_search import (
    SearchSettings,
    budget_allows,
    choose_trial,
    gate_miss,
    why_not_published,
)
from optimodel.model_builder.report import AccuracyResult, BuildReport, RecipeTrial
from optimodel.model_builder.served.layout import ServedRepository
from optimodel.model_builder.serving_target import RECIPES_BY_TARGET
from optimodel.model_builder.spec import BuildSpec
from tests.builder_models import TinyKind, single_torch_thread, tiny_model_dir

QUICK_SEARCH = BenchmarkSettings(
    batch_size=4,
    sequence_length=16,
    threads=1,
    rounds=1,
    seconds_per_round=0.05,
    latency_calls_per_round=3,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _spec(gpus: int, kind: TinyKind = "bert", **optimize: Any) -> BuildSpec:
    return BuildSpec.model_validate(
        {
            "name": "tiny",
            "source": {"uri": f"file://{tiny_model_dir(kind)}", "task": "feature-extraction"},
            "optimize": {
                "accuracy": {"metric": "cosine", "min": 0.9},
                "evalData": {"uri": "builtin://eval-texts", "maxSamples": 48},
                **optimize,
            },
            "serving": {"gpu": {"count": gpus}},
        }
    )


def _build(spec: BuildSpec, out: Path) -> BuildReport:
    return run_build(spec, out, benchmark=False, search_benchmark=QUICK_SEARCH)


@pytest.fixture(scope="module")
def gpu_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildReport, Path]:
    out = tmp_path_factory.mktemp("gpu")
    return _build(_spec(1), out), ServedRepository.at(out / "tiny").onnx


@pytest.fixture(scope="module")
def cpu_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildReport, Path]:
    out = tmp_path_factory.mktemp("cpu")
    return _build(_spec(0), out), ServedRepository.at(out / "tiny").onnx


def _trials(report: BuildReport) -> dict[str, RecipeTrial]:
    return {trial.recipe: trial for trial in report.trials}


def test_gpu_serving_publishes_an_fp16_or_fused_graph_without_int8(
    gpu_build: tuple[BuildReport, Path],
) -> None:
    report, model = gpu_build
    assert report.target == "gpu"
    assert [t.recipe for t in report.trials] == list(RECIPES_BY_TARGET["gpu"])
    trials = _trials(report)
    assert all(trial.passed for trial in report.trials), trials
    for trial in report.trials:  # zero DynamicQuantizeLinear / MatMulInteger / QDQ nodes
        assert not set(trial.op_summary) & set(INT8_OPS), trial
    # Attention fusion happened (explicit num_heads/hidden_size): 2 layers, 2 Attention nodes.
    assert trials["fp16-fused"].op_summary["Attention"] == 2
    assert trials["fp32-fused"].op_summary["Attention"] == 2
    assert "Attention" not in trials["fp16"].op_summary
    # fp16 is scored as served, and the report says where.
    assert "fp16 weights as served" in (trials["fp16-fused"].scored_on or "")
    assert (trials["fp16-fused"].fidelity_worst or 0.0) >= 0.99

    chosen = [trial for trial in report.trials if trial.chosen]
    assert len(chosen) == 1 and report.recipe == chosen[0].recipe
    published = op_counts(model)
    assert not set(published) & set(INT8_OPS)
    assert {op: published[op] for op in chosen[0].op_summary} == chosen[0].op_summary
    graph = onnx.load(str(model)).graph
    assert any(node.name.startswith(GUARD_PREFIX) for node in graph.node)  # scored as served
    assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.INT64] * 2
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    if chosen[0].recipe.startswith("fp16"):
        assert any(init.data_type == TensorProto.FLOAT16 for init in graph.initializer)


def test_cpu_serving_tries_every_cpu_recipe_and_publishes_the_fastest_passing(
    cpu_build: tuple[BuildReport, Path],
) -> None:
    report, model = cpu_build
    assert report.target == "cpu"
    trials = _trials(report)
    assert list(trials) == list(RECIPES_BY_TARGET["cpu"])
    plain = trials["int8-per-channel"].op_summary
    assert plain["MatMulInteger"] == 12 and "QAttention" not in plain  # 2 layers x 6
    assert trials["int8-reduce-range"].op_summary["MatMulInteger"] == 12
    assert trials["int8-fused"].op_summary["QAttention"] == 2
    for kept in (2, 4, 8):
        ops = trials[f"int8-keep-fp32-{kept}"].op_summary
        assert ops["MatMulInteger"] == 12 - kept
    assert "MatMulInteger" not in trials["fp32-fused"].op_summary
    assert trials["fp32-fused"].op_summary["Attention"] == 2
    # Keeping more MatMuls in fp32 never loses fidelity here.
    means = [trials[f"int8-keep-fp32-{k}"].fidelity_mean or 0.0 for k in (2, 4, 8)]
    assert means == sorted(means)

    passed = [t for t in report.trials if t.passed and t.throughput is not None]
    chosen = next(t for t in report.trials if t.chosen)
    fastest = max(t.throughput or 0.0 for t in passed)
    assert (chosen.throughput or 0.0) >= 0.97 * fastest
    assert op_counts(model)["MatMulInteger"] == chosen.op_summary.get("MatMulInteger", 0)
    assert report.machine is not None and report.machine.cores >= 1
    stored = BuildReport.read(ServedRepository.at(model.parents[2]).report)
    assert stored.trials == report.trials and stored.recipe == chosen.recipe


def test_fusion_that_does_not_apply_loses_and_the_search_goes_on(tmp_path: Path) -> None:
    """No attention shape (an architecture the fusion does not know): the fused candidates
    lose with the reason, the plain fp16 one is published."""
    from optimodel.model_builder.evaluate import Score, cosine_similarities, onnx_outputs
    from optimodel.model_builder.export import export_onnx
    from optimodel.model_builder.gpu_recipe import GPU_RECIPES
    from optimodel.model_builder.load import load_model
    from optimodel.model_builder.modeling import tokenize
    from optimodel.model_builder.recipe import RecipeInputs
    from optimodel.model_builder.recipe_search import search_recipes

    loaded = load_model(_spec(1).source)
    exported = tmp_path / "exported.onnx"
    export_onnx(loaded.task_model, loaded.tokenizer, exported, max_length=64)
    texts = ["A short text.", "Another, somewhat longer text to embed."]
    reference = onnx_outputs(exported, loaded.tokenizer, texts, 64)

    def scorer(path: Path, device: str) -> Score:
        similarities = cosine_similarities(
            reference, onnx_outputs(path, loaded.tokenizer, texts, 64)
        )
        return Score("cosine", float(similarities.mean()), float(similarities.min()), 2)

    batch = tokenize(loaded.tokenizer, texts, 16)
    result = search_recipes(
        GPU_RECIPES,
        RecipeInputs(exported, tmp_path, attention=None, rank_sensitive_matmuls=list),
        scorer=scorer,
        gate=_spec(1).optimize.accuracy,
        batches=(batch, batch),
        settings=SearchSettings(benchmark=QUICK_SEARCH),
    )
    trials = {trial.recipe: trial for trial in result.trials}
    assert "FusionNotApplicableError" in (trials["fp16-fused"].rejected or "")
    assert "could not be built" in (trials["fp32-fused"].rejected or "")
    assert result.chosen is not None and result.chosen.recipe.name == "fp16"
    assert trials["fp16"].chosen and trials["fp16"].throughput is not None


def test_all_candidates_failing_names_the_closest_and_by_how_much(tmp_path: Path) -> None:
    spec = _spec(
        0,
        recipe="int8-keep-fp32-2",
        accuracy={"metric": "cosine", "min": 0.999999, "worstCaseMin": 0.999999},
    )
    with pytest.raises(AccuracyGateError) as caught:
        _build(spec, tmp_path)
    error = caught.value
    assert error.exit_code == 3
    assert "no candidate recipe passed the accuracy gate (1 tried)" in error.message
    assert (
        "the closest, int8-keep-fp32-2" in error.message and "below min 0.999999" in error.message
    )
    assert [t.recipe for t in error.report.trials] == ["int8-keep-fp32-2"]
    assert not (tmp_path / "tiny").exists()


def test_search_stops_starting_candidates_when_the_budget_is_spent(tmp_path: Path) -> None:
    report = _build(_spec(0, searchSeconds=1), tmp_path)
    tried = [t for t in report.trials if t.build_seconds > 0]
    skipped = [t for t in report.trials if t.rejected and t.rejected.startswith("not tried")]
    assert [t.recipe for t in tried] == ["int8-per-channel"]
    assert len(skipped) == len(RECIPES_BY_TARGET["cpu"]) - 1
    assert "optimize.searchSeconds 1" in (skipped[0].rejected or "")
    assert report.recipe == "int8-per-channel"


def _trial(name: str, passed: bool, throughput: float | None) -> RecipeTrial:
    return RecipeTrial(recipe=name, summary=name, passed=passed, throughput=throughput)


@pytest.mark.parametrize(
    ("trials", "chosen"),
    [
        ([], None),
        ([_trial("a", False, 500.0)], None),
        ([_trial("a", True, 100.0), _trial("b", True, 200.0)], 1),
        ([_trial("a", True, 100.0), _trial("b", False, 900.0), _trial("c", True, 150.0)], 2),
        ([_trial("a", True, 198.0), _trial("b", True, 200.0)], 0),  # a tie: the earlier wins
        ([_trial("a", True, None), _trial("b", True, None)], 0),  # nothing timed
        ([_trial("a", True, None), _trial("b", True, 10.0)], 1),
    ],
)
def test_choose_trial(trials: list[RecipeTrial], chosen: int | None) -> None:
    assert choose_trial(trials) == chosen


@pytest.mark.parametrize(
    ("throughput", "reason"),
    [
        (100.0, "passed; slower than a (200.0/s vs 100.0/s here)"),
        (
            205.0,
            "passed; a published (200.0/s vs 205.0/s here: within 3%, a tie goes to the "
            "earlier candidate)",
        ),
        (None, "passed; a came first"),
    ],
)
def test_a_passing_trial_that_lost_says_whether_it_was_slower_or_a_tie(
    throughput: float | None, reason: str
) -> None:
    assert why_not_published(_trial("b", True, throughput), _trial("a", True, 200.0)) == reason


@pytest.mark.parametrize(
    ("elapsed", "built", "mean", "allowed"),
    [
        (500.0, 0, 0.0, True),  # the first candidate is always built
        (10.0, 1, 10.0, True),
        (160.0, 5, 10.0, False),  # 160 + 10 + timing 6 x 2 rounds x 1.25 s > 180
        (100.0, 5, 10.0, True),
    ],
)
def test_budget_reserves_the_timing_run(
    elapsed: float, built: int, mean: float, allowed: bool
) -> None:
    assert budget_allows(elapsed, built, mean, SearchSettings(seconds=180.0)) == allowed


def test_gate_miss_says_by_how_much() -> None:
    verdict = AccuracyResult(
        metric="cosine",
        mean=0.985,
        min=0.93,
        threshold=0.99,
        worst_case_threshold=0.95,
        samples=10,
        passed=False,
    )
    assert gate_miss(verdict) == (
        "cosine 0.9850 is 0.0050 below min 0.99; worst example 0.9300 is 0.0200 below "
        "worstCaseMin 0.95"
    )
