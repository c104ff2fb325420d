"""A promotion as a pull request: the branch it is proposed on, the pull request's text, opening it once, and
the write it became once merged. No Prefect here: flows/pullrequest.py waits and resumes around it.

The change itself is the strategy's own write (``apply`` / ``roll_back``), made while the repository is
:meth:`~tasks.gitrepo.GitRepository.proposing`: on the base's tip as always, pushed to the promotion's branch
instead of the base. So every strategy proposes exactly what it would push, and a re-run finds its branch in
place and pushes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.model import Environment
from rules.errors import RefusedError
from rules.refnames import branch_name_problem, is_full_sha
from tasks import evidence
from tasks import markdown as md
from tasks.connections import Connections
from tasks.forges.base import Forge, ForgeRefusedError, PullRequest, TransientForgeError
from tasks.gitrepo import GitError, GitRepository
from tasks.strategies import strategy_for
from tasks.strategies.base import Applied, Candidate

BODY_LIMIT = 60_000  # forges take about 64 KiB of text in a pull request's body
DIFF_LIMIT = 20_000


class ProposalError(RefusedError, RuntimeError):
    """The pull request cannot lead to the promotion (closed unmerged, its merge lost); nothing else changed."""


@dataclass(frozen=True)
class Proposed:
    """A change on its way to the base: the branch holding it, the write it is (``None``: the base already
    holds the value, nothing to propose), and its pull request once open."""

    head: str
    base: str
    applied: Applied | None
    pull_request: PullRequest | None = None


def _slug(value: str, limit: int) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")
    text = re.sub(r"\.{2,}", ".", text)
    return text[:limit].rstrip("-.") or "x"


def head_branch(prefix: str, pipeline: str, environment: str, value: str, *, rollback: bool = False) -> str:
    """The promotion's branch: ``<prefix>/<pipeline>/<environment>/<value>`` (``rollback-<value>`` for a
    rollback), the value cut to a readable slug plus a hash of it when the slug loses anything, so two values
    never share a branch."""
    slug = _slug(value, 60)
    if slug != value:
        slug = f"{slug[:48]}-{hashlib.sha256(value.encode()).hexdigest()[:10]}"
    name = f"{prefix}/{pipeline}/{environment}/{'rollback-' if rollback else ''}{slug}"
    problem = branch_name_problem(name)
    if problem is not None:  # the parts are validated names and a slug: only a prefix Git refuses gets here
        raise ProposalError(f"the pull request's branch {name[:120]!r} is not a branch name Git takes: {problem}")
    return name


def title(pipeline: str, env: Environment, cand: Candidate, *, rollback: bool = False) -> str:
    if rollback:
        return f"Roll back {env.name} to {cand.previous} ({pipeline})"[:250]
    return f"Promote {cand.label} to {env.name} ({pipeline})"[:250]


def upstream_evidence(conn: Connections, env: Environment, cand: Candidate) -> str:
    """What the environment before ``env`` recorded of ``cand``: ``verified in staging at <time>``, or that it
    recorded nothing, or that ``env`` is the entry."""
    pipeline = conn.pipeline
    upstream = pipeline.upstream_of(env)
    if upstream is None:
        return "(entry environment)"
    verified = evidence.find_record(conn.repo, "verified", pipeline.name, upstream.name, cand.record_tag)
    return f"verified in {upstream.name} at {verified.at}" if verified else f"none recorded in {upstream.name}"


def body(conn: Connections, env: Environment, cand: Candidate, *, rollback: bool = False, why: str = "") -> str:
    """The plan, for the reviewer: from -> to, the commits it brings, the file change, the upstream evidence.
    Everything that is anyone's text (commit subjects, values, the diff) is escaped (tasks/markdown.py)."""
    pipeline = conn.pipeline
    if rollback:
        lines = [
            f"## Roll back **{md.text(env.name)}** of **{md.text(pipeline.name)}**",
            "",
            f"- from {md.code(cand.label)} back to {md.code(cand.previous or '(none)')}",
            f"- why: {md.text(why or 'the promotion failed verification', 500)}",
        ]
    else:
        lines = [
            f"## Promote **{md.text(pipeline.name)}** to **{md.text(env.name)}**",
            "",
            f"- version: {md.code(cand.previous or '(none)')} -> {md.code(cand.label)}",
            f"- commit: {md.code(cand.anchor[:12])}",
            f"- upstream evidence: {md.text(upstream_evidence(conn, env, cand))}",
            "",
            f"### Commits ({len(cand.commits)})",
        ]
        lines += md.commit_list(cand.commits)
        if cand.diff:
            diff = cand.diff if len(cand.diff) <= DIFF_LIMIT else cand.diff[:DIFF_LIMIT] + "\n... (cut)\n"
            lines += ["", "### Change", md.code_block(diff, "diff")]
    lines += [
        "",
        "Merging this pull request is the decision: gitops-promote then verifies the merge commit in the cluster "
        "and reports the result here as a commit status.",
    ]
    text = "\n".join(lines)
    return text if len(text) <= BODY_LIMIT else text[: BODY_LIMIT - 20] + "\n\n... (cut)"


