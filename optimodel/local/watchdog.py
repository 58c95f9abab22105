"""The server's lifeline: tritonserver dies with the process that started it, however it dies.

`TritonServer.start` runs this module as a small process of its own session (a Ctrl-C to the
terminal's process group does not reach it) whose stdin is the read end of a pipe; only the
starting process holds the write end. When that process stops the server itself, it writes
STOP and closes the pipe, and the watchdog exits. When it dies any other way, SIGKILL
included, the kernel closes the pipe: the watchdog reads end-of-file, stops the server's
process group (SIGTERM, then SIGKILL after the grace period), and removes the server's
shared-memory segments and work folders. The server itself also gets PR_SET_PDEATHSIG, so it
starts shutting down the moment its parent is gone.

Only the standard library is imported: it starts in a few milliseconds, beside the server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

STOP = b"q"
SHM_ROOT = Path("/dev/shm")
_SERVER_MARKERS = (b"tritonserver", b"triton_python_backend_stub")


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members


def _is_server(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(marker in command for marker in _SERVER_MARKERS)


def stop_server_group(pgid: int, grace_s: float) -> bool:
    """SIGTERM the group, SIGKILL what is left after `grace_s`; False if it was not ours.

    A group whose members are not Triton processes is left alone: its id was reused."""
    members = group_members(pgid)
    if not members or not any(_is_server(pid) for pid in members):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return True


def wait_for_parent(stream: int) -> bool:
    """Block until STOP (True: the parent stopped the server) or end-of-file (False)."""
    while True:
        try:
            chunk = os.read(stream, 1)
        except InterruptedError:  # pragma: no cover - PEP 475 retries reads
            continue
        if chunk == STOP:
            return True
        if not chunk:
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optimodel.local.watchdog")
    parser.add_argument("--pgid", type=int, required=True, help="the server's process group")
    parser.add_argument("--shm-prefix", default="", help="its /dev/shm segment prefix")
    parser.add_argument("--remove", type=Path, action="append", default=[], help="work folders")
    parser.add_argument("--grace-seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    for ignored in (signal.SIGINT, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    if wait_for_parent(sys.stdin.fileno()):
        return 0
    stop_server_group(args.pgid, args.grace_seconds)
    if args.shm_prefix:
        for segment in SHM_ROOT.glob(f"{args.shm_prefix}*"):
            segment.unlink(missing_ok=True)
    for folder in args.remove:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
