"""Optimum in its own virtual environment, driven by subprocess.

optimum-onnx pins transformers<4.58 and the product needs transformers 5, so Optimum gets
build/optimum-venv. torch is installed first and pinned exactly (an unpinned torch pulls GBs
of CUDA packages), then `optimum-onnx[onnxruntime]` at a pinned version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "build" / "optimum-venv"
SCRIPT = Path(__file__).resolve().parent / "optimum_presets.py"
REQUIREMENTS = (("torch==2.13.0",), ("torch==2.13.0", "optimum-onnx[onnxruntime]==0.1.0"))


@dataclass
class OptimumStatus:
    """Whether Optimum is usable, and what happened when we tried."""

    available: bool
    detail: str
    versions: dict[str, str] = field(default_factory=dict)
    install_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "detail": self.detail,
            "versions": self.versions,
            "install_seconds": self.install_seconds,
            "venv": str(VENV.relative_to(REPO)),
            "requirements": [list(step) for step in REQUIREMENTS],
        }


def _python() -> Path:
    return VENV / "bin" / "python"


def _importable() -> bool:
    if not _python().is_file():
        return False
    check = subprocess.run(
        [str(_python()), "-c", "import optimum.onnxruntime"],
        capture_output=True,
        check=False,
        timeout=300,
    )
    return check.returncode == 0


def ensure_optimum(*, install: bool) -> OptimumStatus:
    """Use build/optimum-venv if Optimum imports there; else create it when `install`."""
    if _importable():
        return OptimumStatus(True, f"found {VENV.relative_to(REPO)}")
    if not install:
        return OptimumStatus(False, "skipped: no Optimum venv and installing was not asked for")
    log = VENV.parent / "optimum-venv-install.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("w") as output:
        steps = [[sys.executable, "-m", "venv", str(VENV)]] + [
            [str(_python()), "-m", "pip", "install", "-q", *step] for step in REQUIREMENTS
        ]
        for command in steps:
            done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                tail = log.read_text()[-600:]
                return OptimumStatus(
                    False,
                    f"install failed at `{' '.join(command[-2:])}` (exit {done.returncode}): "
                    f"{tail}",
                    install_seconds=round(time.perf_counter() - started, 1),
                )
    seconds = round(time.perf_counter() - started, 1)
    if not _importable():
        return OptimumStatus(False, f"installed but optimum.onnxruntime does not import; {log}")
    return OptimumStatus(True, f"created {VENV.relative_to(REPO)}", install_seconds=seconds)


@dataclass(frozen=True)
class OptimumArtifact:
    """One preset's quantized model."""

    name: str
    path: Path
    preset: str
    operators: list[str]
    seconds: float


def quantize_with_presets(
    model_dir: Path, task: str, out: Path, presets: list[str] | None = None
) -> tuple[list[OptimumArtifact], dict[str, str]]:
    """Run optimum_presets.py in the Optimum venv; the artifacts and Optimum's versions."""
    command = [
        str(_python()),
        str(SCRIPT),
        "--model-dir",
        str(model_dir),
        "--task",
        task,
        "--out",
        str(out),
    ]
    if presets:
        command += ["--presets", ",".join(presets)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"optimum_presets.py failed (exit {done.returncode}): {done.stderr[-1500:]}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    artifacts = [
        OptimumArtifact(
            name=item["name"],
            path=Path(item["path"]),
            preset=item["preset"],
            operators=list(item["operators"]),
            seconds=float(item["seconds"]),
        )
        for item in result["presets"]
    ]
    return artifacts, dict(result["versions"])
