"""The HTTP exchange every forge client shares: checked API URL and token, one request retried on 5xx, 429 and
network errors (and on what a forge says is its rate limit, for as long as it asks) within one overall deadline,
and refusals turned into errors that name the forge, the repository and the fix, never the token."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tasks import httpbounds
from tasks.forges.base import (
    STATUS_CONTEXT,
    Check,
    CheckState,
    CommitState,
    Forge,
    ForgeAuthError,
    ForgeError,
    ForgeRefusedError,
    PullRequest,
    PullRequestState,
    TransientForgeError,
    checks_from,
    status_description,
)

# A commit status's state (GitHub: error, failure, pending, success; Gitea adds warning and skipped, which do not
# stop a merge) as a check's.
_STATUS_STATES: dict[str, CheckState] = {
    "success": "success",
    "warning": "success",
    "skipped": "success",
    "pending": "pending",
    "failure": "failure",
    "error": "failure",
}
MAX_BYTES = 4 << 20  # a page of 100 pull requests with long bodies is well under this
ATTEMPTS = 5


class HttpForge(Forge):
    """A forge spoken to over its REST API. Subclasses say how to authenticate (:meth:`_headers`), how long the
    forge asks to be left alone (:meth:`_wait_asked`) and what a refusal means (:meth:`_refusal`)."""

    name = "a forge"  # for messages: "Gitea", "GitHub", "GitLab"
    api_hint = "the API root"  # what the API URL looks like, for messages

    def __init__(
        self,
        api_url: str,
        repository: str,
        token: str | Callable[[], str],
        *,
        token_hint: str = "the token",  # noqa: S107 - words for messages, not a secret
        timeout: float = 30.0,
    ) -> None:
        """``api_url``: the API root; ``repository``: ``owner/name`` (GitLab: ``group/.../project``);
        ``token_hint`` names where the token comes from, for messages (never the token)."""
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ForgeError(f"the {self.name} API URL must be {self.api_hint}, not {httpbounds.shown_url(api_url)}")
        if parts.scheme == "http" and not httpbounds.is_loopback(parts.hostname):
            raise ForgeError(
                f"refusing to send the {self.name} token over plain http to {parts.hostname[:80]}: use https "
                "(plain http is allowed to loopback only)"
            )
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self._path = self._repository_path(repository)
        # A callable hands out a token that may change (a GitHub App's installation token, refreshed hourly).
        self._tokens: Callable[[], str] = token if callable(token) else (lambda: token)
        self._hint = token_hint
        self._token  # noqa: B018 - a token with a control character is refused now, not at the first request
        self._timeout = timeout

    @property
    def _token(self) -> str:
        token = self._tokens()
        if httpbounds.has_control_chars(token):
            raise ForgeAuthError(f"{self._hint} holds a line break or another control character; fix the token")
        return token

    # --- what a subclass says about its forge -----------------------------------------------------------

    def _repository_path(self, repository: str) -> str:
        """The API path of ``repository`` (``/repos/owner/name``); ForgeError when it is not one."""
        raise NotImplementedError

    @staticmethod
    def _owner_name(repository: str, forge: str) -> tuple[str, str]:
        owner, _, name = repository.partition("/")
        if not owner or not name or "/" in name:
            raise ForgeError(f"a {forge} repository is owner/name, not {repository[:100]!r}")
        return owner, name

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _wait_asked(self, response: httpbounds.Response) -> float | None:
        """Seconds the forge asks us to wait before asking again (its rate limit), or None when it does not."""
        return None

    def _refusal(self, response: httpbounds.Response, what: str) -> ForgeError:
        raise NotImplementedError

    # --- the exchange ------------------------------------------------------------------------------------

    def _shown(self) -> str:
        return httpbounds.shown_url(self.api_url)

    def _message(self, response: httpbounds.Response, key: str = "message") -> str:
        """The forge's own words from an error body, scrubbed and bounded."""
        try:
            body = response.json()
        except ValueError:
            return ""
        text = body.get(key) if isinstance(body, dict) else None
        return httpbounds.scrub(str(text or ""), [self._token], 200)

    def _exchange(
        self,
        method: str,
        url: str,
        what: str,
        *,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        not_yet: bool = False,
    ) -> httpbounds.Response:
        """One request within the overall deadline: retried on 5xx, 429 and network errors, and after the wait a
        rate limit asks for while the deadline allows it. ``not_yet``: a 404 may mean "not seen yet" and is
        asked again too (a pull request opened right after its branch was pushed)."""
        deadline = httpbounds.Deadline(self._timeout)
        last = ""
        for attempt in range(1, ATTEMPTS + 1):
            asked: float | None = None
            try:
                with httpbounds.client(timeout=self._timeout, headers=self._headers()) as http:
                    response = httpbounds.request(http, method, url, deadline=deadline, max_bytes=MAX_BYTES, json=json)
            except httpbounds.BoundsError as exc:
                raise TransientForgeError(f"{self.name} ({self.repository}): {what}: {exc}") from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                last = type(exc).__name__
            else:
                if response.status_code in ok:
                    return response
                asked = self._wait_asked(response)
                retry = asked is not None or response.status_code >= 500 or response.status_code == 429
                if not retry and not (not_yet and response.status_code == 404 and attempt < ATTEMPTS):
                    raise self._refusal(response, what)
                last = f"HTTP {response.status_code}"
                if asked is not None:
                    last += f", rate limited for {asked:.0f}s more"
            pause = min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret
            if asked is not None:
                pause = max(pause, asked)
            if attempt == ATTEMPTS or pause >= deadline.remaining():
                break
            time.sleep(pause)
        raise TransientForgeError(f"{self.name} ({self.repository}) at {self._shown()}: {what}: {last}, every attempt")

    def _json(self, response: httpbounds.Response, what: str) -> Any:
        try:
            return response.json() if response.content else None
        except ValueError:
            raise ForgeError(
                f"{self.name} ({self.repository}): {what}: the answer is not JSON; is {self._shown()} the API "
                f"({self.api_hint})?"
            ) from None

    def _not_found(self, what: str, detail: str) -> ForgeRefusedError:
        return ForgeRefusedError(
            f"{self.name} ({self.repository}): {what}: not found (HTTP 404); check the repository URL, and that "
            f"{self._hint} may see the repository" + (f" ({detail})" if detail else "")
        )

    def _no_labels(self, missing: Sequence[str]) -> ForgeRefusedError:
        names = ", ".join(repr(m[:50]) for m in missing[:5])
        return ForgeRefusedError(
            f"{self.name} ({self.repository}) has no label {names}: create it in the repository's labels, or remove "
            "it from write.labels"
        )

    def _check_labels(self, names: Sequence[str], url_of: Callable[[str], str]) -> None:
        """Each label must exist (``GET url_of(label)`` answers it): the forge would create a missing one on the
        fly, and nothing is created behind the user's back."""
        missing = []
        for label in names:
            try:
                self._exchange("GET", url_of(label), f"reading label {label[:50]!r}")
            except ForgeRefusedError as exc:
                if "HTTP 404" not in str(exc):
                    raise
                missing.append(label)
        if missing:
            raise self._no_labels(missing)

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        not_yet: bool = False,
    ) -> Any:
        """One exchange with ``path`` under the repository's API path; the JSON answer."""
        url = f"{self.api_url}{self._path}{path}"
        return self._json(self._exchange(method, url, what, json=json, ok=ok, not_yet=not_yet), what)


