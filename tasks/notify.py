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
from tasks import httpbounds

REDACTED = "<webhook URL redacted>"
_MAX_ANSWER_BYTES = 64 << 10  # Slack answers "ok"; nothing reads the body


class _RedactWebhookURLs(logging.Filter):
    """httpx logs every request's full URL at INFO ("HTTP Request: POST https://hooks.../TOKEN ..."): quiet
    by default (Prefect's root logger is at WARNING), a leaked token as soon as someone turns on INFO or adds
    httpx to PREFECT_LOGGING_EXTRA_LOGGERS (which ships logs to the API). Redact webhook URLs in its records."""

    def __init__(self) -> None:
        super().__init__()
        self._needles: set[str] = set()  # lowercase: spellings of each webhook URL, and the path that holds its token
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        """Redact ``url`` however a log spells it: httpx logs its normalized form (``HTTP://HOST:443`` becomes
        ``https://host``), so match the given text, the normalized URL and the path with its query, all
        case-insensitively (over-redacting is harmless)."""
        needles = {url.lower()}
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            parsed = None
        if parsed is not None:
            needles.add(str(parsed).lower())
            secret_part = parsed.raw_path.decode("ascii", errors="replace")
            if len(secret_part) > 1:  # "/" alone carries nothing
                needles.add(secret_part.lower())
                needles.add(parsed.path.lower())
        with self._lock:
            self._needles.update(n for n in needles if len(n) > 1)

    def _hit(self, value: object) -> bool:
        text = str(value).lower()
        return any(needle in text for needle in self._needles)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._needles and isinstance(record.args, tuple):
            record.args = tuple(REDACTED if self._hit(arg) else arg for arg in record.args)
        if self._needles and isinstance(record.msg, str) and self._hit(record.msg):
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
    deadline = httpbounds.Deadline(timeout)
    try:
        with httpbounds.client(timeout=timeout) as http:
            response = httpbounds.request(
                http, "POST", url, json={"text": message}, deadline=deadline, max_bytes=_MAX_ANSWER_BYTES
            )
    except (httpbounds.DeadlineExceededError, httpx.TimeoutException):
        log(f"notification webhook ({config.webhook_url_env}) failed: no answer within {timeout:g}s")
        return False
    except (httpx.HTTPError, httpx.InvalidURL, httpbounds.BoundsError, ValueError) as exc:
        # The exception text can contain the URL (and so its token): log only the kind of failure.
        log(f"notification webhook ({config.webhook_url_env}) failed: {type(exc).__name__}")
        return False
    if response.status_code >= 300:  # redirects are not followed: they would carry the message elsewhere
        log(f"notification webhook ({config.webhook_url_env}) failed: {response.status_code}")
        return False
    return True
