"""Optional webhook notifications (Slack-compatible JSON) when a run waits for approval, fails or finishes.

A notification that cannot be delivered is logged and never fails the promotion; the webhook URL is a secret
(it embeds a token), so it is read from the environment and never logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import httpx

from pipeline.model import Notifications

REDACTED = "<webhook URL redacted>"


class _RedactWebhookURLs(logging.Filter):
    """httpx logs every request's full URL at INFO ("HTTP Request: POST https://hooks.../TOKEN ..."): quiet
    by default (Prefect's root logger is at WARNING), a leaked token as soon as someone turns on INFO or adds
    httpx to PREFECT_LOGGING_EXTRA_LOGGERS (which ships logs to the API). Redact webhook URLs in its records."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: set[str] = set()
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        with self._lock:
            self._urls.add(url)

    def _redact(self, value: object) -> object:
        text = str(value)
        return REDACTED if any(url in text for url in self._urls) else value

    def filter(self, record: logging.LogRecord) -> bool:
        if self._urls and isinstance(record.args, tuple):
            record.args = tuple(self._redact(arg) for arg in record.args)
        if self._urls and isinstance(record.msg, str) and any(url in record.msg for url in self._urls):
            record.msg = REDACTED
        return True


_REDACT = _RedactWebhookURLs()
logging.getLogger("httpx").addFilter(_REDACT)


def webhook_url(config: Notifications) -> str | None:
    if config.webhook_url_env is None:
        return None
    return os.environ.get(config.webhook_url_env, "").strip() or None


def notify(
    config: Notifications,
    text: str,
    log: Callable[[str], None],
    *,
    link: str | None = None,
    timeout: float = 10.0,
) -> bool:
    """Post ``{"text": ...}`` (plus a Slack-style link to the run) to the webhook; True if it was accepted."""
    url = webhook_url(config)
    if url is None:
        return False
    _REDACT.add(url)
    message = f"{text}\n<{link}|Open the run>" if link else text
    try:
        response = httpx.post(url, json={"text": message}, timeout=timeout)
        response.raise_for_status()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # The exception text can contain the URL (and so its token): log only the kind of failure.
        status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__
        log(f"notification webhook ({config.webhook_url_env}) failed: {status}")
        return False
    return True
