"""Gitea's REST API (``/api/v1``), as much of it as a promotion needs (tasks/forges/base.py says what).

Endpoints, from Gitea's own API description (templates/swagger/v1_json.tmpl of code.gitea.io/gitea v1.26.0):
``GET/POST /repos/{owner}/{repo}/pulls`` (the list filters by ``state`` and ``base_branch``, not by head, so
the head is matched here), ``GET /repos/{owner}/{repo}/pulls/{index}``, ``GET /repos/{owner}/{repo}/labels``,
``POST /repos/{owner}/{repo}/statuses/{sha}``, ``GET/POST /repos/{owner}/{repo}/issues/{index}/comments``,
``PATCH /repos/{owner}/{repo}/issues/comments/{id}``, ``GET /repos/{owner}/{repo}/commits/{ref}/status`` (the
pull request's own checks), ``POST /repos/{owner}/{repo}/pulls/{index}/merge`` with ``merge_when_checks_succeed``
(auto-merge).
Authentication is ``Authorization: token <token>``; the exchange itself is tasks/forges/http.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from tasks import httpbounds
from tasks.forges.base import (
    ForgeAuthError,
    ForgeError,
    ForgeRefusedError,
    PullRequest,
    marked_ids,
)
from tasks.forges.http import GitHubShapedForge

_PAGE = 50
_PAGES = 4  # closed pull requests looked through for a merged one: the newest 200


class GiteaForge(GitHubShapedForge):
    provider = "gitea"
    name = "Gitea"
    api_hint = "http(s)://host/api/v1"
    _status_field = "status"

    def _repository_path(self, repository: str) -> str:
        owner, name = self._owner_name(repository, "Gitea")
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token}", "Accept": "application/json"}

    def _refusal(self, response: httpbounds.Response, what: str) -> ForgeError:
        status = response.status_code
        if status in (401, 403):
            return ForgeAuthError(
                f"Gitea refused the token (HTTP {status}) for {self.repository}: {what}; check {self._hint} (it "
                "needs the repository scope: write for pull requests and statuses)"
            )
        detail = self._message(response)
        if status == 404:
            return self._not_found(what, detail)
        return ForgeRefusedError(
            f"Gitea ({self.repository}): {what}: HTTP {status}" + (f": {detail}" if detail else "")
        )

    # --- pull requests -----------------------------------------------------------------------------------------

    def _list(self, state: str, base: str, page: int, sort: str) -> list[PullRequest]:
        query = f"?state={state}&base_branch={quote(base, safe='')}&sort={sort}&page={page}&limit={_PAGE}"
        data = self._send("GET", f"/pulls{query}", f"listing {state} pull requests into {base}")
        if not isinstance(data, list):
            raise ForgeError(f"Gitea ({self.repository}): the pull request list is not a list")
        return [self._pull(item) for item in data]

    def find_pull_request(self, head: str, base: str) -> PullRequest | None:
        for page in range(1, _PAGES + 1):
            found = self._list("open", base, page, "recentupdate")
            match = next((pr for pr in found if pr.head == head), None)
            if match is not None:
                return match
            if len(found) < _PAGE:
                break
        for page in range(1, _PAGES + 1):
            found = self._list("closed", base, page, "recentclose")
            match = next((pr for pr in found if pr.head == head and pr.state == "merged"), None)
            if match is not None:
                return match
            if len(found) < _PAGE:
                break
        return None

    def pull_request(self, number: int) -> PullRequest:
        return self._pull(self._send("GET", f"/pulls/{int(number)}", f"reading pull request #{number}"))

    def _label_ids(self, names: Sequence[str]) -> list[int]:
        if not names:
            return []
        known: dict[str, int] = {}
        for page in range(1, 11):
            data = self._send("GET", f"/labels?page={page}&limit={_PAGE}", "listing the repository's labels")
            items = data if isinstance(data, list) else []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("id"), int):
                    known[str(item.get("name"))] = item["id"]
            if len(items) < _PAGE:
                break
        missing = [name for name in names if name not in known]
        if missing:
            raise self._no_labels(missing)
        return [known[name] for name in names]

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
        payload: dict[str, Any] = {"head": head, "base": base, "title": title, "body": body}
        if labels:
            payload["labels"] = self._label_ids(labels)
        if reviewers:
            payload["reviewers"] = list(reviewers)
        data = self._send(
            "POST", "/pulls", f"opening a pull request from {head} into {base}", json=payload, ok=(201,), not_yet=True
        )
        return self._pull(data)

    def enable_auto_merge(self, pr: PullRequest, merge_commit: bool) -> None:
        # Gitea merges a pull request scheduled this way when its required status checks succeed (at once when
        # it has none); a merge commit unless the repository allows only another style.
        payload = {"Do": "merge", "merge_when_checks_succeed": True, "head_commit_id": pr.head_sha}
        what = f"scheduling the merge of #{pr.number}"
        self._send("POST", f"/pulls/{int(pr.number)}/merge", what, json=payload, ok=(200, 201))  # 200: merged at once

    def _marked_comments(self, number: int) -> list[int]:
        data = self._send("GET", f"/issues/{int(number)}/comments", f"reading the comments of #{number}")
        return marked_ids(data)[::-1]
