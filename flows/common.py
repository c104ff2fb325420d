"""Orchestration helpers shared by the flows: the per-environment lock, the audit record and notifications,
crash points."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from prefect import get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.runtime import flow_run

from flows import events
from flows.report import PromotionReport
from pipeline.model import Environment
from pipeline.paths import configured_roots, confine, default_roots
from rules.windows import HeldError
from tasks import board, evidence
from tasks import markdown as md
from tasks.approval import expire_if_due
from tasks.connections import Connections
from tasks.locks import EnvironmentLock, lease_name
from tasks.notify import notify
from tasks.steps import run_url

_TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def crash_point(name: str) -> None:
    """Fault injection for the crash-and-rerun tests: ``PROMOTE_CRASH_AT=<name>`` kills the process here,
    as a power cut would (no exception handlers, no cleanup). Inert unless that variable is set."""
    if os.environ.get("PROMOTE_CRASH_AT") == name:
        os._exit(86)


def _run_alive(holder: str) -> bool:
    """Whether the flow run holding a lock can still finish its promotion (paused/suspended counts)."""
    try:
        run_id = UUID(holder)
    except ValueError:
        return True  # not a flow run id: only the lease's expiry frees it
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except Exception:  # an unknown run (other server, deleted) holds nothing we can honour
            return False
        if expire_if_due(client, run, datetime.now(UTC)):
            return False  # its approval window closed: it is Failed now and its lock is free
    return run.state is None or run.state.type.value not in _TERMINAL


def lock_ttl_seconds() -> int:
    """How long a lock outlives a dead holder process (renewed every third of it while alive)."""
    return max(3, int(os.environ.get("PROMOTE_LOCK_TTL_SECONDS", "60")))


@contextlib.contextmanager
def environment_lock(conn: Connections, env: Environment) -> Iterator[EnvironmentLock]:
    """Hold the environment's Lease for the block; the holder is this flow run, so a suspended run that
    re-runs from the top after approval finds its own lock and carries on. A killed process stops renewing
    and the lock lapses after the TTL."""
    holder = str(flow_run.id or uuid4())
    lock = EnvironmentLock(
        kube=conn.kube(env),
        namespace=env.verify.cluster.lock_namespace,
        name=lease_name(conn.pipeline.name, env.name),
        holder=holder,
        ttl_seconds=lock_ttl_seconds(),
        holder_alive=_run_alive,
        log=conn.log,
    )
    lock.acquire(timeout=env.gate.timeout_seconds + env.verify.timeout_seconds + 3600)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(lock.ttl_seconds / 3):
            try:
                lock.renew()
            except Exception as exc:  # a renewal that fails is retried next round; the error is logged
                conn.log(f"lock renewal failed: {exc}")

    renewer = threading.Thread(target=keep_renewing, name=f"lock-{lock.name}", daemon=True)
    renewer.start()
    try:
        yield lock
    except Pause:
        # Suspended for approval: the run is not over, so the environment stays locked for it
        # (hold_for() stretched the lease over the approval window before suspending).
        stop.set()
        raise
    except BaseException:
        stop.set()
        lock.release()
        raise
    stop.set()
    lock.release()


def record(conn: Connections, kind: evidence.RecordKind, env: str, tag: str, commit: str, **extra: Any) -> None:
    """Write one evidence record for this flow run into the repository's promotion notes."""
    from tasks.steps import record_evidence  # late: the step module imports Prefect task machinery

    record_evidence(
        conn,
        evidence.Record(
            kind=kind,
            pipeline=conn.pipeline.name,
            environment=env,
            tag=tag,
            commit=commit,
            run=str(flow_run.id or ""),
            **extra,
        ),
    )
    if (milestone := events.FOR_RECORD.get(kind)) is not None:
        events.emit(milestone, conn.pipeline.name, env, version=tag, commit=commit, **extra)


def pipeline_path(path: str) -> str:
    """``path`` as a flow run may read it: confined to the pipeline roots (pipeline/paths.py) when
    PROMOTE_PIPELINE_ROOTS is set or the run belongs to a deployment (its parameters are anyone's who can start
    a run); as given for a run started in this process (the CLI, a test)."""
    roots = configured_roots()
    if roots is None:
        context = FlowRunContext.get()
        run = context.flow_run if context is not None else None
        if run is None or run.deployment_id is None:
            return path
        roots = default_roots()
    return str(confine(path, roots))


