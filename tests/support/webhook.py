"""A real HTTP server on 127.0.0.1 playing a Slack-compatible incoming webhook: it keeps what it received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from sandbox.httpserve import serve_http


@dataclass
class Webhook:
    status: int = 200
    delay_s: float = 0.0
    received: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)  # path, content type, body
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_webhook(hook: Webhook) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            with hook.lock:
                hook.received.append((self.path, self.headers.get("Content-Type", ""), body))
            if hook.delay_s:
                time.sleep(hook.delay_s)
            payload = b"ok" if hook.status == 200 else b"invalid_token"
            self.send_response(hook.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serve_http(Handler) as url:
        yield url
