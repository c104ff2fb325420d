"""What runs where: one row per environment of a pipeline, from Git alone (the branch and the evidence notes).

The board artifact (``board-<pipeline>``, written by every promotion run) and ``promote status`` print the
rows of :func:`board_rows`, so the Prefect UI and the command line cannot disagree, and the board needs no
Prefect database: Git is the record (a deleted run or a new Prefect server loses nothing).

Per environment: the version is what the pipeline's branch says now (the strategy's ``current``); the
evidence says how it got there. *Since* is the newest record that put that version there (``promoted``, or a
``rolled-back`` whose target it is; at the entry, where promote-rc verifies what it writes or finds, the first
``verified``). *Verified* is the newest record that could only be written after a passed verification of
that version there (``verified``, ``promoted`` and ``rolled-back`` are all written after it). A version the
evidence does not name was written by someone else: the row says so instead of guessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.model import Environment, Pipeline
from rules.errors import PromoteError
from rules.refnames import is_full_sha
from tasks import evidence
from tasks.connections import Connections
from tasks.strategies import strategy_for
from tasks.terminal import printable

if TYPE_CHECKING:
    from tasks.gitrepo import GitRepository

COLUMNS = ("environment", "version", "commit", "since", "verified", "approved_by", "run", "note")
CELL_LIMIT = 80  # a cell shows at most this much of a value: versions and reasons come from files and people
NONE = "\u2014"  # an em dash for "nothing": a bare "-" in a table cell renders as a list bullet in the Prefect UI
REASON_LIMIT = 60  # longer reasons are left to the audit record (the board names the approver)
_KEY_UNSAFE = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class BoardRow:
    """One environment as Git records it. Times are the evidence's ISO 8601 UTC strings; None: unknown."""

    environment: str
    tracks: str
    version: str | None = None
    commit: str | None = None
    since: str | None = None
    verified: str | None = None
    approved_by: str | None = None
    reason: str | None = None
    run: str | None = None
    note: str = ""


def board_key(pipeline_name: str) -> str:
    """The artifact key for a pipeline. Prefect keys allow lowercase letters, digits and dashes only; the
    pipeline model already asks that of names, but should a name ever carry more, the spelled-out key gets a
    short hash of the real name so two names that differ only in such characters keep two boards."""
    slug = _KEY_UNSAFE.sub("-", pipeline_name.lower()).strip("-")[:60] or "pipeline"
    if slug == pipeline_name:
        return f"board-{slug}"
    return f"board-{slug}-{hashlib.sha256(pipeline_name.encode()).hexdigest()[:8]}"


def _matches(rec: evidence.Record, version: str) -> bool:
    """The record is about ``version``: by its key, or (branches: the merge a promotion made) its revision."""
    return rec.tag == version or rec.details.get("revision") == version


def _arrived(rec: evidence.Record, version: str) -> bool:
    """The record put ``version`` in its environment."""
    if rec.kind == "promoted":
        return _matches(rec, version)
    return rec.kind == "rolled-back" and rec.details.get("to") == version


def _release_commit(repo: GitRepository, version: str, tags: set[str]) -> str | None:
    """The commit a version names by itself: a commit id (branches) or a Git tag (releases)."""
    if is_full_sha(version):
        return version
    return repo.resolve(version) if version in tags else None


def _row(
    repo: GitRepository,
    pipeline: Pipeline,
    env: Environment,
    version: str,
    records: list[evidence.Record],
    tags: set[str],
) -> BoardRow:
    here = sorted((r for r in records if r.environment == env.name), key=lambda r: r.at)
    arrivals = [r for r in here if _arrived(r, version)]
    verifications = [r for r in here if r.kind == "verified" and _matches(r, version)]
    if arrivals:
        came = arrivals[-1]
    elif verifications and pipeline.upstream_of(env) is None:
        came = verifications[0]  # promote-rc wrote (or found) it, then verified it
    else:
        note = "no evidence for this version here: written outside gitops-promote" if here else "nothing recorded"
        return BoardRow(env.name, env.tracks.kind, version, _release_commit(repo, version, tags), note=note)
    verified = max((r.at for r in [*verifications, *arrivals]), default=None)
    if came.kind == "rolled-back":  # its record hangs on the commit it rolled away from
        commit = _release_commit(repo, version, tags)
    else:
        commit = str(came.details.get("revision") or came.commit)
    # The gate approves the upstream key (tags: the rc) or the value; a rollback's target went through no gate.
    keys = {version} if came.kind == "rolled-back" else {version, came.tag, str(came.details.get("rc") or "")}
    approvals = [r for r in here if r.kind == "approved" and r.tag in keys]
    approval = approvals[-1] if approvals else None
    return BoardRow(
        environment=env.name,
        tracks=env.tracks.kind,
        version=version,
        commit=commit,
        since=came.at,
        verified=verified,
        approved_by=approval.by if approval else None,
        reason=approval.reason if approval else None,
        run=came.run or None,
        note=f"rolled back here from {came.tag}" if came.kind == "rolled-back" else "",
    )


