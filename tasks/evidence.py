"""Promotion evidence kept in Git (``refs/notes/promote`` on the released commit), readable without Prefect.

Production refuses an rc unless the rc's commit carries a ``verified`` record for that rc tag in the
upstream environment. Approvals are recorded the same way, so a re-run after a crash does not ask twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tasks.errors import RefusedError

NOTES_REF = "promote"
RecordKind = Literal["verified", "approved", "promoted", "rolled-back"]


class EvidenceError(RefusedError, ValueError):
    """The notes exist but cannot be read: someone edited them by hand."""


@dataclass(frozen=True)
class Record:
    kind: RecordKind
    pipeline: str
    environment: str
    tag: str  # the tag the record is about (the rc for "verified"/"approved", the stable tag for "promoted")
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