class GitHubShapedForge(HttpForge):
    """The endpoints Gitea copied from GitHub's API, the same paths and shapes on both: the pull request itself,
    commit statuses and issue comments (a pull request is an issue for comments)."""

    def _pull(self, data: Any) -> PullRequest:
        """A pull request in the shape GitHub and Gitea share: from a full one, or from a list's short one (GitHub's
        ``pull-request-simple`` has no ``merged``, only ``merged_at``)."""
        if not isinstance(data, dict) or not isinstance(data.get("number"), int):
            raise ForgeError(f"{self.name} ({self.repository}): a pull request without a number in the answer")
        head, base = data.get("head") or {}, data.get("base") or {}
        merged = bool(data.get("merged")) or bool(data.get("merged_at"))
        state: PullRequestState = "merged" if merged else ("open" if data.get("state") == "open" else "closed")
        merged_by = data.get("merged_by") or {}
        return PullRequest(
            number=data["number"],
            url=str(data.get("html_url") or "")[:500],
            state=state,
            head=str(head.get("ref") or "")[:255],
            head_sha=str(head.get("sha") or "")[:64],
            base=str(base.get("ref") or "")[:255],
            title=str(data.get("title") or "")[:300],
            merge_commit=(str(data.get("merge_commit_sha") or "")[:64] or None) if merged else None,
            merged_by=str(merged_by.get("login") or "")[:100] if isinstance(merged_by, dict) else "",
            mergeable=data["mergeable"] if isinstance(data.get("mergeable"), bool) else None,
        )

    def set_commit_status(
        self, sha: str, state: CommitState, description: str, target_url: str | None, *, context: str = STATUS_CONTEXT
    ) -> None:
        payload: dict[str, Any] = {
            "state": state,
            "context": context,
            "description": status_description(description),
        }
        if target_url:
            payload["target_url"] = target_url
        self._send(
            "POST", f"/statuses/{quote(sha, safe='')}", f"setting the status of {sha[:12]}", json=payload, ok=(201,)
        )

    # The state field of a commit status in the combined status: GitHub says ``state``, Gitea ``status``.
    _status_field = "state"

    def _status_checks(self, sha: str) -> list[Check]:
        """The commit statuses on ``sha`` (the combined status: the newest of each context), ours left out."""
        data = self._send(
            "GET", f"/commits/{quote(sha, safe='')}/status?per_page=100", f"reading the statuses of {sha[:12]}"
        )
        statuses = data.get("statuses") if isinstance(data, dict) else None
        field = self._status_field
        return checks_from(
            statuses,
            "context",
            "target_url",
            lambda status: _STATUS_STATES.get(str(status.get(field) or ""), "pending"),
        )

    def checks(self, sha: str) -> list[Check]:
        return self._status_checks(sha)

    def _edit_comment(self, number: int, comment_id: int, body: str) -> None:
        self._send(
            "PATCH", f"/issues/comments/{int(comment_id)}", f"updating the comment on #{number}", json={"body": body}
        )

    def _add_comment(self, number: int, body: str) -> None:
        self._send(
            "POST", f"/issues/{int(number)}/comments", f"commenting on #{number}", json={"body": body}, ok=(201,)
        )
