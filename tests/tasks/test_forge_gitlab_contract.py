"""Contract tests of the GitLab client (tasks/forges/gitlab.py). GitLab has no local server and no published,
installable API description covering merge requests (npm and PyPI hold none; GitLab's own Swagger 2.0 file is not
packaged and lacks notes), so requests are checked against tests/data/gitlab/merge-requests.openapi.json, written
from GitLab's API documentation with each operation citing its page (tests/support/gitlabcontract.py). A client
that drifts from the documented shapes fails here."""

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
from tasks.forges.gitlab import GitLabForge
from tests.support.gitlabcontract import PROJECT, FakeGitLab, serve_gitlab
from tests.support.openapi import Answer, ContractServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glpat-" + "y" * 20


@pytest.fixture
def gitlab() -> Iterator[tuple[FakeGitLab, ContractServer]]:
    with serve_gitlab(TOKEN) as served:
        yield served
        assert served[1].violations == [], served[1].violations


def client(fake: FakeGitLab, *, token: str = TOKEN, timeout: float = 20.0) -> GitLabForge:
    return GitLabForge(fake.url, PROJECT, token, token_hint="environment variable GITLAB_TOKEN", timeout=timeout)


def test_contract_open_find_reuse_and_merged(gitlab: tuple[FakeGitLab, ContractServer]) -> None:
    fake, server = gitlab
    forge = client(fake)
    head = "promote/web/production/1.2.3"
    assert forge.find_pull_request(head, "main") is None
    opened = forge.open_pull_request(
        head, "main", "promote web 1.2.3", "the plan", labels=["promotion"], reviewers=["alice", "bob"]
    )
    assert (opened.number, opened.state, opened.head, opened.base) == (1, "open", head, "main")
    assert opened.url == f"https://gitlab.example.com/{PROJECT}/-/merge_requests/1"
    stored = fake.merge_requests[(PROJECT, 1)]
    assert (stored["labels"], stored["reviewer_ids"], stored["description"]) == (["promotion"], [7, 8], "the plan")
    found = forge.find_pull_request(head, "main")
    assert found is not None and found.number == 1 and found.mergeable is True
    with pytest.raises(ForgeRefusedError, match=r"HTTP 409: .*Another open merge request already exists"):
        forge.open_pull_request(head, "main", "again", "")
    forge.set_commit_status("a" * 40, "pending", "verifying", "http://prefect/run/1")
    forge.set_commit_status("a" * 40, "failure", "failed", None)
    forge.comment(1, f"{EVIDENCE_MARKER}\nwaiting")
    fake.notes.append((1, "a reviewer's note"))  # not marked: left alone
    forge.comment(1, f"{EVIDENCE_MARKER}\nverified")  # the marked one, updated in place
    fake.merge(PROJECT, 1, merge_commit="c" * 40)
    merged = forge.pull_request(1)
    author = fake.description.example("mergeRequests/get", "200")["author"]["username"]  # the docs' example user
    assert (merged.state, merged.merge_commit, merged.merged_by) == ("merged", "c" * 40, author)
    assert forge.find_pull_request(head, "main") == merged
    assert [(s["state"], s["name"]) for s in fake.statuses] == [
        ("pending", "gitops-promote"),
        ("failed", "gitops-promote"),
    ]
    assert fake.notes == [
        (1, f"{EVIDENCE_MARKER}\nverified"),
        (1, "a reviewer's note"),
    ]
    assert set(server.calls) == {
        "mergeRequests/list",
        "mergeRequests/get",
        "mergeRequests/create",
        "labels/get",
        "users/list",
        "commits/setStatus",
        "notes/list",
        "notes/create",
        "notes/update",
    }


@pytest.mark.parametrize(
    ("merge_commit", "squash_commit", "expected"),
    [(None, "d" * 40, "d" * 40), (None, None, "e" * 40)],
    ids=["squash-without-merge-commit", "fast-forward"],
)
def test_contract_squash_and_fast_forward_merges_name_the_commit_on_the_base(
    gitlab: tuple[FakeGitLab, ContractServer], merge_commit: str | None, squash_commit: str | None, expected: str
) -> None:
    fake, _ = gitlab
    iid = fake.add(PROJECT, "promote/x", sha="e" * 40)
    fake.merge(PROJECT, iid, merge_commit=merge_commit, squash_commit=squash_commit)
    assert client(fake).pull_request(iid).merge_commit == expected


def test_contract_a_missing_label_or_reviewer_is_named_and_nothing_is_opened(
    gitlab: tuple[FakeGitLab, ContractServer],
) -> None:
    fake, _ = gitlab
    with pytest.raises(ForgeRefusedError, match=r"has no label 'released'"):
        client(fake).open_pull_request("promote/x", "main", "t", "b", labels=["released"])
    with pytest.raises(ForgeRefusedError, match=r"no user 'carol' \(write\.reviewers\)"):
        client(fake).open_pull_request("promote/x", "main", "t", "b", reviewers=["alice", "carol"])
    assert fake.merge_requests == {}


