"""What every forge client answers, and the values that travel between a client and the promotion.

A forge is where the GitOps repository lives and its pull requests are decided (Gitea today; GitHub and GitLab
add one module each). The promotion needs these from it, nothing more:

* :meth:`Forge.find_pull_request` / :meth:`Forge.pull_request`: the promotion's pull request, by its head
  branch or its number, with its state (open, merged, closed) and, once merged, the commit it left on the base;
* :meth:`Forge.open_pull_request`: open one, with labels and reviewers;
* :meth:`Forge.set_commit_status`: pending / success / failure on a commit under one of our contexts
  (``gitops-promote/<gate>``: one per gate, see :data:`GATE_CONTEXTS`), with a link to the run;
* :meth:`Forge.checks`: the forge's own checks on a commit (CI statuses and, on GitHub, check runs), ours left out:
  what the forge waits for before it lets the pull request merge, shown while the promotion waits;
* :meth:`Forge.enable_auto_merge`: ask the forge to merge once the required checks pass (``write.auto_merge``);
* :meth:`Forge.comment`: the promotion's one evidence comment on the pull request, written when the pull request
  waits and updated in place as it is merged and verified (found again by :data:`EVIDENCE_MARKER`).

Every call ends within the client's overall deadline. Tokens come by reference and appear in no message: errors
name the forge, the repository, the HTTP status and the variable that holds the token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rules.errors import PromoteError, RefusedError, TransientError

PullRequestState = Literal["open", "merged", "closed"]
CommitState = Literal["pending", "success", "failure", "error"]
CheckState = Literal["pending", "success", "failure"]

# What a commit status says at most (forges cut or refuse longer ones: GitHub at 140 characters).
STATUS_DESCRIPTION_LIMIT = 140
STATUS_CONTEXT = "gitops-promote"
# Each gate of a promotion is a status context of its own on the pull request (a branch protection rule can
# require the ones it wants); verification is posted on the merge commit and, once known, on the head too.
GATE_CONTEXTS = {gate: f"{STATUS_CONTEXT}/{gate}" for gate in ("freeze", "soak", "approval", "verification")}
# The first line of the promotion's evidence comment: how a later step finds it to update it (invisible in markdown).
EVIDENCE_MARKER = "<!-- gitops-promote: evidence -->"


class ForgeError(PromoteError, RuntimeError):
    """The forge refused or could not answer; the message names the forge, the repository and the fix."""


class ForgeAuthError(ForgeError, RefusedError):
    """The forge refused the token (401/403): retrying with the same token cannot help."""


class ForgeRefusedError(ForgeError, RefusedError):
    """The forge refused the request as asked (404, 409, 422): retrying cannot help."""


class TransientForgeError(ForgeError, TransientError):
    """The forge was unavailable or throttling for every attempt; a later try may succeed."""


@dataclass(frozen=True)
class PullRequest:
    """One pull request as the forge reports it now."""

    number: int
    url: str  # the web page, for people
    state: PullRequestState
    head: str  # the head branch
    head_sha: str
    base: str
    title: str = ""
    merge_commit: str | None = None  # set once merged: the commit the merge left on the base (merge, squash, rebase)
    merged_by: str = ""
    closed_by: str = ""
    mergeable: bool | None = None  # open ones: False when the forge cannot merge it (a conflict with its base)

    def short(self) -> str:
        return f"pull request #{self.number}"


@dataclass(frozen=True)
class Check:
    """One of the forge's own checks on a commit: a CI commit status or a check run (never one of ours)."""

    name: str
    state: CheckState
    url: str = ""


def ours(context: str) -> bool:
    """Whether a status context is one this tool posts (left out of the forge's checks)."""
    return context == STATUS_CONTEXT or context.startswith(STATUS_CONTEXT + "/")


def checks_from(
    items: object, name_key: str, url_key: str, state_of: Callable[[dict[str, Any]], CheckState | None]
) -> list[Check]:
    """The forge's checks in ``items`` (a JSON list of statuses, check runs or jobs): each entry with a string
    ``name_key`` that is not one of ours, in the state ``state_of`` reads from it (None: it does not count)."""
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get(name_key), str) or ours(item[name_key]):
            continue
        state = state_of(item)
        if state is not None:
            found.append(Check(item[name_key][:100], state, str(item.get(url_key) or "")[:500]))
    return found


