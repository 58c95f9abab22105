"""Write the Triton model repository atomically: build in a staging folder, then rename.

The staging folder lives inside the output folder (a rename is atomic only within one file
system) and starts with a dot. A reader sees either the previous complete model folder or
the new complete one, never a half-written one; a failed build leaves the output untouched.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optimodel.model_builder.report import (
    CONFIG_FILE,
    MODEL_FILE,
    REPORT_FILE,
    TOKENIZER_DIR,
    BuildReport,
)

MODEL_VERSION = "1"
STAGING_PREFIX = ".staging-"


@contextmanager
def staging_directory(out_dir: Path, name: str) -> Iterator[Path]:
    """A private folder inside `out_dir`, removed on exit whatever happens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def assemble_model_folder(
    staging: Path, name: str, *, model: Path, config_text: str, tokenizer: Any
) -> Path:
    """Lay out `<name>/config.pbtxt`, `<name>/1/model.onnx`, `<name>/tokenizer/` in staging."""
    folder = staging / name
    version = folder / MODEL_VERSION
    version.mkdir(parents=True)
    shutil.copyfile(model, version / MODEL_FILE)
    (folder / CONFIG_FILE).write_text(config_text)
    tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    return folder


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative paths), the report itself excluded."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative == REPORT_FILE:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        hashes[relative] = digest.hexdigest()
    return hashes


def publish_model_folder(folder: Path, report: BuildReport, out_dir: Path) -> Path:
    """Write the report into the staged folder, then swap it in for `out_dir/<name>`."""
    report.write(folder / REPORT_FILE)
    target = out_dir / folder.name
    if target.exists():
        # Two renames: the old version moves aside only once the new one is complete.
        retired = out_dir / f"{STAGING_PREFIX}{folder.name}-retired-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        try:
            folder.rename(target)
        except OSError:
            retired.rename(target)  # put the served version back before failing
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        folder.rename(target)
    return target