def test_contract_auto_merge_sets_the_merge_request_to_merge_when_its_checks_pass(
    gitlab: tuple[FakeGitLab, ContractServer],
) -> None:
    fake, server = gitlab
    iid = fake.add(PROJECT, "promote/x", sha="f" * 40)
    forge = client(fake)
    forge.enable_auto_merge(forge.pull_request(iid), merge_commit=True)
    assert fake.merge_requests[(PROJECT, iid)]["auto_merge"] is True
    assert "mergeRequests/merge" in server.calls
    # A GitLab before 17.11 knows the option as merge_when_pipeline_succeeds: it too waits for the pipeline
    # instead of merging at once.
    fake.version = (17, 10)
    older = fake.add(PROJECT, "promote/y", sha="a" * 40)
    forge.enable_auto_merge(forge.pull_request(older), merge_commit=True)
    assert fake.merge_requests[(PROJECT, older)]["auto_merge"] is True
    assert forge.pull_request(older).state == "open"


def test_contract_a_conflicting_merge_request_is_not_mergeable(gitlab: tuple[FakeGitLab, ContractServer]) -> None:
    fake, _ = gitlab
    iid = fake.add(PROJECT, "promote/x", detailed_merge_status="conflict")
    assert client(fake).pull_request(iid).mergeable is False


def test_contract_rate_limits_are_waited_out_within_the_deadline(gitlab: tuple[FakeGitLab, ContractServer]) -> None:
    fake, _ = gitlab
    reset = str(int(time.time()) + 2)
    fake.throttle = [
        Answer(429, {"message": "Retry later"}, {"Retry-After": "1"}),
        Answer(429, {"message": "Retry later"}, {"RateLimit-Reset": reset, "RateLimit-Remaining": "0"}),
    ]
    started = time.monotonic()
    assert client(fake).find_pull_request("promote/x", "main") is None
    assert time.monotonic() - started >= 1.0
    fake.throttle = [Answer(429, {"message": "Retry later"}, {"Retry-After": "900"})]
    with pytest.raises(TransientForgeError, match=r"HTTP 429, rate limited for 900s more"):
        client(fake, timeout=10).pull_request(1)


def test_contract_a_token_without_the_scope_is_named(gitlab: tuple[FakeGitLab, ContractServer]) -> None:
    fake, _ = gitlab
    fake.throttle = [
        Answer(
            403,
            {
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
            },
        )
    ]
    with pytest.raises(ForgeAuthError) as caught:
        client(fake).pull_request(1)
    message = str(caught.value)
    assert "GITLAB_TOKEN" in message and "api scope" in message and TOKEN not in message
    with pytest.raises(ForgeAuthError, match=r"HTTP 401"):
        client(fake, token="glpat-wrong").pull_request(1)


def test_a_gitlab_pipeline_in_a_subgroup_gets_the_gitlab_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.model import Pipeline
    from tasks.forges import forge_for

    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    text = (ROOT / "deployments" / "examples" / "pull-request-gitlab.yaml").read_text()
    pipeline = Pipeline.model_validate(yaml.safe_load(text))
    forge = forge_for(pipeline, pipeline.environments[-1])
    assert isinstance(forge, GitLabForge)
    assert (forge.api_url, forge.repository) == ("https://gitlab.example.com/api/v4", "platform/apps/app-gitops")


def test_contract_the_merge_request_s_own_checks_are_its_pipeline_s_jobs(
    gitlab: tuple[FakeGitLab, ContractServer],
) -> None:
    """The forge's checks on the head: the commit's statuses (CI jobs and external statuses), ours left out, a
    failed job that may fail left out too (it does not fail the pipeline)."""
    fake, server = gitlab
    forge = client(fake)
    sha = "d" * 40
    assert forge.checks(sha) == []
    forge.set_commit_status(sha, "success", "no freeze", None, context=GATE_CONTEXTS["freeze"])
    fake.jobs += [
        {"sha": sha, "name": "build", "status": "success", "allow_failure": False},
        {"sha": sha, "name": "test", "status": "failed", "allow_failure": False, "target_url": "https://x/2"},
        {"sha": sha, "name": "lint", "status": "failed", "allow_failure": True},
        {"sha": sha, "name": "deploy-review", "status": "manual", "allow_failure": False},
        {"sha": "e" * 40, "name": "elsewhere", "status": "failed", "allow_failure": False},
    ]
    checks = forge.checks(sha)
    assert sorted((c.name, c.state) for c in checks) == [
        ("build", "success"),
        ("deploy-review", "pending"),
        ("test", "failure"),
    ]
    assert checks_summary(checks) == "1 failing (test), 1 pending (deploy-review), 1 passed"
    assert fake.statuses[0]["name"] == "gitops-promote/freeze"
    assert {"commits/listStatuses", "commits/setStatus"} <= set(server.calls)