def started_by() -> str:
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None:
        return "local call"
    # The engine's copy of the run carries all we need: no API read (a nightly writes many audit records;
    # prefect.runtime's deployment.id reads the run from the API when it is not a deployment's).
    if run.created_by is not None:
        return f"{(run.created_by.type or '').lower()} {run.created_by.display_value}".strip()
    if run.deployment_id is not None:
        return f"deployment {flow_run.flow_name}/{run.deployment_id}"
    if run.parent_task_run_id is not None:  # the calling flow's own audit says who started it
        return "nested run"
    return "local run"


def audit(key: str, report: PromotionReport, started: float) -> None:
    """The run's markdown record: who, what, which versions and commits, decisions, results, timings."""
    rows = [*report.rows(), ("started_by", started_by()), ("duration_s", str(round(time.monotonic() - started, 1)))]
    lines = [f"# {md.text(key)}", "", "| field | value |", "|---|---|"]
    lines += [f"| {md.cell(name)} | {md.cell(value, 2000)} |" for name, value in rows]
    if report.diff:
        lines += ["", md.code_block(report.diff, "diff")]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description="promotion audit record")


def _touched(report: PromotionReport) -> bool:
    """Whether the run wrote to or verified its environment (a dry run, a skip or a refusal before the write
    leaves the board as it was)."""
    done = (report.write_back, report.verification, report.rolled_back_to, report.rollback_failure)
    return not report.dry_run and any(done)


def publish_board(conn: Connections, notes: Mapping[str, str] | None = None) -> None:
    """Rewrite the pipeline's "what runs where" table artifact from Git (tasks/board.py), as ``promote status``
    prints it; ``notes``: what a run knows beyond Git, per environment (a pull request waiting and its checks).
    Never raises: the promotion's outcome is in Git already; a missing board is only logged."""
    key = board.board_key(conn.pipeline.name)
    try:
        conn.repo.fetch()  # another environment's run may have moved the branch or the notes meanwhile
        rows = board.with_notes(board.board_rows(conn.repo, conn.pipeline), notes or {})
        create_table_artifact(
            key=key,
            table=[{k: md.cell(v) for k, v in row.items()} for row in board.board_table(rows)],
            description=f"what runs where in {conn.pipeline.name}, from Git (`promote status` prints the same)",
        )
    except Exception as exc:
        message = f"could not write the board artifact {key} (the promotion itself is recorded in Git): {exc}"
        try:
            get_run_logger().warning(message)
        except Exception:  # no run context to log in: the pipeline's own log still gets it
            conn.log(message)


def tell(conn: Connections, text: str) -> None:
    """Post ``text`` with a link to this run to the pipeline's webhook, if it has one (never raises)."""
    notify(conn.pipeline.notifications, text, conn.log, link=run_url(flow_run.id))


@contextlib.contextmanager
def run_record(conn: Connections, key: str, what: str, report: PromotionReport, started: float) -> Iterator[None]:
    """However the run ends, it leaves its audit record (``report`` as it then stands), and a failure reaches
    the webhook. A run suspended at the approval gate records nothing yet (Prefect's Pause is a
    BaseException and passes through): resumed, it runs again from the top and records then."""
    try:
        yield
    except HeldError as held:  # not a failure of the promotion: it was not allowed to start (a "frozen" event)
        report.failure = report.failure or str(held)
        tell(conn, f"{conn.pipeline.name}: {what} HELD: {held}")
        _audit_anyway(conn, key, report, started)
        raise
    except Exception as exc:
        report.failure = report.failure or str(exc)
        tell(conn, f"{conn.pipeline.name}: {what} FAILED: {exc}")
        events.emit(
            "failed",
            conn.pipeline.name,
            report.environment,
            version=report.version or report.rc,
            commit=report.commit,
            message=str(exc),
            rolled_back_to=report.rolled_back_to,
        )
        _audit_anyway(conn, key, report, started)
        if _touched(report):  # a failed write or rollback changed what runs: the board must show it
            publish_board(conn)
        raise
    audit(key, report, started)
    if _touched(report):
        publish_board(conn)


def _audit_anyway(conn: Connections, key: str, report: PromotionReport, started: float) -> None:
    try:
        audit(key, report, started)
    except Exception as lost:  # the run reports its own failure, not the missing record
        conn.log(f"could not write the audit record {key}: {lost}")