def propose(
    conn: Connections,
    forge: Forge,
    env: Environment,
    cand: Candidate,
    *,
    rollback_of: Applied | None = None,
    why: str = "",
) -> Proposed:
    """Write ``cand`` (or, with ``rollback_of``, its rollback) to the promotion's branch and open its pull
    request, or find both from an earlier attempt. Idempotent: a re-run pushes and opens nothing new."""
    pipeline, write = conn.pipeline, env.write
    rollback = rollback_of is not None
    value = (cand.previous or "") if rollback else cand.value
    head = head_branch(write.branch_prefix, pipeline.name, env.name, value, rollback=rollback)
    base = env.written_branch(pipeline.repository.branch)
    found = forge.find_pull_request(head, base)
    strategy = strategy_for(env)
    if found is not None and found.state == "merged":
        # Merged earlier: this promotion's (a crash, or a run that did not see it), when the base still holds the
        # value; else an older promotion of the same value that was rolled back since, and a new one is opened.
        wanted = dataclasses.replace(cand, value=value)
        conn.repo.fetch()
        if strategy.holds(conn, env, wanted, conn.repo.resolve(base)):
            return Proposed(head, base, None, found)
        found = None
    with conn.repo.proposing(base, head, evidence.PROMOTE_TRAILER):
        if rollback_of is not None:
            applied, _values = strategy.roll_back(conn, env, cand, rollback_of)
        else:
            applied = strategy.apply(conn, env, cand)
    if not applied.changed:
        return Proposed(head, base, None, found)  # the base holds it already: nothing to propose
    if found is None:
        try:
            found = forge.open_pull_request(
                head,
                base,
                title(pipeline.name, env, cand, rollback=rollback),
                body(conn, env, cand, rollback=rollback, why=why),
                labels=write.labels,
                reviewers=write.reviewers,
            )
        except ForgeRefusedError:
            # Opened meanwhile (a crashed attempt, a second worker): the forge refuses a second one for the same
            # branches. Take that one; anything else was a real refusal.
            found = forge.find_pull_request(head, base)
            if found is None:
                raise
    return Proposed(head, base, applied, found)


def merged_write(
    conn: Connections, env: Environment, cand: Candidate, proposed: Applied | None, pr: PullRequest
) -> Applied:
    """The write ``pr`` became once merged, checked in Git: its merge commit (merge, squash or rebase: whatever
    the forge did) is on the base, and the base still holds the promoted value. The revision to verify is the
    base's tip: what the GitOps controller syncs now (it is the merge commit unless the base moved since)."""
    repo = conn.repo
    base = env.written_branch(conn.pipeline.repository.branch)
    repo.fetch()
    tip = repo.resolve(base)
    # The forge's word is checked, and only a commit id reaches Git.
    if not pr.merge_commit or not is_full_sha(pr.merge_commit) or not _on(repo, pr.merge_commit, tip):
        raise ProposalError(
            f"{pr.short()} is merged, but its merge commit {str(pr.merge_commit)[:12] or '(none given)'} is not on "
            f"{base}: the base was rewritten after the merge; nothing was verified"
        )
    strategy = strategy_for(env)
    problem = strategy.merge_problem(conn, env, cand, tip)
    if problem is not None:
        raise ProposalError(f"{pr.short()} was merged into {base} at {tip[:12]}, but {problem}; nothing was verified")
    return strategy.merged(conn, env, cand, proposed, tip)


def _on(repo: GitRepository, commit: str, tip: str) -> bool:
    try:
        return repo.is_ancestor(commit, tip)
    except GitError:  # an unknown object: not on the branch
        return False


def wait_for_decision(
    forge: Forge,
    number: int,
    seconds: float,
    log: Callable[[str], None],
    *,
    poll_seconds: float = 10.0,
    on_wait: Callable[[PullRequest | None], None] | None = None,
) -> PullRequest:
    """Ask the forge every ``poll_seconds`` until pull request ``number`` is merged or closed, at most
    ``seconds``; the process waits (a run that cannot be suspended, a rollback). Says where it stands every
    minute; ``on_wait(pr)`` runs while it is open (``pr``: as just read, None if unread), every third poll
    (the checks' watch: one more read of the forge, kept rarer than the pull request's own for the forge's rate
    limits). Raises :class:`ProposalError` when the time is up."""
    deadline = time.monotonic() + seconds
    said = watched = time.monotonic()
    while True:
        try:
            pr = forge.pull_request(number)
        except TransientForgeError as exc:
            log(f"pull request #{number}: the forge did not answer ({exc}); asking again")
            pr = None
        if pr is not None and pr.state != "open":
            return pr
        if time.monotonic() >= deadline:
            raise ProposalError(
                f"pull request #{number} was not merged within {seconds / 60:.0f} minutes: nothing was verified; "
                "merge it and run the promotion again, or close it"
            )
        if on_wait is not None and time.monotonic() - watched >= 3 * poll_seconds:
            watched = time.monotonic()
            on_wait(pr)
        if time.monotonic() - said >= 60:
            said = time.monotonic()
            left = (deadline - time.monotonic()) / 60
            log(f"waiting for pull request #{number} to be merged ({left:.0f} minutes left): {pr.url if pr else ''}")
        time.sleep(min(poll_seconds, max(0.1, deadline - time.monotonic())))