def checks_summary(checks: Sequence[Check]) -> str:
    """One line for people: ``no checks reported``, ``2 passed``, ``1 failing (ci/build), 1 pending (lint), 3
    passed``."""
    if not checks:
        return "no checks reported"
    parts = []
    for state, word in (("failure", "failing"), ("pending", "pending")):
        named = sorted({c.name for c in checks if c.state == state})
        if named:
            shown = ", ".join(n[:60] for n in named[:5]) + (f", {len(named) - 5} more" if len(named) > 5 else "")
            parts.append(f"{len(named)} {word} ({shown})")
    passed = len({c.name for c in checks if c.state == "success"})
    if passed:
        parts.append(f"{passed} passed")
    return ", ".join(parts)


class Forge(ABC):
    """One repository on one forge, with a token; every method is one bounded exchange (or a few)."""

    provider: str  # "gitea", "github", "gitlab": for messages
    repository: str  # owner/name, for messages

    @abstractmethod
    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        """The pull request from ``head`` into ``base`` that is open, or else the newest merged one; None if
        there is neither (a closed, unmerged one is an earlier decision: a new promotion opens a new one)."""

    @abstractmethod
    def pull_request(self, number: int) -> PullRequest:
        """Pull request ``number`` as it is now."""

    @abstractmethod
    def open_pull_request(
        self,
        head: str,
        base: str,
        title: str,
        body: str,
        *,
        labels: Sequence[str] = (),
        reviewers: Sequence[str] = (),
    ) -> PullRequest:
        """Open a pull request from ``head`` into ``base``. Labels that do not exist on the forge are named in
        the error (nothing is created behind the user's back)."""

    @abstractmethod
    def enable_auto_merge(self, pr: PullRequest, merge_commit: bool) -> None:
        """Ask the forge to merge ``pr`` by itself once its required checks pass (``merge_commit``: with a merge
        commit, as ``kind: branch`` needs; else as the repository's default). A repository that does not allow it
        is a refusal naming the setting."""

    @abstractmethod
    def set_commit_status(
        self, sha: str, state: CommitState, description: str, target_url: str | None, *, context: str = STATUS_CONTEXT
    ) -> None:
        """Post a commit status under ``context`` (one of ours; a later one of the same context replaces it)."""

    @abstractmethod
    def checks(self, sha: str) -> list[Check]:
        """The forge's own checks on commit ``sha`` (the newest state of each), ours left out."""

    def comment(self, number: int, body: str) -> None:
        """Write ``body`` (which starts with :data:`EVIDENCE_MARKER`) as the promotion's evidence comment on pull
        request ``number``: the comment already carrying the marker is updated in place, else one is added. A
        marked comment the token may not edit (someone else wrote it) is left alone and a new one is added."""
        for comment_id in self._marked_comments(number):
            try:
                self._edit_comment(number, comment_id, body)
                return
            except (ForgeAuthError, ForgeRefusedError):
                continue
        self._add_comment(number, body)

    @abstractmethod
    def _marked_comments(self, number: int) -> list[int]:
        """The ids of pull request ``number``'s comments whose body starts with :data:`EVIDENCE_MARKER`, newest
        first."""

    @abstractmethod
    def _edit_comment(self, number: int, comment_id: int, body: str) -> None: ...

    @abstractmethod
    def _add_comment(self, number: int, body: str) -> None: ...


def marked_ids(comments: object) -> list[int]:
    """The ids of the comments (a forge's JSON list) whose body starts with :data:`EVIDENCE_MARKER`, in the order
    given; system notes (GitLab's record of events) are never ours."""
    return [
        c["id"]
        for c in (comments if isinstance(comments, list) else [])
        if isinstance(c, dict)
        and isinstance(c.get("id"), int)
        and not c.get("system")
        and isinstance(c.get("body"), str)
        and c["body"].startswith(EVIDENCE_MARKER)
    ]


def status_description(text: str) -> str:
    """``text`` cut to what every forge takes as a status description, on one line."""
    line = " ".join(text.split())
    return line if len(line) <= STATUS_DESCRIPTION_LIMIT else line[: STATUS_DESCRIPTION_LIMIT - 3] + "..."
