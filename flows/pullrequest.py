"""A promotion through a pull request: open it (once), wait for its merge without holding a worker, and hand
the merged write to the verification. The Git and forge work is in tasks/proposals.py; this module adds the
Prefect parts: the pin that survives a suspension, the suspension itself, the commit status and the comment.

A run from a deployment suspends while the pull request is open (the worker is free) and is resumed by
``promote receive`` when the forge says it merged or closed, or by the pull-request sweeper that asks the forge
(flows/pullrequest_sweeper.py). A resumed run re-runs from the top, finds its pin, and asks the forge itself:
a resume is only a nudge, never trusted as the outcome. A run that cannot be suspended (started in-process, or
nested in a nightly) waits in its process, asking the forge every few seconds.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from flows.records import publish_board, tell
from flows.report import PromotionReport
from pipeline.model import Environment
from tasks import markdown as md
from tasks import prefectruns
from tasks.approval import pin_candidate
from tasks.connections import Connections
from tasks.faults import crash_point
from tasks.forges.base import (
    EVIDENCE_MARKER,
    GATE_CONTEXTS,
    Check,
    CommitState,
    Forge,
    ForgeError,
    PullRequest,
    checks_summary,
)
from tasks.locks import EnvironmentLock
from tasks.merges import PIN_PREFIX, pause_key_prefix
from tasks.proposals import ProposalError, Proposed, merged_write, propose, upstream_evidence, wait_for_decision
from tasks.repourls import normalize_repository
from tasks.steps import _RETRYING, tag_release
from tasks.strategies import strategy_for
from tasks.strategies.base import Applied, Candidate


class PullRequestClosedError(ProposalError):
    """The pull request was closed without merging: the promotion ends, nothing else changed."""


def _pin_key(environment: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{PIN_PREFIX}{environment}".lower()).strip("-")[:100]


def pin_pull_request(environment: str, number: int, cand: Candidate) -> None:
    """Remember in the flow run which pull request it waits for, and what the environment ran before: a resumed
    run re-runs from the top, and by then the base may already hold the new value."""
    if not flow_run.id:
        return
    pin = {"number": number, "environment": environment, "previous": cand.previous, "value": cand.record_tag}
    prefectruns.pin_input(_pin_key(environment), pin)


def pinned_pull_request(environment: str) -> dict[str, Any] | None:
    """What this flow run pinned before it was suspended for a pull request's merge, if anything."""
    value = prefectruns.pinned_input(_pin_key(environment))
    return value if isinstance(value, dict) and isinstance(value.get("number"), int) else None


def with_pinned_previous(cand: Candidate, pinned: dict[str, Any] | None) -> Candidate:
    """``cand`` with what the environment ran before the pull request (once merged, the base holds the new value
    and the strategy would see it as "running")."""
    if pinned is None or not isinstance(pinned.get("previous"), str | None):
        return cand
    return dataclasses.replace(cand, previous=pinned.get("previous"))


@task(name="propose-pull-request", **_RETRYING)
def propose_step(conn: Connections, forge: Forge, env: Environment, cand: Candidate) -> Proposed:
    proposed = propose(conn, forge, env, cand)
    pr = proposed.pull_request
    if pr is not None:
        get_run_logger().info(f"[{env.name}] {pr.short()} ({pr.state}) from {proposed.head}: {pr.url}")
    return proposed


@task(name="check-merge", **_RETRYING)
def check_merge(
    conn: Connections, env: Environment, cand: Candidate, proposed: Applied | None, pr: PullRequest
) -> Applied:
    return merged_write(conn, env, cand, proposed, pr)


@task(name="read-pull-request", **_RETRYING)
def read_pull_request(forge: Forge, number: int) -> PullRequest:
    return forge.pull_request(number)


def poll_seconds() -> float:
    """How often a waiting process asks the forge: ``PROMOTE_PULL_REQUEST_POLL_SECONDS`` (1-300, default 10)."""
    raw = os.environ.get("PROMOTE_PULL_REQUEST_POLL_SECONDS", "10").strip()
    return float(min(300, max(1, int(raw)))) if raw.isdigit() else 10.0


def _next_pause_key(prefix: str) -> str:
    """A pause key not used by this run before: Prefect lets a key pause a run once, and a run resumed while its
    pull request is still open (a webhook for another event, the sweeper's base check) must be able to wait again."""
    used = prefectruns.used_pause_keys()
    attempt = 1
    while f"{prefix}{attempt}" in used:
        attempt += 1
    return f"{prefix}{attempt}"


