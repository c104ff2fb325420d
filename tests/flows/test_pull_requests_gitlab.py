"""Contract tests of promotions through merge requests on GitLab: the same flows as on the real Gitea, with the
project served over loopback Git HTTP and GitLab's API a contract server of its documented shapes
(tests/support/gitlabcontract.py), which refuses any request that breaks them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.world import FORGE_TOKEN_ENV, SandboxWorld, git
from tasks import evidence
from tests.support.flowruns import InThread, notes
from tests.support.forgehost import hosted_app, wait_for
from tests.support.gitlabcontract import GitLabHost, serve_gitlab_host

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def gitlab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitLabHost]:
    token = "glpat-" + secrets.token_hex(10)
    monkeypatch.setenv(FORGE_TOKEN_ENV, token)
    monkeypatch.setenv("PROMOTE_PULL_REQUEST_POLL_SECONDS", "1")
    with serve_gitlab_host(token, tmp_path / "gitlab") as host:
        yield host
        assert host.server.violations == [], host.server.violations


def test_contract_production_through_a_gitlab_merge_request_is_verified_at_the_merge(
    world: SandboxWorld, gitlab: GitLabHost, tmp_path: Path
) -> None:
    app = hosted_app(world, gitlab, "gl", approval=False)
    assert "provider: gitlab" in app.pipeline_file.read_text()
    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message

    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    fake, project = gitlab.fake, f"acme/{app.name}"
    iid = wait_for("a merge request", lambda: next((i for p, i in fake.merge_requests if p == project), 0))
    mr = fake.merge_requests[(project, iid)]
    assert (mr["source_branch"], mr["target_branch"]) == (f"promote/{app.name}/production/v1.0.1", "main")
    assert "v1.0.1" in mr["description"] and "feature: faster checkout" in mr["description"]
    assert mr["sha"] == git(app.origin, "rev-parse", f"refs/heads/{mr['source_branch']}")
    wait_for("the freeze gate's status", lambda: any(s["name"] == "gitops-promote/freeze" for s in fake.statuses))

    merge_commit = gitlab.merge(app.name, iid, tmp_path / "reviewer")
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    web_url = f"https://gitlab.example.com/{project}/-/merge_requests/{iid}"
    assert state.result()["pull_request"] == web_url
    final = [s for s in fake.statuses if s["sha"] == merge_commit]
    assert final and final[-1]["state"] == "success" and final[-1]["name"] == "gitops-promote/verification", (
        fake.statuses
    )
    assert [body for n, body in fake.notes if n == iid and "Verified" in body]
    assert len(fake.notes) == 1, fake.notes  # one evidence note, updated in place
    promoted = evidence.find(notes(app, "v1.0.1-rc1"), "promoted", app.name, "production", "v1.0.1")
    assert promoted is not None and promoted.details["pull_request"] == f"#{iid} {web_url}"
