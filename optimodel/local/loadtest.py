"""Load tests against a running Triton server: closed-loop concurrency with real clients.

Two load generators, same result type:
- `run_client_load`: tritonclient gRPC aio in one or more client processes. `tritonclient`
  clients are not thread-safe and one Python process on a small machine cannot keep 64
  requests in flight, so the concurrency is split over processes, each with its own client
  and with every request's inputs built before the timed window.
- `run_perf_analyzer`: Triton's C++ `perf_analyzer` 2.51 from the tritonclient wheel, when it
  runs here (see installation.find_perf_analyzer).

The average batch the server formed comes from its own metrics: the growth of
`nv_inference_count` (inferences) over `nv_inference_exec_count` (model executions).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import math
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from optimodel.local.installation import PerfAnalyzer
from optimodel.local.server import metrics_text
from optimodel.model_builder.triton_config import ModelSignature

Tool = Literal["tritonclient-grpc-aio", "perf_analyzer"]
Payload = dict[str, npt.NDArray[Any]]

# Short English sentences (9-16 MiniLM tokens): the "short texts" of the batching benchmark.
SAMPLE_TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "The weather in Paris is mild in the spring.",
    "Please send the invoice by Friday.",
    "Our flight was delayed by two hours because of fog.",
    "Which laptop has the best battery life this year?",
    "She plays the violin in the city orchestra.",
    "The museum opens at nine and closes at six.",
    "Can you recommend a good Italian restaurant nearby?",
    "Stock markets fell sharply after the announcement.",
    "The new library has a quiet reading room on every floor.",
    "He forgot his umbrella at the train station.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The committee approved the budget for next year.",
    "My phone screen cracked when it fell on the stairs.",
    "This recipe needs two eggs, flour and a cup of milk.",
    "The children built a sandcastle on the beach.",
    "Where can I find the nearest pharmacy?",
    "The software update fixed the login problem.",
    "A large storm is expected to reach the coast tonight.",
    "They adopted a small dog from the shelter.",
    "The conference will be held online this year.",
    "I would like to cancel my subscription, please.",
    "Electric cars are becoming cheaper every year.",
    "The garden is full of roses and tulips in May.",
    "Our team won the final match in extra time.",
    "The bank will be closed on the public holiday.",
    "He is learning to cook traditional Japanese dishes.",
    "The report shows a steady rise in online sales.",
    "Turn left at the second traffic light.",
    "The old bridge was repaired after the flood.",
]


def tokenize(
    tokenizer_dir: Path, count: int, sequence_length: int | None, texts: Sequence[str] = ()
) -> list[Payload]:
    """COUNT batch-1 requests of real token ids from the built model's tokenizer.

    With SEQUENCE_LENGTH None the sample sentences are used as they are (short texts);
    otherwise every request has exactly that many tokens (long text, truncated).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sources = list(texts or SAMPLE_TEXTS)
    payloads: list[Payload] = []
    for index in range(count):
        if sequence_length is None:
            encoded = tokenizer(sources[index % len(sources)], return_tensors="np")
        else:
            rotated = sources[index % len(sources) :] + sources[: index % len(sources)]
            text = " ".join(rotated)
            while len(text.split()) < sequence_length:
                text += " " + text
            encoded = tokenizer(
                text, truncation=True, max_length=sequence_length, return_tensors="np"
            )
        payloads.append({key: np.asarray(value, dtype=np.int64) for key, value in encoded.items()})
    return payloads


def synthetic_tokens(count: int, sequence_length: int, seed: int = 0) -> list[Payload]:
    """COUNT batch-1 requests of random ids in [1, 100) (valid for any vocabulary)."""
    rng = np.random.default_rng(seed)
    payloads = []
    for _ in range(count):
        ids = rng.integers(1, 100, size=(1, sequence_length), dtype=np.int64)
        payloads.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return payloads


def fit_to_signature(payloads: list[Payload], signature: ModelSignature) -> list[Payload]:
    """Keep the inputs the model takes; add token_type_ids (zeros) if it wants them."""
    wanted = [tensor.name for tensor in signature.inputs]
    fitted = []
    for payload in payloads:
        ids = payload["input_ids"]
        filled = dict(payload)
        filled.setdefault("attention_mask", np.ones_like(ids))
        filled.setdefault("token_type_ids", np.zeros_like(ids))
        missing = [name for name in wanted if name not in filled]
        if missing:
            raise ValueError(
                f"model input(s) {missing} are not token inputs; the load test feeds "
                f"input_ids/attention_mask/token_type_ids only"
            )
        fitted.append({name: filled[name] for name in wanted})
    return fitted