def wait_for_merge(
    conn: Connections,
    forge: Forge,
    env: Environment,
    cand: Candidate,
    pr: PullRequest,
    lock: EnvironmentLock,
    *,
    on_wait: Callable[[PullRequest | None], None] | None = None,
) -> PullRequest:
    """Suspend until ``pr`` is merged or closed (raises Prefect's Pause: the run ends here and re-runs from the
    top once resumed), or, where the run cannot be suspended, wait in the process."""
    seconds = env.write.merge_seconds()
    if prefectruns.can_suspend_this_run():
        lock.hold_for(seconds + 600)  # a suspended run has no process to renew it
        pin_candidate(env.name, cand.record_tag)
        url = conn.pipeline.repository.url
        key = _next_pause_key(pause_key_prefix(normalize_repository(url) or url, pr.number))
        get_run_logger().info(
            f"[{env.name}] suspended until {pr.short()} is merged or closed (at most {seconds / 3600:.0f} h): {pr.url}"
        )
        prefectruns.suspend(timeout=int(seconds), key=key)
        lock.hold_for(0)
        return read_pull_request(forge, pr.number)
    log = get_run_logger().info
    log(f"[{env.name}] waiting in this process for {pr.short()} to be merged or closed: {pr.url}")
    return wait_for_decision(forge, pr.number, seconds, log, poll_seconds=poll_seconds(), on_wait=on_wait)


def through_pull_request(
    conn: Connections,
    forge: Forge,
    env: Environment,
    cand: Candidate,
    lock: EnvironmentLock,
    report: PromotionReport,
    *,
    pinned: dict[str, Any] | None,
    before_write: Callable[[], None],
) -> tuple[Applied, PullRequest | None]:
    """The write of a promotion as a pull request: opened (or found), waited for, and checked once merged.
    ``before_write()`` runs right before anything is written (the holds check), only when nothing was written
    yet. Returns the merged write and its pull request (None: the base held the value already)."""
    log = get_run_logger().info
    pr = read_pull_request(forge, int(pinned["number"])) if pinned else None
    proposed_applied: Applied | None = None
    if pr is None or pr.state == "open":
        if pr is None:
            before_write()
            if cand.tag is not None:
                tag_release(conn, cand.tag)
                crash_point("after-tag-push")
        # Also on a resume while open: the base may have moved, and the change is made again on its tip.
        proposed = propose_step(conn, forge, env, cand)
        proposed_applied = proposed.applied
        found = proposed.pull_request
        if found is None or (proposed.applied is None and found.state != "merged"):
            log(f"[{env.name}] {proposed.base} already holds {cand.label}: no pull request needed")
            tip = conn.repo.resolve(proposed.base)
            return strategy_for(env).merged(conn, env, cand, None, tip), None
        pr = found
        report.pull_request = pr.url
        pin_pull_request(env.name, pr.number, cand)
        crash_point("after-pull-request")
        if pr.state == "open" and env.write.auto_merge and pinned is None:
            # Once, when it is opened: the forge merges it when its required checks pass; we still wait for it.
            forge.enable_auto_merge(pr, merge_commit=strategy_for(env).needs_merge_commit)
            log(f"[{env.name}] {pr.short()} will be merged by the forge once its required checks pass")
            pr = read_pull_request(forge, pr.number)  # Gitea merges at once when nothing is required
        if pr.state == "open":
            if pinned is None:
                tell(conn, f"{conn.pipeline.name}: {cand.label} waits for the merge of {pr.short()} into {env.name}")
            upstream = conn.pipeline.upstream_of(env)
            for context, state, text in gate_statuses(env, report, upstream.name if upstream else None):
                _status(forge, pr.head_sha, state, text, context=context)
            watch = ChecksWatch(conn, forge, env, cand, pr)
            watch.look()
            pr = wait_for_merge(conn, forge, env, cand, pr, lock, on_wait=watch.look)
    report.pull_request = pr.url
    if pr.state == "closed":
        raise PullRequestClosedError(
            f"{pr.short()} was closed without merging: {env.name} was not changed ({pr.url}); promote again to "
            "open a new one"
        )
    report.merged_by = pr.merged_by or None
    applied = check_merge(conn, env, cand, proposed_applied, pr)
    log(f"[{env.name}] {pr.short()} merged by {pr.merged_by or 'someone'}: verifying {applied.revision[:12]}")
    return applied, pr


