"""Export a model and quantize it with Hugging Face Optimum's ORT quantizer presets.

Runs INSIDE the separate Optimum venv (build/optimum-venv): optimum-onnx pins
transformers<4.58, which cannot share the product's environment (transformers 5). It imports
nothing from optimodel. The quantized files it writes are then timed and scored by the main
benchmark process with the same onnxruntime and the same timing loop as every other contender.

    build/optimum-venv/bin/python benchmarks/compare/optimum_presets.py \
        --model-dir DIR --task feature-extraction --out OUT [--presets a,b]

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# name -> (AutoQuantizationConfig factory, keyword arguments): Optimum's own presets.
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "avx512_vnni-dynamic": ("avx512_vnni", {"is_static": False, "per_channel": False}),
    "avx512_vnni-dynamic-per-channel": ("avx512_vnni", {"is_static": False, "per_channel": True}),
    "avx2-dynamic": ("avx2", {"is_static": False, "per_channel": False}),
}
DEFAULT_PRESETS = ("avx512_vnni-dynamic", "avx512_vnni-dynamic-per-channel")


def _versions() -> dict[str, str]:
    found = {}
    for package in ("optimum", "optimum-onnx", "transformers", "torch", "onnx", "onnxruntime"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--task", choices=["feature-extraction", "text-classification"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"

    from optimum.onnxruntime import (  # type: ignore[import-not-found]
        ORTModelForFeatureExtraction,
        ORTModelForSequenceClassification,
        ORTQuantizer,
    )
    from optimum.onnxruntime.configuration import (  # type: ignore[import-not-found]
        AutoQuantizationConfig,
    )

    model_class = (
        ORTModelForFeatureExtraction
        if args.task == "feature-extraction"
        else ORTModelForSequenceClassification
    )
    exported_dir = args.out / "exported"
    started = time.perf_counter()
    model = model_class.from_pretrained(str(args.model_dir), export=True)
    model.save_pretrained(str(exported_dir))
    export_seconds = time.perf_counter() - started
    results = []
    for name in [n for n in args.presets.split(",") if n]:
        factory, options = PRESETS[name]
        config = getattr(AutoQuantizationConfig, factory)(**options)
        quantizer = ORTQuantizer.from_pretrained(str(exported_dir))
        save_dir = args.out / name
        started = time.perf_counter()
        quantizer.quantize(save_dir=str(save_dir), quantization_config=config)
        seconds = time.perf_counter() - started
        (path,) = sorted(save_dir.glob("*.onnx"))
        results.append(
            {
                "name": name,
                "path": str(path),
                "preset": f"AutoQuantizationConfig.{factory}({options})",
                "operators": list(config.operators_to_quantize),
                "seconds": round(seconds, 2),
            }
        )
    print(
        json.dumps(
            {
                "exported": str(next(exported_dir.glob("*.onnx"))),
                "export_seconds": round(export_seconds, 2),
                "presets": results,
                "versions": _versions(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
