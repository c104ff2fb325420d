"""Promotion evidence kept in Git (``refs/notes/promote`` on the released commit), readable without Prefect.

An environment refuses a version unless a ``verified`` record for it in the environment before it exists.
Approvals are recorded the same way, so a re-run after a crash does not ask twice. This tool's own commits
carry :data:`PROMOTE_TRAILER`, so "what changed since" can leave them out.

Anyone who can push the notes ref can write a note. With the pipeline's ``evidence.trusted_keys`` (the
repository's :class:`~rules.signatures.EvidencePolicy`), records count only when signed by one of those keys:
every reader here leaves the others out, and :func:`ignored_records` says which were left out and why. A note
that is not this tool's (another tool's format, broken JSON, wrong field types) is read as holding no records
of ours instead of stopping every reader, and a write keeps its text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

from rules.errors import RefusedError
from rules.signatures import EvidencePolicy, Trust, sign

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
    sig: str = ""  # rules/signatures.py: ed25519:<key id>:<signature> over every other field

    def same_fact(self, other: Record) -> bool:
        """Equal apart from when and by which run: writing it again is a no-op."""
        return (self.kind, self.pipeline, self.environment, self.tag, self.commit) == (
            other.kind,
            other.pipeline,
            other.environment,
            other.tag,
            other.commit,
        )


_FIELD_TYPES: dict[str, type] = {
    "kind": str, "pipeline": str, "environment": str, "tag": str, "commit": str, "run": str, "by": str,
    "reason": str, "details": dict, "at": str, "sig": str,
}  # fmt: skip
_REQUIRED = ("kind", "pipeline", "environment", "tag", "commit")


def _record_from(item: Any) -> Record | None:
    """A record written in this tool's shape, or None (another tool's entry, a wrong type, an unknown kind)."""
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in _REQUIRED):
        return None
    if set(item) - set(_FIELD_TYPES) or item["kind"] not in get_args(RecordKind):
        return None
    if any(not isinstance(value, _FIELD_TYPES[key]) for key, value in item.items()):
        return None
    return Record(**item)


def _parse(note: str | None) -> tuple[list[Record], int]:
    """The records of a note, and how many of its entries are not records of this tool (or the whole note)."""
    if not note:
        return [], 0
    try:
        data = json.loads(note)
    except ValueError:
        return [], 1
    items = data.get("records") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return [], 1
    records = [_record_from(item) for item in items]
    good = [r for r in records if r is not None]
    return good, len(records) - len(good)


def parse_records(note: str | None) -> list[Record]:
    """The records of a note in this tool's shape; anything else in it is left out (never an error)."""
    return _parse(note)[0]


def add_record(note: str | None, record: Record, trust: Trust | None = None) -> str:
    """The note with ``record`` added; unchanged text if the same fact is already recorded (and, with trusted
    keys, signed: a forged copy of the fact must not keep the real one out). What the note held that is not
    this tool's (another tool's entries, or its whole text) is kept under ``kept``."""
    trust = trust or Trust()
    records, foreign = _parse(note)
    if any(existing.same_fact(record) and trust.counts(asdict(existing)) for existing in records):
        return note or ""
    body: dict[str, Any] = {"schema": 1, "records": [asdict(r) for r in [*records, record]]}
    try:
        previous = json.loads(note) if note else None
    except ValueError:
        previous = None
    if isinstance(previous, dict) and isinstance(previous.get("records"), list):
        kept = [item for item in previous["records"] if _record_from(item) is None]
        earlier = previous.get("kept")
        if isinstance(earlier, list):  # kept by an earlier write: stays one flat list
            kept.extend(earlier)
        elif earlier is not None:
            kept.append(earlier)
        if kept:
            body["kept"] = kept
    elif note and foreign:
        body["kept"] = [note]
    return json.dumps(body, indent=1, sort_keys=True)


def find(records: list[Record], kind: RecordKind, pipeline: str, environment: str, tag: str) -> Record | None:
    for record in records:
        if (record.kind, record.pipeline, record.environment, record.tag) == (kind, pipeline, environment, tag):
            return record
    return None


# --- the store: the repository's notes ------------------------------------------------------------------


def policy(repo: GitRepository) -> EvidencePolicy:
    """How this repository's evidence is signed and trusted (tasks/connections.py sets it from the pipeline)."""
    return repo.evidence_policy or EvidencePolicy()


# Clocks differ a little between workers; a record dated further ahead was not written by a promotion that has
# happened, and would stay "the newest" (on the board, in the order of verifications) until that date.
_FUTURE_SLACK = timedelta(minutes=10)


def _in_the_future(rec: Record, now: datetime) -> bool:
    try:
        at = datetime.fromisoformat(rec.at)
    except ValueError:
        return True  # an unreadable time cannot be placed in order: leave the record out
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at > now + _FUTURE_SLACK


def _counting(repo: GitRepository, records: list[Record]) -> list[Record]:
    trust = policy(repo).trust
    now = datetime.now(UTC)
    return [r for r in records if (not trust.required or trust.counts(asdict(r))) and not _in_the_future(r, now)]


def record(repo: GitRepository, rec: Record) -> None:
    current = policy(repo)
    if current.signer is not None:
        rec = replace(rec, sig="")
        rec = replace(rec, sig=sign(asdict(rec), current.signer))
    repo.update_note(rec.commit, NOTES_REF, lambda old: add_record(old, rec, current.trust))


def records_for(repo: GitRepository, commit: str) -> list[Record]:
    return _counting(repo, parse_records(repo.read_note(commit, NOTES_REF)))


def all_records(repo: GitRepository) -> list[Record]:
    return _counting(repo, [rec for note in repo.all_notes(NOTES_REF).values() for rec in parse_records(note)])


@dataclass(frozen=True)
class Ignored:
    """Evidence left out: a record without a trusted signature, or entries that are not records of this tool."""

    commit: str
    reason: str
    record: Record | None = None


def ignored_records(repo: GitRepository) -> list[Ignored]:
    """What the readers above leave out, and why (``promote status`` shows it)."""
    trust = policy(repo).trust
    found: list[Ignored] = []
    for commit, note in repo.all_notes(NOTES_REF).items():
        records, foreign = _parse(note)
        if foreign:
            found.append(Ignored(commit, f"{foreign} entr{'y' if foreign == 1 else 'ies'} not in this tool's format"))
        now = datetime.now(UTC)
        for rec in records:
            if trust.required and not trust.counts(asdict(rec)):
                why = "unsigned" if not rec.sig else "not signed by a trusted key (or altered after signing)"
                found.append(Ignored(commit, why, rec))
            elif _in_the_future(rec, now):
                found.append(Ignored(commit, "dated in the future (or with an unreadable time)", rec))
    return found


def find_record(repo: GitRepository, kind: RecordKind, pipeline: str, environment: str, tag: str) -> Record | None:
    """A record on any commit: image values are verified at write-back commits nobody knows in advance.
    Newest first when the same fact was recorded more than once."""
    found: list[Record] = []
    for note in repo.all_notes(NOTES_REF).values():
        for rec in _counting(repo, parse_records(note)):
            if (rec.kind, rec.pipeline, rec.environment, rec.tag) == (kind, pipeline, environment, tag):
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
