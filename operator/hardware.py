"""The hardware catalog: what each serving device costs and what it can do. Pure data.

One source of truth for prices (budgets, spend, the hardware choice, the simulations) and for
the datasheet figures the cost model (`performance.py`) estimates throughput from. Every GPU
figure is per GPU; the CPU replica (serving.gpu.count 0) is priced and rated per replica.

Prices are indicative USD per hour in US regions of the major clouds (2024-25 list prices,
rounded; a GPU's share of its instance where GPUs only come in groups). Spot prices move by
the hour and differ by zone: they are typical recent figures, not quotes. Throughput figures
are the vendors' dense (no structured sparsity) peaks. The operator's settings override any
field (`hardware:` in the Helm values), and `gpuPrices` / `cpuReplicaPrice` still override the
on-demand price alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Literal

CapacityType = Literal["on-demand", "spot"]
CAPACITY_TYPES: tuple[CapacityType, ...] = ("on-demand", "spot")
# The arithmetic the served graph runs in (see model_builder/work.py): what the roofline reads.
Precision = Literal["fp32", "fp16", "int8"]
HardwareKind = Literal["gpu", "cpu"]
# The CPU replica's name wherever a hardware type is named (plans, candidates, profiles).
CPU = "cpu"


class UnknownHardwareError(ValueError):
    """A hardware type that is not in the catalog."""

    def __init__(self, name: str, known: Iterable[str], where: str = "spec.serving.gpu.type"):
        self.name = name
        known = sorted(known)
        super().__init__(
            f"{where}: {name!r} is not in the operator's hardware catalog (known: "
            f"{', '.join(known)}); fix: use a known type or add it to the operator's hardware "
            "setting (Helm values hardware:)"
        )


@dataclass(frozen=True)
class Hardware:
    """One serving device type: prices per hour and datasheet peaks.

    A type added by price only (the gpuPrices setting) has no datasheet figures (None): it is
    priced, but never estimated, so the hardware choice passes it over unless a measured
    profile rates it.
    """

    name: str
    kind: HardwareKind
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None = None
    memory_gib: float | None = None
    memory_bandwidth_gb_per_s: float | None = None
    fp32_tflops: float | None = None
    fp16_tflops: float | None = None  # dense, tensor cores where the device has them
    int8_tops: float | None = None  # dense

    def price(self, capacity: CapacityType) -> float:
        """USD per hour on this capacity type; no spot price known means the on-demand one."""
        if capacity == "spot" and self.spot_usd_per_hour is not None:
            # Clouds never charge more for spot than on-demand (an on-prem price of 0 stays 0).
            return min(self.spot_usd_per_hour, self.on_demand_usd_per_hour)
        return self.on_demand_usd_per_hour

    def peak_ops_per_second(self, precision: Precision) -> float | None:
        """The datasheet peak for arithmetic in `precision` (operations per second)."""
        tera = {"fp32": self.fp32_tflops, "fp16": self.fp16_tflops, "int8": self.int8_tops}
        value = tera[precision]
        return None if value is None else value * 1e12

    @property
    def bandwidth_bytes_per_second(self) -> float | None:
        if self.memory_bandwidth_gb_per_s is None:
            return None
        return self.memory_bandwidth_gb_per_s * 1e9

    @property
    def rated(self) -> bool:
        """Whether the datasheet figures a roofline needs are all known."""
        return self.memory_bandwidth_gb_per_s is not None and self.fp32_tflops is not None


def _gpu(name: str, on_demand: float, spot: float, *figures: float) -> Hardware:
    memory, bandwidth, fp32, fp16, int8 = figures
    return Hardware(name, "gpu", on_demand, spot, memory, bandwidth, fp32, fp16, int8)


# Columns: on-demand $/GPU-h, spot $/GPU-h, memory GiB, bandwidth GB/s, fp32 TFLOPS,
# fp16 tensor TFLOPS (dense), int8 tensor TOPS (dense).
DEFAULT_GPUS: Mapping[str, Hardware] = MappingProxyType(
    {
        hardware.name: hardware
        for hardware in (
            # Prices: GCE T4 attached to an N1 VM, on-demand / spot (cloud.google.com/compute/
            # gpus-pricing). Figures: NVIDIA T4 datasheet (16 GB GDDR6, 320 GB/s, 8.1 FP32,
            # 65 FP16 mixed-precision, 130 INT8).
            _gpu("nvidia-t4", 0.35, 0.11, 16, 320, 8.1, 65, 130),
            # Prices: GCE g2-standard-4 (1 L4) on-demand / spot. Figures: NVIDIA L4 datasheet
            # (24 GB, 300 GB/s, 30.3 FP32; 242 FP16 / 485 INT8 are with sparsity, half dense).
            _gpu("nvidia-l4", 0.70, 0.28, 24, 300, 30.3, 121, 242),
            # Prices: AWS g5.xlarge (1 A10G) on-demand / typical spot (aws.amazon.com/ec2/
            # pricing, spot advisor). Figures: NVIDIA A10 datasheet (AWS's A10G is its cloud
            # variant): 24 GB, 600 GB/s, 31.2 FP32, 125 FP16, 250 INT8 dense.
            _gpu("nvidia-a10g", 1.00, 0.45, 24, 600, 31.2, 125, 250),
            # Prices: AWS g6e.xlarge (1 L40S) on-demand / typical spot. Figures: NVIDIA L40S
            # datasheet: 48 GB, 864 GB/s, 91.6 FP32, 362 FP16 and 733 INT8 dense (x2 sparse).
            _gpu("nvidia-l40s", 1.85, 0.85, 48, 864, 91.6, 362, 733),
            # Prices: GCE a2-highgpu-1g on-demand / spot. Figures: NVIDIA A100 datasheet
            # (40 GB SXM): 1555 GB/s, 19.5 FP32, 312 FP16, 624 INT8 dense.
            _gpu("nvidia-a100", 3.70, 1.20, 40, 1555, 19.5, 312, 624),
            # Prices: GCE a2-ultragpu-1g on-demand / spot. Figures: NVIDIA A100 datasheet
            # (80 GB SXM): 2039 GB/s, otherwise as the 40 GB part.
            _gpu("nvidia-a100-80gb", 5.10, 1.60, 80, 2039, 19.5, 312, 624),
            # Prices: GCE a3-highgpu-8g / 8 on-demand / spot. Figures: NVIDIA H100 datasheet
            # (SXM): 80 GB, 3350 GB/s, 67 FP32, 989 FP16 and 1979 INT8 dense (x2 sparse).
            _gpu("nvidia-h100", 11.00, 3.60, 80, 3350, 67, 989, 1979),
            # Prices: AWS p5e.48xlarge / 8 and GCE a3-ultragpu-8g / 8, rounded; spot typical.
            # Figures: NVIDIA H200 datasheet (SXM): 141 GB HBM3e, 4800 GB/s, compute as H100.
            _gpu("nvidia-h200", 12.00, 4.00, 141, 4800, 67, 989, 1979),
        )
    }
)

# One CPU-only replica: 2 vCPUs (one Ice Lake core, AVX-512 VNNI) and 8 GiB, as GCE
# n2-standard-2 ($0.097/h on-demand, ~$0.03 spot) or AWS m6i.large ($0.096/h, ~$0.04 spot).
# Peaks: 2 AVX-512 FMA units x 16 fp32 lanes x 2 ops x ~2.8 GHz all-core AVX-512 clock =
# 0.18 TFLOPS fp32; VNNI (vpdpbusd) does 4x the multiply-adds per instruction: 0.72 TOPS int8;
# no fp16 arithmetic (onnxruntime computes fp16 graphs in fp32 on CPU). Bandwidth: what one
# core streams from DRAM on such servers (STREAM triad, ~12 GB/s).
DEFAULT_CPU_REPLICA = Hardware(CPU, "cpu", 0.10, 0.04, 8, 12, 0.18, None, 0.72)

DEFAULT_GPU_PRICES_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {name: gpu.on_demand_usd_per_hour for name, gpu in DEFAULT_GPUS.items()}
)
DEFAULT_GPU_SPOT_PRICES_USD_PER_HOUR: Mapping[str, float] = MappingProxyType(
    {name: gpu.price("spot") for name, gpu in DEFAULT_GPUS.items()}
)
DEFAULT_CPU_REPLICA_USD_PER_HOUR = DEFAULT_CPU_REPLICA.on_demand_usd_per_hour
DEFAULT_CPU_REPLICA_SPOT_USD_PER_HOUR = DEFAULT_CPU_REPLICA.price("spot")

# The fields a settings entry may set, by their wire (camelCase) name.
OVERRIDABLE = {
    "onDemandUSDPerHour": "on_demand_usd_per_hour",
    "spotUSDPerHour": "spot_usd_per_hour",
    "memoryGiB": "memory_gib",
    "memoryBandwidthGBps": "memory_bandwidth_gb_per_s",
    "fp32TFLOPS": "fp32_tflops",
    "fp16TFLOPS": "fp16_tflops",
    "int8TOPS": "int8_tops",
}


@dataclass(frozen=True)
class HardwareCatalog:
    """Every GPU type the operator knows, and the CPU replica."""

    gpus: Mapping[str, Hardware] = field(default_factory=lambda: DEFAULT_GPUS)
    cpu_replica: Hardware = DEFAULT_CPU_REPLICA

    @classmethod
    def with_overrides(
        cls,
        hardware: Mapping[str, Mapping[str, float | None]] | None = None,
        on_demand_prices: Mapping[str, float] | None = None,
        cpu_replica_usd_per_hour: float | None = None,
    ) -> HardwareCatalog:
        """The built-in catalog with the settings on top.

        `hardware` maps a type (or "cpu") to the snake_case fields it changes; a type not in
        the catalog starts from nothing but its on-demand price. `on_demand_prices` and
        `cpu_replica_usd_per_hour` are the older price-only settings, applied last.
        """
        gpus = dict(DEFAULT_GPUS)
        cpu = DEFAULT_CPU_REPLICA
        for name, changes in (hardware or {}).items():
            known = {item.name for item in fields(Hardware)}
            unknown = set(changes) - known
            if unknown:
                raise ValueError(f"hardware.{name}: unknown fields {sorted(unknown)}")
            if name == CPU:
                cpu = replace(cpu, **changes)  # type: ignore[arg-type]
                continue
            base = gpus.get(name)
            if base is None:
                price = changes.get("on_demand_usd_per_hour")
                if price is None:
                    raise ValueError(
                        f"hardware.{name}: a new type needs onDemandUSDPerHour (and, to be "
                        "estimated, memoryBandwidthGBps and the throughput figures)"
                    )
                base = Hardware(name, "gpu", price)
            gpus[name] = replace(base, **changes)  # type: ignore[arg-type]
        for name, price in (on_demand_prices or {}).items():
            base = gpus.get(name, Hardware(name, "gpu", price))
            gpus[name] = replace(base, on_demand_usd_per_hour=price)
        if cpu_replica_usd_per_hour is not None:
            cpu = replace(cpu, on_demand_usd_per_hour=cpu_replica_usd_per_hour)
        return cls(MappingProxyType(gpus), cpu)

    def get(self, name: str, where: str = "spec.serving.gpu.type") -> Hardware:
        """The type called `name` ("cpu" is the CPU replica); UnknownHardwareError names the fix."""
        if name == CPU:
            return self.cpu_replica
        try:
            return self.gpus[name]
        except KeyError:
            raise UnknownHardwareError(name, self.gpus, where) from None

    @property
    def names(self) -> tuple[str, ...]:
        """Every type, GPUs by on-demand price, then the CPU replica."""
        ordered = sorted(self.gpus.values(), key=lambda g: (g.on_demand_usd_per_hour, g.name))
        return (*(gpu.name for gpu in ordered), CPU)
