"""The typed result of every promotion flow run: what it decided, changed and verified.

Flows fill one :class:`PromotionReport` as they go and return it (Prefect persists it as the run's result);
the audit artifact renders it, and the nightly reads its attributes. ``report["from"]`` reads a field by
the name the audit shows (``from`` is a Python keyword, so the attribute is ``from_``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.strategies.base import Candidate

AUDIT_COMMITS = 50  # commits listed in the audit record; the rest are counted


class PromotionReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    pipeline: str
    environment: str
    strategy: str = ""
    requested_by: str = ""
    action: str | None = None  # promote-rc: create, reuse, skip, not-applicable
    rc: str | None = None  # the release candidate (tags) or the value entering / promoted
    version: str | None = None  # what the environment was pointed at
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None  # rollback: the target
    commit: str | None = None
    commits: list[str] = []
    dry_run: bool = False
    already_verified: bool = False
    nothing_to_do: str | None = None
    approver: str | None = None
    reason: str | None = None
    approved: bool | None = None
    write_back: str | None = None
    verification: str | None = None
    checks: list[str] = []
    failure: str | None = None
    held: str | None = None  # what held the promotion (a freeze, a window, the soak), if anything did
    override: str | None = None  # who let it pass anyway, and why
    rolled_back_to: str | None = None
    rollback_verification: str | None = None
    rollback_failure: str | None = None
    pull_request: str | None = None  # write.mode pull-request: the pull request's page
    merged_by: str | None = None
    diff: str = ""
    # Each verification's section (tasks/steps.py), rendered below the audit record's table; not part of the
    # run's result.
    sections: list[str] = Field(default=[], exclude=True)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, "from_" if name == "from" else name)

    def candidate(self, cand: Candidate) -> None:
        """Note what a promotion will do, as the approval form shows it (commits: at most AUDIT_COMMITS)."""
        self.rc, self.version, self.from_, self.diff = cand.record_tag, cand.value, cand.previous, cand.diff
        if cand.release_commit:
            self.commit = cand.release_commit
        listed = [f"{sha[:12]} {subject}" for sha, subject in cand.commits[:AUDIT_COMMITS]]
        more = len(cand.commits) - len(listed)
        self.commits = listed + ([f"... and {more} more"] if more > 0 else [])

    def verified(self, verification: str, checks: list[str]) -> None:
        self.verification, self.checks = verification, checks

    def rows(self) -> list[tuple[str, str]]:
        """(field, value) for the audit table, in field order, leaving out what is empty and the diff."""
        rows = []
        for name, value in self.model_dump(by_alias=True).items():
            if name == "diff" or value in (None, "", []) or (value is False and name != "approved"):
                continue
            shown = "<br>".join(str(v) for v in value) if isinstance(value, list) else str(value)
            rows.append((name, shown))
        return rows
