"""Run the real `tritonserver` on a local repository: start, wait for readiness, stop cleanly.

The server runs in its own session (process group) so a Ctrl-C in the terminal reaches only
us; we then stop it with SIGTERM (Triton drains in-flight requests and unloads models, whose
python-backend stubs exit with it), escalate to SIGKILL of the whole group if it hangs, and
check that no process of the group and no shared-memory segment of ours is left. Each server
gets its own python-backend shared-memory prefix, so its /dev/shm segments are identifiable.

It never outlives us, however we die: the server gets PR_SET_PDEATHSIG (SIGTERM when the
thread that started it is gone, so only when started from the main thread), and a watchdog
process (watchdog.py) stops its group and removes its shared memory and work folder once our
end of its pipe closes without a word, as it does when we are SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from optimodel.local import watchdog as lifeline
from optimodel.local.installation import TritonInstallation, find_triton_installation
from optimodel.local.repository import LocalModel, derive_local_repository, find_built_models
from optimodel.model_builder.served.configs import (
    DEFAULT_RESPONSE_CACHE_BYTES,
    response_cache_arguments,
)

SHM_ROOT = Path("/dev/shm")
LOCALHOST = "127.0.0.1"


class ServerError(RuntimeError):
    """The server could not start or stop as asked."""


class PortInUseError(ServerError):
    """A port the server needs is taken by another process."""


@dataclass(frozen=True)
class ServerPorts:
    """The three listening ports of one server."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def named(self) -> dict[str, int]:
        return {"http": self.http, "grpc": self.grpc, "metrics": self.metrics}


def free_ports(count: int = 3, host: str = LOCALHOST) -> list[int]:
    """Ports the OS reports free right now (for tests and side-by-side servers)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_ports_free(ports: ServerPorts, host: str = LOCALHOST) -> None:
    """Raise PortInUseError naming the first taken port and the option that moves it."""
    if len(set(ports.named().values())) != 3:
        raise PortInUseError(
            f"ports must differ, got http={ports.http} grpc={ports.grpc} "
            f"metrics={ports.metrics}: pass distinct --http-port/--grpc-port/--metrics-port"
        )
    for role, port in ports.named().items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the server binds: connections in TIME_WAIT don't block, a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                raise PortInUseError(
                    f"{role} port {port} on {host} is already in use ({error.strerror}); stop "
                    f"what listens there or pass --{role}-port with a free port"
                ) from error


# Triton logs this error on every machine without a GPU driver; it is not a problem.
_BENIGN_ERRORS = ("CudaDriverHelper",)
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.*)")


def startup_problems(log: str) -> list[str]:
    """The errors that matter in a server log: failed model loads first, then other errors."""
    failed, other = [], []
    for line in log.splitlines():
        match = _FAILED_LOAD.search(line)
        if match:
            # The message carries a Python traceback as literal "\n"s: keep its first line.
            reason = match.group(2).split("\\n")[0].rstrip('"')
            failed.append(f"model {match.group(1)!r} failed to load: {reason}")
        elif line.startswith("E") and not any(b in line for b in _BENIGN_ERRORS):
            other.append(line.split("] ", 1)[-1].split("\\n")[0].strip('"'))
        elif line.startswith("error:"):
            other.append(line)
    return failed or other


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A preexec function giving the child SIGTERM when this thread dies (Linux, main thread).

    PR_SET_PDEATHSIG follows the thread that forked, so from any other thread it would stop
    the server when that thread ends: there the watchdog alone does the job."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    parent = os.getpid()

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # we died between fork and prctl
            os._exit(1)

    return set_signal


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@dataclass
class TritonServer:
    """One `tritonserver` process serving REPOSITORY on 127.0.0.1."""

    repository: Path
    ports: ServerPorts = field(default_factory=ServerPorts)
    host: str = LOCALHOST
    log_path: Path | None = None
    installation: TritonInstallation | None = None
    exit_timeout_s: int = 10
    cleanup_paths: list[Path] = field(default_factory=list)  # removed if we die unstopped
    response_cache_bytes: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    pid: int | None = field(default=None, init=False)
    shm_prefix: str = field(default="", init=False)
    watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _lifeline: int | None = field(default=None, init=False)
    command_line: list[str] = field(default_factory=list, init=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def command(self, installation: TritonInstallation) -> list[str]:
        cache = (
            response_cache_arguments(self.response_cache_bytes)
            if self.response_cache_bytes is not None
            else []
        )
        return [
            str(installation.server_binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={installation.backend_directory}",
            f"--cache-directory={installation.cache_directory}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *cache,
        ]

    def start(self, timeout_s: float = 120.0) -> None:
        """Launch the server and block until it and every model are ready."""
        if self.process is not None:
            raise ServerError("server already started")
        installation = self.installation or find_triton_installation()
        check_ports_free(self.ports, self.host)
        self.shm_prefix = f"optimodel_{os.getpid()}_{self.ports.http}_"
        if self.log_path is None:
            self.log_path = self.repository.parent / "tritonserver.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.command_line = self.command(installation)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command_line,
                env=installation.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # a prctl call, nothing else
            )
        self.pid = self.process.pid
        atexit.register(self.stop)
        try:
            self._start_watchdog()
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_watchdog(self) -> None:
        """The lifeline process (watchdog.py): it holds the read end, we the write end."""
        assert self.pid is not None
        read_end, write_end = os.pipe()  # not inherited by the server (PEP 446)
        command = [
            sys.executable, "-m", lifeline.__name__, f"--pgid={self.pid}",
            f"--shm-prefix={self.shm_prefix}", f"--grace-seconds={self.exit_timeout_s + 5}",
            *(f"--remove={path}" for path in self.cleanup_paths),
        ]  # fmt: skip
        try:
            self.watchdog = subprocess.Popen(
                command,
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)
        self._lifeline = write_end

    def _release_watchdog(self) -> None:
        """Tell the watchdog the server was stopped here, and let it exit."""
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.write(self._lifeline, lifeline.STOP)
            os.close(self._lifeline)
            self._lifeline = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                log = self.log_path.read_text(errors="replace")
                problems = startup_problems(log) or [log_tail(self.log_path)]
                summary = "\n  ".join(problems)
                if "address already in use" in log.lower():
                    raise PortInUseError(
                        f"tritonserver could not bind a port (exit {code}); pass free "
                        f"--http-port/--grpc-port/--metrics-port:\n  {summary}"
                    )
                raise ServerError(
                    f"tritonserver exited with code {code} while starting:\n  {summary}\n"
                    f"fix: rebuild the model with `optimodel build` if its files are damaged; "
                    f"full server log: {self.log_path}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise ServerError(
            f"tritonserver not ready after {timeout_s:.0f}s; server log ({self.log_path}):\n"
            f"{log_tail(self.log_path)}"
        )

    def shm_segments(self) -> list[Path]:
        """This server's python-backend shared-memory segments in /dev/shm."""
        if not self.shm_prefix or not SHM_ROOT.is_dir():
            return []
        return sorted(SHM_ROOT.glob(f"{self.shm_prefix}*"))

    def group_alive(self) -> bool:
        """Whether any process of the server's process group (server or stub) is alive."""
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, timeout_s: float | None = None) -> list[Path]:
        """Stop the server and its stubs; returns shm segments it had to remove (normally [])."""
        process = self.process
        if process is None:
            return []
        atexit.unregister(self.stop)
        wait_s = timeout_s if timeout_s is not None else self.exit_timeout_s + 10
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Stubs notice the server is gone and exit; give them a moment, then insist.
        deadline = time.monotonic() + 5
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        leftovers = self.shm_segments()
        for segment in leftovers:
            segment.unlink(missing_ok=True)
        self._release_watchdog()
        self.process = None
        return leftovers

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LocalServer:
    """A running server over the python-backend twin of a built repository."""

    server: TritonServer
    models: list[LocalModel]
    workdir: Path
    leftover_shm: list[Path] = field(default_factory=list)

    def model(self, name: str) -> LocalModel:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model {name!r}; serving {[m.name for m in self.models]}")


