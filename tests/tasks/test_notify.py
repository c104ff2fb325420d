"""Webhook notifications against a real HTTP server on 127.0.0.1 (a Slack-compatible incoming webhook)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from pipeline.load import parse_pipeline
from pipeline.model import Notifications
from tasks.notify import notify
from tests.support.webhook import Webhook, serve_webhook

ENV = "PROMOTE_TEST_WEBHOOK_URL"
TOKEN = "T0SECRET/B0SECRET/xoxb-webhook-token-4711"  # what a Slack webhook path carries: the secret
RUN = "http://prefect.example/runs/flow-run/1234"


@pytest.fixture
def hook() -> Iterator[tuple[Webhook, str]]:
    state = Webhook()
    with serve_webhook(state) as base:
        yield state, f"{base}/services/{TOKEN}"


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture(autouse=True)
def all_logging(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, as with PREFECT_LOGGING_ROOT_LEVEL=DEBUG: a secret must not reach any of them."""
    caplog.set_level(logging.DEBUG)
    return caplog


def config(env: str | None = ENV) -> Notifications:
    return Notifications(webhook_url_env=env)


def assert_no_secret(lines: list[str], caplog: pytest.LogCaptureFixture, url: str) -> None:
    for text in [*lines, caplog.text]:
        assert TOKEN not in text and url not in text and "xoxb" not in text


def test_posts_the_message_with_a_link_to_the_run(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str]
) -> None:
    state, url = hook
    monkeypatch.setenv(ENV, url)
    assert notify(config(), "shop: v1.2.3 waits for approval to production", lines.append, link=RUN) is True
    assert state.received == [
        (
            f"/services/{TOKEN}",
            "application/json",
            {"text": f"shop: v1.2.3 waits for approval to production\n<{RUN}|Open the run>"},
        )
    ]
    assert lines == []


def test_without_a_run_link_posts_the_text_alone(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str]
) -> None:
    state, url = hook
    monkeypatch.setenv(ENV, url)
    assert notify(config(), "shop: v1.2.3 is live in production", lines.append) is True
    assert [body for _, _, body in state.received] == [{"text": "shop: v1.2.3 is live in production"}]


def test_url_comes_from_the_variable_the_pipeline_file_names(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen, other = Webhook(), Webhook()
    with serve_webhook(chosen) as chosen_url, serve_webhook(other) as other_url:
        monkeypatch.setenv("TEAM_SHOP_WEBHOOK", f"{chosen_url}/hook")
        monkeypatch.setenv(ENV, f"{other_url}/hook")
        pipeline = parse_pipeline(
            """\
name: shop
repository: {url: "https://git.example/shop.git"}
notifications: {webhook_url_env: TEAM_SHOP_WEBHOOK}
environments:
  - name: production
    tracks: {kind: tag, application_file: apps/production/shop.yaml}
"""
        )
        assert notify(pipeline.notifications, "shop: done", lambda _m: None) is True
    assert [body for _, _, body in chosen.received] == [{"text": "shop: done"}]
    assert other.received == []


@pytest.mark.parametrize("status", [500, 404, 403])
def test_a_refusing_webhook_is_logged_without_the_url_and_does_not_raise(
    hook: tuple[Webhook, str],
    monkeypatch: pytest.MonkeyPatch,
    lines: list[str],
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    state, url = hook
    state.status = status
    monkeypatch.setenv(ENV, url)
    assert notify(config(), "shop: promotion FAILED", lines.append, link=RUN) is False
    assert len(state.received) == 1  # tried once, did not raise
    assert lines == [f"notification webhook ({ENV}) failed: {status}"]
    assert_no_secret(lines, caplog, url)


def test_an_unreachable_webhook_is_logged_without_the_url_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    monkeypatch.setenv(ENV, url)
    assert notify(config(), "shop: promotion FAILED", lines.append) is False
    assert lines == [f"notification webhook ({ENV}) failed: ConnectError"]
    assert_no_secret(lines, caplog, url)


def test_a_hanging_webhook_times_out_without_failing_the_promotion(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    state, url = hook
    state.delay_s = 2
    monkeypatch.setenv(ENV, url)
    started = time.monotonic()
    assert notify(config(), "shop: promotion FAILED", lines.append, timeout=0.3) is False
    assert time.monotonic() - started < 1.5
    assert lines == [f"notification webhook ({ENV}) failed: no answer within 0.3s"]
    assert_no_secret(lines, caplog, url)


@pytest.mark.parametrize("value", [f"http://[::1/services/{TOKEN}", f"hooks.example/services/{TOKEN}"])
def test_a_malformed_url_is_logged_without_it_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, lines: list[str], caplog: pytest.LogCaptureFixture, value: str
) -> None:
    monkeypatch.setenv(ENV, value)
    assert notify(config(), "shop: promotion FAILED", lines.append) is False
    assert len(lines) == 1 and lines[0].startswith(f"notification webhook ({ENV}) failed: ")
    assert_no_secret(lines, caplog, value)


def test_a_url_with_surrounding_whitespace_is_used(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str]
) -> None:
    state, url = hook
    monkeypatch.setenv(ENV, f"  {url}\n")  # as pasted into a secret store or read from a file
    assert notify(config(), "shop: done", lines.append) is True
    assert len(state.received) == 1 and lines == []


@pytest.mark.parametrize("setting", ["unset", "empty", "not configured"])
def test_nothing_is_sent_without_a_webhook_url(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str], setting: str
) -> None:
    state, _ = hook
    monkeypatch.delenv(ENV, raising=False)
    if setting == "empty":
        monkeypatch.setenv(ENV, "")
    cfg = config(None) if setting == "not configured" else config()
    assert notify(cfg, "shop: done", lines.append, link=RUN) is False
    assert state.received == [] and lines == []


