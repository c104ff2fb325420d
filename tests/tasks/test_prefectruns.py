"""tasks/prefectruns.py: what a read of flow runs makes of an API that cannot answer (a real loopback server
answering as an overloaded Prefect server does), and the liveness rules over runs as Prefect's client models them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Completed, Paused, Running, Suspended

from sandbox.httpserve import serve_http
from tasks import prefectapi, prefectruns


def _serving(status: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:  # the client's CSRF token: 404 is a server without CSRF protection
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"detail": "database is locked"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def no_client_retries() -> Iterator[None]:
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):  # the client's own backoff would wait a minute
        yield


@pytest.mark.usefixtures("no_client_retries")
def test_an_api_that_cannot_answer_is_a_transient_error_raised_at_the_border() -> None:
    with (
        serve_http(_serving(503)) as url,
        SyncPrefectClient(f"{url}/api") as client,
        pytest.raises(prefectapi.PrefectUnavailableError, match="could not answer a read of 3 flow runs"),
    ):
        prefectruns.read_runs(client, [uuid4() for _ in range(3)])


@pytest.mark.usefixtures("no_client_retries")
def test_an_api_that_refuses_the_read_is_not_taken_for_a_transient_failure() -> None:
    with (
        serve_http(_serving(422)) as url,
        SyncPrefectClient(f"{url}/api") as client,
        pytest.raises(PrefectHTTPStatusError),
    ):
        prefectruns.read_runs(client, [uuid4()])


def _run(state: State[Any]) -> FlowRun:
    return FlowRun(flow_id=uuid4(), state=state)


def test_what_can_still_finish() -> None:
    now = datetime.now(UTC)
    open_window = _run(Suspended(pause_expiration_time=now + timedelta(minutes=5), key="approve-production-v1"))
    closed_window = _run(Suspended(pause_expiration_time=now - timedelta(minutes=5), key="merge-abc-1-1"))
    assert prefectruns.can_still_finish(open_window, now)
    assert not prefectruns.can_still_finish(closed_window, now)
    assert prefectruns.window_closed(closed_window, now) == now - timedelta(minutes=5)
    # A paused (not suspended) run's own process ends it at its timeout: never judged from outside.
    assert prefectruns.can_still_finish(_run(Paused(pause_expiration_time=now - timedelta(minutes=5))), now)
    assert prefectruns.can_still_finish(_run(Running()), now)
    assert not prefectruns.can_still_finish(_run(Completed()), now)
    assert not prefectruns.can_still_finish(None, now)
