"""What a flow run leaves behind: evidence records in Git, its audit record, the board, and the webhook message
(a failure reaches it, however the run ends)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows import events
from flows.inputs import started_by
from flows.report import PromotionReport
from rules.windows import HeldError
from tasks import board, boardpicture, evidence
from tasks import markdown as md
from tasks.connections import Connections
from tasks.notify import notify
from tasks.plan import plan_pipeline
from tasks.steps import run_url


def evidence_record(
    conn: Connections, kind: evidence.RecordKind, env: str, tag: str, commit: str, **extra: Any
) -> evidence.Record:
    """One evidence record of this flow run (``extra``: by, reason, details)."""
    return evidence.Record(
        kind=kind,
        pipeline=conn.pipeline.name,
        environment=env,
        tag=tag,
        commit=commit,
        run=str(flow_run.id or ""),
        **extra,
    )


def announce(conn: Connections, rec: evidence.Record) -> None:
    """The milestone event of a record written (tasks/steps.py writes a verification's own records)."""
    if (milestone := events.FOR_RECORD.get(rec.kind)) is not None:
        events.emit(
            milestone,
            conn.pipeline.name,
            rec.environment,
            version=rec.tag,
            commit=rec.commit,
            by=rec.by,
            reason=rec.reason,
            details=rec.details,
        )


def record(conn: Connections, kind: evidence.RecordKind, env: str, tag: str, commit: str, **extra: Any) -> None:
    """Write one evidence record for this flow run into the repository's promotion notes, as a step."""
    from tasks.steps import record_evidence  # late: the step module imports Prefect task machinery

    rec = evidence_record(conn, kind, env, tag, commit, **extra)
    record_evidence(conn, rec)
    announce(conn, rec)


def audit(key: str, report: PromotionReport, started: float) -> None:
    """The run's markdown record: who, what, which versions and commits, decisions, results, timings, then what
    each verification showed (steps, health checks)."""
    rows = [*report.rows(), ("started_by", started_by()), ("duration_s", str(round(time.monotonic() - started, 1)))]
    lines = [f"# {md.text(key)}", "", "| field | value |", "|---|---|"]
    lines += [f"| {md.cell(name)} | {md.cell(value, 2000)} |" for name, value in rows]
    if report.diff:
        lines += ["", md.code_block(report.diff, "diff")]
    for section in report.sections:
        lines += ["", section]
    create_markdown_artifact(key=key, markdown="\n".join(lines), description="promotion audit record")


def _touched(report: PromotionReport) -> bool:
    """Whether the run wrote to or verified its environment (a dry run, a skip or a refusal before the write
    leaves the board as it was)."""
    done = (report.write_back, report.verification, report.rolled_back_to, report.rollback_failure)
    return not report.dry_run and any(done)


# Inside one_board_write() (a nightly pipeline's run), each part's board rewrite is held back: the board is
# written once, when the run ends or before it waits for a person, not once per part (each write is a fetch, a
# read of the notes and an artifact with its two events on the server).
_held_boards: ContextVar[dict[str, Connections] | None] = ContextVar("promote_held_boards", default=None)


@contextlib.contextmanager
def one_board_write() -> Iterator[None]:
    """Hold back the board rewrites of the parts run inside, and write each pipeline's board once at the end
    (however the block ends, so a failed part's change shows too)."""
    token = _held_boards.set({})
    try:
        yield
    finally:
        publish_held_boards()
        _held_boards.reset(token)


def publish_held_boards() -> None:
    """Write the boards held back so far (before a wait for a person: the board must show what runs now)."""
    for conn in list((_held_boards.get() or {}).values()):
        publish_board(conn)


def _board_changed(conn: Connections) -> None:
    held = _held_boards.get()
    if held is None:
        publish_board(conn)
    else:
        held[conn.pipeline.name] = conn


def _board_picture(conn: Connections, rows: list[board.BoardRow]) -> str:
    """The board's picture (tasks/boardpicture.py) as a markdown image, lags as ``promote plan`` decides them;
    "" when it cannot be drawn (the table is written anyway, and the run log says why)."""
    try:
        plans = plan_pipeline(conn.repo, conn.pipeline, fetch=False)  # the board's rows were read just now
        svg = boardpicture.render_svg(
            f"pipeline {conn.pipeline.name}", rows, boardpicture.lags(conn.pipeline, plans), now=None
        )
        return boardpicture.markdown_image(svg, f"pipeline {conn.pipeline.name}")
    except Exception as exc:
        conn.log(f"the board of {conn.pipeline.name} is written without its picture: {exc}")
        return ""


def publish_board(conn: Connections, notes: Mapping[str, str] | None = None) -> None:
    """Rewrite the pipeline's "what runs where" table artifact from Git (tasks/board.py), as ``promote status``
    prints it; ``notes``: what a run knows beyond Git, per environment (a pull request waiting and its checks).
    Never raises: the promotion's outcome is in Git already; a missing board is only logged."""
    held = _held_boards.get()
    if held is not None:
        held.pop(conn.pipeline.name, None)  # this write shows everything held back for the pipeline
    key = board.board_key(conn.pipeline.name)
    try:
        conn.repo.fetch()  # another environment's run may have moved the branch or the notes meanwhile
        rows = board.with_notes(board.board_rows(conn.repo, conn.pipeline), notes or {})
        description = f"what runs where in {md.text(conn.pipeline.name)}, from Git (`promote status` prints the same)"
        picture = _board_picture(conn, rows)
        create_table_artifact(
            key=key,
            table=[{k: md.cell(v) for k, v in row.items()} for row in board.board_table(rows)],
            description=description + (f"\n\n{picture}" if picture else ""),
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
            _board_changed(conn)
        raise
    audit(key, report, started)
    if _touched(report):
        _board_changed(conn)


def _audit_anyway(conn: Connections, key: str, report: PromotionReport, started: float) -> None:
    try:
        audit(key, report, started)
    except Exception as lost:  # the run reports its own failure, not the missing record
        conn.log(f"could not write the audit record {key}: {lost}")