def board_rows(repo: GitRepository, pipeline: Pipeline) -> list[BoardRow]:
    """Every environment of ``pipeline`` in chain order, as the repository (fetched by the caller) says.
    Reads only: an environment whose files cannot be read gets a row with the reason, not an exception."""
    conn = Connections(pipeline, repo, log=lambda _message: None)
    records = [r for r in evidence.all_records(repo) if r.pipeline == pipeline.name]
    tags = set(repo.tags())
    rows: list[BoardRow] = []
    for env in pipeline.environments:
        try:
            version = strategy_for(env).current(conn, env)
        except PromoteError as exc:
            rows.append(BoardRow(env.name, env.tracks.kind, note=_cut(str(exc))))
            continue
        if not version:
            rows.append(BoardRow(env.name, env.tracks.kind, note="the branch names no version for it"))
            continue
        rows.append(_row(repo, pipeline, env, version, records, tags))
    return rows


def with_notes(rows: list[BoardRow], notes: Mapping[str, str]) -> list[BoardRow]:
    """``rows`` with a note of the caller's put before each named environment's own (what a run knows beyond Git:
    the pull request it waits for, and that pull request's checks)."""
    return [
        dataclasses.replace(row, note="; ".join(n for n in (notes[row.environment], row.note) if n))
        if notes.get(row.environment)
        else row
        for row in rows
    ]


# --- rendering: the artifact's table and the command line's text are the same cells ---------------------


def _cut(text: str, limit: int = CELL_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _when(at: str | None) -> str:
    """``2026-05-01T12:00:03+00:00`` as ``2026-05-01 12:00:03Z`` (the evidence is written in UTC)."""
    return at.replace("T", " ").replace("+00:00", "Z") if at else NONE


def _version(version: str | None) -> str:
    if version is None:
        return NONE
    return version[:12] if is_full_sha(version) else _cut(version)


def _approval(row: BoardRow) -> str:
    if not row.approved_by:
        return NONE
    who = _cut(row.approved_by, 40)
    if row.reason and len(row.reason) <= REASON_LIMIT:
        return f"{who} ({_cut(row.reason)})"
    return who


def board_table(rows: list[BoardRow]) -> list[dict[str, str]]:
    """The rows as cells, one dict per environment keyed by :data:`COLUMNS` (a Prefect table artifact)."""
    return [
        {
            "environment": row.environment,
            "version": _version(row.version),
            "commit": row.commit[:12] if row.commit else NONE,
            "since": _when(row.since),
            "verified": _when(row.verified),
            "approved_by": _approval(row),
            "run": row.run or NONE,
            "note": row.note,
        }
        for row in rows
    ]


def ignored_lines(repo: GitRepository, pipeline: Pipeline) -> list[str]:
    """The pipeline's evidence that does not count (unsigned or foreign-signed records where keys are trusted,
    and notes that are not this tool's), one line each, as printable text."""
    lines = []
    for item in evidence.ignored_records(repo):
        rec = item.record
        if rec is None:
            lines.append(f"{item.commit[:12]}: {item.reason}")
        elif rec.pipeline == pipeline.name:
            what = f"{_cut(rec.kind, 20)} {_cut(rec.environment, 40)} {_version(rec.tag)} by {_cut(rec.by, 40)!r}"
            lines.append(f"{item.commit[:12]}: {what}: {item.reason}")
    return [printable(line) for line in lines]


def render_text(pipeline: str, rows: list[BoardRow]) -> str:
    """The table for a terminal: a heading line, then aligned columns (``note`` only when some row has one)."""
    cells = [{key: printable(value) for key, value in cell.items()} for cell in board_table(rows)]
    columns = [c for c in COLUMNS if c != "note" or any(cell["note"] for cell in cells)]
    widths = {c: max([len(c), *(len(cell[c]) for cell in cells)]) for c in columns}
    lines = [f"pipeline {printable(pipeline)}", "  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(cell[c].ljust(widths[c]) for c in columns).rstrip() for cell in cells]
    return "\n".join(lines)
