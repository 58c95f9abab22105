"""How close is the cost model's roofline to what a machine measures? MiniLM-L6 int8 on this CPU.

1. Exports the shipped MiniLM-L6, quantizes it int8-dynamic (per channel, the CPU recipe's
   default), and counts its work per inference at 64 tokens with model_builder/work.py.
2. Times it in onnxruntime at batch 32 x 64 tokens on every core of this machine (best of
   interleaved rounds, as builder_speedup.py does).
3. Estimates the same with operator/performance.py for this machine (peaks from its cores,
   clock and ISA: the assumptions are written to the results) and for the catalog's CPU
   replica, the figure the operator would use in a cluster.

    python benchmarks/roofline_check.py      # ~1 minute; writes results/roofline_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import onnx

from optimodel.model_builder.benchmark import benchmark_batch, onnx_runner
from optimodel.model_builder.data import DEFAULT_EVAL_DATA, load_text_set
from optimodel.model_builder.export import export_onnx
from optimodel.model_builder.load import load_model
from optimodel.model_builder.machine import MachineInfo, describe_machine
from optimodel.model_builder.quantize import quantize_int8_dynamic
from optimodel.model_builder.spec import Source
from optimodel.model_builder.work import count_work
from optimodel.operator.hardware import DEFAULT_CPU_REPLICA, Hardware
from optimodel.operator.performance import Batching, estimate

RESULTS = Path(__file__).resolve().parent / "results" / "roofline_check.json"
MINILM = "hf://sentence-transformers/all-MiniLM-L6-v2"
BATCH, SEQUENCE = 32, 64
# A core streams about this much from DRAM (the catalog's CPU replica assumes the same).
BANDWIDTH_PER_CORE_GB_PER_S = 12.0


def clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float:
    """The clock /proc/cpuinfo reports (a VM reports its base clock; turbo is not seen)."""
    found = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo.read_text(), re.MULTILINE)
    return float(found.group(1)) / 1000 if found else 2.5


def this_machine(machine: MachineInfo, ghz: float) -> tuple[Hardware, dict[str, float | str]]:
    """This CPU as a catalog entry, and the assumptions behind its peaks.

    fp32: 2 FMA pipes x lanes x 2 ops per cycle; lanes 16 with full-width AVX-512 (Zen 5,
    family 26, and Intel), 8 otherwise (AVX2, or Zen 4's double-pumped AVX-512). int8: VNNI
    does 4 multiply-adds per lane per instruction (4x fp32); AVX2's u8s8 sequence needs three
    instructions for 32 (DESIGN.md: <= 1.33x fp32)."""
    flags = set(machine.isa)
    full_width = "avx512f" in flags and (machine.cpu_family or 0) >= 26
    lanes = 16 if full_width else 8
    fp32 = machine.cores * 2 * lanes * 2 * ghz / 1000  # TFLOPS
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "vnni"})
    int8 = fp32 * (4 if vnni else 1.33)
    bandwidth = BANDWIDTH_PER_CORE_GB_PER_S * machine.cores
    hardware = Hardware("this-machine", "cpu", 0.0, None, None, bandwidth, fp32, None, int8)
    assumptions: dict[str, float | str] = {
        "clock_ghz": round(ghz, 3),
        "fp32_lanes_per_fma": lanes,
        "fma_pipes": 2,
        "int8_per_fp32": 4 if vnni else 1.33,
        "fp32_tflops": round(fp32, 4),
        "int8_tops": round(int8, 4),
        "bandwidth_gb_per_s": bandwidth,
    }
    return hardware, assumptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    machine = describe_machine()
    loaded = load_model(Source(uri=MINILM, task="feature-extraction"))
    texts = load_text_set(DEFAULT_EVAL_DATA, field="evalData").texts
    batch = benchmark_batch(loaded.tokenizer, texts, BATCH, SEQUENCE)
    with tempfile.TemporaryDirectory() as folder:
        exported, artifact = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        export_onnx(loaded.task_model, loaded.tokenizer, exported, max_length=128)
        quantize_int8_dynamic(exported, artifact, per_channel=True)
        work = count_work(onnx.load(str(artifact)), sequence_length=SEQUENCE, batch_size=BATCH)
        run = onnx_runner(artifact, machine.cores)
        for _ in range(3):
            run(batch)  # warm-up
        rounds = []
        for _ in range(args.rounds):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                run(batch)
                calls += 1
            rounds.append(calls * BATCH / (time.perf_counter() - start))
    measured = max(rounds)
    batching = Batching(BATCH, 0.0, 0)
    mine, assumptions = this_machine(machine, clock_ghz())
    here = estimate(work, mine, batching)
    replica = estimate(work, DEFAULT_CPU_REPLICA, batching)
    recorded = None
    speedup = Path(__file__).resolve().parent / "results" / "builder_speedup.json"
    if speedup.exists():
        variants = json.loads(speedup.read_text()).get("variants", {})
        recorded = (variants.get("built artifact (int8-dynamic)") or {}).get("throughput")
    document = {
        "command": "python " + " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": machine.model_dump(mode="json", by_alias=True),
        "load_average": list(os.getloadavg()),
        "work": work.model_dump(mode="json", by_alias=True),
        "measured_inferences_per_second": round(measured, 1),
        "round_throughputs": [round(value, 1) for value in rounds],
        "estimate_this_machine": {
            "inferences_per_second": round(here.inferences_per_second, 1),
            "bound": here.bound,
            "assumptions": assumptions,
            "estimate_over_measured": round(here.inferences_per_second / measured, 3),
        },
        "estimate_catalog_cpu_replica": {
            "inferences_per_second": round(replica.inferences_per_second, 1),
            "bound": replica.bound,
            "note": "the catalog's 2-vCPU Ice Lake replica (1 core, VNNI): not this machine",
        },
        "recorded_builder_speedup_int8_throughput": recorded,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(
        f"{machine.label}: measured {measured:.0f}/s at b{BATCH}x{SEQUENCE}; roofline "
        f"{here.inferences_per_second:.0f}/s ({here.bound}-bound, "
        f"{here.inferences_per_second / measured:.2f}x measured); catalog CPU replica "
        f"{replica.inferences_per_second:.0f}/s"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
