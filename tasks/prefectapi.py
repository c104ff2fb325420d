"""The Prefect REST API as this tool talks to it: where it is and how to authenticate (:class:`ApiConfig`, the one
``Authorization`` header), which flow-run states end a run (:data:`TERMINAL`), when the API could not take a request
as opposed to refusing it (:func:`unavailable`), and answers checked to come from the API before anything reads
them. Requests are bounded (tasks/httpbounds.py). The command line (``promote trigger``, ``approve``, ``freeze``),
the approval's resume, the lock's liveness check and the nightly's subflows all use these.

A ``PREFECT_API_URL`` without ``/api`` points at the UI, which answers every path with its HTML page (or, for
some paths, a JSON list): without the check, that is a traceback instead of the fix."""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import httpx

from rules.errors import RefusedError, TransientError
from tasks import httpbounds
from tasks.httpbounds import Deadline, Response, shown_url

MAX_BYTES = 4 << 20  # a flow run or a deployment is a few KiB; anything far larger is not the API's answer
API_HINT = "PREFECT_API_URL must point at the API itself, which usually ends in /api (e.g. http://prefect:4200/api)"
REQUEST_SECONDS = 30.0  # one request, at most
# The state types after which a flow run does nothing more (Prefect's StateType; PAUSED and the rest may go on).
TERMINAL = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# Answers that say the server did not take the request (overloaded, restarting): asking again is safe.
UNAVAILABLE = frozenset({429, 502, 503, 504})
ATTEMPTS = 4  # one request and three more, 1.5, 3 and 6 s apart, while the API cannot take it


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


def request(
    api_url: str,
    http: httpx.Client,
    method: str,
    path: str,
    deadline: Deadline,
    error: type[Exception],
    *,
    json: Any = None,
    again_on: Collection[int] = UNAVAILABLE,
    once_sent: bool = True,
    limit_hint: str = "",
) -> Response:
    """One request to the Prefect API, asked again while the API could not take it (an answer in ``again_on``, a
    network failure), everything within ``deadline`` and each try within :data:`REQUEST_SECONDS`. The answer is
    the caller's to read; ``error`` says, naming the API but never its key, that no answer came. For a request
    that must not be repeated once acted on, ``again_on`` narrows the answers asked again after, and
    ``once_sent=False`` asks again only after a failure to connect (a request that never left)."""
    for attempt in range(ATTEMPTS):
        try:
            response = httpbounds.request(
                http, method, path, json=json, deadline=deadline.within(REQUEST_SECONDS), max_bytes=MAX_BYTES
            )
        except httpbounds.BoundsError as exc:
            if deadline.expired():
                raise error(
                    f"the Prefect API at {shown_url(api_url)} did not answer within the {deadline.seconds:.0f}s "
                    f"overall limit{limit_hint}"
                ) from None
            raise error(f"the Prefect API at {shown_url(api_url)}: {exc}") from None
        except httpx.TransportError as exc:  # its text may hold the URL: only the kind
            if not once_sent and not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise error(f"cannot reach the Prefect API at {shown_url(api_url)}: {type(exc).__name__}") from None
            problem = type(exc).__name__
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise error(f"cannot reach the Prefect API at {shown_url(api_url)}: {type(exc).__name__}") from None
        else:
            if response.status_code not in again_on:
                return response
            problem = f"HTTP {response.status_code}"
        pause = 1.5 * 2**attempt
        if attempt == ATTEMPTS - 1 or deadline.remaining() <= pause:
            raise error(f"cannot reach the Prefect API at {shown_url(api_url)}: {problem}")
        time.sleep(pause)
    raise AssertionError("unreachable")


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
