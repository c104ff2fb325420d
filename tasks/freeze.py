"""The org-wide freeze switch, a Prefect Variable (settable from the UI too) that holds every promotion into an
environment with a gate (flows/holds.py): read by a promotion (:func:`read_in_run`), and read and set by ``promote
freeze on|off`` through the Prefect REST API (:func:`read`, :func:`switch`). Its name is rules.windows's
``FREEZE_VARIABLE``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from rules.windows import FREEZE_VARIABLE, freeze_hold
from tasks import httpbounds, prefectapi
from tasks.prefectapi import ApiConfig, PrefectApiError

TIMEOUT_SECONDS = 30.0


class FreezeError(PrefectApiError):
    """The switch could not be read or set; the message names the API and the fix."""


def read_in_run() -> Any:
    """The switch's value as a flow run reads it (through the run's own Prefect client), None if never set."""
    from prefect.variables import Variable

    return Variable.get(FREEZE_VARIABLE, default=None)


# Prefect's answer for a variable that does not exist (prefect/server/api/variables.py). Any other 404 (a wrong
# PREFECT_API_URL, a proxy's page) says nothing about the switch and must not read as "off".
_NOT_FOUND = "Variable not found."


def read(api: ApiConfig, *, timeout: float = TIMEOUT_SECONDS) -> Any:
    """The switch's value, None if it was never set. Anything that is not Prefect's own answer about the
    variable (an HTML page, another 404, a JSON body that is not the variable) is an error, never "off"."""
    with api.client() as http:
        return _read(api, http, timeout)


def _read(api: ApiConfig, http: httpx.Client, timeout: float) -> Any:
    response = _send(api, http, "GET", f"/variables/name/{FREEZE_VARIABLE}", timeout)
    if response.status_code == 404:
        _require_variable_not_found(api, response)
        return None
    _check(api, response, "read the freeze switch")
    body = prefectapi.json_object(response, api.url, "the freeze switch", FreezeError)
    if body.get("name") != FREEZE_VARIABLE or "value" not in body:
        raise FreezeError(
            f"the Prefect API at {httpbounds.shown_url(api.url)} answered the freeze switch with something that "
            f"is not the variable {FREEZE_VARIABLE}: {prefectapi.API_HINT}"
        )
    return body["value"]


def _require_variable_not_found(api: ApiConfig, response: httpbounds.Response) -> None:
    body = prefectapi.json_object(response, api.url, "the freeze switch", FreezeError)
    if body.get("detail") != _NOT_FOUND:
        raise FreezeError(
            f"the Prefect API at {httpbounds.shown_url(api.url)} answered 404 without saying the variable "
            f"{FREEZE_VARIABLE} does not exist, so whether the freeze is on is unknown: {prefectapi.API_HINT}"
        )


def switch(api: ApiConfig, on: bool, reason: str, by: str, *, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    """Set the switch; the value keeps who set it, when and why (lifting it is recorded the same way). Read back
    afterwards: only a switch the server then holds is reported as set."""
    value = {"on": on, "reason": reason.strip()[:500], "by": by.strip()[:100], "at": _now()}
    with api.client() as http:
        response = _send(api, http, "PATCH", f"/variables/name/{FREEZE_VARIABLE}", timeout, json={"value": value})
        if response.status_code == 404:  # never set: create it
            _require_variable_not_found(api, response)
            body = {"name": FREEZE_VARIABLE, "value": value, "tags": ["gitops-promote"]}
            response = _send(api, http, "POST", "/variables/", timeout, json=body)
        _check(api, response, "set the freeze switch")
        if _read(api, http, timeout) != value:
            raise FreezeError(
                f"the Prefect API at {httpbounds.shown_url(api.url)} accepted the freeze switch but does not hold "
                f"it afterwards: nothing was set. {prefectapi.API_HINT}"
            )
    return value


def describe(value: Any) -> str:
    hold = freeze_hold(value)
    if hold is not None:
        return hold.reason
    if isinstance(value, dict) and value.get("by"):
        by, at = str(value["by"])[:80], str(value.get("at"))[:40]
        return f"the org-wide freeze ({FREEZE_VARIABLE}) is off (lifted by {by} at {at})"
    return f"the org-wide freeze ({FREEZE_VARIABLE}) is off"


def _send(
    api: ApiConfig, http: httpx.Client, method: str, path: str, timeout: float, json: Any = None
) -> httpbounds.Response:
    # Reading and setting the variable are idempotent: asked again while the API cannot take them.
    return prefectapi.request(api.url, http, method, path, httpbounds.Deadline(timeout), FreezeError, json=json)


def _check(api: ApiConfig, response: httpbounds.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise FreezeError(f"cannot {what}: the API refused ({response.status_code}); check PREFECT_API_KEY")
    if response.status_code >= 400:
        raise FreezeError(
            f"cannot {what}: HTTP {response.status_code}: {httpbounds.scrub(response.text, [api.key], 300)}"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
