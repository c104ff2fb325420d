"""A real HTTP server on loopback that answers the way a busy Prefect server does: the answers given, in order
(the last one repeated), to any method, recording each request's method and path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from sandbox.httpserve import serve_http


@contextmanager
def serving(answers: list[tuple[int, dict[str, Any]]], seen: list[str]) -> Iterator[str]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen.append(f"{self.command} {self.path}")
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - http.server's names

    with serve_http(Handler) as url:
        yield url