def stack(payloads: list[Payload], batch_size: int) -> list[Payload]:
    """Group batch-1 payloads of equal length into requests of BATCH_SIZE rows."""
    if batch_size == 1:
        return payloads
    grouped = []
    for start in range(0, len(payloads) - batch_size + 1, batch_size):
        chunk = payloads[start : start + batch_size]
        grouped.append({name: np.concatenate([p[name] for p in chunk]) for name in chunk[0]})
    if not grouped:
        raise ValueError(f"need at least {batch_size} payloads to form one batch")
    return grouped


@dataclass(frozen=True)
class LoadResult:
    """One load level against one model."""

    model: str
    tool: Tool
    concurrency: int
    batch_size: int
    sequence_length: int
    mixed_lengths: bool
    requests: int
    errors: int
    seconds: float
    throughput: float
    latency_p50_ms: float
    latency_p99_ms: float
    average_batch: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lengths(payloads: list[Payload], token_lengths: Sequence[int] | None) -> tuple[int, bool]:
    """(longest sequence, whether lengths differ) of the requests.

    Text requests carry no token count: their TOKEN_LENGTHS are passed in (see text_load).
    """
    if token_lengths:
        counted = set(token_lengths)
    else:
        counted = {int(next(iter(p.values())).shape[1]) for p in payloads}
    return max(counted), len(counted) > 1


_METRIC_LINE = re.compile(r"^(nv_inference_count|nv_inference_exec_count)\{([^}]*)\}\s+(\S+)$")


def inference_counters(text: str, model: str) -> tuple[float, float]:
    """(nv_inference_count, nv_inference_exec_count) of MODEL in a metrics scrape."""
    counts = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match and f'model="{model}"' in match.group(2):
            counts[match.group(1)] += float(match.group(3))
    return counts["nv_inference_count"], counts["nv_inference_exec_count"]


