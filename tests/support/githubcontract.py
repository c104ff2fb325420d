"""GitHub as a contract server (tests/support/openapi.py) over GitHub's published API description: a small stand-in
for one repository's pull requests, labels, reviewers, commit statuses and comments, answering with GitHub's own
examples filled in (and checked against the schemas before they are sent). It can also answer as GitHub's rate
limits and permission checks do (headers from docs.github.com, "Rate limits for the REST API" and "Troubleshooting
the REST API"), which the description does not declare per operation."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from graphql import GraphQLError, GraphQLSchema, build_schema, execute, parse, validate

from sandbox.gitserve import serve_git_over_http
from tests.support.forgehost import ServedForgeHost
from tests.support.openapi import Answer, ContractServer, Description, Request, serve_contract

ROOT = Path(__file__).resolve().parents[2]
DOCS = "https://docs.github.com/rest"
OWNER, REPO = "acme", "gitops"


def _fetched(what: str) -> Path:
    """A published description, fetched once per machine by hack/fetch-api-descriptions (npm)."""
    done = subprocess.run(
        [str(ROOT / "hack" / "fetch-api-descriptions"), what],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"the GitHub contract tests need GitHub's published description (hack/fetch-api-descriptions {what}, "
            f"which needs npm and the npm registry): {done.stderr[-1500:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


@cache
def github_description() -> Description:
    """GitHub's REST API description (npm @octokit/openapi)."""
    return Description(_fetched("github"))


@cache
def github_graphql_schema() -> GraphQLSchema:
    """GitHub's GraphQL schema (npm @octokit/graphql-schema): auto-merge exists there only. The published schema
    defines two fields of EnterpriseOwnerInfo twice, which strict SDL validation refuses: built as GitHub serves it
    (the queries sent to it are still validated against it)."""
    return build_schema(_fetched("github-graphql").read_text(), assume_valid_sdl=True)


def _error(status: int, message: str, **headers: str) -> Answer:
    return Answer(status, {"message": message, "documentation_url": DOCS}, dict(headers))


