"""GitHub's REST API (v3), as much of it as a promotion needs (tasks/forges/base.py says what).

Operations, from GitHub's published API description (npm ``@octokit/openapi``, generated/api.github.com.json;
the contract tests validate every request against it): ``pulls/list`` (filtered by ``head=owner:branch`` and
``base``, paged by the ``Link`` header), ``pulls/get``, ``pulls/create``, ``issues/get-label`` (a missing label is
named, not created: GitHub would create it on the fly), ``issues/add-labels``, ``pulls/request-reviewers``,
``repos/create-commit-status``, ``repos/get-combined-status-for-ref`` and ``checks/list-for-ref`` (the pull
request's own checks, shown while the promotion waits), ``issues/list-comments``, ``issues/create-comment``,
``issues/update-comment`` (the evidence comment, updated in place), and GraphQL's ``enablePullRequestAutoMerge``
(auto-merge exists there only; the contract tests validate it against GitHub's published schema, npm
``@octokit/graphql-schema``).
Authentication is ``Authorization: Bearer <token>`` with ``X-GitHub-Api-Version: 2022-11-28``.

Rate limits as GitHub documents them (docs.github.com, "Rate limits for the REST API"): a 403 or 429 with
``x-ratelimit-remaining: 0`` waits until ``x-ratelimit-reset``; one with ``retry-after`` waits that long; a
secondary limit without either waits a minute. Every wait stays inside the call's overall deadline; past it the
error says when GitHub will answer again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tasks import httpbounds
from tasks.forges.base import (
    Check,
    CheckState,
    ForgeAuthError,
    ForgeError,
    ForgeRefusedError,
    PullRequest,
    checks_from,
    marked_ids,
)
from tasks.forges.http import GitHubShapedForge

API_VERSION = "2022-11-28"
PUBLIC_API = "https://api.github.com"
_PAGE = 100
_PAGES = 3  # closed pull requests looked through for a merged one: the newest 300
_SECONDARY_WAIT = 60.0  # "wait for at least one minute" when a secondary limit names no time
_PASSED = ("success", "neutral", "skipped")  # a completed check run's conclusions that do not stop a merge


def _run_state(run: dict[str, Any]) -> CheckState:
    if run.get("status") != "completed":
        return "pending"
    return "success" if run.get("conclusion") in _PASSED else "failure"


_LINK_NEXT = re.compile(r'<([^<>\s]+)>\s*;\s*rel="next"')


# GitHub's auto-merge exists in its GraphQL API only (the REST description has no operation for it).
_AUTO_MERGE = """
mutation($pullRequestId: ID!, $mergeMethod: PullRequestMergeMethod) {
  enablePullRequestAutoMerge(input: {pullRequestId: $pullRequestId, mergeMethod: $mergeMethod}) {
    pullRequest { number autoMergeRequest { mergeMethod } }
  }
}
"""


def graphql_url(api_url: str) -> str:
    """GitHub's GraphQL endpoint beside its REST root: ``https://api.github.com/graphql``, and
    ``https://host/api/graphql`` for Enterprise Server (whose REST root is ``/api/v3``)."""
    root = api_url.rstrip("/")
    return root.removesuffix("/v3") + "/graphql" if root.endswith("/api/v3") else root + "/graphql"


def api_root(repository_url: str) -> str:
    """The API root for a repository URL: ``https://api.github.com`` for github.com, ``https://host/api/v3``
    for GitHub Enterprise Server."""
    parts = urlsplit(repository_url)
    host = parts.netloc.rpartition("@")[2]
    if host.lower() in ("github.com", "www.github.com"):
        return PUBLIC_API
    return f"{parts.scheme}://{host}/api/v3"


