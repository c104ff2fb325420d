"""GitLab's REST API (v4), as much of it as a promotion needs (tasks/forges/base.py says what). A pull request is
a merge request here, and its number is the merge request's ``iid``.

Operations (docs.gitlab.com/api/merge_requests, /api/notes, /api/commits, /api/labels, /api/users; the contract
tests check every request against tests/data/gitlab/merge-requests.openapi.json, written from those pages):
``GET/POST /projects/:id/merge_requests`` (filtered by ``source_branch`` and ``target_branch``),
``GET /projects/:id/merge_requests/:iid``, ``GET /projects/:id/labels/:name`` (a missing label is named, not
created), ``GET /users?username=`` (reviewers are asked for by id), ``POST /projects/:id/statuses/:sha``,
``GET /projects/:id/repository/commits/:sha/statuses`` (the merge request's own checks, shown while it waits),
``GET/POST /projects/:id/merge_requests/:iid/notes`` and ``PUT .../notes/:note_id`` (the evidence note, updated in
place), ``PUT /projects/:id/merge_requests/:iid/merge`` with ``auto_merge`` (GitLab 17.11 and later) and
``merge_when_pipeline_succeeds`` (its name before). ``:id`` is the project's URL-encoded path, subgroups included.
Authentication is ``Authorization: Bearer <token>`` (a personal, project, group or OAuth token with the ``api``
scope). A 429 is waited out for its ``Retry-After`` or until ``RateLimit-Reset``, inside the call's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tasks import httpbounds
from tasks.forges.base import (
    STATUS_CONTEXT,
    Check,
    CheckState,
    CommitState,
    ForgeAuthError,
    ForgeError,
    ForgeRefusedError,
    PullRequest,
    PullRequestState,
    checks_from,
    marked_ids,
    status_description,
)
from tasks.forges.http import HttpForge

_PAGE = 100
# GitLab's commit states: no "error"; a status the tool could not finish is "failed", as a failed job's.
_STATES: dict[str, str] = {"pending": "pending", "success": "success", "failure": "failed", "error": "failed"}
# A job's or status's state as a check's; anything else (created, waiting_for_resource, preparing, pending,
# running, manual, scheduled) is still to come.
_CHECK_STATES: dict[str, CheckState] = {
    "success": "success",
    "skipped": "success",
    "failed": "failure",
    "canceled": "failure",
}


def _job_state(job: dict[str, Any]) -> CheckState | None:
    state = _CHECK_STATES.get(str(job.get("status") or ""), "pending")
    return None if state == "failure" and job.get("allow_failure") is True else state


def api_root(repository_url: str) -> str:
    """``scheme://host/api/v4`` for a repository URL (GitLab.com and self-managed alike)."""
    parts = urlsplit(repository_url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/api/v4"


class GitLabForge(HttpForge):
    provider = "gitlab"
    name = "GitLab"
    api_hint = "https://host/api/v4"

    def _repository_path(self, repository: str) -> str:
        """``group[/subgroup...]/project``, URL-encoded as one path segment."""
        segments = repository.split("/")
        if len(segments) < 2 or any(not s or s in (".", "..") for s in segments):
            raise ForgeError(f"a GitLab project is group[/subgroup]/name, not {repository[:100]!r}")
        return f"/projects/{quote(repository, safe='')}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

    def _wait_asked(self, response: httpbounds.Response) -> float | None:
        if response.status_code != 429:
            return None
        retry_after = response.headers.get("retry-after", "").strip()
        if retry_after.isdigit():
            return float(min(int(retry_after), 3600))
        reset = response.headers.get("ratelimit-reset", "").strip()
        if reset.isdigit():
            return max(1.0, min(float(reset) - time.time(), 3600.0))
        return 60.0

    def _refusal(self, response: httpbounds.Response, what: str) -> ForgeError:
        status = response.status_code
        detail = self._message(response) or self._message(response, "error")
        if status in (401, 403):
            scope = self._message(response, "scope")
            need = f"the token needs the {scope} scope" if scope else "it needs the api scope and Developer access"
            return ForgeAuthError(
                f"GitLab refused the token (HTTP {status}) for {self.repository}: {what}; check {self._hint}: {need}"
                + (f" ({detail})" if detail else "")
            )
        if status == 404:
            return self._not_found(what, detail)
        suffix = f": {detail}" if detail else ""
        return ForgeRefusedError(f"GitLab ({self.repository}): {what}: HTTP {status}{suffix}")

    # --- merge requests ------------------------------------------------------------------------------------

    def _pull(self, data: Any) -> PullRequest:
        if not isinstance(data, dict) or not isinstance(data.get("iid"), int):
            raise ForgeError(f"GitLab ({self.repository}): a merge request without an iid in the answer")
        raw = data.get("state")
        state: PullRequestState = "merged" if raw == "merged" else ("closed" if raw == "closed" else "open")
        # A merge commit; else the squash commit; else (fast-forward) the merged head itself is the new tip.
        merged_as = data.get("merge_commit_sha") or data.get("squash_commit_sha") or data.get("sha")
        who = data.get("merge_user") or data.get("merged_by") or {}
        status = data.get("detailed_merge_status")
        mergeable = False if status == "conflict" or data.get("has_conflicts") is True else None
        return PullRequest(
            number=data["iid"],
            url=str(data.get("web_url") or "")[:500],
            state=state,
            head=str(data.get("source_branch") or "")[:255],
            head_sha=str(data.get("sha") or "")[:64],
            base=str(data.get("target_branch") or "")[:255],
            title=str(data.get("title") or "")[:300],
            merge_commit=(str(merged_as)[:64] or None) if state == "merged" and merged_as else None,
            merged_by=str(who.get("username") or "")[:100] if isinstance(who, dict) else "",
            mergeable=True if status == "mergeable" else mergeable,
        )

    def _find(self, state: str, head: str, base: str) -> PullRequest | None:
        query = urlencode(
            {
                "state": state,
                "source_branch": head,
                "target_branch": base,
                "order_by": "updated_at",
                "sort": "desc",
                "per_page": _PAGE,
            }
        )
        data = self._send("GET", f"/merge_requests?{query}", f"listing {state} merge requests from {head} into {base}")
        if not isinstance(data, list):
            raise ForgeError(f"GitLab ({self.repository}): the merge request list is not a list")
        found = [self._pull(item) for item in data]
        return next((mr for mr in found if mr.head == head and mr.base == base), None)

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        return self._find("opened", head, base) or self._find("merged", head, base)

    def pull_request(self, number: int) -> PullRequest:
        return self._pull(self._send("GET", f"/merge_requests/{int(number)}", f"reading merge request !{number}"))

    def _user_ids(self, usernames: Sequence[str]) -> list[int]:
        ids = []
        for username in usernames:
            query = urlencode({"username": username})
            what = f"looking up user {username[:50]!r}"
            data = self._json(self._exchange("GET", f"{self.api_url}/users?{query}", what), what)
            match = [u for u in data or [] if isinstance(u, dict) and u.get("username") == username]
            if not match or not isinstance(match[0].get("id"), int):
                raise ForgeRefusedError(
                    f"GitLab has no user {username[:50]!r} (write.reviewers): check the name, or remove it"
                )
            ids.append(match[0]["id"])
        return ids

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
        self._check_labels(labels, lambda label: f"{self.api_url}{self._path}/labels/{quote(label, safe='')}")
        payload: dict[str, Any] = {"source_branch": head, "target_branch": base, "title": title, "description": body}
        if labels:
            payload["labels"] = ",".join(labels)
        if reviewers:
            payload["reviewer_ids"] = self._user_ids(reviewers)
        data = self._send(
            "POST", "/merge_requests", f"opening a merge request from {head} into {base}", json=payload, ok=(201,)
        )
        return self._pull(data)

    def set_commit_status(
        self, sha: str, state: CommitState, description: str, target_url: str | None, *, context: str = STATUS_CONTEXT
    ) -> None:
        payload: dict[str, Any] = {
            "state": _STATES[state],
            "name": context,
            "description": status_description(description),
        }
        if target_url:
            payload["target_url"] = target_url
        self._send(
            "POST",
            f"/statuses/{quote(sha, safe='')}",
            f"setting the status of {sha[:12]}",
            json=payload,
            ok=(200, 201),
        )

    def checks(self, sha: str) -> list[Check]:
        """The jobs and external statuses of the commit's pipelines (the newest of each name); a failed job that
        may fail (``allow_failure``) does not stop the pipeline, so it is left out."""
        query = urlencode({"per_page": _PAGE})
        data = self._send(
            "GET", f"/repository/commits/{quote(sha, safe='')}/statuses?{query}", f"reading the statuses of {sha[:12]}"
        )
        return checks_from(data, "name", "target_url", _job_state)

    def enable_auto_merge(self, pr: PullRequest, merge_commit: bool) -> None:
        # GitLab merges by the project's merge method (merge commit, semi-linear or fast-forward): kind: branch
        # needs a merge commit, which the project's settings decide, and the merge is checked in Git after it.
        # merge_when_pipeline_succeeds is the name before GitLab 17.11 (which ignores auto_merge and would merge
        # at once); later releases take both, deprecated name included.
        payload = {"auto_merge": True, "merge_when_pipeline_succeeds": True, "sha": pr.head_sha}
        self._send(
            "PUT", f"/merge_requests/{int(pr.number)}/merge", f"setting !{pr.number} to auto-merge", json=payload
        )

    def _marked_comments(self, number: int) -> list[int]:
        query = urlencode({"sort": "desc", "order_by": "created_at", "per_page": _PAGE})
        data = self._send("GET", f"/merge_requests/{int(number)}/notes?{query}", f"reading the notes of !{number}")
        return marked_ids(data)

    def _edit_comment(self, number: int, comment_id: int, body: str) -> None:
        self._send(
            "PUT",
            f"/merge_requests/{int(number)}/notes/{int(comment_id)}",
            f"updating the note on !{number}",
            json={"body": body},
        )

    def _add_comment(self, number: int, body: str) -> None:
        self._send(
            "POST",
            f"/merge_requests/{int(number)}/notes",
            f"commenting on !{number}",
            json={"body": body},
            ok=(201,),
        )
