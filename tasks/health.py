"""HTTP health checks: status, body or JSON field match, latency, N consecutive successes over a soak window.

A check probes until it has ``consecutive_successes`` passing probes in a row that also span
``soak_seconds``; any failing probe resets the streak and the next probe waits longer (backoff with
jitter), since a rollout in progress fails a few probes before it settles. The check fails when
``timeout_seconds`` pass without that, and says what the last probe saw.

``timeout_seconds`` holds: each probe is a bounded request (:mod:`tasks.httpbounds`) whose deadline is what is
left of it (at most 30 s a probe), so a server trickling its answer is cut off; bodies are read up to 1 MiB.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.model import HealthCheck
from tasks import httpbounds
from tasks.httpbounds import Deadline

Log = Callable[[str], None]

_PROBE_CAP_S = 30.0  # one probe never waits longer, whatever timeout_seconds allows
_MAX_BODY = 1 << 20  # health and version endpoints answer a few bytes; nothing needs more


@dataclass(frozen=True)
class Probe:
    ok: bool
    status: int | None
    latency_ms: float
    problem: str | None  # None when ok
    cut: bool = False  # ended by the check's deadline before the server finished answering


@dataclass
class CheckResult:
    name: str
    url: str
    passed: bool
    probes: int = 0
    failures: int = 0
    streak: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last_problem: str | None = None
    duration_s: float = 0.0

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.latencies_ms) if self.latencies_ms else None

    @property
    def max_ms(self) -> float | None:
        return max(self.latencies_ms) if self.latencies_ms else None

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        latency = f", p50 {self.p50_ms:.0f} ms" if self.p50_ms is not None else ""
        why = f": {self.last_problem}" if not self.passed and self.last_problem else ""
        return f"{self.name} {verdict} after {self.probes} probe(s) in {self.duration_s:.1f}s{latency}{why}"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{version}``, ``{tag}``, ``{commit}``; other braces are left as they are."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _json_path(document: Any, path: str) -> Any:
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


def evaluate(check: HealthCheck, response: httpbounds.Response, latency_ms: float, values: Mapping[str, str]) -> Probe:
    """Judge one response against the check (pure: no I/O)."""
    if response.status_code != check.expect_status:
        return Probe(
            False, response.status_code, latency_ms, f"status {response.status_code}, expected {check.expect_status}"
        )
    if check.body_contains is not None:
        wanted = render(check.body_contains, values)
        if wanted not in response.text:
            return Probe(False, response.status_code, latency_ms, f"body does not contain {wanted!r}")
    if check.expect_json is not None:
        wanted = render(check.expect_json.equals, values)
        try:
            actual = _json_path(response.json(), check.expect_json.path)
            shown = str(actual)
        except httpbounds.JSONTooDeepError:
            return Probe(False, response.status_code, latency_ms, "the body is JSON nested too deeply to read")
        except RecursionError:  # str() of a deep value at the path
            return Probe(False, response.status_code, latency_ms, f"JSON {check.expect_json.path} is nested too deeply")
        except (ValueError, KeyError):
            return Probe(False, response.status_code, latency_ms, f"no JSON field {check.expect_json.path!r}")
        if shown != wanted:
            return Probe(
                False,
                response.status_code,
                latency_ms,
                f"JSON {check.expect_json.path} is {httpbounds.scrub(repr(actual), limit=80)}, expected {wanted!r}",
            )
    if check.max_latency_ms is not None and latency_ms > check.max_latency_ms:
        return Probe(
            False,
            response.status_code,
            latency_ms,
            f"latency {latency_ms:.0f} ms over the {check.max_latency_ms:.0f} ms limit",
        )
    return Probe(True, response.status_code, latency_ms, None)


def probe_once(
    client: httpx.Client, check: HealthCheck, values: Mapping[str, str], deadline: Deadline | None = None
) -> Probe:
    """One bounded request: it ends by ``deadline`` (default: min(30 s, timeout_seconds) from now)."""
    url = render(check.url, values)
    if _has_userinfo(url):
        # The pipeline file is checked for this; a template value could still bring one in.
        return Probe(False, None, 0.0, "the URL holds credentials (user:password@host); health URLs must not")
    budget = deadline or Deadline(min(_PROBE_CAP_S, check.timeout_seconds))
    started = time.perf_counter()
    try:
        response = httpbounds.request(client, check.method, url, deadline=budget, max_bytes=_MAX_BODY)
    except httpbounds.DeadlineExceededError as exc:
        return Probe(False, None, (time.perf_counter() - started) * 1000, str(exc), cut=True)
    except httpbounds.ResponseTooLargeError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Probe(False, exc.status_code, latency, f"{exc}: health checks read at most {_MAX_BODY >> 20} MiB")
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        latency = (time.perf_counter() - started) * 1000
        text = httpbounds.scrub(str(exc))
        return Probe(False, None, latency, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
    latency = (time.perf_counter() - started) * 1000
    return evaluate(check, response, latency, values)


def _has_userinfo(url: str) -> bool:
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:  # not a URL at all: the request says so
        return False


def run_check(
    check: HealthCheck,
    values: Mapping[str, str],
    *,
    client: httpx.Client | None = None,
    log: Log = lambda _msg: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    shown = httpbounds.shown_url(render(check.url, values), limit=200)
    name = check.name or f"{check.method} {shown}"
    result = CheckResult(name=name, url=shown, passed=False)
    own_client = client is None
    http = client or httpbounds.client(verify=check.verify_tls, timeout=min(_PROBE_CAP_S, check.timeout_seconds))
    started = clock()
    streak_started: float | None = None
    backoff = 0
    try:
        while True:
            left = check.timeout_seconds - (clock() - started)
            if result.probes and left <= 0:  # the last wait used up the budget: a probe now proves nothing
                result.last_problem = result.last_problem or "timed out before the soak window ended"
                break
            probe = probe_once(http, check, values, Deadline(min(_PROBE_CAP_S, left)))
            result.probes += 1
            result.latencies_ms.append(probe.latency_ms)
            now = clock()
            if probe.ok:
                backoff = 0
                result.streak += 1
                if streak_started is None:
                    streak_started = now
                soaked = now - streak_started >= check.soak_seconds
                if result.streak >= check.consecutive_successes and soaked:
                    result.passed = True
                    break
            else:
                result.failures += 1
                if probe.cut and left <= _PROBE_CAP_S and result.last_problem is not None:
                    # Cut off because the check's time ran out: what the earlier probes saw says more.
                    log(f"{name}: the last probe was cut off when timeout_seconds ran out ({probe.problem})")
                elif probe.cut and left <= _PROBE_CAP_S:
                    result.last_problem = (
                        f"no complete response before timeout_seconds ({check.timeout_seconds:g}s) ran out"
                    )
                else:
                    result.last_problem = probe.problem
                if result.streak:
                    log(f"{name}: probe failed after {result.streak} success(es), streak reset: {probe.problem}")
                result.streak = 0
                streak_started = None
                backoff += 1
            elapsed = now - started
            if elapsed >= check.timeout_seconds:
                result.last_problem = result.last_problem or "timed out before the soak window ended"
                break
            wait = check.interval_seconds
            if backoff:
                # Exponential backoff with jitter on failures, capped at 8 intervals.
                wait = check.interval_seconds * min(2 ** (backoff - 1), 8) * random.uniform(0.8, 1.2)  # noqa: S311
                log(
                    f"{name}: {probe.problem}; retrying in {wait:.1f}s ({elapsed:.0f}s of {check.timeout_seconds:.0f}s)"
                )
            elif result.probes % 10 == 0:
                log(
                    f"{name}: {result.streak}/{check.consecutive_successes} consecutive successes, "
                    f"soaking {now - (streak_started or now):.0f}/{check.soak_seconds:.0f}s"
                )
            sleep(max(0.0, min(wait, check.timeout_seconds - elapsed)))
    finally:
        if own_client:
            http.close()
        result.duration_s = clock() - started
    return result


def results_table(results: list[CheckResult]) -> list[dict[str, Any]]:
    """The health checks as table rows (the verification artifact shows them)."""
    return [
        {
            "check": r.name,
            "result": "passed" if r.passed else "FAILED",
            "probes": r.probes,
            "failures": r.failures,
            "p50 ms": None if r.p50_ms is None else round(r.p50_ms, 1),
            "max ms": None if r.max_ms is None else round(r.max_ms, 1),
            "duration s": round(r.duration_s, 1),
            "last problem": r.last_problem or "",
        }
        for r in results
    ]
