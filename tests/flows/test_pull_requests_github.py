"""Contract tests of promotions through pull requests on GitHub: the same flows as on the real Gitea
(tests/flows/test_pull_requests.py), with the repository served over loopback Git HTTP and GitHub's API a contract
server built from GitHub's published description (tests/support/githubcontract.py), which refuses any request that
breaks it. The flows open the pull request, wait for its merge, verify the merge commit against the session's API
server and report back as a commit status and a comment."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.world import FORGE_TOKEN_ENV, SandboxWorld, git
from tasks import evidence
from tasks.forges.githubapp import REFRESH_BEFORE
from tests.support.flowruns import InThread, notes
from tests.support.forgehost import hosted_app, wait_for
from tests.support.githubcontract import GitHubHost, serve_github_host

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitHubHost]:
    token = "ghp_" + secrets.token_hex(18)
    monkeypatch.setenv(FORGE_TOKEN_ENV, token)
    monkeypatch.setenv("PROMOTE_PULL_REQUEST_POLL_SECONDS", "1")
    with serve_github_host(token, tmp_path / "github") as host:
        yield host
        assert host.server.violations == [], host.server.violations


def test_contract_production_through_a_github_pull_request_is_verified_at_the_merge(
    world: SandboxWorld, github: GitHubHost, tmp_path: Path
) -> None:
    app = hosted_app(world, github, "gh", approval=False)
    assert "provider: github" in app.pipeline_file.read_text()
    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    main_before = git(app.origin, "rev-parse", "main")

    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    fake = github.fake
    number = wait_for("a pull request", lambda: next((n for n, p in fake.pulls.items() if p["repo"] == app.name), 0))
    pull = fake.pulls[number]
    assert (pull["head"], pull["base"]) == (f"promote/{app.name}/production/v1.0.1", "main")
    assert "v1.0.0" in pull["body"] and "v1.0.1" in pull["body"] and "feature: faster checkout" in pull["body"]
    assert pull["head_sha"] == git(app.origin, "rev-parse", f"refs/heads/{pull['head']}")
    assert git(app.origin, "rev-parse", "main") == main_before  # main itself was not written
    wait_for("the freeze gate's status", lambda: any(s["context"] == "gitops-promote/freeze" for s in fake.statuses))

    # The pull request's CI (a GitHub Actions check run) fails: the evidence comment says which.
    fake.check_runs.append({"sha": pull["head_sha"], "name": "build", "status": "completed", "conclusion": "failure"})
    wait_for("the failing check in the comment", lambda: any("1 failing (build)" in b for _, b in fake.comments))
    fake.check_runs[-1]["conclusion"] = "success"

    merge_commit = github.merge(app.name, number, tmp_path / "reviewer")
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["pull_request"] == f"https://github.com/acme/{app.name}/pull/{number}"
    assert report["merged_by"] == "octocat"  # GitHub's example user, as the stand-in answers

    assert "targetRevision: v1.0.1" in git(app.origin, "show", f"{merge_commit}:apps/production/{app.name}.yaml")
    final = [s for s in fake.statuses if s["sha"] == merge_commit]
    assert final and final[-1]["state"] == "success" and final[-1]["context"] == "gitops-promote/verification", (
        fake.statuses
    )
    assert [body for n, body in fake.comments if n == number and "Verified" in body and "production" in body]
    assert len(fake.comments) == 1, fake.comments  # one evidence comment, updated in place
    promoted = evidence.find(notes(app, "v1.0.1-rc1"), "promoted", app.name, "production", "v1.0.1")
    assert promoted is not None
    assert promoted.details["pull_request"] == f"#{number} https://github.com/acme/{app.name}/pull/{number}"
    assert {"pulls/list", "pulls/create", "pulls/get", "repos/create-commit-status", "issues/create-comment"} <= set(
        github.server.calls
    )


def test_contract_auto_merge_on_github_is_asked_for_then_the_merge_is_verified(
    world: SandboxWorld, github: GitHubHost, tmp_path: Path
) -> None:
    app = hosted_app(world, github, "gha", approval=False)
    text = app.pipeline_file.read_text()
    app.pipeline_file.write_text(
        text.replace("      provider: github", "      provider: github\n      auto_merge: true")
    )
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    fake = github.fake
    number = wait_for("auto-merge to be asked for", lambda: next(iter(fake.auto_merge), 0))
    assert fake.auto_merge == {number: None}  # the repository's merge method: a tag pipeline has no need of one
    github.merge(app.name, number, tmp_path / "checks-passed")  # what GitHub does once the required checks pass
    state = run.join(timeout=300)
    assert state.is_completed(), state.message


def test_contract_a_github_app_s_installation_tokens_push_and_open_the_pull_request(
    world: SandboxWorld, github: GitHubHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """repository.credentials.github_app instead of a personal token: Git pushes and the pull request's API calls
    carry installation tokens minted from the app's JWT, refreshed as they near their expiry."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    fake = github.fake
    fake.app = ("424242", 7001, key.public_key())
    fake.token_seconds = REFRESH_BEFORE - 30  # each token is due for replacement at once: every use asks anew
    app = hosted_app(world, github, "ghapp", approval=False)
    personal = f"""
  credentials:
    token_env: {FORGE_TOKEN_ENV}
    username: x-access-token"""
    text = app.pipeline_file.read_text()
    assert personal in text
    app.pipeline_file.write_text(
        text.replace(
            personal,
            f"""
  credentials:
    github_app:
      app_id: "424242"
      installation_id: 7001
      private_key: {{env: PROMOTE_TEST_APP_KEY}}
      api_url: {fake.url}""",
        )
    )
    monkeypatch.setenv("PROMOTE_TEST_APP_KEY", pem.decode())
    monkeypatch.delenv(FORGE_TOKEN_ENV)  # the personal token is gone: only the app's tokens can work
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    number = wait_for("a pull request", lambda: next((n for n, p in fake.pulls.items() if p["repo"] == app.name), 0))
    merge_commit = github.merge(app.name, number, tmp_path / "reviewer")
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    assert "targetRevision: v1.0.1" in git(app.origin, "show", f"{merge_commit}:apps/production/{app.name}.yaml")
    assert len(fake.jwt_claims) >= 3, fake.jwt_claims  # the tag push, the branch push, the API calls: each anew
    assert {claims["iss"] for claims in fake.jwt_claims} == {"424242"}
