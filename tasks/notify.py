"""Optional webhook notifications (Slack-compatible JSON) when a run waits for approval, fails or finishes.

A notification that cannot be delivered is logged and never fails the promotion; the webhook URL is a secret
(it embeds a token), so it is read from the environment and never logged.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from promote.pipeline import Notifications


def webhook_url(config: Notifications) -> str | None:
    if config.webhook_url_env is None:
        return None
    return os.environ.get(config.webhook_url_env) or None


def notify(config: Notifications, text: str, log: Callable[[str], None], *, link: str | None = None) -> bool:
    url = webhook_url(config)
    if url is None:
        return False
    message = f"{text}\n<{link}|Open the run>" if link else text
    try:
        response = httpx.post(url, json={"text": message}, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        # The exception text can contain the URL (and so its token): log only the kind of failure.
        status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else type(exc).__name__
        log(f"notification webhook ({config.webhook_url_env}) failed: {status}")
        return False
    return True
