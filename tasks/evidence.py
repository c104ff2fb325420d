"""Promotion evidence kept in Git (``refs/notes/promote`` on the released commit), readable without Prefect.

An environment refuses a version unless a ``verified`` record for it in the environment before it exists.
Approvals are recorded the same way, so a re-run after a crash does not ask twice. This tool's own commits
carry :data:`PROMOTE_TRAILER`, so "what changed since" can leave them out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from tasks.errors import RefusedError

if TYPE_CHECKING:
    from tasks.gitrepo import GitRepository, LogEntry

NOTES_REF = "promote"
PROMOTE_TRAILER = "Promoted-By: gitops-promote"
# "failed": a promotion changed the environment and it did not come up (written before any rollback, so the
# rollback's own record follows it); delivery metrics (tasks/metrics.py) count it as a failed deployment.
# "override": a held promotion (a freeze, a window, the soak time) went ahead with a reason (flows/holds.py).
RecordKind = Literal["verified", "approved", "promoted", "rolled-back", "failed", "override"]


class EvidenceError(RefusedError, ValueError):
    """The notes exist but cannot be read: someone edited them by hand."""


@dataclass(frozen=True)
class Record:
    kind: RecordKind
    pipeline: str
    environment: str
    tag: str  # the tag the record is about (the rc for "verified"/"approved", the stable tag for "promoted"/"failed")
    commit: str
    run: str = ""
    by: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def same_fact(self, other: Record) -> bool:
        """Equal apart from when and by which run: writing it again is a no-op."""
        return (self.kind, self.pipeline, self.environment, self.tag, self.commit) == (
            other.kind,
            other.pipeline,
            other.environment,
            other.tag,
            other.commit,
        )


def parse_records(note: str | None) -> list[Record]:
    if not note:
        return []
    try:
        data = json.loads(note)
        return [Record(**item) for item in data["records"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise EvidenceError(f"the promotion note ({NOTES_REF}) is not in the expected format: {exc}") from None


def add_record(note: str | None, record: Record) -> str:
    """The note with ``record`` added; unchanged text if the same fact is already recorded."""
    records = parse_records(note)
    if any(existing.same_fact(record) for existing in records):
        return note or ""
    records.append(record)
    return json.dumps({"schema": 1, "records": [asdict(r) for r in records]}, indent=1, sort_keys=True)


def find(records: list[Record], kind: RecordKind, pipeline: str, environment: str, tag: str) -> Record | None:
    for record in records:
        if (record.kind, record.pipeline, record.environment, record.tag) == (kind, pipeline, environment, tag):
            return record
    return None


# --- the store: the repository's notes ------------------------------------------------------------------


def record(repo: GitRepository, rec: Record) -> None:
    repo.update_note(rec.commit, NOTES_REF, lambda old: add_record(old, rec))


def records_for(repo: GitRepository, commit: str) -> list[Record]:
    return parse_records(repo.read_note(commit, NOTES_REF))


def all_records(repo: GitRepository) -> list[Record]:
    return [rec for note in repo.all_notes(NOTES_REF).values() for rec in parse_records(note)]


def find_record(repo: GitRepository, kind: RecordKind, pipeline: str, environment: str, tag: str) -> Record | None:
    """A record on any commit: image values are verified at write-back commits nobody knows in advance.
    Newest first when the same fact was recorded more than once."""
    found: list[Record] = []
    for note in repo.all_notes(NOTES_REF).values():
        rec = find(parse_records(note), kind, pipeline, environment, tag)
        if rec is not None:
            found.append(rec)
    return max(found, key=lambda r: r.at) if found else None


def standing_verifications(repo: GitRepository, pipeline: str, environment: str) -> set[str]:
    """Values verified in ``environment`` and not rolled back there since (the newest record decides)."""
    latest: dict[str, Record] = {}
    for rec in all_records(repo):
        if (rec.pipeline, rec.environment) != (pipeline, environment):
            continue
        if rec.kind not in ("verified", "rolled-back"):
            continue
        if rec.tag not in latest or rec.at >= latest[rec.tag].at:
            latest[rec.tag] = rec
    return {tag for tag, rec in latest.items() if rec.kind == "verified"}


def changes_since(repo: GitRepository, since: str | None, until: str) -> list[LogEntry]:
    """Commits in ``since..until`` that are not this tool's own write-backs (they carry its trailer)."""
    return [entry for entry in repo.log(since, until) if PROMOTE_TRAILER not in entry.message]