class GitHubForge(GitHubShapedForge):
    provider = "github"
    name = "GitHub"
    api_hint = "https://api.github.com, or https://host/api/v3 for GitHub Enterprise Server"

    def _repository_path(self, repository: str) -> str:
        owner, name = self._owner_name(repository, "GitHub")
        self._owner = owner
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "gitops-promote",
        }

    def _wait_asked(self, response: httpbounds.Response) -> float | None:
        if response.status_code not in (403, 429):
            return None
        headers = response.headers
        retry_after = headers.get("retry-after", "")
        if retry_after.strip().isdigit():
            return float(min(int(retry_after), 3600))
        if headers.get("x-ratelimit-remaining", "").strip() == "0":
            reset = headers.get("x-ratelimit-reset", "").strip()
            if reset.isdigit():
                return max(1.0, min(float(reset) - time.time(), 3600.0))
            return _SECONDARY_WAIT
        if "secondary rate limit" in self._message(response).lower():
            return _SECONDARY_WAIT
        return None

    def _refusal(self, response: httpbounds.Response, what: str) -> ForgeError:
        status = response.status_code
        detail = self._message(response)
        if status in (401, 403):
            needs = response.headers.get("x-accepted-github-permissions", "").strip()
            scopes = response.headers.get("x-accepted-oauth-scopes", "").strip()
            if needs:
                need = f"a fine-grained token needs the permissions {httpbounds.scrub(needs, [], 100)}"
            elif scopes:
                need = f"a classic token needs the scope {httpbounds.scrub(scopes, [], 100)}"
            else:
                need = "it needs Pull requests: write and Commit statuses: write (classic tokens: the repo scope)"
            return ForgeAuthError(
                f"GitHub refused the token (HTTP {status}) for {self.repository}: {what}; check {self._hint}: {need}"
                + (f" ({detail})" if detail else "")
            )
        if status == 404:
            return self._not_found(what, detail)
        suffix = f": {detail}" if detail else ""
        return ForgeRefusedError(f"GitHub ({self.repository}): {what}: HTTP {status}{suffix}")

    def _call(
        self, method: str, path: str, what: str, *, json: Any = None, ok: tuple[int, ...] = (200,)
    ) -> tuple[Any, httpbounds.Response]:
        url = path if path.startswith(self.api_url + "/") else f"{self.api_url}{self._path}{path}"
        response = self._exchange(method, url, what, json=json, ok=ok)
        return self._json(response, what), response

    # --- pull requests ---------------------------------------------------------------------------------------

    def _pages(self, state: str, head: str, base: str) -> list[PullRequest]:
        """Pull requests from ``head`` into ``base`` in ``state``, newest first, following ``Link: rel="next"``."""
        query = urlencode(
            {
                "state": state,
                "head": f"{self._owner}:{head}",
                "base": base,
                "sort": "updated",
                "direction": "desc",
                "per_page": _PAGE,
            }
        )
        what = f"listing {state} pull requests from {head} into {base}"
        found: list[PullRequest] = []
        for data in self._paged(f"{self.api_url}{self._path}/pulls?{query}", what):
            found += [self._pull(item) for item in data]
        return found

    def _paged(self, url: str, what: str) -> Iterator[list[Any]]:
        """Each page of the list at ``url``, at most ``_PAGES``, following ``Link: rel="next"``."""
        for _ in range(_PAGES):
            data, response = self._call("GET", url, what)
            if not isinstance(data, list):
                raise ForgeError(f"GitHub ({self.repository}): {what}: the answer is not a list")
            yield data
            match = _LINK_NEXT.search(response.headers.get("link", ""))
            if match is None or not match.group(1).startswith(self.api_url + "/"):
                break  # the last page, or a link elsewhere (followed nowhere: the token goes only to the API)
            url = match.group(1)

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        opened = [pr for pr in self._pages("open", head, base) if pr.head == head]
        if opened:
            return opened[0]
        merged = [pr for pr in self._pages("closed", head, base) if pr.head == head and pr.state == "merged"]
        return merged[0] if merged else None

    def pull_request(self, number: int) -> PullRequest:
        data, _ = self._call("GET", f"/pulls/{int(number)}", f"reading pull request #{number}")
        return self._pull(data)

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
        payload = {"title": title, "head": head, "base": base, "body": body}
        data, _ = self._call(
            "POST", "/pulls", f"opening a pull request from {head} into {base}", json=payload, ok=(201,)
        )
        opened = self._pull(data)
        if labels:
            self._call(
                "POST",
                f"/issues/{opened.number}/labels",
                f"labelling #{opened.number}",
                json={"labels": list(labels)},
            )
        if reviewers:
            self._call(
                "POST",
                f"/pulls/{opened.number}/requested_reviewers",
                f"asking for reviews of #{opened.number}",
                json={"reviewers": list(reviewers)},
                ok=(201,),
            )
        return opened

    def enable_auto_merge(self, pr: PullRequest, merge_commit: bool) -> None:
        data, _ = self._call("GET", f"/pulls/{int(pr.number)}", f"reading pull request #{pr.number}")
        node = data.get("node_id") if isinstance(data, dict) else None
        if not isinstance(node, str) or not node:
            raise ForgeError(f"GitHub ({self.repository}): pull request #{pr.number} has no node id in the answer")
        variables = {"pullRequestId": node, "mergeMethod": "MERGE" if merge_commit else None}
        what = f"enabling auto-merge of #{pr.number}"
        response = self._exchange(
            "POST", graphql_url(self.api_url), what, json={"query": _AUTO_MERGE, "variables": variables}
        )
        answer = self._json(response, what)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
            detail = httpbounds.scrub(str(first.get("message") or ""), [self._token], 200)
            hint = ' (enable "Allow auto-merge" in the repository\'s settings, or set write.auto_merge: false)'
            raise ForgeRefusedError(
                f"GitHub ({self.repository}): {what}: {detail or 'refused'}"
                + (hint if "auto merge" in detail.lower() or "auto-merge" in detail.lower() else "")
            )

    def create_installation_token(self, installation_id: int) -> Any:
        """``apps/create-installation-access-token`` as the app (this client's token is the app's JWT): the answer
        holds an installation token for this client's repository only, and its expiry."""
        url = f"{self.api_url}/app/installations/{int(installation_id)}/access_tokens"
        what = f"asking for an installation token of installation {int(installation_id)}"
        name = self.repository.partition("/")[2]
        data, _ = self._call("POST", url, what, json={"repositories": [name]}, ok=(201,))
        return data

    def checks(self, sha: str) -> list[Check]:
        """Commit statuses and check runs (GitHub Actions and apps report the latter), the newest of each."""
        found = self._status_checks(sha)
        what = f"reading the check runs of {sha[:12]}"
        data, _ = self._call("GET", f"/commits/{quote(sha, safe='')}/check-runs?per_page={_PAGE}", what)
        runs = data.get("check_runs") if isinstance(data, dict) else None
        return found + checks_from(runs, "name", "html_url", _run_state)

    def _marked_comments(self, number: int) -> list[int]:
        url = f"{self.api_url}{self._path}/issues/{int(number)}/comments?per_page={_PAGE}"
        found: list[int] = []
        for data in self._paged(url, f"reading the comments of #{number}"):
            found += marked_ids(data)
        return found[::-1]
