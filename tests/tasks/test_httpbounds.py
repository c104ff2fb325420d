"""The bounded request every HTTP client uses, against real servers on 127.0.0.1 that trickle or flood."""

from __future__ import annotations

import time

import httpx
import pytest

from tasks import httpbounds
from tasks.httpbounds import Deadline, DeadlineExceededError, ResponseTooLargeError
from tests.support.slowhttp import Big, Trickle, serve_big, serve_trickle

# A trickled answer of ~40 bytes at 0.5 s a byte takes ~20 s; a 2 s deadline must end it long before.
SLOW = b'{"state": {"type": "RUNNING", "name": "R"}}'


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_the_deadline_holds_against_a_trickling_server(phase: str) -> None:
    """Guards the overall deadline: httpx's own timeouts are per read, and a server sending a byte every 0.5 s
    never trips them, in the headers (where no code of ours runs between reads) or in the body."""
    state = Trickle(body=SLOW, phase=phase)  # type: ignore[arg-type]
    with serve_trickle(state) as url, httpbounds.client(timeout=30) as http:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"no complete response within 2\.0s"):
            httpbounds.request(http, "GET", f"{url}/x", deadline=Deadline(2), max_bytes=1 << 20)
        assert time.monotonic() - started < 15  # ~2 s; without the deadline ~20 s or more
    assert state.requests == 1


def test_a_trickling_server_that_finishes_in_time_is_read() -> None:
    state = Trickle(body=b"ok", pause_s=0.05)
    with serve_trickle(state) as url, httpbounds.client() as http:
        response = httpbounds.request(http, "GET", url, deadline=Deadline(60), max_bytes=100)
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize("declare_length", [True, False])
def test_the_body_is_capped_while_streaming(declare_length: bool) -> None:
    """Guards the body cap: a 64 MB answer is not read whole; reading stops at the cap (or at once, when the
    declared length is over it)."""
    state = Big(size=64 << 20, declare_length=declare_length)
    with (
        serve_big(state) as url,
        httpbounds.client() as http,
        pytest.raises(ResponseTooLargeError, match=r"over the 1 MiB limit \(HTTP 200\)"),
    ):
        httpbounds.request(http, "GET", url, deadline=Deadline(60), max_bytes=1 << 20)
    assert state.sent < 32 << 20  # the server saw the client hang up long before the end


def test_deep_json_is_a_value_error() -> None:
    response = httpbounds.Response(200, httpx.Headers(), b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        response.json()


def test_scrub_and_shown_url() -> None:
    assert httpbounds.scrub("pw=hunter2\r\nX: y", ["hunter2"]) == "pw=<redacted>  X: y"
    assert len(httpbounds.scrub("a" * 1000)) == 200
    assert httpbounds.shown_url("https://u:hunter2@host.example/p?q=1") == "https://host.example/p?q=1"
    assert all(httpbounds.is_loopback(host) for host in ("127.0.0.5", "[::1]", "LOCALHOST"))
    assert not any(httpbounds.is_loopback(host) for host in ("registry.example", "10.0.0.1", "localhost.evil"))