def run_url() -> str | None:
    """The Prefect UI page of this run (PREFECT_UI_URL must be set for one)."""
    try:
        url = flow_run.ui_url
    except Exception:  # no run context, or no UI URL configured
        return None
    return str(url) if url else None


def _status(
    forge: Forge, sha: str, state: CommitState, description: str, *, context: str = GATE_CONTEXTS["verification"]
) -> None:
    """A commit status; a forge that refuses it does not stop the promotion (it is a report, not a step)."""
    try:
        forge.set_commit_status(sha, state, description, run_url(), context=context)
    except ForgeError as exc:
        get_run_logger().warning(f"could not set the status {context} of {sha[:12]}: {exc}")


def gate_statuses(
    env: Environment, report: PromotionReport, upstream: str | None
) -> list[tuple[str, CommitState, str]]:
    """What each of the environment's gates decided, as (context, state, description) for the pull request's
    head. Every one let the promotion through (else there would be no pull request); gates the environment does
    not have get no status. Verification comes after the merge (:class:`ForgeReport`)."""
    if report.override:
        freeze = f"held ({report.held or 'a hold'}), overridden by {report.override}"
    elif report.held:
        freeze = f"passed once the hold ended ({report.held})"
    else:
        freeze = "no freeze or window held it when the pull request was opened"
    statuses: list[tuple[str, CommitState, str]] = [(GATE_CONTEXTS["freeze"], "success", freeze)]
    if env.gate.min_soak is not None:
        statuses.append((GATE_CONTEXTS["soak"], "success", f"soaked at least {env.gate.min_soak} in {upstream}"))
    if env.gate.approval:
        by = f"approved by {report.approver}" if report.approver else "approved"
        statuses.append((GATE_CONTEXTS["approval"], "success", by))
    return statuses


class ChecksWatch:
    """The pull request's own checks while the promotion waits for its merge (the forge merges it only once its
    required ones pass, whether a person or auto-merge does): what they say now goes into the evidence comment,
    the board's note and the log whenever it changes, so a promotion stuck on a failing check says which."""

    def __init__(self, conn: Connections, forge: Forge, env: Environment, cand: Candidate, pr: PullRequest) -> None:
        self.conn, self.forge, self.env, self.cand, self.pr = conn, forge, env, cand, pr
        self.story = story_of(conn, env, cand)
        self.seen: str | None = None

    def look(self, now: PullRequest | None = None) -> None:
        """Read the checks of the pull request's head (``now``: the pull request as just read, whose head may have
        moved); an unreadable answer changes nothing shown (the next look tries again)."""
        self.pr = now or self.pr
        env, pr = self.env, self.pr
        try:
            checks: list[Check] = self.forge.checks(pr.head_sha)
        except ForgeError as exc:
            get_run_logger().warning(f"could not read the checks of {pr.short()}: {exc}")
            return
        summary = checks_summary(checks)
        if summary == self.seen:
            return
        self.seen = summary
        failing = any(c.state == "failure" for c in checks)
        say = get_run_logger().warning if failing else get_run_logger().info
        say(f"[{env.name}] checks of {pr.short()}: {summary}")
        if failing and env.write.auto_merge:
            say(f"[{env.name}] while a check the branch requires fails, the forge does not merge {pr.short()}")
        _evidence(
            self.forge,
            env,
            pr,
            self.story,
            merge=f"waiting: merge it into {pr.base} to promote {self.cand.label}",
            verification="after the merge",
            checks=summary,
        )
        publish_board(self.conn, notes={env.name: f"waiting for the merge of {pr.short()}; checks: {summary}"})


@dataclass(frozen=True)
class Story:
    """What the evidence comment says of the promotion at every stage: the plan and the upstream evidence."""

    plan: str
    upstream: str


def story_of(conn: Connections, env: Environment, cand: Candidate) -> Story:
    plan = f"{cand.previous or '(none)'} -> {cand.label}, commit {cand.anchor[:12]}"
    return Story(plan, upstream_evidence(conn, env, cand))


def evidence_text(
    env: Environment,
    story: Story,
    *,
    merge: str,
    verification: str,
    link: str | None,
    checks: str | None = None,
) -> str:
    """The promotion's evidence comment: where the pull request's promotion stands, one row per step."""
    lines = [
        EVIDENCE_MARKER,
        f"**gitops-promote** · {md.text(env.name)}",
        "",
        "| step | state |",
        "|---|---|",
        f"| plan | {md.cell(story.plan, 300)} |",
        f"| upstream | {md.cell(story.upstream, 300)} |",
    ]
    if checks is not None:
        lines.append(f"| checks | {md.cell(checks, 300)} |")
    lines += [
        f"| merge | {md.cell(merge, 300)} |",
        f"| verification | {md.cell(verification, 1000)} |",
    ]
    if link:
        lines.append(f"\nPrefect run: {md.link(link, 'details')}")
    return "\n".join(lines)