@contextlib.contextmanager
def serve_built_repository(
    built: Path,
    *,
    ports: ServerPorts | None = None,
    with_unbatched: bool = False,
    intra_op_threads: int = 0,
    allow_spinning: bool = False,
    workdir: Path | None = None,
    startup_timeout_s: float = 120.0,
    response_cache_bytes: int = DEFAULT_RESPONSE_CACHE_BYTES,
) -> Iterator[LocalServer]:
    """Derive the local repository of BUILT, serve it, and stop and clean up on exit.

    When a model enables its response cache, the server gets a local cache of
    RESPONSE_CACHE_BYTES (as the cluster's pod does), else none.
    """
    models = find_built_models(built)
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="optimodel-serve-")) if workdir is None else workdir
    keep = False
    try:
        local = derive_local_repository(
            models,
            root / "repository",
            with_unbatched=with_unbatched,
            intra_op_threads=intra_op_threads,
            allow_spinning=allow_spinning,
        )
        caching = any(model.source.serving.response_cache for model in local)
        server = TritonServer(
            root / "repository",
            ports or ServerPorts(),
            cleanup_paths=[root] if own_workdir else [],
            response_cache_bytes=response_cache_bytes if caching else None,
        )
        try:
            server.start(startup_timeout_s)
        except ServerError:
            keep = True  # the error message points at the server log in there
            raise
        running = LocalServer(server, local, root)
        try:
            yield running
        finally:
            running.leftover_shm = server.stop()
    finally:
        if own_workdir and not keep:
            shutil.rmtree(root, ignore_errors=True)


def metrics_text(url: str, timeout_s: float = 5.0) -> str:
    """The Prometheus text of the server's metrics endpoint."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return str(response.read().decode())
    except urllib.error.URLError as error:
        raise ServerError(f"metrics endpoint {url} not reachable: {error.reason}") from error
