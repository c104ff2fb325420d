"""Resuming a paused run through the API (tasks/approval.py resume_run) against a real HTTP server on loopback
that answers the way a busy Prefect server does: 503 while its database is locked, then the answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from uuid import uuid4

import pytest

from sandbox.httpserve import serve_http
from tasks.approval import ResumeError, resume_run

ACCEPT: dict[str, Any] = {"status": "ACCEPT", "state": {"name": "Running"}}


@contextmanager
def serving(answers: list[tuple[int, dict[str, Any]]], seen: list[str]) -> Iterator[str]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen.append(self.path)
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serve_http(Handler) as url:
        yield url


def test_a_busy_server_is_asked_again_and_the_answer_counts() -> None:
    """Was: the first test of a fresh CI run failed on one 503 from a Prefect server still busy starting."""
    seen: list[str] = []
    busy: dict[str, Any] = {"exception_message": "Service Unavailable"}
    with serving([(503, busy), (503, busy), (200, ACCEPT)], seen) as url:
        assert resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=60) == "Running"
    assert len(seen) == 3


@pytest.mark.parametrize("status", [500, 502, 409])
def test_other_errors_are_answers_not_retried(status: int) -> None:
    """Only 503 and 429 say the request was not acted on; anything else may have been, and is reported."""
    seen: list[str] = []
    with serving([(status, {"detail": "nope"})], seen) as url, pytest.raises(ResumeError, match=f"HTTP {status}"):
        resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=60)
    assert len(seen) == 1


def test_a_server_that_stays_busy_ends_within_the_deadline() -> None:
    seen: list[str] = []
    busy: dict[str, Any] = {"exception_message": "Service Unavailable"}
    with serving([(503, busy)], seen) as url, pytest.raises(ResumeError, match="HTTP 503"):
        resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=3)
    assert 1 < len(seen) <= 4
