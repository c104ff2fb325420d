"""Real HTTP servers on 127.0.0.1 that misbehave the way the bounded clients must survive.

* :func:`serve_trickle`: answers every request (any method, any path) correctly but one byte at a time, a pause
  between bytes, in the headers or in the body: each socket read gets a byte well within any per-read timeout.
* :func:`serve_big`: answers 200 with a body of ``size`` bytes, with or without a Content-Length, and counts what
  it managed to send before the client hung up.
* :func:`serve_fixed`: answers every request with one fixed status, content type and body (an HTML page where
  JSON is expected, a JSON list, ...), and keeps the paths it was asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal

from sandbox.httpserve import serve_http


@dataclass
class Trickle:
    body: bytes = b'{"state": {"type": "RUNNING", "name": "Running"}}'
    content_type: str = "application/json"
    status: int = 200
    phase: Literal["headers", "body"] = "body"
    pause_s: float = 0.5
    requests: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_trickle(state: Trickle) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self) -> None:
            with state.lock:
                state.requests += 1
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            head = (
                f"HTTP/1.1 {state.status} Whatever\r\nContent-Type: {state.content_type}\r\n"
                f"Content-Length: {len(state.body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            slow, fast = (head, state.body) if state.phase == "headers" else (state.body, head)
            try:
                if state.phase == "body":
                    self.wfile.write(fast)
                for index in range(len(slow)):
                    if state.stop.wait(state.pause_s):
                        return
                    self.wfile.write(slow[index : index + 1])
                    self.wfile.flush()
                if state.phase == "headers":
                    self.wfile.write(fast)
            except OSError:  # the client gave up: what a bounded client should do
                return
            self.close_connection = True

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

    with serve_http(Handler, poll_interval=0.05) as url:
        try:
            yield url
        finally:
            state.stop.set()


@dataclass
class Big:
    size: int
    declare_length: bool = True
    sent: int = 0  # over all requests
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_big(state: Big) -> Iterator[str]:
    chunk = b"x" * (64 * 1024)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if state.declare_length:
                self.send_header("Content-Length", str(state.size))
            self.send_header("Connection", "close")
            self.end_headers()
            left = state.size
            try:
                while left > 0:
                    piece = chunk[: min(left, len(chunk))]
                    self.wfile.write(piece)
                    left -= len(piece)
                    with state.lock:
                        state.sent += len(piece)
            except OSError:
                return
            self.close_connection = True

    with serve_http(Handler, poll_interval=0.05) as url:
        yield url


@dataclass
class Fixed:
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    body: bytes = b"<!doctype html><html><head><title>Prefect Server</title></head><body></body></html>"
    paths: list[tuple[str, str]] = field(default_factory=list)  # method, path
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    authorizations: list[str | None] = field(default_factory=list)  # the Authorization header of each request
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve_fixed(state: Fixed) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with state.lock:
                state.paths.append((self.command, self.path))
                state.authorizations.append(self.headers.get("Authorization"))
            self.send_response(state.status)
            for key, value in state.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

    with serve_http(Handler, poll_interval=0.05) as url:
        yield url
