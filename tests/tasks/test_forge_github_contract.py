"""Contract tests of the GitHub client (tasks/forges/github.py): GitHub has no local server, so every request goes
to a contract server built from GitHub's published API description (npm @octokit/openapi,
generated/api.github.com.json; tests/support/openapi.py, githubcontract.py), which refuses and records any request
that breaks the description (method, path, parameters, headers, body schema) and checks its own answers against it.
A client that drifts from the description fails here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tasks.forges.base import (
    EVIDENCE_MARKER,
    GATE_CONTEXTS,
    ForgeAuthError,
    ForgeRefusedError,
    TransientForgeError,
    checks_summary,
)
from tasks.forges.github import GitHubForge, api_root, graphql_url
from tests.support.githubcontract import OWNER, REPO, FakeGitHub, serve_github
from tests.support.openapi import Answer, ContractServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_" + "x" * 36


@pytest.fixture
def github() -> Iterator[tuple[FakeGitHub, ContractServer]]:
    with serve_github(TOKEN) as served:
        yield served
        assert served[1].violations == [], served[1].violations


def client(fake: FakeGitHub, *, token: str = TOKEN, timeout: float = 20.0) -> GitHubForge:
    return GitHubForge(fake.url, f"{OWNER}/{REPO}", token, token_hint="environment variable GH_TOKEN", timeout=timeout)


def test_contract_open_find_reuse_and_merged(github: tuple[FakeGitHub, ContractServer]) -> None:
    fake, server = github
    forge = client(fake)
    head = "promote/web/production/1.2.3"
    assert forge.find_pull_request(head, "main") is None
    opened = forge.open_pull_request(
        head, "main", "promote web 1.2.3", "the plan", labels=["promotion"], reviewers=["octocat"]
    )
    assert (opened.state, opened.head, opened.base, opened.url) == ("open", head, "main", opened.url)
    assert opened.url.endswith(f"/pull/{opened.number}")
    assert fake.reviewers[opened.number] == ["octocat"]
    assert forge.find_pull_request(head, "main") == forge.find_pull_request(head, "main")
    assert forge.find_pull_request(head, "main").number == opened.number
    # A second open for the same branch: GitHub's 422, a refusal the promotion answers by finding the open one.
    with pytest.raises(ForgeRefusedError, match=r"HTTP 422: Validation Failed"):
        forge.open_pull_request(head, "main", "again", "")
    forge.set_commit_status(opened.head_sha, "pending", "verifying production\nat 1.2.3", "http://prefect/run/1")
    forge.comment(opened.number, f"{EVIDENCE_MARKER}\nwaiting")
    fake.comments.append((opened.number, "a reviewer's note"))  # not marked: left alone
    forge.comment(opened.number, f"{EVIDENCE_MARKER}\nverified")  # the marked one, updated in place
    fake.merge(opened.number, "c" * 40)
    merged = forge.pull_request(opened.number)
    assert (merged.state, merged.merge_commit, merged.merged_by) == ("merged", "c" * 40, "octocat")
    found = forge.find_pull_request(head, "main")
    assert found is not None and (found.state, found.merge_commit) == ("merged", "c" * 40)
    assert fake.statuses == [
        {
            "sha": opened.head_sha,
            "state": "pending",
            "context": "gitops-promote",
            "description": "verifying production at 1.2.3",
            "target_url": "http://prefect/run/1",
        }
    ]
    assert fake.comments == [
        (opened.number, f"{EVIDENCE_MARKER}\nverified"),
        (opened.number, "a reviewer's note"),
    ]
    used = set(server.calls)
    assert used == {
        "pulls/list",
        "pulls/get",
        "pulls/create",
        "issues/get-label",
        "issues/add-labels",
        "pulls/request-reviewers",
        "repos/create-commit-status",
        "issues/list-comments",
        "issues/create-comment",
        "issues/update-comment",
    }


def test_contract_a_merged_pull_request_is_found_past_the_first_page(github: tuple[FakeGitHub, ContractServer]) -> None:
    fake, server = github
    head = "promote/web/production/1.2.3"
    merged = fake.add_pull(head, state="closed", merge_commit="d" * 40)
    for _ in range(4):
        fake.add_pull(head, state="closed")  # closed unmerged, newer: earlier decisions
    fake.page_size = 2
    found = client(fake).find_pull_request(head, "main")
    assert found is not None and (found.number, found.state) == (merged, "merged")
    assert server.calls.count("pulls/list") == 1 + 3  # open (one page), closed (three pages of two)


def test_contract_a_next_link_off_the_api_is_not_followed(github: tuple[FakeGitHub, ContractServer]) -> None:
    """The token goes to the API root only: a Link elsewhere ends the listing."""
    fake, server = github
    fake.add_pull("promote/x", state="closed")
    fake.next_link = "http://127.0.0.2:9/steal?page=2"
    assert client(fake).find_pull_request("promote/x", "main") is None
    assert server.calls.count("pulls/list") == 2  # open and closed, one page each


def test_contract_a_label_the_repository_lacks_is_named_and_nothing_is_opened(
    github: tuple[FakeGitHub, ContractServer],
) -> None:
    fake, _ = github
    with pytest.raises(ForgeRefusedError, match=r"has no label 'released'.*write\.labels"):
        client(fake).open_pull_request("promote/x", "main", "t", "b", labels=["promotion", "released"])
    assert fake.pulls == {}


def test_contract_primary_and_secondary_rate_limits_are_waited_out(github: tuple[FakeGitHub, ContractServer]) -> None:
    fake, _ = github
    reset = str(int(time.time()) + 2)
    fake.throttle = [
        Answer(403, {"message": "API rate limit exceeded"}, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}),
        Answer(429, {"message": "You have exceeded a secondary rate limit"}, {"retry-after": "1"}),
    ]
    started = time.monotonic()
    assert client(fake).find_pull_request("promote/x", "main") is None
    assert time.monotonic() - started >= 1.0  # the primary limit's reset, at least
    assert fake.throttle == []


def test_contract_a_rate_limit_past_the_deadline_fails_at_once_and_says_so(
    github: tuple[FakeGitHub, ContractServer],
) -> None:
    fake, _ = github
    fake.throttle = [Answer(403, {"message": "You have exceeded a secondary rate limit"}, {"retry-after": "600"})]
    started = time.monotonic()
    with pytest.raises(TransientForgeError, match=r"HTTP 403, rate limited for 600s more"):
        client(fake, timeout=10).pull_request(1)
    assert time.monotonic() - started < 5


def test_contract_a_token_without_the_permission_is_named(github: tuple[FakeGitHub, ContractServer]) -> None:
    fake, _ = github
    fake.throttle = [
        Answer(
            403,
            {"message": "Resource not accessible by personal access token"},
            {"x-accepted-github-permissions": "pull_requests=write"},
        )
    ]
    with pytest.raises(ForgeAuthError) as caught:
        client(fake).open_pull_request("promote/x", "main", "t", "b")
    message = str(caught.value)
    assert "needs the permissions pull_requests=write" in message
    assert "environment variable GH_TOKEN" in message and TOKEN not in message
    with pytest.raises(ForgeAuthError, match=r"HTTP 401.*GH_TOKEN"):
        client(fake, token="ghp_wrong").pull_request(1)


def test_a_github_pipeline_gets_the_github_client_at_github_s_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.model import Pipeline
    from tasks.forges import forge_for

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    text = (ROOT / "deployments" / "examples" / "pull-request-github.yaml").read_text()
    pipeline = Pipeline.model_validate(yaml.safe_load(text))
    forge = forge_for(pipeline, pipeline.environments[-1])
    assert isinstance(forge, GitHubForge)
    assert (forge.api_url, forge.repository) == ("https://api.github.com", "platform/app-gitops")


def test_contract_auto_merge_through_github_s_graphql_api(github: tuple[FakeGitHub, ContractServer]) -> None:
    """Auto-merge exists in GitHub's GraphQL API only: the mutation is validated against GitHub's published schema
    (npm @octokit/graphql-schema) and executed on it."""
    fake, _ = github
    forge = client(fake)
    first, second = fake.add_pull("promote/a"), fake.add_pull("promote/b")
    forge.enable_auto_merge(forge.pull_request(first), merge_commit=True)
    forge.enable_auto_merge(forge.pull_request(second), merge_commit=False)
    assert fake.auto_merge == {first: "MERGE", second: None}  # a merge commit where asked, else the default
    fake.allow_auto_merge = False
    with pytest.raises(ForgeRefusedError, match=r"not allowed for this repository.*Allow auto-merge"):
        forge.enable_auto_merge(forge.pull_request(first), merge_commit=True)


def test_contract_the_pull_request_s_own_checks_are_its_statuses_and_check_runs(
    github: tuple[FakeGitHub, ContractServer],
) -> None:
    """The forge's checks on the head: commit statuses (repos/get-combined-status-for-ref) and check runs
    (checks/list-for-ref), ours left out; each gate of ours is a status context of its own."""
    fake, server = github
    forge = client(fake)
    sha = "d" * 40
    assert forge.checks(sha) == []
    forge.set_commit_status(sha, "success", "no freeze", None, context=GATE_CONTEXTS["freeze"])
    forge.set_commit_status(sha, "success", "approved by alice", None, context=GATE_CONTEXTS["approval"])
    fake.statuses.append({"sha": sha, "context": "ci/lint", "state": "pending", "description": "", "target_url": ""})
    fake.statuses.append({"sha": sha, "context": "ci/lint", "state": "success", "description": "", "target_url": ""})
    fake.check_runs += [
        {"sha": sha, "name": "build", "status": "completed", "conclusion": "failure", "html_url": "https://x/1"},
        {"sha": sha, "name": "e2e", "status": "in_progress", "conclusion": None},
        {"sha": sha, "name": "docs", "status": "completed", "conclusion": "skipped"},
        {"sha": "e" * 40, "name": "elsewhere", "status": "completed", "conclusion": "failure"},
    ]
    checks = forge.checks(sha)
    assert sorted((c.name, c.state) for c in checks) == [
        ("build", "failure"),
        ("ci/lint", "success"),
        ("docs", "success"),
        ("e2e", "pending"),
    ]
    assert next(c for c in checks if c.name == "build").url == "https://x/1"
    assert checks_summary(checks) == "1 failing (build), 1 pending (e2e), 2 passed"
    assert [s["context"] for s in fake.statuses[:2]] == ["gitops-promote/freeze", "gitops-promote/approval"]
    assert {"repos/get-combined-status-for-ref", "checks/list-for-ref", "repos/create-commit-status"} <= set(
        server.calls
    )


def test_the_graphql_endpoint_of_github_and_of_enterprise_server() -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://git.example.com/api/v3") == "https://git.example.com/api/graphql"


def test_the_api_root_of_github_and_of_enterprise_server() -> None:
    assert api_root("https://github.com/acme/gitops.git") == "https://api.github.com"
    assert api_root("https://git.example.com/acme/gitops") == "https://git.example.com/api/v3"
