"""Real Git remotes for tests: bare repositories on disk, and one served over HTTP with basic auth.

The HTTP server runs Git's own ``git http-backend`` (smart HTTP) as a CGI program behind a check of the
Authorization header, so credential handling is exercised against real Git over a real socket.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from sandbox.httpserve import serve_http

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run_git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_origin(root: Path, files: dict[str, str], branches: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A bare ``origin.git`` seeded with ``files`` on main, and a working clone ``seed`` for pushing changes."""
    origin = root / "origin.git"
    run_git(root, "init", "--bare", "--initial-branch=main", str(origin))
    seed = root / "seed"
    run_git(root, "clone", "--quiet", str(origin), str(seed))
    run_git(seed, "checkout", "--quiet", "-B", "main")
    for rel, content in files.items():
        path = seed / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    run_git(seed, "add", "-A")
    run_git(seed, "commit", "--quiet", "-m", "initial layout")
    run_git(seed, "push", "--quiet", "origin", "main")
    for branch in branches:
        run_git(seed, "push", "--quiet", "origin", f"main:refs/heads/{branch}")
    return origin, seed


def commit_file(seed: Path, rel: str, content: str, message: str, branch: str = "main") -> str:
    """Commit a change from the seed clone straight to origin (another person pushing)."""
    run_git(seed, "fetch", "--quiet", "origin")
    run_git(seed, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
    path = seed / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    run_git(seed, "add", rel)
    run_git(seed, "commit", "--quiet", "-m", message)
    run_git(seed, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
    return run_git(seed, "rev-parse", "HEAD")


@dataclass
class Outage:
    fail_next: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_git_over_http(project_root: Path, username: str, token: str, outage: Outage | None = None) -> Iterator[str]:
    """Serve bare repositories under ``project_root`` at ``http://127.0.0.1:PORT/`` requiring basic auth.
    ``outage``: answer its next ``fail_next`` requests 503 (a remote having a bad minute), counting all."""
    expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()
    seen_headers: list[str] = []
    trouble = outage if outage is not None else Outage()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _cgi(self) -> None:
            seen_headers.append(self.headers.get("Authorization") or "")
            with trouble.lock:
                trouble.requests += 1
                failing, trouble.fail_next = trouble.fail_next > 0, max(0, trouble.fail_next - 1)
            if failing:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": os.environ["PATH"],
                "GIT_PROJECT_ROOT": str(project_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REMOTE_USER": username,
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "GIT_CONFIG_NOSYSTEM": "1",
                "HOME": str(project_root),
            }
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _cgi  # noqa: N815
        do_POST = _cgi  # noqa: N815

    with serve_http(Handler) as url:
        yield url