@dataclass
class FakeGitHub:
    """One repository ``acme/gitops`` on GitHub, as the promotion's calls see it."""

    description: Description
    token: str
    url: str = ""  # the API root, once served
    labels: set[str] = field(default_factory=lambda: {"promotion"})
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    check_runs: list[dict[str, Any]] = field(default_factory=list)  # {"sha", "name", "status", "conclusion"}
    comments: list[tuple[int, str]] = field(default_factory=list)
    reviewers: dict[int, list[str]] = field(default_factory=dict)
    page_size: int | None = None  # answer fewer per page than asked (GitHub may): the client must follow Link
    throttle: list[Answer] = field(default_factory=list)  # answered, in order, before anything else
    next_link: str | None = None  # a Link rel="next" to answer a list with instead of the real next page
    git_root: Path | None = None  # where the repositories are (<root>/<owner>/<repo>.git), when they are real
    allow_auto_merge: bool = True  # the repository setting "Allow auto-merge"
    auto_merge: dict[int, str | None] = field(default_factory=dict)  # number -> merge method asked for (None: default)
    app: tuple[str, int, Any] | None = None  # a GitHub App: (App ID, installation id, its RSA public key)
    installation_tokens: dict[str, float] = field(default_factory=dict)  # minted token -> when it expires
    token_seconds: float = 3600.0  # how long a minted installation token lasts (GitHub: an hour)
    jwt_claims: list[dict[str, Any]] = field(default_factory=list)  # each accepted JWT's claims
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepts(self, token: str) -> bool:
        """The personal token, or an installation token not yet expired."""
        return token == self.token or self.installation_tokens.get(token, 0.0) > time.time()

    # --- the repository's state, as a test sets it ----------------------------------------------------------

    def add_pull(
        self,
        head: str,
        base: str = "main",
        *,
        state: str = "open",
        merge_commit: str | None = None,
        repo: str = REPO,
        head_sha: str | None = None,
    ) -> int:
        with self.lock:
            number = max(self.pulls, default=0) + 1  # numbered across repositories: unique in a test anyway
            self.pulls[number] = {
                "repo": repo,
                "number": number,
                "state": state,
                "title": f"promote {head}",
                "body": "",
                "head": head,
                "head_sha": head_sha or f"{number:040x}",
                "base": base,
                "merged": merge_commit is not None,
                "merge_commit_sha": merge_commit,
                "mergeable": True if state == "open" else None,
            }
            return number

    def head_of(self, path: dict[str, Any], body: dict[str, Any]) -> str | None:
        """The head branch's commit in the real repository, when there is one."""
        if self.git_root is None:
            return None
        origin = self.git_root / OWNER / f"{path['repo']}.git"
        found = subprocess.run(
            ["git", "rev-parse", "--verify", f"refs/heads/{body['head']}"],
            cwd=origin,
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() or None

    def merge(self, number: int, merge_commit: str) -> None:
        with self.lock:
            self.pulls[number] |= {"state": "closed", "merged": True, "merge_commit_sha": merge_commit}

    # --- answers ---------------------------------------------------------------------------------------------

    def _pull_body(self, pull: dict[str, Any], operation: str, status: str) -> dict[str, Any]:
        template = self.description.example(operation, status)
        body: dict[str, Any] = template[0] if isinstance(template, list) else template
        number, merged = pull["number"], pull["merged"]
        html = f"https://github.com/{OWNER}/{pull['repo']}/pull/{number}"
        body |= {
            "number": number,
            "node_id": f"PR_{number}",
            "state": pull["state"],
            "title": pull["title"],
            "body": pull["body"],
            "html_url": html,
            "url": f"{self.url}/repos/{OWNER}/{pull['repo']}/pulls/{number}",
            "merge_commit_sha": pull["merge_commit_sha"],
            "merged_at": "2026-12-06T10:00:00Z" if merged else None,
            "closed_at": "2026-12-06T10:00:00Z" if pull["state"] == "closed" else None,
            "requested_teams": [],  # GitHub's own example lacks a required field here
        }
        body["head"] = body["head"] | {"ref": pull["head"], "sha": pull["head_sha"], "label": f"{OWNER}:{pull['head']}"}
        body["base"] = body["base"] | {"ref": pull["base"]}
        if "merged" in body:  # the full pull request (pulls/get, pulls/create), not pull-request-simple
            body |= {"merged": merged, "mergeable": pull["mergeable"]}
            body["merged_by"] = body.get("merged_by") if merged else None
        return body

    def handle(self, request: Request) -> Answer:
        op, path = request.operation.id, request.path
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if op == "apps/create-installation-access-token":
            return self._installation_token(bearer, path["installation_id"], request.body or {})
        if not self.accepts(bearer):
            return _error(401, "Bad credentials")
        with self.lock:
            if self.throttle:
                return self.throttle.pop(0)
        if path.get("owner") != OWNER:
            return _error(404, "Not Found")
        if op == "pulls/list":
            return self._list(request)
        if op == "pulls/get":
            pull = self.pulls.get(path["pull_number"])
            pull = pull if pull is not None and pull["repo"] == path["repo"] else None
            return Answer(200, self._pull_body(pull, op, "200")) if pull else _error(404, "Not Found")
        if op == "pulls/create":
            body = request.body
            taken = [
                p
                for p in self.pulls.values()
                if p["repo"] == path["repo"] and p["head"] == body["head"] and p["state"] == "open"
            ]
            if taken:
                return Answer(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"resource": "PullRequest", "code": "custom", "message": "A pull request already exists"}
                        ],
                        "documentation_url": DOCS,
                    },
                )
            number = self.add_pull(body["head"], body["base"], repo=path["repo"], head_sha=self.head_of(path, body))
            self.pulls[number] |= {"title": body["title"], "body": body.get("body") or ""}
            return Answer(201, self._pull_body(self.pulls[number], op, "201"), {"Location": f"{self.url}/x"})
        if op == "issues/get-label":
            if path["name"] not in self.labels:
                return _error(404, "Not Found")
            return Answer(200, self.description.example(op, "200") | {"name": path["name"]})
        if op == "issues/add-labels":
            return Answer(200, self.description.example(op, "200"))
        if op == "pulls/request-reviewers":
            self.reviewers[path["pull_number"]] = list(request.body.get("reviewers") or [])
            pull = self.pulls[path["pull_number"]]
            return Answer(201, self._pull_body(pull, op, "201"))
        if op == "repos/create-commit-status":
            self.statuses.append({"sha": path["sha"], **request.body})
            return Answer(201, self.description.example(op, "201"), {"Location": f"{self.url}/x"})
        if op == "repos/get-combined-status-for-ref":
            return Answer(200, self._combined(op, path["ref"]))
        if op == "checks/list-for-ref":
            template = self.description.example(op, "200")
            item = template["check_runs"][0]
            runs = [
                item | {k: v for k, v in run.items() if k != "sha"}
                for run in self.check_runs
                if run["sha"] == path["ref"]
            ]
            return Answer(200, template | {"total_count": len(runs), "check_runs": runs})
        if op == "issues/create-comment":
            self.comments.append((path["issue_number"], request.body["body"]))
            answer = self.description.example(op, "201") | {"id": len(self.comments), "body": request.body["body"]}
            return Answer(201, answer, {"Location": f"{self.url}/x"})
        if op == "issues/list-comments":
            template = self.description.example(op, "200")[0]
            mine = [(i + 1, body) for i, (n, body) in enumerate(self.comments) if n == path["issue_number"]]
            return Answer(200, [template | {"id": i, "body": body} for i, body in mine])
        if op == "issues/update-comment":
            index = path["comment_id"] - 1
            if not 0 <= index < len(self.comments):
                return _error(404, "Not Found")
            self.comments[index] = (self.comments[index][0], request.body["body"])
            return Answer(200, self.description.example(op, "200") | {"id": path["comment_id"]})
        return _error(404, f"the stand-in does not answer {op}")

    def _installation_token(self, jwt: str, installation_id: int, body: dict[str, Any]) -> Answer:
        """As GitHub: the JWT must be RS256-signed by the app's key, issued by its App ID, and live at most ten
        minutes; the installation must be the app's."""
        claims = _verified_jwt(jwt, self.app[2]) if self.app is not None else None
        if self.app is None or claims is None or str(claims.get("iss")) != self.app[0]:
            return _error(401, "A JSON web token could not be decoded")
        now = time.time()
        if not claims["iat"] - 60 <= now <= claims["exp"] or claims["exp"] - claims["iat"] > 600:
            return _error(401, "'Expiration time' claim ('exp') is too far in the future")
        if installation_id != self.app[1]:
            return _error(404, "Not Found")
        self.jwt_claims.append(claims)
        token = "ghs_" + secrets.token_hex(18)
        self.installation_tokens[token] = now + self.token_seconds
        expires = datetime.fromtimestamp(now + self.token_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        template = self.description.example("apps/create-installation-access-token", "201")
        answer = template | {"token": token, "expires_at": expires, "repositories": []}
        if body.get("repositories"):
            answer["repository_selection"] = "selected"
        return Answer(201, answer)

    def _combined(self, op: str, sha: str) -> dict[str, Any]:
        """The newest status of each context on ``sha``, in GitHub's combined-status shape."""
        template = self.description.example(op, "200")
        newest: dict[str, dict[str, Any]] = {}
        for status in self.statuses:
            if status["sha"] == sha:
                newest[status["context"]] = status
        item = template["statuses"][0]
        statuses = [
            item | {k: status.get(k) for k in ("context", "state", "description", "target_url")}
            for status in reversed(newest.values())
        ]
        states = {s["state"] for s in statuses}
        state = (
            "failure"
            if states & {"failure", "error"}
            else "pending"
            if "pending" in states or not states
            else "success"
        )
        combined: dict[str, Any] = template | {"sha": sha, "state": state, "statuses": statuses}
        return combined | {"total_count": len(statuses)}

    def _list(self, request: Request) -> Answer:
        query = request.query
        owner, _, head = str(query.get("head", "")).partition(":")
        state = query.get("state", "open")
        chosen = [
            p
            for p in sorted(self.pulls.values(), key=lambda p: p["number"], reverse=True)
            if p["repo"] == request.path["repo"]
            and (state == "all" or p["state"] == state)
            and (not head or (owner == OWNER and p["head"] == head))
            and (not query.get("base") or p["base"] == query["base"])
        ]
        size = min(int(query.get("per_page", 30)), self.page_size or 100)
        page = int(query.get("page", 1))
        items = chosen[(page - 1) * size : page * size]
        headers = {}
        if self.next_link is not None:
            headers["Link"] = f'<{self.next_link}>; rel="next"'
        elif page * size < len(chosen):
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "page")
            next_page = f"{self.url}/repos/{OWNER}/{request.path['repo']}/pulls?{rest}&page={page + 1}"
            headers["Link"] = f'<{next_page}>; rel="next"'
        return Answer(200, [self._pull_body(p, "pulls/list", "200") for p in items], headers)

    # --- GraphQL: checked against GitHub's schema, answered by executing the query on it ---------------------

    def graphql(self, headers: dict[str, str], raw: bytes, server: ContractServer) -> Answer:
        if headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Bad credentials")
        try:
            body = json.loads(raw)
            document = parse(body["query"])
        except (ValueError, KeyError, TypeError, GraphQLError) as exc:
            server.violate(f"POST /graphql: not a GraphQL request: {str(exc)[:200]}")
            return Answer(400, {"message": "Problems parsing JSON"})
        schema = github_graphql_schema()
        problems = [e.message for e in validate(schema, document)]
        if problems:
            for problem in problems:
                server.violate(f"POST /graphql: {problem[:300]}")
            return Answer(200, {"errors": [{"message": p} for p in problems]})
        result = execute(schema, document, root_value=self, variable_values=body.get("variables"))
        if isinstance(result, Awaitable):  # pragma: no cover - synchronous resolvers only
            raise TypeError("asynchronous GraphQL execution")
        for error in result.errors or []:
            if not error.message.startswith("Pull request Auto merge is not allowed"):
                server.violate(f"POST /graphql: {error.message[:300]}")
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [{"type": "UNPROCESSABLE", "message": e.message} for e in result.errors]
        return Answer(200, answer)

    def enablePullRequestAutoMerge(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        """The mutation's resolver (graphql-core calls the root value's attribute of the field's name)."""
        number = int(str(input["pullRequestId"]).removeprefix("PR_"))
        if not self.allow_auto_merge:
            raise GraphQLError("Pull request Auto merge is not allowed for this repository")
        self.auto_merge[number] = input.get("mergeMethod")
        method = input.get("mergeMethod") or "MERGE"  # the repository's default, as this stand-in has it
        return {"pullRequest": {"number": number, "autoMergeRequest": {"mergeMethod": method}}}


def _verified_jwt(jwt: str, public_key: Any) -> dict[str, Any] | None:
    """The claims of an RS256 JWT whose signature ``public_key`` verifies, else None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def decoded(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        header, claims, signature = jwt.split(".")
        if json.loads(decoded(header)) != {"alg": "RS256", "typ": "JWT"}:
            return None
        public_key.verify(decoded(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
        found = json.loads(decoded(claims))
    except (ValueError, InvalidSignature):
        return None
    ok = isinstance(found, dict) and all(isinstance(found.get(k), int) for k in ("iat", "exp"))
    return found if ok else None


@contextmanager
def serve_github(token: str) -> Iterator[tuple[FakeGitHub, ContractServer]]:
    """GitHub's API for ``acme/gitops`` at a loopback URL (``fake.url``), every request checked against the
    description; the server's ``violations`` list what broke it."""
    description = github_description()
    fake = FakeGitHub(description, token)
    headers = {
        "X-GitHub-Api-Version": lambda v: v == "2022-11-28",
        "Accept": lambda v: v == "application/vnd.github+json",
        "User-Agent": bool,  # GitHub refuses requests without one
    }
    # Rate limits and refused tokens are documented for every operation but declared for few: a basic-error.
    error = {"$ref": "#/components/schemas/basic-error"}
    global_answers = {401: error, 403: error, 429: error}
    with serve_contract(
        description,
        fake.handle,
        required_headers=headers,
        global_answers=global_answers,
        beside={("POST", "/graphql"): fake.graphql},
    ) as server:
        fake.url = server.url
        yield fake, server


class GitHubHost(ServedForgeHost):
    """GitHub for a sandbox app: repositories over loopback Git HTTP, the API the contract server."""

    provider = "github"
    username = "x-access-token"
    owner = OWNER

    def __init__(self, fake: FakeGitHub, server: ContractServer, git_url: str, git_root: Path, token: str) -> None:
        super().__init__(git_url, git_root, token)
        self.fake, self.server = fake, server
        fake.git_root = git_root

    @property
    def api_url(self) -> str:
        return self.fake.url

    def merge(self, name: str, number: int, workdir: Path) -> str:
        """Merge pull request ``number`` of repository ``name`` as GitHub's merge button does; its commit."""
        pull = self.fake.pulls[number]
        message = f"Merge pull request #{number} from {OWNER}/{pull['head']}"
        commit = self.merge_in_git(name, pull["head"], pull["base"], message, workdir)
        self.fake.merge(number, commit)
        return commit


@contextmanager
def serve_github_host(token: str, root: Path) -> Iterator[GitHubHost]:
    """A :class:`GitHubHost` for the block: repositories under ``root``, the API a contract server."""
    root.mkdir(parents=True, exist_ok=True)
    with (
        serve_github(token) as (fake, server),
        serve_git_over_http(
            root, GitHubHost.username, token, accepts=lambda password: fake.accepts(password)
        ) as git_url,
    ):
        yield GitHubHost(fake, server, git_url, root, token)
