"""Health checks against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.load import PipelineError, parse_pipeline
from pipeline.model import HealthCheck
from tasks.health import results_table, run_check
from tests.support.httpapp import AppState, serve_app
from tests.support.slowhttp import Big, Fixed, Trickle, serve_big, serve_fixed, serve_trickle
from tests.support.tls import self_signed_context

VALUES = {"version": "1.2.3", "tag": "v1.2.3", "commit": "abc"}


@pytest.fixture
def app() -> Iterator[tuple[AppState, str]]:
    state = AppState(version="1.2.3")
    with serve_app(state) as url:
        yield state, url


def check(url: str, **kwargs: object) -> HealthCheck:
    return HealthCheck.model_validate({"url": url, "interval_seconds": 0.1, "timeout_seconds": 5, **kwargs})


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


# --- bounds: time, size, depth, credentials (issue 14) ---------------------------------------------------


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_timeout_seconds_holds_against_a_trickling_server(phase: str) -> None:
    """Guards the overall deadline: a server trickling one byte every 0.5 s never trips a per-read timeout;
    with timeout_seconds 2 the check still ends after ~2 s (it ran 40 s+ before), failing with what happened."""
    state = Trickle(body=b'{"version": "1.2.3", "padding": "....."}', phase=phase)  # type: ignore[arg-type]
    with serve_trickle(state) as url:
        started = time.monotonic()
        result = run_check(check(f"{url}/version", timeout_seconds=2), VALUES)
        took = time.monotonic() - started
    assert not result.passed
    assert result.last_problem == "no complete response before timeout_seconds (2s) ran out", result
    assert took < 15  # ~2 s on an idle machine; the trickle alone would take 20 s+


def test_a_huge_response_is_not_read_whole() -> None:
    """Guards the body cap: a 300 MB answer (here 64 MB, sent without a length) fails the probe after 1 MiB
    instead of being read into memory whole."""
    state = Big(size=64 << 20, declare_length=False)
    with serve_big(state) as url:
        result = run_check(check(url, timeout_seconds=1, body_contains="ok"), VALUES)
    assert not result.passed
    assert (result.last_problem or "").startswith("response body over the 1 MiB limit (HTTP 200)"), result
    assert state.sent < state.requests * (16 << 20)  # each probe hung up long before the 64 MB end


def test_deeply_nested_json_is_a_failing_probe_not_a_crash() -> None:
    """Guards RecursionError: JSON nested 100,000 deep fails the probe with a clear problem."""
    body = b'{"version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with serve_fixed(Fixed(content_type="application/json", body=body)) as url:
        result = run_check(
            check(url, expect_json={"path": "version", "equals": "{version}"}, timeout_seconds=0.5), VALUES
        )
    assert not result.passed
    assert result.last_problem == "the body is JSON nested too deeply to read"


PIPELINE = """\
name: shop
repository: {{url: "https://git.example/shop.git"}}
environments:
  - name: production
    tracks: {{kind: tag, application_file: apps/production/shop.yaml}}
    health_checks:
      - {check}
"""


@pytest.mark.parametrize(
    "url", ["https://alice:hunter2-pw@shop.example/healthz", "http://alice@shop.example:8080/version"]
)
def test_credentials_in_a_health_url_are_refused_without_echoing_them(url: str) -> None:
    """Guards Low 10: a health URL with user:password@ is refused at validation, and the message does not
    repeat the URL (or the password)."""
    with pytest.raises(PipelineError) as refused:
        parse_pipeline(PIPELINE.format(check=json.dumps({"url": url})))
    text = str(refused.value)
    assert "health_checks[0].url: url must not hold credentials (user:password@host)" in text, text
    assert "hunter2" not in text and "alice" not in text


def test_an_at_sign_after_the_host_is_not_credentials() -> None:
    HealthCheck(url="https://shop.example/healthz?who=ops@example.org")


def test_a_tiny_interval_is_refused() -> None:
    """Guards Low 11: interval_seconds 1e-6 (a probe flood) is refused with a clear message; 0.1 is the minimum."""
    with pytest.raises(PipelineError) as refused:
        parse_pipeline(PIPELINE.format(check=json.dumps({"url": "https://shop.example", "interval_seconds": 1e-6})))
    assert (
        "health_checks[0].interval_seconds: interval_seconds must be at least 0.1 (seconds between probes), got 1e-06"
        in str(refused.value)
    )
    assert HealthCheck(url="https://shop.example", interval_seconds=0.1).interval_seconds == 0.1


def test_printed_names_never_carry_userinfo_from_a_template_value(app: tuple[AppState, str]) -> None:
    """A template value that brings user:password@ into the URL fails the probe and is not printed."""
    _, url = app
    host = url.removeprefix("http://")
    result = run_check(check("http://{commit}" + host + "/healthz", timeout_seconds=0.3), {"commit": "u:pw@"})
    assert not result.passed and "pw@" not in result.summary() and "pw@" not in result.url
    assert result.last_problem == "the URL holds credentials (user:password@host); health URLs must not"
