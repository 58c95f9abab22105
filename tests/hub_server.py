"""A Hugging Face Hub for tests: olah, a real Hub mirror server, serving git repositories
offline from a local folder, behind a small proxy that adds the Hub's failure answers.

olah (PyPI) implements the Hub's API and file endpoints (`/api/models/<id>/revision/<rev>`,
`/<id>/resolve/<commit>/<file>`, tree listings, refs) that huggingface_hub calls, and in
offline mode serves repositories from `mirrors-path` (git repositories, one per model), so the
builder's real download code runs against it over HTTP. What olah cannot produce, the proxy
adds, the way huggingface.co answers: 401 for a private repository without a token or with a
bad one, 403 for a gated one, and 429 with Retry-After when rate limited.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=folder, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@dataclass
class Faults:
    """Answers the proxy gives instead of forwarding (the Hub's own status codes)."""

    token: str | None = None  # every request must carry "Authorization: Bearer <token>"
    gated: set[str] = field(default_factory=set)  # repo ids answered 403 GatedRepo
    throttled_api_calls: int = 0  # the next N /api/ calls are answered 429


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: int) -> None:
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.upstream = upstream
        self.faults = Faults()
        self.requests: list[str] = []
        self.lock = threading.Lock()


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def _refuse(self, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fault(self) -> bool:
        faults = self.server.faults
        if faults.token is not None:
            sent = self.headers.get("Authorization")
            if sent is None:
                self._refuse(401, "RepoNotFound", "Repository not found")
                return True
            if sent != f"Bearer {faults.token}":
                self._refuse(401, None, "Invalid credentials in Authorization header")
                return True
        if any(f"/{repo}/" in self.path + "/" for repo in faults.gated):
            self._refuse(403, "GatedRepo", "Access to this model is restricted")
            return True
        if self.path.startswith("/api/"):
            with self.server.lock:
                throttled = faults.throttled_api_calls > 0
                faults.throttled_api_calls -= int(throttled)
            if throttled:
                self._refuse(429, None, "You have been rate-limited")
                return True
        return False

    def _forward(self) -> None:
        with self.server.lock:
            self.server.requests.append(f"{self.command} {self.path}")
        if self._fault():
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            # A HEAD answer's Content-Length is the size of the file it describes.
            if key.lower() not in _HOP_BY_HOP and (
                key.lower() != "content-length" or self.command == "HEAD"
            ):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = _forward  # noqa: N815


class HubMirror:
    """olah serving `root/mirrors/models/<org>/<name>` git repositories, behind the proxy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mirrors = root / "mirrors"
        (self.mirrors / "models").mkdir(parents=True, exist_ok=True)
        self._olah_port = free_port()
        self._proxy = _Proxy(free_port(), self._olah_port)
        self.url = f"http://127.0.0.1:{self._proxy.server_address[1]}"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def faults(self) -> Faults:
        return self._proxy.faults

    @property
    def requests(self) -> list[str]:
        return self._proxy.requests

    def reset(self) -> None:
        self._proxy.faults = Faults()
        self._proxy.requests.clear()

    def publish(self, repo_id: str, folder: Path, *, tag: str | None = None) -> str:
        """Commit `folder`'s files as the new head of `main` of `repo_id`; returns the commit."""
        repo = self.mirrors / "models" / repo_id
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True)
            _git(repo, "init", "-q", "-b", "main")
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"publish {folder.name}")
        if tag:
            _git(repo, "tag", "-f", tag)
        return _git(repo, "rev-parse", "HEAD")

    def start(self) -> None:
        config = self.root / "olah.toml"
        proxy = self.url.removeprefix("http://")
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self._olah_port}\n"
            f'repos-path = "{self.root / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "{proxy}"\n'
            f'mirror-lfs-netloc = "{proxy}"\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\n"
            "offline = true\n"
        )
        olah = Path(sys.executable).with_name("olah-cli")
        self._process = subprocess.Popen(
            [str(olah), "--config", str(config)],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"olah exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self._olah_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("olah did not start within 60 s")

    def stop(self) -> None:
        self._proxy.shutdown()
        self._proxy.server_close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@contextmanager
def hub_mirror(root: Path) -> Iterator[HubMirror]:
    mirror = HubMirror(root)
    mirror.start()
    try:
        yield mirror
    finally:
        mirror.stop()
