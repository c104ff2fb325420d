"""tasks/prefectapi.py's one request to the Prefect API, against a real loopback server answering as a busy
Prefect server does: asked again while the API cannot take it, within the overall deadline, and only for the
answers a request may be repeated after; the freeze switch, read and set through it, rides out a busy server."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from tasks import freeze, httpbounds, prefectapi
from tasks.freeze import FreezeError
from tests.support.busyapi import serving

BUSY: dict[str, Any] = {"exception_message": "Service Unavailable"}


class ApiError(RuntimeError):
    pass


def _get(url: str, deadline: float, **options: Any) -> httpbounds.Response:
    with httpbounds.client(base_url=url) as http:
        return prefectapi.request(url, http, "GET", "/api/thing", httpbounds.Deadline(deadline), ApiError, **options)


def test_a_busy_api_is_asked_again_until_it_answers() -> None:
    seen: list[str] = []
    with serving([(503, BUSY), (502, BUSY), (429, BUSY), (200, {"ok": True})], seen) as url:
        assert _get(url, 60).status_code == 200
    assert seen == ["GET /api/thing"] * 4


def test_answers_outside_again_on_are_the_caller_s_to_read() -> None:
    seen: list[str] = []
    with serving([(502, BUSY)], seen) as url:
        assert _get(url, 60, again_on=frozenset({429, 503})).status_code == 502
    assert seen == ["GET /api/thing"]  # asked once: a 502 may have been acted on


def test_an_api_that_stays_busy_ends_within_the_deadline_naming_the_answer() -> None:
    seen: list[str] = []
    started = time.monotonic()
    with serving([(503, BUSY)], seen) as url, pytest.raises(ApiError, match=r"cannot reach the Prefect API .*HTTP 503"):
        _get(url, 5)
    assert time.monotonic() - started < 5 + 2 and 2 <= len(seen) <= 3


def test_an_api_nobody_listens_on_is_asked_again_then_named_without_more() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ApiError, match=rf"^cannot reach the Prefect API at http://127.0.0.1:{port}: ConnectError$"):
        _get(f"http://127.0.0.1:{port}", 20)
    assert 10 <= time.monotonic() - started < 20  # three more tries, 1.5 + 3 + 6 s apart


def test_the_freeze_switch_rides_out_a_busy_server() -> None:
    seen: list[str] = []
    variable = {"name": "promote_freeze", "value": {"on": True, "reason": "release week", "by": "ops"}}
    with serving([(503, BUSY), (200, variable)], seen) as url:
        assert freeze.read(prefectapi.ApiConfig(f"{url}/api"), timeout=30) == variable["value"]
    assert seen == ["GET /api/variables/name/promote_freeze"] * 2
    with serving([(503, BUSY)], []) as url, pytest.raises(FreezeError, match="HTTP 503"):
        freeze.read(prefectapi.ApiConfig(f"{url}/api"), timeout=4)


def test_a_request_that_may_have_been_acted_on_is_not_sent_again_after_a_lost_answer() -> None:
    """A server that takes the request and closes without answering: a resume (``once_sent=False``) is not
    repeated, since the first may have been acted on; an idempotent read is asked again."""
    accepted: list[bytes] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(30)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"

        def hang_up() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    accepted.append(conn.recv(65536))

        threading.Thread(target=hang_up, daemon=True).start()
        with pytest.raises(ApiError, match=r"cannot reach the Prefect API at .*: RemoteProtocolError$"):
            _get(url, 30, once_sent=False)
        assert len(accepted) == 1
        with pytest.raises(ApiError, match="RemoteProtocolError"):
            _get(url, 3)
        assert len(accepted) >= 2