def average_batch(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Inferences per model execution between two scrapes."""
    executions = after[1] - before[1]
    return (after[0] - before[0]) / executions if executions > 0 else None


@dataclass(frozen=True)
class _WorkerJob:
    url: str
    model: str
    payloads: list[Payload]
    concurrency: int
    start_at: float
    end_at: float
    max_requests: int
    # Replay mode: from start_at, send each payload exactly once, count every answer.
    once: bool = False


@dataclass(frozen=True)
class _WorkerResult:
    latencies_ms: list[float]
    completed: int
    errors: int
    first_error: str | None
    last_finished: float = 0.0


async def _worker_loop(job: _WorkerJob) -> _WorkerResult:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    requests = []
    for payload in job.payloads:
        inputs = []
        for name, array in payload.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        requests.append(inputs)
    latencies: list[float] = []
    state = {"next": 0, "completed": 0, "errors": 0, "sent": 0}
    first_error: list[str] = []
    client = grpcaio.InferenceServerClient(job.url)

    last_finished = [0.0]

    async def one_stream(offset: int) -> None:
        index = offset
        if job.once:
            await asyncio.sleep(max(0.0, job.start_at - time.time()))
        while True:
            now = time.time()
            if job.once and index >= len(requests):
                return
            if now >= job.end_at or state["sent"] >= job.max_requests:
                return
            state["sent"] += 1
            started = time.perf_counter()
            try:
                await client.infer(job.model, requests[index % len(requests)])
            except InferenceServerException as error:
                state["errors"] += 1
                if not first_error:
                    first_error.append(str(error))
                if state["errors"] > 100:
                    return
                continue
            finally:
                index += job.concurrency
            finished = time.time()
            last_finished[0] = max(last_finished[0], finished)
            # Count what finished inside the window; earlier answers are warm-up.
            if job.once or job.start_at <= finished <= job.end_at:
                latencies.append((time.perf_counter() - started) * 1000.0)
                state["completed"] += 1

    try:
        await asyncio.gather(*(one_stream(i) for i in range(job.concurrency)))
    finally:
        await client.close()
    return _WorkerResult(
        latencies,
        state["completed"],
        state["errors"],
        next(iter(first_error), None),
        last_finished[0],
    )


def _run_worker(job: _WorkerJob) -> _WorkerResult:
    return asyncio.run(_worker_loop(job))


def _run_worker_processes(
    jobs: list[_WorkerJob],
    *,
    warmup_s: float,
    duration_s: float,
    on_start: Callable[[float], None],
    timeout_s: float,
) -> list[_WorkerResult]:
    """One `python -m optimodel.local.loadtest` client process per job.

    Plain subprocesses rather than multiprocessing: they never re-import the caller's
    __main__ (a CLI, pytest or a script), and are ended on any failure. Handshake over
    pipes: job (pickle) → "ready" once the client is imported → window start time → result
    (pickle); the window opens only when every client is ready, however slow the machine.
    """
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", __name__, WORKER_FLAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in jobs
    ]

    def failure(worker: subprocess.Popen[bytes], what: str) -> RuntimeError:
        worker.kill()
        _, err = worker.communicate()
        return RuntimeError(
            f"load-test client process {what} (exit {worker.returncode}): "
            f"{err.decode(errors='replace')[-2000:]}"
        )

    try:
        for worker, job in zip(workers, jobs, strict=True):
            assert worker.stdin is not None
            data = pickle.dumps(job)
            worker.stdin.write(struct.pack("!Q", len(data)) + data)
            worker.stdin.flush()
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != READY:
                raise failure(worker, "did not start")
        start_at = time.time() + warmup_s
        on_start(start_at)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(struct.pack("!dd", start_at, start_at + duration_s))
            worker.stdin.close()
            worker.stdin = None  # sent; communicate() below only reads
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=timeout_s)
            if worker.returncode != 0:
                raise failure(worker, "failed")
            result = pickle.loads(out)
            if not isinstance(result, _WorkerResult):
                raise RuntimeError("load-test client process returned no result")
            results.append(result)
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


WORKER_FLAG = "--client-worker"
READY = b"ready"


def _worker_main() -> None:
    import tritonclient.grpc.aio  # noqa: F401  (imported before "ready": it takes a while)

    stdin = sys.stdin.buffer
    (size,) = struct.unpack("!Q", stdin.read(8))
    job: _WorkerJob = pickle.loads(stdin.read(size))
    sys.stdout.buffer.write(READY + b"\n")
    sys.stdout.buffer.flush()
    start_at, end_at = struct.unpack("!dd", stdin.read(16))
    job = dataclasses.replace(job, start_at=start_at, end_at=end_at)
    sys.stdout.buffer.write(pickle.dumps(_run_worker(job)))


def run_client_load(
    grpc_url: str,
    model: str,
    payloads: list[Payload],
    *,
    concurrency: int,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    processes: int | None = None,
    metrics_url: str | None = None,
    max_requests: int = 1_000_000,
    token_lengths: Sequence[int] | None = None,
    batch_model: str | None = None,
) -> LoadResult:
    """Keep CONCURRENCY requests in flight for DURATION_S (after WARMUP_S) and measure."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    processes = processes or max(1, min(4, math.ceil(concurrency / 32)))
    processes = min(processes, concurrency)
    shares = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    jobs = [
        _WorkerJob(grpc_url, model, payloads, share, 0.0, 0.0, max_requests // processes)
        for share in shares
    ]
    # The "before" scrape is taken when the window opens, while the clients run.
    scrapes: list[_Scrape] = []

    counted = batch_model or model

    def window_opens(start_at: float) -> None:
        if metrics_url:
            scrapes.append(_Scrape(metrics_url, counted, start_at))

    if processes == 1:
        import tritonclient.grpc.aio  # noqa: F401  (before the clock starts)

        start_at = time.time() + warmup_s
        window_opens(start_at)
        job = dataclasses.replace(jobs[0], start_at=start_at, end_at=start_at + duration_s)
        results = [_run_worker(job)]
    else:
        results = _run_worker_processes(
            jobs,
            warmup_s=warmup_s,
            duration_s=duration_s,
            on_start=window_opens,
            timeout_s=duration_s + warmup_s + 120,
        )
    before = scrapes[0].result() if scrapes else None
    after = inference_counters(metrics_text(metrics_url), counted) if metrics_url else None
    latencies = np.array([x for r in results for x in r.latencies_ms])
    completed = sum(r.completed for r in results)
    errors = sum(r.errors for r in results)
    if completed == 0:
        reason = next((r.first_error for r in results if r.first_error), "no request finished")
        raise RuntimeError(f"load test on {model!r} got no answers: {reason}")
    batch = int(next(iter(payloads[0].values())).shape[0])
    sequence, mixed = _lengths(payloads, token_lengths)
    return LoadResult(
        model=model,
        tool="tritonclient-grpc-aio",
        concurrency=concurrency,
        batch_size=batch,
        sequence_length=sequence,
        mixed_lengths=mixed,
        requests=completed,
        errors=errors,
        seconds=duration_s,
        throughput=completed * batch / duration_s,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
        average_batch=average_batch(before, after) if before and after else None,
    )


def replay_trace(
    grpc_url: str,
    model: str,
    payloads: list[Payload],
    *,
    concurrency: int,
    processes: int = 2,
    metrics_url: str | None = None,
    token_lengths: Sequence[int] | None = None,
    batch_model: str | None = None,
    timeout_s: float = 600.0,
) -> LoadResult:
    """Send every payload exactly once, CONCURRENCY in flight, and time the whole trace.

    For traces whose order matters (repeated texts and a response cache): nothing is sent
    twice, the client processes share the trace out (process k sends payloads k, k+P, ...),
    and throughput is the trace's size over the time from the start to its last answer.
    """
    if concurrency < 1 or not payloads:
        raise ValueError("replay needs concurrency >= 1 and at least one payload")
    processes = max(1, min(processes, concurrency, len(payloads)))
    shares = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    jobs = [
        _WorkerJob(grpc_url, model, payloads[k::processes], share, 0.0, 0.0, len(payloads), True)
        for k, share in enumerate(shares)
    ]
    counted = batch_model or model
    before = inference_counters(metrics_text(metrics_url), counted) if metrics_url else None
    started: list[float] = []
    if processes == 1:
        import tritonclient.grpc.aio  # noqa: F401  (before the clock starts)

        started.append(time.time() + 0.2)
        job = dataclasses.replace(jobs[0], start_at=started[0], end_at=started[0] + timeout_s)
        results = [_run_worker(job)]
    else:
        results = _run_worker_processes(
            jobs,
            warmup_s=0.5,
            duration_s=timeout_s,
            on_start=started.append,
            timeout_s=timeout_s + 60,
        )
    after = inference_counters(metrics_text(metrics_url), counted) if metrics_url else None
    completed = sum(r.completed for r in results)
    if completed == 0:
        reason = next((r.first_error for r in results if r.first_error), "no request finished")
        raise RuntimeError(f"trace replay on {model!r} got no answers: {reason}")
    elapsed = max(r.last_finished for r in results) - started[0]
    latencies = np.array([x for r in results for x in r.latencies_ms])
    sequence, mixed = _lengths(payloads, token_lengths)
    batch = int(next(iter(payloads[0].values())).shape[0])
    return LoadResult(
        model=model,
        tool="tritonclient-grpc-aio",
        concurrency=concurrency,
        batch_size=batch,
        sequence_length=sequence,
        mixed_lengths=mixed,
        requests=completed,
        errors=sum(r.errors for r in results),
        seconds=elapsed,
        throughput=completed * batch / elapsed,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
        average_batch=average_batch(before, after) if before and after else None,
    )


class _Scrape:
    """A metrics scrape taken in a background thread at a given wall-clock time."""

    def __init__(self, url: str, model: str, at: float) -> None:
        import threading

        self.value: tuple[float, float] | None = None
        self._thread = threading.Thread(target=self._run, args=(url, model, at), daemon=True)
        self._thread.start()

    def _run(self, url: str, model: str, at: float) -> None:
        time.sleep(max(0.0, at - time.time()))
        self.value = inference_counters(metrics_text(url), model)

    def result(self) -> tuple[float, float] | None:
        self._thread.join()
        return self.value


def _perf_analyzer_input(payloads: list[Payload], path: Path) -> None:
    """perf_analyzer's --input-data JSON: one entry per batch-1 request, with shapes."""

    def content(array: npt.NDArray[Any]) -> list[Any]:
        values = array[0].reshape(-1).tolist()
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    data = [
        {
            name: {"content": content(array), "shape": list(array.shape[1:])}
            for name, array in payload.items()
        }
        for payload in payloads
    ]
    path.write_text(json.dumps({"data": data}))


def run_perf_analyzer(
    perf_analyzer: PerfAnalyzer,
    grpc_url: str,
    model: str,
    payloads: list[Payload],
    *,
    concurrency: int,
    batch_size: int = 1,
    duration_s: float = 5.0,
    metrics_url: str | None = None,
    token_lengths: Sequence[int] | None = None,
    batch_model: str | None = None,
) -> LoadResult:
    """One concurrency level measured by perf_analyzer (C++ client, gRPC, async)."""
    if any(next(iter(p.values())).shape[0] != 1 for p in payloads):
        raise ValueError("perf_analyzer takes batch-1 payloads; pass batch_size to batch them")
    with tempfile.TemporaryDirectory(prefix="optimodel-pa-") as tmp:
        data_path = Path(tmp) / "input.json"
        csv_path = Path(tmp) / "result.csv"
        _perf_analyzer_input(payloads, data_path)
        command = [
            str(perf_analyzer.binary),
            "-m", model,
            "-u", grpc_url,
            "-i", "grpc",
            "-b", str(batch_size),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--input-data", str(data_path),
            "--async",
            # Three windows make up DURATION_S; a busy 2-core machine is never "stable" by
            # perf_analyzer's default 10%, so the three windows are taken as they are.
            "--measurement-interval", str(max(200, int(duration_s * 1000 / 3))),
            "--max-trials", "3",
            "--stability-percentage", "1000",
            "--percentile", "99",
            "-f", str(csv_path),
        ]  # fmt: skip
        counted = batch_model or model
        before = inference_counters(metrics_text(metrics_url), counted) if metrics_url else None
        completed = subprocess.run(
            command,
            env=perf_analyzer.environment(),
            capture_output=True,
            text=True,
            timeout=duration_s * 6 + 60,
            check=False,
        )
        after = inference_counters(metrics_text(metrics_url), counted) if metrics_url else None
        if completed.returncode != 0 or not csv_path.exists():
            raise RuntimeError(
                f"perf_analyzer failed (exit {completed.returncode}): "
                f"{(completed.stdout + completed.stderr)[-2000:]}"
            )
        with csv_path.open() as handle:
            row = next(csv.DictReader(handle))
    sequence, mixed = _lengths(payloads, token_lengths)
    throughput = float(row["Inferences/Second"])
    return LoadResult(
        model=model,
        tool="perf_analyzer",
        concurrency=concurrency,
        batch_size=batch_size,
        sequence_length=sequence,
        mixed_lengths=mixed,
        requests=int(throughput * duration_s / batch_size),
        errors=0,
        seconds=duration_s,
        throughput=throughput,
        latency_p50_ms=float(row["p50 latency"]) / 1000.0,
        latency_p99_ms=float(row["p99 latency"]) / 1000.0,
        average_batch=average_batch(before, after) if before and after else None,
    )


LoadTool = Literal["auto", "perf_analyzer", "tritonclient"]


@dataclass(frozen=True)
class LoadTarget:
    """Where the load goes: a running server's gRPC and metrics endpoints."""

    grpc_url: str
    metrics_url: str | None


def measure(
    target: LoadTarget,
    model: str,
    payloads: list[Payload],
    *,
    concurrency: int,
    duration_s: float,
    perf_analyzer: PerfAnalyzer | None,
    client_processes: int | None = None,
    token_lengths: Sequence[int] | None = None,
    batch_model: str | None = None,
) -> LoadResult:
    """One load level with perf_analyzer if given (batch-1 payloads), else tritonclient.

    BATCH_MODEL names the model whose batches are reported (the model step of an ensemble);
    by default the loaded model itself.
    """
    batch1 = all(next(iter(p.values())).shape[0] == 1 for p in payloads)
    if perf_analyzer is not None and batch1:
        return run_perf_analyzer(
            perf_analyzer,
            target.grpc_url,
            model,
            payloads,
            concurrency=concurrency,
            duration_s=duration_s,
            metrics_url=target.metrics_url,
            token_lengths=token_lengths,
            batch_model=batch_model,
        )
    return run_client_load(
        target.grpc_url,
        model,
        payloads,
        concurrency=concurrency,
        duration_s=duration_s,
        processes=client_processes,
        metrics_url=target.metrics_url,
        token_lengths=token_lengths,
        batch_model=batch_model,
    )


def sweep(
    target: LoadTarget,
    models: Sequence[str],
    payloads: list[Payload],
    concurrencies: Sequence[int],
    *,
    duration_s: float,
    perf_analyzer: PerfAnalyzer | None,
    on_result: Callable[[LoadResult], None] | None = None,
    token_lengths: Sequence[int] | None = None,
    batch_models: dict[str, str] | None = None,
) -> list[LoadResult]:
    """Every concurrency level against every model, interleaving the models per level so a
    change in machine load hits them alike."""
    results = []
    for concurrency in concurrencies:
        for model in models:
            result = measure(
                target,
                model,
                payloads,
                concurrency=concurrency,
                duration_s=duration_s,
                perf_analyzer=perf_analyzer,
                token_lengths=token_lengths,
                batch_model=(batch_models or {}).get(model),
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


if __name__ == "__main__" and sys.argv[1:] == [WORKER_FLAG]:
    # Through the imported module, so pickled classes resolve to optimodel.local.loadtest.*
    from optimodel.local.loadtest import _worker_main as worker_main

    worker_main()
