"""Serving sweep on the real Triton server, and the tuner built on it.

`run_serving_sweep` serves one built model under several batching configurations at once
(one text-in ensemble per configuration, over the same files) and sends each texts at
increasing concurrency; at every level the configurations take turns, so drift of a shared
machine hits them alike. `tune_artifact` feeds the sweep to the pure
`choose_serving_config` (the in-loop Model Analyzer) and records the choice in the build's
report.json, optionally rewriting the artifact's configs to match.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from optimodel.local.installation import find_perf_analyzer
from optimodel.local.loadtest import (
    LoadResult,
    Payload,
    run_client_load,
    run_perf_analyzer,
)
from optimodel.local.query import Endpoint, infer_texts
from optimodel.local.repository import (
    BuiltModel,
    derive_local_repository,
    find_built_models,
)
from optimodel.local.server import ServerPorts, TritonServer, free_ports
from optimodel.local.text_load import texts_of_lengths
from optimodel.model_builder.report import BuildReport
from optimodel.model_builder.served.configs import render_served_configs
from optimodel.model_builder.serving_choice import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CONFIGS,
    ServingChoice,
    ServingConfig,
    SweepPoint,
    choose_serving_config,
)

if TYPE_CHECKING:
    from rich.console import Console

LoadTool = Literal["auto", "perf_analyzer", "tritonclient"]


def config_model_name(base: str, config: ServingConfig) -> str:
    """The served name of BASE under CONFIG, e.g. `minilm-b500-i2` or `minilm-nb-i1`."""
    batching = f"b{config.max_queue_delay_microseconds}" if config.dynamic_batching else "nb"
    return f"{base}-{batching}-i{config.instances}"


def configured_variant(model: BuiltModel, config: ServingConfig) -> BuiltModel:
    """MODEL served under CONFIG (same model.onnx, other batching and instances)."""
    serving = model.serving.model_copy(
        update={
            "dynamic_batching": config.dynamic_batching,
            "max_queue_delay_microseconds": config.max_queue_delay_microseconds,
            "instances": config.instances,
            "preferred_batch_sizes": (
                model.serving.preferred_batch_sizes if config.dynamic_batching else []
            ),
        }
    )
    return dataclasses.replace(model, name=config_model_name(model.name, config), serving=serving)


@dataclass(frozen=True)
class SweepResult:
    """Every measured point, and how they were measured."""

    model: str
    tool: str
    sequence_length: int
    duration_s: float
    passes: int
    points: list[SweepPoint]
    load_average_before: tuple[float, float, float]
    load_average_after: tuple[float, float, float]


SweepProgress = Callable[[int, int, str], None]  # (done, total, what)


def run_serving_sweep(
    artifact: Path,
    *,
    configs: Sequence[ServingConfig] = DEFAULT_CONFIGS,
    concurrencies: Sequence[int] = DEFAULT_CONCURRENCY,
    duration_s: float = 3.0,
    sequence_length: int = 64,
    tool: LoadTool = "auto",
    passes: int = 1,
    progress: SweepProgress | None = None,
) -> SweepResult:
    """Measure every configuration at every concurrency on one real Triton server.

    With several `passes`, each point is the best of its measurements (`best_of`).
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    model = find_built_models(artifact)[0]
    if not model.tokenizer_dir.is_dir():
        raise FileNotFoundError(f"{model.tokenizer_dir}: the sweep sends real text; rebuild")
    # Texts of SEQUENCE_LENGTH tokens through the text-in ensemble, as clients send them.
    workload = texts_of_lengths(model.tokenizer_dir, [sequence_length] * 256)
    payloads: list[Payload] = workload.payloads()
    perf_analyzer = find_perf_analyzer() if tool != "tritonclient" else None
    if tool == "perf_analyzer" and perf_analyzer is None:
        raise FileNotFoundError("perf_analyzer not found: pip install tritonclient==2.51.0")
    variants = {config: configured_variant(model, config) for config in configs}
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="optimodel-sweep-"))
    measured: dict[tuple[ServingConfig, int], list[SweepPoint]] = {}
    total = len(configs) * len(concurrencies) * passes
    done = 0
    try:
        derive_local_repository(list(variants.values()), root / "repository")
        server = TritonServer(root / "repository", ServerPorts(*free_ports(3)))
        server.start(timeout_s=300)
        try:
            warm_up(server, list(variants.values()), workload.texts[:2])
            for pass_index in range(passes):
                # Odd passes walk the levels downwards, so a slow drift of the machine does
                # not always hit the same end of the curve.
                levels = list(concurrencies)[:: -1 if pass_index % 2 else 1]
                for level_index, level in enumerate(levels):
                    # Alternate the configuration order from level to level (serpentine).
                    ordered = list(configs)[:: -1 if level_index % 2 else 1]
                    for config in ordered:
                        if progress is not None:
                            progress(done, total, f"{config.label}, concurrency {level}")
                        result = _measure(
                            server,
                            variants[config],
                            payloads,
                            workload.token_lengths,
                            level,
                            duration_s,
                            perf_analyzer is not None,
                        )
                        measured.setdefault((config, level), []).append(_point(config, result))
                        done += 1
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    points = [best_of(measured[(config, level)]) for level in concurrencies for config in configs]
    return SweepResult(
        model=model.name,
        tool="perf_analyzer" if perf_analyzer is not None else "tritonclient-grpc-aio",
        sequence_length=sequence_length,
        duration_s=duration_s,
        passes=passes,
        points=points,
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
    )


def warm_up(server: TritonServer, variants: Sequence[BuiltModel], texts: Sequence[str]) -> None:
    """A few texts through every variant first: the python stubs' first calls are slow, and
    perf_analyzer counts no window in which nothing finished."""
    endpoint = Endpoint("grpc", server.grpc_url)
    for variant in variants:
        for text in texts:
            infer_texts(endpoint, variant.name, [text])