def _merged(pr: PullRequest, commit: str) -> str:
    return f"merged by {pr.merged_by or 'someone'} as {commit[:12]}"


def _evidence(
    forge: Forge,
    env: Environment,
    pr: PullRequest,
    story: Story,
    *,
    merge: str,
    verification: str,
    checks: str | None = None,
) -> None:
    """Write the evidence comment (updated in place); a forge that refuses it does not stop the promotion."""
    body = evidence_text(env, story, merge=merge, verification=verification, link=run_url(), checks=checks)
    try:
        forge.comment(pr.number, body)
    except ForgeError as exc:
        get_run_logger().warning(f"could not comment on {pr.short()}: {exc}")


@dataclass(frozen=True)
class ForgeReport:
    """The verification of a merged pull request as the forge shows it: statuses and the evidence comment."""

    forge: Forge
    env: Environment
    pr: PullRequest
    story: Story

    def pending(self, commit: str) -> None:
        """Verification has begun: pending on the merge commit. Never pending on an open pull request's head:
        GitLab counts our statuses into the head's pipeline, and a pending one there would keep a project whose
        merge requests need a passed pipeline from merging it at all."""
        _status(self.forge, commit, "pending", f"verifying {self.env.name}")
        verification = f"running: verifying {self.env.name} at {commit[:12]}"
        _evidence(self.forge, self.env, self.pr, self.story, merge=_merged(self.pr, commit), verification=verification)

    def outcome(self, commit: str, *, ok: bool, text: str) -> None:
        """The verification status on the merge commit and on the pull request's head (where the pull request's
        page shows it), and the evidence comment."""
        state: CommitState = "success" if ok else "failure"
        _status(self.forge, commit, state, text)
        if self.pr.head_sha and self.pr.head_sha != commit:
            _status(self.forge, self.pr.head_sha, state, text)
        outcome = f"{'Verified' if ok else 'Failed'}: {text}"
        _evidence(self.forge, self.env, self.pr, self.story, merge=_merged(self.pr, commit), verification=outcome)


def forge_report(
    conn: Connections, forge: Forge | None, env: Environment, cand: Candidate, pr: PullRequest | None
) -> ForgeReport | None:
    """The forge's report of a promotion written through pull request ``pr`` (None: written by push)."""
    return ForgeReport(forge, env, pr, story_of(conn, env, cand)) if forge is not None and pr is not None else None


def roll_back_through_pull_request(
    conn: Connections, forge: Forge, env: Environment, cand: Candidate, applied: Applied, why: str
) -> tuple[Applied, dict[str, str]]:
    """Undo a failed promotion through a pull request of its own, waited for in this process (an incident does
    not wait for a sweeper), at most ``write.rollback_timeout``. Returns the merged rollback and the values to
    verify it with."""
    from tasks.proposals import propose as open_proposal

    log = get_run_logger().info
    proposed = open_proposal(conn, forge, env, cand, rollback_of=applied, why=why)
    back_cand = dataclasses.replace(cand, value=cand.previous or "", release_commit=None, tag=None)
    strategy = strategy_for(env)
    pr = proposed.pull_request
    if pr is None:
        tip = conn.repo.resolve(proposed.base)
        back = strategy.merged(conn, env, back_cand, None, tip)
        return back, strategy.values(conn, env, back_cand.value, back.revision)
    if pr.state == "open":
        log(f"[{env.name}] ROLLBACK proposed as {pr.short()}: merge it to restore {cand.previous}: {pr.url}")
        tell(conn, f"{conn.pipeline.name}: {env.name} failed; merge {pr.url} to roll back to {cand.previous}")
        pr = wait_for_decision(forge, pr.number, env.write.rollback_seconds(), log, poll_seconds=poll_seconds())
    if pr.state == "closed":
        raise PullRequestClosedError(f"the rollback {pr.short()} was closed without merging ({pr.url})")
    back = merged_write(conn, env, back_cand, proposed.applied, pr)
    return back, strategy.values(conn, env, back_cand.value, back.revision)
