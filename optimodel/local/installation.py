"""Find the real Triton server shipped in the `nvidia-pytriton` wheel and make it runnable.

The wheel carries `tritonserver` 2.51, the python backend library and one backend stub per
Python version, but not a ready backend directory. We assemble one in a cache folder and
build the environment the stub needs (DESIGN.md, "Real components"): without this
interpreter's LIBDIR first on LD_LIBRARY_PATH the stub loads the system libpython and fails.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PYTRITON_DISTRIBUTION = "nvidia-pytriton"
TRITONCLIENT_DISTRIBUTION = "tritonclient"
INSTALL_HINT = "pip install -c constraints.txt -e '.[serve]'"


class TritonNotInstalledError(RuntimeError):
    """The Triton server (or a part of it) is missing from this environment."""


@dataclass(frozen=True)
class TritonInstallation:
    """Everything needed to launch `tritonserver` from this Python environment."""

    server_binary: Path
    backend_directory: Path
    cache_directory: Path
    library_path: tuple[Path, ...]
    bin_directory: Path
    version: str

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment for the server and its python-backend stubs."""
        env = dict(os.environ if base is None else base)
        libs = [str(p) for p in self.library_path]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        env["PATH"] = os.pathsep.join([str(self.bin_directory), env.get("PATH", "")])
        # The stubs must import this environment's numpy/onnxruntime, never a user site.
        env["PYTHONNOUSERSITE"] = "1"
        env.pop("PYTHONHOME", None)
        return env


def _site_packages_of(package: str) -> Path:
    """Folder holding an installed top-level package, found without importing it."""
    for entry in sys.path:
        candidate = Path(entry or ".") / package
        if (candidate / "__init__.py").exists():
            return candidate.parent
    raise TritonNotInstalledError(
        f"Python package {package!r} is not installed in {sys.prefix}; install it with: "
        f"{INSTALL_HINT}"
    )


def default_cache_root() -> Path:
    """$OPTIMODEL_CACHE_DIR, else $XDG_CACHE_HOME/optimodel, else ~/.cache/optimodel."""
    if os.environ.get("OPTIMODEL_CACHE_DIR"):
        return Path(os.environ["OPTIMODEL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "optimodel"


def _copy_if_changed(src: Path, dst: Path) -> None:
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copy2(src, tmp)
    tmp.replace(dst)  # atomic: a concurrent server never sees a half-written stub


def find_triton_installation(cache_root: Path | None = None) -> TritonInstallation:
    """Locate tritonserver and assemble its python backend directory in the cache."""
    site = _site_packages_of("pytriton")
    triton_root = site / "pytriton" / "tritonserver"
    server = triton_root / "bin" / "tritonserver"
    if not server.exists():
        raise TritonNotInstalledError(
            f"{server} is missing: the nvidia-pytriton wheel is incomplete; reinstall it with: "
            f"{INSTALL_HINT}"
        )
    py_version = sysconfig.get_python_version()
    backend_src = triton_root / "backends" / "python"
    stub = triton_root / "python_backend_stubs" / py_version / "triton_python_backend_stub"
    sources = [
        backend_src / "libtriton_python.so",
        backend_src / "triton_python_backend_utils.py",
        stub,
    ]
    for path in sources:
        if not path.exists():
            raise TritonNotInstalledError(
                f"{path} is missing: nvidia-pytriton ships no python backend for Python "
                f"{py_version}; use Python 3.8-3.13 and reinstall with: {INSTALL_HINT}"
            )
    try:
        version = importlib.metadata.version(PYTRITON_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise TritonNotInstalledError(f"{PYTRITON_DISTRIBUTION} is not installed") from error
    # Keyed by the wheel version, the interpreter and the stub itself, so two environments
    # sharing a cache never mix stubs.
    key = hashlib.sha256(
        f"{version}|{sys.prefix}|{py_version}|{stub.stat().st_size}".encode()
    ).hexdigest()[:12]
    backends = (cache_root or default_cache_root()) / "triton" / key / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for path in sources:
        _copy_if_changed(path, python_dir / path.name)
    (python_dir / "triton_python_backend_stub").chmod(0o755)

    libdir = sysconfig.get_config_var("LIBDIR")
    library_path = tuple(
        p for p in (Path(libdir) if libdir else None, site / "nvidia_pytriton.libs") if p
    )
    return TritonInstallation(
        server_binary=server,
        backend_directory=backends,
        cache_directory=triton_root / "caches",
        library_path=library_path,
        bin_directory=Path(sys.executable).parent,
        version=version,
    )


@dataclass(frozen=True)
class PerfAnalyzer:
    """The `perf_analyzer` 2.51 binary from the tritonclient wheel, with its library path."""

    binary: Path
    library_directory: Path

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.library_directory), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env


# perf_analyzer links these by soname; nvidia-pytriton carries ABI-compatible copies.
_PERF_ANALYZER_LIBS = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


def find_perf_analyzer(cache_root: Path | None = None) -> PerfAnalyzer | None:
    """perf_analyzer with symlinks for its two missing libraries, or None if unavailable."""
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.exists():
        found = shutil.which("perf_analyzer")
        if found is None:
            return None
        binary = Path(found)
    try:
        libs = _site_packages_of("pytriton") / "nvidia_pytriton.libs"
    except TritonNotInstalledError:
        return None
    lib_dir = (cache_root or default_cache_root()) / "perf_analyzer" / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    for soname, prefix in _PERF_ANALYZER_LIBS.items():
        matches = sorted(libs.glob(f"{prefix}*"))
        if not matches:
            return None
        link = lib_dir / soname
        if link.is_symlink() and link.resolve() == matches[0].resolve():
            continue
        tmp = lib_dir / f".{soname}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(matches[0])
        tmp.replace(link)
    return PerfAnalyzer(binary=binary, library_directory=lib_dir)
