"""Promotions through pull requests on a real Gitea (sandbox/gitea.py): the flows open the pull request, wait
for its merge (in the process here; suspended in tests/flows/test_pull_requests_deployed.py), verify the merge
commit against the session's API server, and report back on the forge."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.gitea import ADMIN, Gitea
from sandbox.world import FORGE_TOKEN_ENV, SandboxApp, SandboxWorld, git
from tasks import evidence
from tests.conftest import unique
from tests.flows.test_flows import InThread, notes

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.gitea, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def forge(gitea: Gitea, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gitea]:
    monkeypatch.setenv(FORGE_TOKEN_ENV, gitea.token)
    monkeypatch.setenv("PROMOTE_PULL_REQUEST_POLL_SECONDS", "1")
    yield gitea


def forge_app(world: SandboxWorld, forge: Gitea, name: str, **kwargs: Any) -> SandboxApp:
    app = world.create_app(unique(name), forge=forge, **kwargs)
    deadline = time.monotonic() + 300  # the simulated controllers first roll out v1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.commit_change("feature: faster checkout")
    return app


def repo_api(app: SandboxApp) -> str:
    return f"/repos/{ADMIN}/{app.name}"


def wait_for_pull_request(forge: Gitea, app: SandboxApp, state: str = "open", timeout: float = 240) -> dict[str, Any]:
    """The app's only pull request once it is in ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pulls = forge.api("GET", f"{repo_api(app)}/pulls?state=all")
        if pulls and pulls[0]["state"] == state:
            return dict(pulls[0])
        time.sleep(0.3)
    raise AssertionError(f"no pull request of {app.name} was {state} within {timeout}s")


def merge(forge: Gitea, app: SandboxApp, number: int, style: str = "merge") -> None:
    forge.api("POST", f"{repo_api(app)}/pulls/{number}/merge", {"Do": style})


def statuses(forge: Gitea, app: SandboxApp, sha: str) -> list[dict[str, Any]]:
    return list(forge.api("GET", f"{repo_api(app)}/statuses/{sha}"))


def wait_for_status(forge: Gitea, app: SandboxApp, sha: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s["status"] == state for s in statuses(forge, app, sha)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{sha[:12]} got no {state} status within {timeout}s: {statuses(forge, app, sha)}")


@pytest.mark.parametrize("style", ["merge", "squash", "rebase"])
def test_production_through_a_pull_request_is_verified_at_the_merge(
    world: SandboxWorld, forge: Gitea, style: str
) -> None:
    app = forge_app(world, forge, "pr", approval=False)
    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    main_before = git(app.origin, "rev-parse", "main")

    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    # Opened with the plan in its body, from the promotion's own branch; main itself was not written.
    assert pr["head"]["ref"] == f"promote/{app.name}/production/v1.0.1"
    assert pr["base"]["ref"] == "main"
    assert "v1.0.0" in pr["body"] and "v1.0.1" in pr["body"] and "feature: faster checkout" in pr["body"]
    assert f"apps/production/{app.name}.yaml" in pr["body"]  # the file diff
    assert git(app.origin, "rev-parse", "main") == main_before
    wait_for_status(forge, app, pr["head"]["sha"], "pending")

    merge(forge, app, pr["number"], style)
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["pull_request"] == pr["html_url"]
    assert report["merged_by"] == ADMIN

    merged = wait_for_pull_request(forge, app, "closed")
    assert merged["merged"] and merged["merge_commit_sha"]
    tip = git(app.origin, "rev-parse", "main")
    assert "targetRevision: v1.0.1" in git(app.origin, "show", f"{tip}:apps/production/{app.name}.yaml")
    combined = forge.api("GET", f"{repo_api(app)}/commits/{tip}/status")  # the newest status of each context
    assert combined["state"] == "success", combined
    assert combined["statuses"][0]["context"] == "gitops-promote"
    assert combined["statuses"][0]["target_url"].startswith(os.environ["PREFECT_UI_URL"])
    comments = forge.api("GET", f"{repo_api(app)}/issues/{pr['number']}/comments")
    assert any("Verified" in c["body"] and "production" in c["body"] for c in comments)
    promoted = evidence.find(notes(app, "v1.0.1-rc1"), "promoted", app.name, "production", "v1.0.1")
    assert promoted is not None
    assert promoted.details["pull_request"] == f"#{pr['number']} {pr['html_url']}"
    assert promoted.details["merged_by"] == ADMIN


def test_a_pull_request_closed_unmerged_ends_the_run_and_changes_nothing(world: SandboxWorld, forge: Gitea) -> None:
    app = forge_app(world, forge, "prclosed", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    main_before = git(app.origin, "rev-parse", "main")
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    forge.api("PATCH", f"{repo_api(app)}/pulls/{pr['number']}", {"state": "closed"})
    state = run.join(timeout=300)
    assert state.is_failed()
    assert f"pull request #{pr['number']} was closed without merging" in str(state.message)
    assert git(app.origin, "rev-parse", "main") == main_before
    assert evidence.find(notes(app, "v1.0.1-rc1"), "promoted", app.name, "production", "v1.0.1") is None
