"""Serve bare Git repositories over loopback HTTP with basic auth: Git's own ``git http-backend`` (smart HTTP)
as a CGI program behind a check of the Authorization header. The real Flux and Argo CD fetch the sandbox's and the
tests' origins through it (they take http(s) and ssh URLs, not paths)."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from sandbox.httpserve import serve_http


@dataclass
class Outage:
    fail_next: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_git_over_http(
    project_root: Path,
    username: str,
    token: str,
    outage: Outage | None = None,
    *,
    accepts: Callable[[str], bool] | None = None,
) -> Iterator[str]:
    """Serve bare repositories under ``project_root`` at ``http://127.0.0.1:PORT/`` requiring basic auth.
    ``outage``: answer its next ``fail_next`` requests 503 (a remote having a bad minute), counting all.
    ``accepts``: which passwords of ``username`` count besides ``token`` (a forge's short-lived tokens)."""
    expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()

    def allowed(header: str) -> bool:
        if header == expected:
            return True
        if accepts is None or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except ValueError:
            return False
        return user == username and accepts(password)

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
            if not allowed(self.headers.get("Authorization") or ""):
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
