"""A real HTTP server on 127.0.0.1 playing the promoted application's endpoints."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from sandbox.httpserve import serve_http


@dataclass
class AppState:
    version: str = "1.0.0"
    status: int = 200
    delay_s: float = 0.0
    fail_next: int = 0  # the next N requests answer 503
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_app(state: AppState, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
                failing = state.fail_next > 0
                state.fail_next = max(0, state.fail_next - 1)
            if state.delay_s:
                time.sleep(state.delay_s)
            status = 503 if failing else state.status
            if self.path == "/version":
                body = json.dumps({"version": state.version, "build": {"tag": f"v{state.version}"}}).encode()
                ctype = "application/json"
            else:
                body = b"ok" if status == 200 else b"unavailable"
                ctype = "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_http(Handler, tls=tls) as url:
        yield url
