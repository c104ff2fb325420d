"""Start a deployment's flow run through the Prefect REST API, as a CI job does, and follow it to the end."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.errors import RefusedError

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class TriggerError(RefusedError, RuntimeError):
    """The run could not be created (unknown deployment, bad parameters, API refused)."""


@dataclass(frozen=True)
class ApiConfig:
    url: str
    key: str | None = None

    @classmethod
    def from_env(cls) -> ApiConfig:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            raise TriggerError("PREFECT_API_URL is not set: point it at your Prefect API, e.g. http://prefect:4200/api")
        return cls(url=url.rstrip("/"), key=os.environ.get("PREFECT_API_KEY") or None)

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


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


def create_run(api: ApiConfig, deployment: str, params: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    if deployment.count("/") != 1:
        raise TriggerError(f"deployment {deployment!r}: expected FLOW/DEPLOYMENT, e.g. promote-production/shop")
    with api.client() as http:
        response = _request(http, "GET", f"/deployments/name/{deployment}")
        if response.status_code == 404:
            raise TriggerError(f"deployment {deployment} not found at {api.url} (prefect deploy --all first)")
        _raise_for(response, f"read deployment {deployment}")
        found = response.json()
        check_params(found.get("parameter_openapi_schema") or {}, params, deployment)
        body: dict[str, Any] = {"parameters": params, "tags": ["ci"]}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        response = _request(http, "POST", f"/deployments/{found['id']}/create_flow_run", json=body)
        _raise_for(response, f"create a run of {deployment}")
        return dict(response.json())


def follow(
    api: ApiConfig, run_id: str, out: Callable[[str], None], *, poll_seconds: float = 2.0, timeout: float | None = None
) -> str:
    """Print state changes until the run ends; returns the final state type."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    with api.client() as http:
        while True:
            response = _request(http, "GET", f"/flow_runs/{run_id}")
            _raise_for(response, f"read flow run {run_id}")
            state = response.json().get("state") or {}
            kind, name = str(state.get("type", "")), str(state.get("name", ""))
            if name != last:
                message = f": {state.get('message')}" if state.get("message") else ""
                out(f"{time.strftime('%H:%M:%S')} {name}{message}")
                last = name
            if kind in TERMINAL:
                return kind
            if deadline is not None and time.monotonic() > deadline:
                raise TriggerError(f"run {run_id} still {name} after {timeout:.0f}s")
            time.sleep(poll_seconds)


def _request(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    for attempt in range(4):
        try:
            response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if attempt == 3:
                raise TriggerError(f"cannot reach the Prefect API: {type(exc).__name__}") from None
            time.sleep(1.5 * 2**attempt)
            continue
        if response.status_code in (502, 503, 504) and attempt < 3:
            time.sleep(1.5 * 2**attempt)
            continue
        return response
    raise AssertionError("unreachable")


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code in (401, 403):
        raise TriggerError(f"cannot {what}: the API refused ({response.status_code}); check PREFECT_API_KEY")
    if response.status_code >= 400:
        raise TriggerError(f"cannot {what}: HTTP {response.status_code}: {response.text[:300]}")
