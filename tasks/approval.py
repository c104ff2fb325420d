"""The approval gate: the form a person fills in, the plan it shows, and resuming a waiting run via the API."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.input import RunInput
from pydantic import ConfigDict, Field, model_validator

from tasks import httpbounds, merges, prefectapi, prefectruns
from tasks import markdown as md


class ApprovalDecision(RunInput):
    """Shown as a form in the Prefect UI when a promotion waits for approval."""

    # The server validates input against this schema, so "reason required on reject" is in it too.
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"approve": {"const": False}}},
            "then": {"properties": {"reason": {"minLength": 1}}},
        }
    )

    approve: bool = Field(description="Approve this promotion? Leave unticked to reject.")
    approver: str = Field(min_length=1, max_length=200, description="Your name")
    reason: str = Field(default="", max_length=2000, description="Why (required when rejecting)")

    @model_validator(mode="after")
    def _reason_on_reject(self) -> ApprovalDecision:
        if not self.approve and not self.reason.strip():
            raise ValueError("a reason is required to reject")
        return self


@dataclass(frozen=True)
class ApprovalPlan:
    pipeline: str
    environment: str
    from_version: str | None
    to_version: str
    rc_tag: str
    commit: str
    commits: list[tuple[str, str]]
    evidence: str
    file_diff: str

    def markdown(self) -> str:
        """The form's text. Commit subjects, versions and the diff are anyone's text: escaped (tasks/markdown.py)."""
        lines = [
            f"## Approve promotion of **{md.text(self.pipeline)}** to **{md.text(self.environment)}**",
            "",
            f"- version: {md.code(self.from_version or '(none)')} -> {md.code(self.to_version)}",
            f"- release candidate: {md.code(self.rc_tag)} at commit {md.code(self.commit[:12])}",
            f"- staging evidence: {md.text(self.evidence)}",
            "",
            f"### Commits ({len(self.commits)})",
        ]
        lines += md.commit_list(self.commits)
        if self.file_diff:
            lines += ["", "### Change", md.code_block(self.file_diff, "diff")]
        lines += ["", "Tick **approve** and give your name to proceed; to reject, leave it unticked and say why."]
        return "\n".join(lines)


RESUME_AGAIN_ON = frozenset({429, 503})


class ResumeError(RuntimeError):
    """The run could not be resumed (not paused, unknown, input rejected)."""


def resume_run(
    api_url: str,
    flow_run_id: str,
    decision: dict[str, Any],
    *,
    api_key: str | None = None,
    timeout: float = 30.0,
) -> str:
    """POST /flow_runs/{id}/resume with the decision; returns the run's new state name.

    The server answers 200 even when it refuses (e.g. the run is not paused): the body's ``status`` says
    ``ABORT`` or ``REJECT`` with a reason, so the body decides, not the status code. The whole exchange ends
    within ``timeout`` seconds.
    """
    try:
        run_id = str(UUID(flow_run_id))
    except ValueError:
        # Checked before any request: the id becomes part of the URL path ("../.." would post elsewhere).
        raise ResumeError(
            f"{flow_run_id[:80]!r} is not a flow run id: give the run's UUID, as the Prefect UI and the "
            "approval notification show it (e.g. 0b7c8d6e-1f2a-4b3c-9d4e-5f6a7b8c9d0e)"
        ) from None
    headers = prefectapi.auth_headers(api_key)
    with httpbounds.client(timeout=timeout, headers=headers) as http:
        # Only 503 (its database busy) and 429 say the server did not act on the resume; after a 502, a 500 or a
        # connection lost mid-answer it may have, and a second resume would be refused as "not paused": those are
        # reported, not repeated.
        response = prefectapi.request(
            api_url,
            http,
            "POST",
            f"{api_url.rstrip('/')}/flow_runs/{run_id}/resume",
            httpbounds.Deadline(timeout),
            ResumeError,
            json={"run_input": decision},
            again_on=RESUME_AGAIN_ON,
            once_sent=False,
        )
    if response.status_code == 404:
        raise ResumeError(f"flow run {run_id} does not exist (or {prefectapi.API_HINT})")
    if response.status_code in (401, 403):
        raise ResumeError(f"the Prefect API refused the request ({response.status_code}); check PREFECT_API_KEY")
    if response.status_code >= 400:
        secrets = [api_key]
        raise ResumeError(
            f"resume failed with HTTP {response.status_code}: {httpbounds.scrub(response.text, secrets, 300)}"
        )
    body = prefectapi.json_object(response, api_url, f"the resume of run {run_id}", ResumeError)
    status = body.get("status")
    if status != "ACCEPT":
        details = body.get("details")
        reason = (details.get("reason") if isinstance(details, dict) else None) or "no reason given"
        raise ResumeError(
            f"flow run {run_id} was not resumed ({httpbounds.scrub(str(status), limit=40)}): "
            f"{httpbounds.scrub(str(reason), limit=300)}"
        )
    state = body.get("state")
    return str((state.get("name") if isinstance(state, dict) else None) or "Running")


def approval_key(environment: str, rc_tag: str) -> str:
    """The pause key: stable across re-runs of a suspended flow; Prefect allows only [a-z0-9-]."""
    return re.sub(r"[^a-z0-9-]+", "-", f"approve-{environment}-{rc_tag}".lower()).strip("-")[:100]


def _pin_key(environment: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"promote-candidate-{environment}".lower()).strip("-")[:100]


def pin_candidate(environment: str, value: str) -> None:
    """Remember, in the flow run, what is waiting for approval: a suspended run re-runs from the top, and
    must promote what was approved even if something newer was verified or pushed meanwhile."""
    prefectruns.pin_input(_pin_key(environment), value)


def pinned_candidate(environment: str) -> str | None:
    """What this flow run pinned before it was suspended for approval, if anything."""
    value = prefectruns.pinned_input(_pin_key(environment))
    return str(value) if value is not None else None


class ApprovalTimeoutError(RuntimeError):
    """Nobody answered in time; production was not touched."""


# The flows whose deployment runs suspend at an approval gate: each environment's own, and a pipeline's whole run
# (the fanned-out nightly's promote-pipeline).
GATED_FLOWS = ("promote-production", "promote-environment", "promote-pipeline")


def fail_expired_approvals(flow_names: tuple[str, ...] = GATED_FLOWS, *, now: datetime | None = None) -> list[str]:
    """End as Failed ("approval timed out") every suspended run of ``flow_names`` whose approval window closed.

    A suspended run has no process left to notice its own timeout: Prefect only refuses a late resume, and
    the run would show "Suspended" forever. Each gated promotion and each nightly sweeps them (the environment
    lock only reads: it takes over from such a holder without ending it). Returns the ids of the runs it ended.
    """

    def message(closed: datetime) -> str:
        waited = f" (the window closed at {closed.isoformat(timespec='seconds')})"
        return f"approval timed out: nobody approved in time{waited}; production was not changed"

    # A run waiting for a pull request's merge is the pull-request sweeper's (tasks/merges.py).
    return prefectruns.fail_expired_suspensions(flow_names, message, now=now, skip_keys=(merges.KEY_PREFIX,))


def approval_poll_seconds() -> float:
    """How often a paused run asks the API whether it was answered: ``PROMOTE_APPROVAL_POLL_SECONDS``
    (0.2-60 seconds, default 5: one small read per paused run; the sandbox demo uses 0.2 so its approval
    shows at once). Anything else, or a value out of range, is the default or the nearest bound."""
    raw = os.environ.get("PROMOTE_APPROVAL_POLL_SECONDS", "5").strip()
    try:
        value = float(raw[:32])
    except ValueError:
        return 5.0
    return min(60.0, max(0.2, value)) if math.isfinite(value) else 5.0


def wait_for_approval(
    plan: ApprovalPlan, timeout_seconds: float, *, key: str, poll_seconds: float | None = None
) -> ApprovalDecision:
    """Pause (local or nested run: the process waits) or suspend (a deployment's run: the worker is freed and
    the flow re-runs from the top once resumed, arriving here again and receiving the stored decision)."""
    form = ApprovalDecision.with_initial_data(description=plan.markdown(), approve=False, approver="", reason="")
    timeout = max(1, int(timeout_seconds))
    try:
        decision = prefectruns.wait_for_input(
            form, timeout=timeout, key=key, poll_seconds=poll_seconds or approval_poll_seconds()
        )
    except prefectruns.FlowPauseTimeout:
        message = (
            f"approval timed out after {timeout}s: nobody approved {plan.to_version} for {plan.environment}; "
            "production was not changed"
        )
        prefectruns.fail_own_run(message)
        raise ApprovalTimeoutError(message) from None
    if decision is None:
        raise ApprovalTimeoutError(f"approval for {plan.environment} ended without a decision")
    return decision
