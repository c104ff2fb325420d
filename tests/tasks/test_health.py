"""Health checks against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.model import HealthCheck
from tasks.health import results_table, run_check
from tests.support.httpapp import AppState, serve_app
from tests.support.tls import self_signed_context

VALUES = {"version": "1.2.3", "tag": "v1.2.3", "commit": "abc"}


@pytest.fixture
def app() -> Iterator[tuple[AppState, str]]:
    state = AppState(version="1.2.3")
    with serve_app(state) as url:
        yield state, url


def check(url: str, **kwargs: object) -> HealthCheck:
    return HealthCheck.model_validate({"url": url, "interval_seconds": 0.01, "timeout_seconds": 5, **kwargs})


def test_json_field_matches_promoted_version(app: tuple[AppState, str]) -> None:
    _, url = app
    result = run_check(check(f"{url}/version", expect_json={"path": "build.tag", "equals": "{tag}"}), VALUES)
    assert result.passed and result.probes == 1


def test_wrong_version_fails_with_what_it_saw(app: tuple[AppState, str]) -> None:
    state, url = app
    state.version = "1.2.2"
    result = run_check(
        check(f"{url}/version", expect_json={"path": "version", "equals": "{version}"}, timeout_seconds=0.3), VALUES
    )
    assert not result.passed
    assert result.last_problem == "JSON version is '1.2.2', expected '1.2.3'"
    assert result.probes >= 2


def test_transient_503s_are_retried_then_pass(app: tuple[AppState, str]) -> None:
    state, url = app
    state.fail_next = 3
    logs: list[str] = []
    result = run_check(check(f"{url}/healthz", body_contains="ok"), VALUES, log=logs.append)
    assert result.passed and result.failures == 3 and result.probes == 4
    assert any("status 503, expected 200; retrying in" in line for line in logs)


def test_consecutive_successes_reset_by_a_failure(app: tuple[AppState, str]) -> None:
    state, url = app
    seen: list[int] = []

    def sleep(_: float) -> None:
        seen.append(state.requests)
        if state.requests == 2:
            state.fail_next = 1  # the third probe fails after two successes

    result = run_check(check(f"{url}/healthz", consecutive_successes=3), VALUES, sleep=sleep)
    assert result.passed
    assert result.probes == 6  # ok, ok, fail (reset), ok, ok, ok
    assert result.failures == 1


def test_soak_window_requires_successes_spanning_it(app: tuple[AppState, str]) -> None:
    _, url = app
    now = [0.0]
    result = run_check(
        check(f"{url}/healthz", soak_seconds=10, interval_seconds=2, timeout_seconds=100),
        VALUES,
        sleep=lambda s: now.__setitem__(0, now[0] + s),
        clock=lambda: now[0],
    )
    assert result.passed
    assert result.probes == 6  # probes at t=0,2,4,6,8,10: the streak spans 10 s


def test_latency_limit(app: tuple[AppState, str]) -> None:
    state, url = app
    state.delay_s = 0.15
    result = run_check(check(f"{url}/healthz", max_latency_ms=50, timeout_seconds=0.2), VALUES)
    assert not result.passed
    assert "over the 50 ms limit" in (result.last_problem or "")


def test_connection_refused_is_reported(unused_port: int) -> None:
    result = run_check(check(f"http://127.0.0.1:{unused_port}/healthz", timeout_seconds=0.2), VALUES)
    assert not result.passed and "ConnectError" in (result.last_problem or "")


def test_tls_verification_is_on_by_default() -> None:
    assert HealthCheck(url="https://x.example").verify_tls is True


def test_a_self_signed_endpoint_is_refused_unless_verification_is_off(tmp_path: Path) -> None:
    with serve_app(AppState(version="1.2.3"), tls=self_signed_context(tmp_path)) as url:
        assert url.startswith("https://")
        refused = run_check(check(f"{url}/healthz", timeout_seconds=2), VALUES)  # roomy: a busy CI machine
        assert not refused.passed and "CERTIFICATE_VERIFY_FAILED" in (refused.last_problem or ""), refused
        accepted = run_check(check(f"{url}/healthz", verify_tls=False), VALUES)
        assert accepted.passed


def test_results_table_rows(app: tuple[AppState, str]) -> None:
    _, url = app
    rows = results_table([run_check(check(f"{url}/healthz", name="healthz"), VALUES)])
    assert rows[0]["check"] == "healthz" and rows[0]["result"] == "passed" and rows[0]["probes"] == 1


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
