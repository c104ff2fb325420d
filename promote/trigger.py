"""Start a deployment's flow run through the Prefect REST API, as a CI job does, and follow it to the end."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from tasks import httpbounds, prefectapi
from tasks.httpbounds import Deadline, Response
from tasks.prefectapi import REQUEST_SECONDS, ApiConfig, PrefectApiError

CREATE_SECONDS = 120.0  # creating a run (read the deployment, post the run, retries included) without --timeout


class TriggerError(PrefectApiError):
    """The run could not be created (unknown deployment, bad parameters, API refused)."""


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON (true, 3, null, ["a"]) is taken as JSON, else as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TriggerError(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "boolean": bool,
    "integer": int,
    "string": str,
    "number": (int, float),
}


def check_params(schema: Mapping[str, Any], params: Mapping[str, Any], deployment: str) -> None:
    """Refuse unknown parameters and missing required ones before a run exists (Prefect accepts unknown
    parameters and the run crashes later)."""
    properties = schema.get("properties") or {}
    unknown = sorted(set(params) - set(properties))
    if unknown:
        raise TriggerError(
            f"{deployment} has no parameter {', '.join(unknown)}; it takes: {', '.join(sorted(properties)) or 'none'}"
        )
    missing = sorted(set(schema.get("required") or []) - set(params))
    if missing:
        raise TriggerError(f"{deployment} needs parameter(s): {', '.join(missing)}")
    for name, value in params.items():
        spec = properties[name]
        allowed = spec.get("enum") or next(
            (s.get("enum") for s in spec.get("anyOf", []) if isinstance(s, dict) and s.get("enum")), None
        )
        if allowed is not None and value not in allowed and value is not None:
            raise TriggerError(f"{deployment}: parameter {name}={value!r} is not one of {allowed}")
        expected = spec.get("type")
        python: type | tuple[type, ...] | None = _JSON_TYPES.get(str(expected))
        if python is not None and not isinstance(value, python):
            raise TriggerError(f"{deployment}: parameter {name} must be a {expected}, got {value!r}")


def default_idempotency_key(deployment: str, params: Mapping[str, Any]) -> str | None:
    """A key from the CI run and the request: a retried CI step finds the run it created instead of starting
    another, while different triggers in one CI run (a matrix over pipelines, two steps) get runs of their
    own. Prefect matches keys per flow, so without the request two pipelines' triggers would share a run."""
    if os.environ.get("GITHUB_RUN_ID"):
        ci = f"github-{os.environ['GITHUB_RUN_ID']}-{os.environ.get('GITHUB_RUN_ATTEMPT', '1')}"
    elif os.environ.get("CI_PIPELINE_ID"):
        ci = f"gitlab-{os.environ['CI_PIPELINE_ID']}-{os.environ.get('CI_JOB_ID', '')}"
    else:
        return None
    request = json.dumps({"deployment": deployment, "parameters": params}, sort_keys=True, default=str)
    return f"{ci}-{hashlib.sha256(request.encode()).hexdigest()[:16]}"


def create_run(
    api: ApiConfig,
    deployment: str,
    params: dict[str, Any],
    idempotency_key: str | None,
    *,
    deadline: Deadline | None = None,
) -> dict[str, Any]:
    """Create a run of ``deployment``; everything ends by ``deadline`` (default: :data:`CREATE_SECONDS`)."""
    if deployment.count("/") != 1:
        raise TriggerError(f"deployment {deployment!r}: expected FLOW/DEPLOYMENT, e.g. promote-production/shop")
    deadline = deadline or Deadline(CREATE_SECONDS)
    with api.client() as http:
        response = _request(api, http, "GET", f"/deployments/name/{deployment}", deadline)
        if response.status_code == 404:
            raise TriggerError(
                f"deployment {deployment} not found at {httpbounds.shown_url(api.url)} (prefect deploy --all "
                f"first; or {prefectapi.API_HINT})"
            )
        _raise_for(api, response, f"read deployment {deployment}")
        found = prefectapi.json_object(response, api.url, f"the deployment {deployment}", TriggerError)
        check_params(found.get("parameter_openapi_schema") or {}, params, deployment)
        body: dict[str, Any] = {"parameters": params, "tags": ["ci"]}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        response = _request(api, http, "POST", f"/deployments/{found.get('id')}/create_flow_run", deadline, json=body)
        _raise_for(api, response, f"create a run of {deployment}")
        run = prefectapi.json_object(response, api.url, f"the new run of {deployment}", TriggerError)
        if not isinstance(run.get("id"), str):
            raise TriggerError(
                f"the Prefect API answered the new run of {deployment} without its id: {prefectapi.API_HINT}"
            )
        return run


def follow(
    api: ApiConfig,
    run_id: str,
    out: Callable[[str], None],
    *,
    poll_seconds: float = 2.0,
    timeout: float | None = None,
    deadline: Deadline | None = None,
) -> str:
    """Print state changes until the run ends; returns the final state type. ``deadline`` (or ``timeout``
    seconds from now) bounds the whole wait, every request and retry included."""
    if deadline is None and timeout is not None:
        deadline = Deadline(timeout)
    last = ""
    with api.client() as http:
        while True:
            response = _request(api, http, "GET", f"/flow_runs/{run_id}", deadline)
            _raise_for(api, response, f"read flow run {run_id}")
            state = prefectapi.json_object(response, api.url, f"flow run {run_id}", TriggerError).get("state")
            state = state if isinstance(state, dict) else {}
            kind, name = str(state.get("type", "")), httpbounds.scrub(str(state.get("name", "")), limit=60)
            if name != last:
                message = f": {httpbounds.scrub(str(state['message']), limit=300)}" if state.get("message") else ""
                out(f"{time.strftime('%H:%M:%S')} {name}{message}")
                last = name
            if kind in prefectapi.TERMINAL:
                return kind
            if deadline is not None and deadline.remaining() <= poll_seconds:
                raise TriggerError(f"run {run_id} still {name} after {deadline.seconds:.0f}s (--timeout)")
            time.sleep(poll_seconds)


def _request(
    api: ApiConfig,
    http: httpx.Client,
    method: str,
    path: str,
    deadline: Deadline | None,
    *,
    json: Any = None,
) -> Response:
    """One API request, asked again while the API cannot take it, all within ``deadline`` (without one, within
    what the tries and their pauses take at most)."""
    bound = deadline or Deadline(prefectapi.ATTEMPTS * REQUEST_SECONDS + 15)
    hint = " (--timeout)" if deadline is not None else ""
    return prefectapi.request(api.url, http, method, path, bound, TriggerError, json=json, limit_hint=hint)


def _raise_for(api: ApiConfig, response: Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise TriggerError(f"cannot {what}: the API refused ({response.status_code}); check PREFECT_API_KEY")
    if response.status_code >= 400:
        detail = httpbounds.scrub(response.text, [api.key], 300)
        raise TriggerError(f"cannot {what}: HTTP {response.status_code}: {detail}")
