"""Publish the served repository atomically: build in a staging folder, then rename.

The staging folder lives inside the output folder (a rename is atomic only within one file
system) and starts with a dot. A reader sees either the previous complete model folder or
the new complete one, never a half-written one; a failed build leaves the output untouched.

A build killed outright (SIGKILL, an evicted pod) cannot remove its staging folder, so the
next build in the same output folder sweeps such leftovers (on a PVC each is a full model
copy). A running build holds an exclusive lock on `.lock` in its staging folder and records
its host and pid in `.owner`; a staging folder is stale only when nobody holds that lock and
its owner is not a live process on this host. Folders without a lock file (a retired served
version whose removal was cut short) are stale once older than UNLOCKED_STALE_AFTER_S.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from optimodel.model_builder.errors import OutputFolderError
from optimodel.model_builder.report import REPORT_FILE, BuildReport

STAGING_PREFIX = ".staging-"
LOCK_FILE = ".lock"
OWNER_FILE = ".owner"
# Longer than any build may run (the builder Job's default activeDeadlineSeconds is 6 h).
UNLOCKED_STALE_AFTER_S = 24 * 3600.0
OUT_FIELD = "output folder (--out / $OPTIMODEL_OUTPUT_DIR)"


def output_folder_error(error: OSError | ValueError, out_dir: Path) -> OutputFolderError:
    """An OS error about the output folder, as the build error naming the fix."""
    code = getattr(error, "errno", None)
    where = getattr(error, "filename", None) or out_dir
    fixes = {
        errno.EROFS: "the file system is read-only: pass a writable folder",
        errno.EACCES: "no permission to write there: pass a folder you can write",
        errno.EPERM: "no permission to write there: pass a folder you can write",
        errno.ENOSPC: "the disk is full: free space or pass a folder on a larger disk",
        errno.EDQUOT: "the disk quota is exceeded: free space or pass another folder",
        errno.ENAMETOOLONG: "the path is too long: pass a shorter folder name",
        errno.EEXIST: "a file is in the way: pass a folder path, not a file",
        errno.ENOTDIR: "part of the path is a file, not a folder: pass a folder path",
    }
    fix = fixes.get(code or -1, "pass a folder this process can create and write")
    reason = getattr(error, "strerror", None) or str(error)
    return OutputFolderError(f"cannot write {where}: {reason}", field=OUT_FIELD, fix=fix)


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the recorded owner is a live process on this host (same-process locks pass)."""
    if owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_owner(folder: Path) -> dict[str, Any]:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _lock_state(lock_path: Path) -> str:
    """ "free", "held" or "unknown" (no locks on this file system): taken and let go at once."""
    try:
        with lock_path.open("rb") as stream:
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "held"
            except OSError:
                return "unknown"
            fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
            return "free"
    except OSError:
        return "unknown"


def is_stale_staging(folder: Path, *, now: float | None = None) -> bool:
    """Whether a `.staging-*` folder belongs to no running build (see the module doc)."""
    now = time.time() if now is None else now
    lock_path = folder / LOCK_FILE
    owner = _read_owner(folder)
    if lock_path.is_file():
        if _owner_alive(owner):
            return False
        state = _lock_state(lock_path)
        if state != "unknown":
            return state == "free"
        started = owner.get("started")
        return isinstance(started, int | float) and now - started > UNLOCKED_STALE_AFTER_S
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    return age > UNLOCKED_STALE_AFTER_S


def sweep_stale_staging(out_dir: Path, *, keep: Path | None = None) -> list[Path]:
    """Remove staging folders that no running build owns; returns what was removed."""
    removed: list[Path] = []
    try:
        candidates = sorted(p for p in out_dir.glob(f"{STAGING_PREFIX}*") if p.is_dir())
    except OSError:
        return removed
    for folder in candidates:
        if keep is not None and folder == keep:
            continue
        if is_stale_staging(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def _hold_lock(staging: Path) -> IO[bytes] | None:
    stream = (staging / LOCK_FILE).open("wb")
    # Without locks on this file system the owner record and the age still protect it.
    with contextlib.suppress(OSError):
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    (staging / OWNER_FILE).write_text(json.dumps(owner))
    return stream


@contextmanager
def staging_directory(out_dir: Path, name: str) -> Iterator[Path]:
    """A private folder inside `out_dir`, removed on exit whatever happens.

    Stale staging folders of killed builds are swept first; OutputFolderError names the
    fix when `out_dir` cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-", dir=out_dir))
    except (OSError, ValueError) as error:
        raise output_folder_error(error, out_dir) from None
    lock: IO[bytes] | None = None
    try:
        try:
            lock = _hold_lock(staging)
        except OSError as error:
            raise output_folder_error(error, out_dir) from None
        sweep_stale_staging(out_dir, keep=staging)
        try:
            yield staging
        except OSError as error:
            # A write into staging that failed (disk full, quota): the output folder's fault.
            filename = str(getattr(error, "filename", "") or "")
            if filename.startswith(str(staging)):
                raise output_folder_error(error, out_dir) from None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            with contextlib.suppress(OSError):
                lock.close()


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
    """Write the report into the staged folder, then swap it in for `out_dir/<name>`.

    OutputFolderError when the swap fails; the served version is then left in place."""
    try:
        return _publish(folder, report, out_dir)
    except OSError as error:
        raise output_folder_error(error, out_dir) from None


def _publish(folder: Path, report: BuildReport, out_dir: Path) -> Path:
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
