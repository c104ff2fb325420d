"""The Prefect REST API as the command line talks to it (``promote trigger``, ``promote approve``): bounded
requests (tasks/httpbounds.py), and answers checked to come from the API before anything reads them.

A ``PREFECT_API_URL`` without ``/api`` points at the UI, which answers every path with its HTML page (or, for
some paths, a JSON list): without the check, that is a traceback instead of the fix."""

from __future__ import annotations

from typing import Any

from tasks.httpbounds import Response, shown_url

MAX_BYTES = 4 << 20  # a flow run or a deployment is a few KiB; anything far larger is not the API's answer
API_HINT = "PREFECT_API_URL must point at the API itself, which usually ends in /api (e.g. http://prefect:4200/api)"


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
