"""The approval gate: the form a person fills in, the plan it shows, and resuming a waiting run via the API."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.input import RunInput
from pydantic import ConfigDict, Field, model_validator

from tasks import httpbounds, prefectapi
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
    deadline = httpbounds.Deadline(timeout)
    try:
        with httpbounds.client(timeout=timeout, headers=headers) as http:
            for attempt in range(1, 7):
                response = httpbounds.request(
                    http,
                    "POST",
                    f"{api_url.rstrip('/')}/flow_runs/{run_id}/resume",
                    json={"run_input": decision},
                    deadline=deadline,
                    max_bytes=prefectapi.MAX_BYTES,
                )
                # 503 (its database busy) and 429: the server did not act on the request, so asking again is
                # safe; Prefect's own client retries these too. Anything else is the answer.
                pause = min(8.0, 0.5 * 2**attempt)
                if response.status_code not in (429, 503) or pause >= deadline.remaining():
                    break
                time.sleep(pause)
    except httpbounds.BoundsError as exc:
        raise ResumeError(f"the Prefect API at {httpbounds.shown_url(api_url)}: {exc}") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ResumeError(
            f"cannot reach the Prefect API at {httpbounds.shown_url(api_url)}: {type(exc).__name__}"
        ) from None
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
    from prefect.input import create_flow_run_input, read_flow_run_input

    key = _pin_key(environment)
    if read_flow_run_input(key) is None:
        create_flow_run_input(key, value)


def pinned_candidate(environment: str) -> str | None:
    """What this flow run pinned before it was suspended for approval, if anything."""
    from prefect.input import read_flow_run_input
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    value = read_flow_run_input(_pin_key(environment))
    return str(value) if value is not None else None


class ApprovalTimeoutError(RuntimeError):
    """Nobody answered in time; production was not touched."""


def fail_expired_approvals(flow_name: str = "promote-production", *, now: datetime | None = None) -> list[str]:
    """End as Failed ("approval timed out") every suspended run of ``flow_name`` whose approval window closed.

    A suspended run has no process left to notice its own timeout: Prefect only refuses a late resume, and
    the run would show "Suspended" forever while its environment lock lapses. Each new promotion (and the
    lock, when it meets such a holder) sweeps them. Returns the ids of the runs it ended.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    moment = now or datetime.now(UTC)
    ended: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            limit=200,
        )
        for run in runs:
            if expire_if_due(client, run, moment):
                ended.append(str(run.id))
    return ended


def _fail_own_run(message: str) -> None:
    """End this (paused) flow run as Failed with ``message`` before the engine reports the exception.

    Why: once the pause window has closed, Prefect's orchestration refuses any transition out of Paused and
    fails the run with its own "The flow was failed and never resumed." The engine's report of our exception
    would lose to that (or win, when the server's expiry service got there first): a race. Forcing the state
    first makes the run say why it ended, every time."""
    from prefect import get_client
    from prefect.runtime import flow_run
    from prefect.states import Failed

    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(flow_run.id), Failed(message=message), force=True)
    except Exception as exc:  # the exception raised next still ends the run; only the message may be Prefect's
        logging.getLogger(__name__).warning(f"could not record the approval timeout on the run: {exc}")


def expire_if_due(client: Any, run: Any, now: datetime) -> bool:
    """Fail ``run`` if it waits for approval past its window; whether it did."""
    from prefect.states import Failed

    state = run.state
    deadline = state.state_details.pause_timeout if state is not None else None
    # Only suspended runs: a paused (local) run's own process fails it when its timeout passes.
    if state is None or state.type.value != "PAUSED" or state.name != "Suspended" or deadline is None:
        return False
    if (state.state_details.pause_key or "").startswith("merge-"):
        return False  # waiting for a pull request's merge, not an approval: the pull-request sweeper ends it
    if deadline > now:
        return False
    waited = f" (the window closed at {deadline.isoformat(timespec='seconds')})"
    client.set_flow_run_state(
        run.id,
        Failed(message=f"approval timed out: nobody approved in time{waited}; production was not changed"),
        force=True,
    )
    return True


def suspendable(run: Any) -> bool:
    """Whether this flow run can be suspended: Prefect's server refuses to suspend a run that is not a
    deployment's own, and any nested run ("Cannot suspend subflows."), e.g. promote-production inside a
    scheduled nightly. (prefect.runtime's deployment.id would say yes there: nested runs inherit it.)"""
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None


def approval_poll_seconds() -> int:
    """How often a paused run asks the API whether it was answered: ``PROMOTE_APPROVAL_POLL_SECONDS``
    (1-60, default 5: one small read per paused run; the sandbox demo uses 1 so its approval shows at once)."""
    raw = os.environ.get("PROMOTE_APPROVAL_POLL_SECONDS", "5").strip()
    return min(60, max(1, int(raw))) if raw.isdigit() else 5


def wait_for_approval(
    plan: ApprovalPlan, timeout_seconds: float, *, key: str, poll_seconds: int | None = None
) -> ApprovalDecision:
    """Pause (local or nested run: the process waits) or suspend (a deployment's run: the worker is freed and
    the flow re-runs from the top once resumed, arriving here again and receiving the stored decision)."""
    poll_seconds = poll_seconds or approval_poll_seconds()
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    form = ApprovalDecision.with_initial_data(description=plan.markdown(), approve=False, approver="", reason="")
    timeout = max(1, int(timeout_seconds))
    context = FlowRunContext.get()
    try:
        if suspendable(context.flow_run if context is not None else None):
            decision = suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
        else:
            decision = pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=poll_seconds, key=key)
    except FlowPauseTimeout:
        message = (
            f"approval timed out after {timeout}s: nobody approved {plan.to_version} for {plan.environment}; "
            "production was not changed"
        )
        _fail_own_run(message)
        raise ApprovalTimeoutError(message) from None
    if decision is None:
        raise ApprovalTimeoutError(f"approval for {plan.environment} ended without a decision")
    return decision
