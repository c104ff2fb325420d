"""Holds on a promotion: the org-wide freeze switch, the gate's windows and its soak time (rules in
rules/windows.py). A held promotion fails at once naming the hold, or waits for it to end
(``gate.when_held: wait``, at most ``gate.max_wait``); an override needs a reason and is recorded in the
audit record and in Git (an ``override`` evidence record)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger

from flows import events
from flows.records import record, tell
from flows.report import PromotionReport
from pipeline.model import Environment
from rules.windows import HeldError, Hold, first_hold, freeze_hold, soak_hold, window_hold
from tasks import evidence
from tasks import freeze as freeze_switch
from tasks.connections import Connections
from tasks.strategies.base import Candidate

_POLL = timedelta(seconds=60)  # how often a waiting promotion looks again when it cannot know the end


def current_hold(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    now: datetime,
    freeze: Callable[[], Any] = freeze_switch.read_in_run,
) -> Hold | None:
    """What holds promoting ``cand`` into ``env`` at ``now``, if anything: the freeze first (it names a
    person's decision), then the windows, then the soak."""
    pipeline = conn.pipeline
    upstream = pipeline.upstream_of(env)
    verified_at = None
    if upstream is not None and env.gate.min_soak is not None:
        found = evidence.find_record(conn.repo, "verified", pipeline.name, upstream.name, cand.record_tag)
        verified_at = datetime.fromisoformat(found.at) if found is not None else None
    return first_hold(
        freeze_hold(freeze()),
        window_hold(env.gate.schedule(), now),
        soak_hold(verified_at, env.gate.soak(), now, upstream.name if upstream else "-"),
    )


def check_holds(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    report: PromotionReport,
    *,
    override: str,
    requested_by: str,
    may_wait: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return when nothing holds the promotion (or an override lets it pass); raise :class:`HeldError` when
    something does and the gate says fail (or ``may_wait`` is False: the caller holds the environment's
    lock), or when waiting ran past ``gate.max_wait``."""
    log = get_run_logger()
    gate = env.gate
    limit = gate.wait_limit()
    waited_since = clock()
    announced: tuple[str, datetime | None] | None = None  # the reason text changes as time passes; this does not
    waits = gate.when_held == "wait" and may_wait
    while True:
        now = clock()
        hold = current_hold(conn, env, cand, now)
        if hold is None:
            if announced is not None:
                log.info(f"the hold on {env.name} has ended; promoting {cand.label}")
            return
        if override.strip():
            if report.override is None:  # once per run: the check runs again inside the lock
                _record_override(conn, env, cand, report, hold, override.strip(), requested_by)
            return
        if (hold.kind, hold.until) != announced:
            announced = (hold.kind, hold.until)
            report.held = hold.reason
            events.emit(
                "frozen",
                conn.pipeline.name,
                env.name,
                version=cand.record_tag,
                commit=cand.anchor,
                hold=hold.kind,
                reason=hold.reason,
                until=hold.until.isoformat() if hold.until else None,
            )
            if waits:
                tell(conn, f"{conn.pipeline.name}: {cand.label} waits to enter {env.name}: {hold.reason}")
            log.warning(f"{env.name} is held: {hold.reason}")
        waited = now - waited_since
        if not waits or waited >= limit:
            if waits:
                why = f" (waited {_minutes(waited)} of gate.max_wait)"
            elif gate.when_held == "wait":
                why = " (it began while the promotion waited for its lock or approval; an approval is kept)"
            else:
                why = ""
            raise HeldError(
                f"{cand.label} was not promoted to {env.name}: {hold.reason}{why}. To promote anyway, run again "
                "with override_hold='<why>' (recorded in the audit and in Git)"
            )
        pause = min(_POLL, limit - waited)
        if hold.until is not None:
            pause = min(pause, max(hold.until - now, timedelta(seconds=1)))
        log.info(f"waiting {_minutes(pause)} for the hold on {env.name} to end ({_minutes(limit - waited)} left)")
        sleep(max(pause.total_seconds(), 1.0))


def _record_override(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    report: PromotionReport,
    hold: Hold,
    reason: str,
    requested_by: str,
) -> None:
    by = requested_by or "unknown"
    report.held, report.override = hold.reason, f"{by}: {reason}"
    get_run_logger().warning(f"{env.name} is held ({hold.reason}); overridden by {by}: {reason}")
    record(
        conn,
        "override",
        env.name,
        cand.record_tag,
        cand.anchor,
        by=by,
        reason=reason[:500],
        details={"hold": hold.kind, "held_by": hold.reason},
    )


def _minutes(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