def best_of(measurements: Sequence[SweepPoint]) -> SweepPoint:
    """The measurement with the highest throughput (then the lower p99) of one point.

    Other load on a shared machine only ever slows a point down, so of repeated passes
    the best one is the closest to what the configuration can do.
    """
    return max(measurements, key=lambda p: (p.errors == 0, p.throughput, -p.latency_p99_ms))


def _point(config: ServingConfig, result: LoadResult) -> SweepPoint:
    return SweepPoint(
        config=config,
        concurrency=result.concurrency,
        throughput=round(result.throughput, 2),
        latency_p50_ms=round(result.latency_p50_ms, 3),
        latency_p99_ms=round(result.latency_p99_ms, 3),
        errors=result.errors,
        average_batch=round(result.average_batch, 2) if result.average_batch else None,
    )


def _measure(
    server: TritonServer,
    variant: BuiltModel,
    payloads: list[Payload],
    token_lengths: list[int],
    concurrency: int,
    duration_s: float,
    use_perf_analyzer: bool,
) -> LoadResult:
    """One point: texts to the variant's ensemble, batches counted on its model step."""
    names = variant.names
    if use_perf_analyzer:
        perf_analyzer = find_perf_analyzer()
        assert perf_analyzer is not None
        return run_perf_analyzer(
            perf_analyzer,
            server.grpc_url,
            names.ensemble,
            payloads,
            concurrency=concurrency,
            duration_s=duration_s,
            metrics_url=server.metrics_url,
            token_lengths=token_lengths,
            batch_model=names.model,
        )
    return run_client_load(
        server.grpc_url,
        names.ensemble,
        payloads,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=0.5,
        metrics_url=server.metrics_url,
        token_lengths=token_lengths,
        batch_model=names.model,
    )


def apply_serving_choice(artifact: Path, choice: ServingChoice, *, rewrite_config: bool) -> Path:
    """Record CHOICE in the artifact's report.json (and its configs if asked)."""
    model = find_built_models(artifact)[0]
    report_path = model.layout.report
    report = BuildReport.read(report_path)
    report.serving_choice = choice
    report.write(report_path)
    if rewrite_config:
        _rewrite_batching(model, choice.config)
    return report_path


def _rewrite_batching(model: BuiltModel, config: ServingConfig) -> None:
    """Re-render every config of the served repository with CONFIG's batching and instances.

    Through the same renderers as the builder and the operator; whether the model step runs
    on a GPU is kept from the built config (read back into `model.serving.gpu`).
    """
    configs = render_served_configs(
        model.name,
        model.task,
        model.signature,
        configured_variant(model, config).serving,
        max_sequence_length=model.max_sequence_length,
    )
    for name, text in configs.items():
        model.layout.config(name).write_text(text)


def tune_artifact(
    artifact: Path,
    p99_target_ms: float,
    *,
    configs: Sequence[ServingConfig] = DEFAULT_CONFIGS,
    concurrencies: Sequence[int] = DEFAULT_CONCURRENCY,
    duration_s: float = 3.0,
    tool: LoadTool = "auto",
    progress: SweepProgress | None = None,
) -> tuple[SweepResult, ServingChoice]:
    """Sweep ARTIFACT on the real server and choose its configuration for the target."""
    sweep = run_serving_sweep(
        artifact,
        configs=configs,
        concurrencies=concurrencies,
        duration_s=duration_s,
        tool=tool,
        progress=progress,
    )
    return sweep, choose_serving_config(sweep.points, p99_target_ms)


def tune_and_show(
    artifact: Path,
    p99_target_ms: float,
    *,
    concurrencies: Sequence[int],
    duration_s: float,
    rewrite_config: bool,
    console: Console,
) -> int:
    """`optimodel tune`: sweep, choose, record; print the sweep and the choice.

    Returns 0 when a configuration meets the target, 3 when none does (the closest one is
    still recorded, with metTarget false).
    """
    from rich.table import Table

    def progress(done: int, total: int, what: str) -> None:
        console.print(f"[dim]{done + 1}/{total} {what}[/dim]")

    sweep, choice = tune_artifact(
        artifact,
        p99_target_ms,
        concurrencies=concurrencies,
        duration_s=duration_s,
        progress=progress,
    )
    table = Table(title=f"{sweep.model}: inf/s / p99 ms ({sweep.tool}, batch-1 requests)")
    table.add_column("configuration")
    for level in concurrencies:
        table.add_column(f"c={level}", justify="right")
    for config in dict.fromkeys(point.config for point in sweep.points):
        cells = []
        for level in concurrencies:
            found = [p for p in sweep.points if p.config == config and p.concurrency == level]
            cells.append(
                f"{found[0].throughput:.0f} / {found[0].latency_p99_ms:.0f}" if found else "-"
            )
        marker = " [green]←[/green]" if config == choice.config else ""
        table.add_row(config.label + marker, *cells)
    console.print(table)
    report_path = apply_serving_choice(artifact, choice, rewrite_config=rewrite_config)
    colour = "green" if choice.met_target else "yellow"
    console.print(f"[{colour}]{choice.reason}[/{colour}]")
    console.print(
        f"recorded in {report_path} (servingChoice)"
        + ("; every config.pbtxt rewritten" if rewrite_config else "")
    )
    batching = choice.config
    console.print(
        "spec.serving for the manifest: "
        f"{{dynamicBatching: {str(batching.dynamic_batching).lower()}, "
        f"maxQueueDelayMicroseconds: {batching.max_queue_delay_microseconds}, "
        f"instances: {batching.instances}}}"
    )
    return 0 if choice.met_target else 3