# --- item 12 of issue 14: the URL however it is spelled; item 4: the timeout holds -----------------------


def test_a_url_spelled_differently_from_the_log_is_still_redacted(
    hook: tuple[Webhook, str], monkeypatch: pytest.MonkeyPatch, lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Was: ``HTTP://LOCALHOST:port/...`` slipped past redaction, as httpx logs ``http://localhost:port/...``."""
    state, url = hook
    port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    shouting = f"HTTP://LOCALHOST:{port}/services/{TOKEN}"
    monkeypatch.setenv(ENV, shouting)
    assert notify(config(), "shop: done", lines.append) is True
    assert len(state.received) == 1
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request, with the URL redacted
    assert_no_secret(lines, caplog, url)
    assert "<webhook URL redacted>" in caplog.text


@pytest.mark.parametrize(
    ("configured", "logged"),
    [
        (f"HTTPS://HOOKS.EXAMPLE:443/services/{TOKEN}", f"https://hooks.example/services/{TOKEN}"),
        (f"https://Hooks.Example/services/{TOKEN}", f"https://hooks.example/services/{TOKEN}"),
        (f"https://hooks.example/services/{TOKEN}?a=1", f"http://other.example/services/{TOKEN}?a=1"),
    ],
)
def test_redaction_matches_the_normalized_url_and_the_token_path(configured: str, logged: str) -> None:
    """The filter on the httpx logger, fed the record httpx writes (its URL argument as httpx normalizes it)."""
    import httpx

    from tasks import notify as notify_module

    redact = notify_module._RedactWebhookURLs()  # its own: the module's filter holds earlier tests' URLs
    redact.add(configured)
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s %d %s"',
        ("POST", httpx.URL(logged), "HTTP/1.1", 200, "OK"),
        None,
    )
    redact.filter(record)
    assert TOKEN not in record.getMessage() and notify_module.REDACTED in record.getMessage()


def test_a_trickling_webhook_is_cut_off_at_the_timeout(lines: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: httpx's per-read timeout never tripped against one byte every 0.2 s."""
    from tests.support.slowhttp import Trickle, serve_trickle

    with serve_trickle(Trickle(body=b"ok" * 100, content_type="text/plain", pause_s=0.2)) as base:
        monkeypatch.setenv(ENV, f"{base}/services/{TOKEN}")
        started = time.monotonic()
        assert notify(config(), "shop: done", lines.append, timeout=1.0) is False
        elapsed = time.monotonic() - started
    assert elapsed < 5, f"a 1 s timeout took {elapsed:.1f}s"
    assert lines == [f"notification webhook ({ENV}) failed: no answer within 1s"]
