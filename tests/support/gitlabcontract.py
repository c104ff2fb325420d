"""GitLab as a contract server (tests/support/openapi.py). No published, installable API description covers
GitLab's merge requests (npm and PyPI hold none; GitLab's own Swagger 2.0 file lacks notes and is not packaged), so
the description is tests/data/gitlab/merge-requests.openapi.json, written from GitLab's API documentation page by
page (each operation cites its page). A small stand-in answers for one instance's projects: merge requests,
labels, users, commit statuses and notes, filled into the documentation's example answers."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sandbox.gitserve import serve_git_over_http
from tests.support.forgehost import ServedForgeHost
from tests.support.openapi import Answer, ContractServer, Description, Request, serve_contract

DESCRIPTION = Path(__file__).resolve().parents[1] / "data" / "gitlab" / "merge-requests.openapi.json"
PROJECT = "acme/platform/gitops"  # in a subgroup, as many GitLab projects are


@cache
def gitlab_description() -> Description:
    return Description(DESCRIPTION)


def _error(status: int, message: Any) -> Answer:
    return Answer(status, {"message": message})


@dataclass
class FakeGitLab:
    description: Description
    token: str
    url: str = ""  # the API root (…/api/v4), once served
    labels: set[str] = field(default_factory=lambda: {"promotion"})
    users: dict[str, int] = field(default_factory=lambda: {"alice": 7, "bob": 8})
    merge_requests: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    version: tuple[int, int] = (18, 6)  # the GitLab release answering
    jobs: list[dict[str, Any]] = field(default_factory=list)  # CI jobs: {"sha", "name", "status", "allow_failure"}
    notes: list[tuple[int, str]] = field(default_factory=list)
    throttle: list[Answer] = field(default_factory=list)
    git_root: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, project: str, head: str, base: str = "main", **fields: Any) -> int:
        with self.lock:
            iid = 1 + max((i for p, i in self.merge_requests if p == project), default=0)
            self.merge_requests[(project, iid)] = {
                "iid": iid,
                "state": "opened",
                "title": f"promote {head}",
                "description": "",
                "source_branch": head,
                "target_branch": base,
                "sha": f"{iid:040x}",
                "merge_commit_sha": None,
                "squash_commit_sha": None,
                "merged": False,
                "reviewer_ids": [],
                "labels": [],
                "detailed_merge_status": "mergeable",
                **fields,
            }
            return iid

    def merge(self, project: str, iid: int, *, merge_commit: str | None, squash_commit: str | None = None) -> None:
        with self.lock:
            self.merge_requests[(project, iid)] |= {
                "state": "merged",
                "merged": True,
                "merge_commit_sha": merge_commit,
                "squash_commit_sha": squash_commit,
            }

    def _body(self, project: str, mr: dict[str, Any], operation: str, status: str) -> dict[str, Any]:
        body: dict[str, Any] = self.description.example(operation, status)
        body = body[0] if isinstance(body, list) else body
        iid = mr["iid"]
        user = self.description.example("mergeRequests/get", "200")["author"]
        body |= {
            "iid": iid,
            "id": 1000 + iid,
            "state": mr["state"],
            "title": mr["title"],
            "description": mr["description"],
            "source_branch": mr["source_branch"],
            "target_branch": mr["target_branch"],
            "sha": mr["sha"],
            "merge_commit_sha": mr["merge_commit_sha"],
            "squash_commit_sha": mr["squash_commit_sha"],
            "web_url": f"https://gitlab.example.com/{project}/-/merge_requests/{iid}",
            "labels": mr["labels"],
            "detailed_merge_status": mr["detailed_merge_status"],
            "merge_user": user if mr["merged"] else None,
            "merged_by": user if mr["merged"] else None,
        }
        return body

    def handle(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "401 Unauthorized")
        with self.lock:
            if self.throttle:
                return self.throttle.pop(0)
        op, path = request.operation.id, request.path
        if op == "users/list":
            wanted = request.query.get("username")
            users = [u for u in self.users.items() if u[0] == wanted]
            template = self.description.example(op, "200")[0]
            return Answer(200, [template | {"id": uid, "username": name} for name, uid in users])
        project = unquote(str(path.get("id", "")))
        if project != PROJECT and (self.git_root is None or not (self.git_root / f"{project}.git").exists()):
            return _error(404, "404 Project Not Found")
        if op == "mergeRequests/list":
            query = request.query
            states = {"opened": ("opened",), "merged": ("merged",), "closed": ("closed",), "all": None}
            allowed = states.get(str(query.get("state", "all")))
            found: list[dict[str, Any]] = [
                mr
                for (p, _), mr in sorted(self.merge_requests.items(), key=lambda kv: kv[0][1], reverse=True)
                if p == project
                and (allowed is None or mr["state"] in allowed)
                and query.get("source_branch") in (None, mr["source_branch"])
                and query.get("target_branch") in (None, mr["target_branch"])
            ]
            return Answer(200, [self._body(project, mr, op, "200") for mr in found], {"x-page": "1"})
        if op == "mergeRequests/get":
            mr = self.merge_requests.get((project, int(path["merge_request_iid"])))
            return Answer(200, self._body(project, mr, op, "200")) if mr else _error(404, "404 Not found")
        if op == "mergeRequests/create":
            body = request.body
            if any(
                p == project and mr["source_branch"] == body["source_branch"] and mr["state"] == "opened"
                for (p, _), mr in self.merge_requests.items()
            ):
                return _error(409, ["Another open merge request already exists for this source branch"])
            iid = self.add(
                project,
                body["source_branch"],
                body["target_branch"],
                title=body["title"],
                description=body.get("description") or "",
                labels=[x for x in str(body.get("labels") or "").split(",") if x],
                reviewer_ids=list(body.get("reviewer_ids") or []),
                sha=self._head(project, body["source_branch"]) or f"{len(self.merge_requests) + 1:040x}",
            )
            return Answer(201, self._body(project, self.merge_requests[(project, iid)], op, "201"))
        if op == "mergeRequests/merge":
            mr = self.merge_requests.get((project, int(path["merge_request_iid"])))
            if mr is None:
                return _error(404, "404 Not found")
            body = request.body or {}
            if body.get("sha") not in (None, mr["sha"]):
                return _error(409, "SHA does not match HEAD of source branch")
            # Before GitLab 17.11 ``auto_merge`` is an unknown parameter (ignored); merge_when_pipeline_succeeds
            # was the name. Neither set: GitLab merges at once.
            asked = body.get("merge_when_pipeline_succeeds") if self.version < (17, 11) else body.get("auto_merge")
            if asked:
                mr["auto_merge"] = True
            else:
                mr |= {"state": "merged", "merge_commit_sha": "e" * 40}
            return Answer(200, self._body(project, mr, "mergeRequests/get", "200"))
        if op == "labels/get":
            name = unquote(str(path["label_id"]))
            if name not in self.labels:
                return _error(404, "404 Label Not Found")
            return Answer(200, self.description.example(op, "200") | {"name": name})
        if op == "commits/setStatus":
            self.statuses.append({"sha": path["sha"], **request.body})
            return Answer(201, self.description.example(op, "201") | {"sha": path["sha"]})
        if op == "commits/listStatuses":
            template = self.description.example(op, "200")[0]
            newest: dict[str, dict[str, Any]] = {}
            for job in self.jobs:
                if job["sha"] == path["sha"]:
                    newest[job["name"]] = template | {k: v for k, v in job.items()}
            for status in self.statuses:
                if status["sha"] == path["sha"]:
                    newest[status["name"]] = template | {
                        "sha": status["sha"],
                        "name": status["name"],
                        "status": status["state"],
                        "description": status.get("description"),
                        "target_url": status.get("target_url"),
                    }
            return Answer(200, list(newest.values())[::-1])
        if op == "notes/create":
            self.notes.append((int(path["merge_request_iid"]), request.body["body"]))
            answer = self.description.example(op, "201") | {"id": len(self.notes), "body": request.body["body"]}
            return Answer(201, answer)
        if op == "notes/list":
            template = self.description.example(op, "200")[0] | {"system": False}
            mine = [(i + 1, body) for i, (n, body) in enumerate(self.notes) if n == int(path["merge_request_iid"])]
            return Answer(200, [template | {"id": i, "body": body} for i, body in reversed(mine)])
        if op == "notes/update":
            index = int(path["note_id"]) - 1
            if not 0 <= index < len(self.notes):
                return _error(404, "404 Not found")
            self.notes[index] = (self.notes[index][0], request.body["body"])
            return Answer(200, self.description.example(op, "200") | {"id": path["note_id"]})
        return _error(404, f"the stand-in does not answer {op}")

    def _head(self, project: str, branch: str) -> str | None:
        if self.git_root is None:
            return None
        found = subprocess.run(
            ["git", "rev-parse", "--verify", f"refs/heads/{branch}"],
            cwd=self.git_root / f"{project}.git",
            capture_output=True,
            text=True,
            check=False,
        )
        return found.stdout.strip() or None


@contextmanager
def serve_gitlab(token: str) -> Iterator[tuple[FakeGitLab, ContractServer]]:
    """GitLab's API at a loopback ``…/api/v4``, every request checked against the description."""
    description = gitlab_description()
    fake = FakeGitLab(description, token)
    with serve_contract(description, fake.handle, prefix="/api/v4") as server:
        fake.url = server.url
        yield fake, server


