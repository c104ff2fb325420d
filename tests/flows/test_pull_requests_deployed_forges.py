"""Contract tests of promotions through pull requests on GitHub and GitLab as deployments run them: a process
worker, the run suspended while the pull request is open (no worker held), then resumed by ``promote receive`` on
GitHub's signed webhook or by the sweeper asking GitLab, and verified at the merge. The forges' APIs are the
contract servers of tests/support/githubcontract.py and gitlabcontract.py (every request checked against the
published description), the repositories real Git over loopback HTTP; real Prefect server and worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.promote_rc import promote_rc
from flows.pullrequest_sweeper import pull_request_sweeper
from pipeline.load import load_pipeline
from sandbox.world import FORGE_TOKEN_ENV, SandboxWorld, git
from tests.support.deployedruns import left_suspension, suspended_run, wait_final
from tests.support.deployedruns import wait_for as wait_for_state
from tests.support.flowruns import read_run
from tests.support.forgehost import hosted_app, wait_for
from tests.support.githubcontract import GitHubHost, serve_github_host
from tests.support.gitlabcontract import GitLabHost, serve_gitlab_host
from webhooks.receiver import Debouncer, Receiver, serve

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

SECRET = "github-webhook-secret-for-tests"


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubHost]:
    token = "ghp_" + secrets.token_hex(18)
    monkeypatch.setenv(FORGE_TOKEN_ENV, token)  # before the worker: its runs read it
    with serve_github_host(token, tmp_path / "github") as host:
        yield host
        assert host.server.violations == [], host.server.violations


@pytest.fixture
def gitlab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitLabHost]:
    token = "glpat-" + secrets.token_hex(10)
    monkeypatch.setenv(FORGE_TOKEN_ENV, token)
    with serve_gitlab_host(token, tmp_path / "gitlab") as host:
        yield host
        assert host.server.violations == [], host.server.violations


def test_contract_a_suspended_promotion_is_resumed_by_github_s_merge_webhook(
    github: GitHubHost,
    world: SandboxWorld,
    worker: dict[str, str],
    tmp_path: Path,
) -> None:
    got = Receiver(lambda: [], {"github": SECRET}, Debouncer(lambda *args: None, seconds=0.1))
    server = serve(got, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        app = hosted_app(world, github, "ghdeploy", approval=False)
        assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
        run_id = suspended_run(app.pipeline_file)
        wait_for_state(run_id, "Suspended")
        fake = github.fake
        number = next(n for n, p in fake.pulls.items() if p["repo"] == app.name)
        merge_commit = github.merge(app.name, number, tmp_path / "reviewer")
        # GitHub's pull_request event, closed and merged, signed with the webhook's secret.
        body = json.dumps(
            {
                "action": "closed",
                "number": number,
                "pull_request": {"number": number, "merged": True},
                "repository": {"clone_url": load_pipeline(app.pipeline_file).repository.url},
            }
        ).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": signature}
        answer = httpx.post(f"{url}/github", content=body, headers={**headers, "Content-Type": "application/json"})
        assert answer.status_code == 202, answer.text
        left_suspension(run_id)
        wait_final(run_id)
    finally:
        server.shutdown()
        server.server_close()
    final = [s for s in fake.statuses if s["sha"] == merge_commit]
    assert final and final[-1]["state"] == "success" and final[-1]["context"] == "gitops-promote/verification"
    assert "targetRevision: v1.0.1" in git(app.origin, "show", f"{merge_commit}:apps/production/{app.name}.yaml")


def test_contract_without_a_webhook_the_sweeper_asks_gitlab_and_resumes_the_promotion(
    gitlab: GitLabHost,
    world: SandboxWorld,
    worker: dict[str, str],
    tmp_path: Path,
) -> None:
    app = hosted_app(world, gitlab, "gldeploy", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run_id = suspended_run(app.pipeline_file)
    wait_for_state(run_id, "Suspended")
    fake, project = gitlab.fake, f"acme/{app.name}"
    iid = wait_for("a merge request", lambda: next((i for p, i in fake.merge_requests if p == project), 0))
    quiet = pull_request_sweeper()  # still open: nothing resumed
    assert quiet["looked_at"] >= 1 and read_run(run_id).state.name == "Suspended"
    merge_commit = gitlab.merge(app.name, iid, tmp_path / "reviewer")
    began = time.monotonic()
    assert pull_request_sweeper()["resumed"] >= 1
    assert left_suspension(run_id) < 120 + (time.monotonic() - began)
    wait_final(run_id)
    final = [s for s in fake.statuses if s["sha"] == merge_commit]
    assert final and final[-1]["state"] == "success" and final[-1]["name"] == "gitops-promote/verification"
    assert [body for n, body in fake.notes if n == iid and "Verified" in body]
