"""The machine a build or benchmark ran on: CPU model and ISA flags, cores, GPU.

Int8 speed-ups differ by instruction set (AVX2 int8 needs three instructions per 32
multiply-adds where AVX-512 VNNI needs one), so every figure the builder or a benchmark
records carries this, and ratios are compared only within one run on one machine.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from pydantic import Field

from optimodel.model_builder.spec import SpecModel

# The /proc/cpuinfo flags that decide int8 and fp32 kernel speed, in the order shown.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8")


class MachineInfo(SpecModel):
    """CPU and GPU of the machine that measured."""

    cpu_model: str = Field(description="'model name' of /proc/cpuinfo (platform otherwise).")
    cpu_family: int | None = Field(default=None, description="CPU family (e.g. 25: AMD Zen 3/4).")
    cpu_model_number: int | None = Field(default=None, description="CPU model within the family.")
    isa: list[str] = Field(
        default_factory=list, description="ISA flags that matter here (avx2, avx512f, vnni, amx)."
    )
    cores: int = Field(ge=1, description="Cores this process may run on.")
    gpu: str | None = Field(default=None, description="CUDA device name, when one is visible.")

    @property
    def label(self) -> str:
        """One line for tables: 'AMD EPYC (family 25 model 1), avx2 fma, 2 cores'."""
        family = (
            f" (family {self.cpu_family} model {self.cpu_model_number})"
            if self.cpu_family is not None
            else ""
        )
        flags = " ".join(self.isa) or "no AVX2"
        gpu = f", GPU {self.gpu}" if self.gpu else ", no GPU"
        return f"{self.cpu_model}{family}, {flags}, {self.cores} cores{gpu}"


def parse_cpuinfo(text: str) -> tuple[str | None, int | None, int | None, list[str]]:
    """(model name, family, model, ISA flags) of the first processor in /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    isa = [flag for flag in ISA_FLAGS if flag in flags]
    family = fields.get("cpu family")
    model = fields.get("model")
    return (
        fields.get("model name"),
        int(family) if family and family.isdigit() else None,
        int(model) if model and model.isdigit() else None,
        isa,
    )


def cuda_device_name() -> str | None:
    """The first CUDA device's name through torch, or None (also when torch has no CUDA)."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except (ImportError, RuntimeError):
        return None
    return None


def describe_machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> MachineInfo:
    try:
        model, family, number, isa = parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        model, family, number, isa = None, None, None, []
    return MachineInfo(
        cpu_model=model or platform.processor() or platform.machine(),
        cpu_family=family,
        cpu_model_number=number,
        isa=isa,
        cores=len(os.sched_getaffinity(0)),
        gpu=cuda_device_name(),
    )
