"""The Prefect REST API as this tool talks to it: where it is and how to authenticate (:class:`ApiConfig`, the one
``Authorization`` header), which flow-run states end a run (:data:`TERMINAL`), when the API could not take a request
as opposed to refusing it (:func:`unavailable`), and answers checked to come from the API before anything reads
them. Requests are bounded (tasks/httpbounds.py). The command line (``promote trigger``, ``approve``, ``freeze``),
the approval's resume, the lock's liveness check and the nightly's subflows all use these.

A ``PREFECT_API_URL`` without ``/api`` points at the UI, which answers every path with its HTML page (or, for
some paths, a JSON list): without the check, that is a traceback instead of the fix."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from rules.errors import RefusedError, TransientError
from tasks import httpbounds
from tasks.httpbounds import Response, shown_url

MAX_BYTES = 4 << 20  # a flow run or a deployment is a few KiB; anything far larger is not the API's answer
API_HINT = "PREFECT_API_URL must point at the API itself, which usually ends in /api (e.g. http://prefect:4200/api)"
REQUEST_SECONDS = 30.0  # one request, at most
# The state types after which a flow run does nothing more (Prefect's StateType; PAUSED and the rest may go on).
TERMINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Answers that say the server did not take the request (overloaded, restarting): asking again is safe.
UNAVAILABLE = frozenset({429, 502, 503, 504})


class PrefectApiError(RefusedError, RuntimeError):
    """The Prefect API is not configured, or refused what was asked; the message says which and the fix."""


class PrefectUnavailableError(TransientError, RuntimeError):
    """The Prefect API could not take a request (see :func:`unavailable`): asking again later is safe."""


def auth_headers(key: str | None) -> dict[str, str]:
    """The one way this tool authenticates to the Prefect API: ``Authorization: Bearer <PREFECT_API_KEY>``."""
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class ApiConfig:
    """Where the Prefect API is (``PREFECT_API_URL``) and its key (``PREFECT_API_KEY``, optional)."""

    url: str
    key: str | None = None

    @classmethod
    def from_env(cls) -> ApiConfig:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            raise PrefectApiError(
                "PREFECT_API_URL is not set: point it at your Prefect API, e.g. http://prefect:4200/api"
            )
        return cls(url=url.rstrip("/"), key=os.environ.get("PREFECT_API_KEY") or None)

    def client(self, timeout: float = REQUEST_SECONDS) -> httpx.Client:
        return httpbounds.client(base_url=self.url, headers=auth_headers(self.key), timeout=timeout)


def unavailable(exc: BaseException) -> bool:
    """The Prefect API could not take the request (overloaded, restarting; a network failure on the way), as
    opposed to refusing it. Prefect's own client raises ``PrefectHTTPStatusError``, an ``httpx.HTTPStatusError``."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in UNAVAILABLE
    return isinstance(exc, httpx.TransportError)


def json_object(response: Response, api_url: str, what: str, error: type[Exception]) -> dict[str, Any]:
    """The body of ``response`` as a JSON object, or ``error`` naming what came instead and the likely fix."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    try:
        body = response.json()
    except ValueError:
        kind = "an HTML page" if "html" in content_type or response.content.lstrip()[:1] == b"<" else "no JSON"
        raise error(
            f"the Prefect API at {shown_url(api_url)} answered {what} with {kind} (HTTP {response.status_code}, "
            f"{content_type[:60]}): {API_HINT}"
        ) from None
    if not isinstance(body, dict):
        raise error(
            f"the Prefect API at {shown_url(api_url)} answered {what} with a JSON {type(body).__name__}, not an "
            f"object (HTTP {response.status_code}): {API_HINT}"
        )
    return body