class GitLabHost(ServedForgeHost):
    """GitLab for a sandbox app: projects in the group ``acme`` over loopback Git HTTP, the API the contract
    server."""

    provider = "gitlab"
    username = "oauth2"

    def __init__(self, fake: FakeGitLab, server: ContractServer, git_url: str, git_root: Path, token: str) -> None:
        super().__init__(git_url, git_root, token)
        self.fake, self.server = fake, server
        fake.git_root = git_root

    @property
    def api_url(self) -> str:
        return self.fake.url

    def merge(self, name: str, iid: int, workdir: Path) -> str:
        """Merge merge request ``iid`` of project ``acme/<name>`` with a merge commit; the commit."""
        project = f"{self.owner}/{name}"
        mr = self.fake.merge_requests[(project, iid)]
        message = f"Merge branch '{mr['source_branch']}' into '{mr['target_branch']}'"
        commit = self.merge_in_git(name, mr["source_branch"], mr["target_branch"], message, workdir)
        self.fake.merge(project, iid, merge_commit=commit)
        return commit


@contextmanager
def serve_gitlab_host(token: str, root: Path) -> Iterator[GitLabHost]:
    root.mkdir(parents=True, exist_ok=True)
    with serve_gitlab(token) as (fake, server), serve_git_over_http(root, GitLabHost.username, token) as git_url:
        yield GitLabHost(fake, server, git_url, root, token)
