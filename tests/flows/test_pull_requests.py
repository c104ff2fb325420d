"""Promotions through pull requests on a real Gitea (sandbox/gitea.py): the flows open the pull request, wait
for its merge (in the process here; suspended in tests/flows/test_pull_requests_deployed.py), verify the merge
commit against the session's API server, and report back on the forge."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.gitea import ADMIN, Gitea
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tasks.forges.base import EVIDENCE_MARKER
from tests.support.flowruns import InThread, latest_board, notes
from tests.support.forgehost import hosted_app, wait_for
from tests.support.giteaflows import merge, repo_api, touch_production_on_main, wait_for_pull_request

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.gitea, pytest.mark.usefixtures("prefect_api")]


def wait_for_open_pull_request(forge: Gitea, app: SandboxApp, timeout: float = 240) -> dict[str, Any]:
    """The newest open pull request of the app, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pulls = forge.api("GET", f"{repo_api(app)}/pulls?state=open")
        if pulls:
            return dict(pulls[0])
        time.sleep(0.3)
    raise AssertionError(f"no pull request of {app.name} was open within {timeout}s")


def with_write_option(app: SandboxApp, line: str) -> None:
    """Add ``line`` (such as ``rollback: push``) to production's ``write:`` in the app's pipeline file."""
    text = app.pipeline_file.read_text()
    app.pipeline_file.write_text(text.replace("      provider: gitea", f"      provider: gitea\n      {line}"))


def statuses(forge: Gitea, app: SandboxApp, sha: str) -> list[dict[str, Any]]:
    return list(forge.api("GET", f"{repo_api(app)}/statuses/{sha}"))


def wait_for_status(forge: Gitea, app: SandboxApp, sha: str, state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(s["status"] == state for s in statuses(forge, app, sha)):
            return
        time.sleep(0.3)
    raise AssertionError(f"{sha[:12]} got no {state} status within {timeout}s: {statuses(forge, app, sha)}")


def wait_for_comment(forge: Gitea, app: SandboxApp, number: int, text: str, timeout: float = 120) -> str:
    """The evidence comment on pull request ``number`` once it says ``text``."""
    deadline = time.monotonic() + timeout
    bodies: list[str] = []
    while time.monotonic() < deadline:
        comments = forge.api("GET", f"{repo_api(app)}/issues/{number}/comments")
        bodies = [c["body"] for c in comments if c["body"].startswith(EVIDENCE_MARKER)]
        if bodies and text in bodies[0]:
            return str(bodies[0])
        time.sleep(0.3)
    raise AssertionError(f"the evidence comment on #{number} did not say {text!r} within {timeout}s: {bodies}")


def board_note(app: SandboxApp, environment: str, text: str) -> dict[str, str] | None:
    """The board artifact's row for ``environment`` when its note says ``text``."""
    _, rows = latest_board(app)
    row = next((r for r in rows if r["environment"] == environment), None)
    return row if row is not None and text in row["note"] else None


@pytest.mark.parametrize("style", ["merge", "squash", "rebase"])
def test_production_through_a_pull_request_is_verified_at_the_merge(
    world: SandboxWorld, forge: Gitea, style: str
) -> None:
    app = hosted_app(world, forge, "pr", approval=False)
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
    head = pr["head"]["sha"]
    # Each gate is a check of its own on the pull request; verification comes after the merge.
    wait_for_status(forge, app, head, "success")
    gates = {s["context"]: s["status"] for s in statuses(forge, app, head)}
    assert gates == {"gitops-promote/freeze": "success"}, gates  # no soak or approval gate here
    # The pull request's own CI fails: the promotion shows it where people look while it waits.
    ci = {"context": "ci/build", "description": "tests failed", "target_url": "https://ci.example/1"}
    forge.api("POST", f"{repo_api(app)}/statuses/{head}", {"state": "failure", **ci})
    comment = wait_for_comment(forge, app, pr["number"], "1 failing (ci/build)")
    assert "| checks |" in comment and "waiting" in comment
    board = dict(wait_for("the board's note", lambda: board_note(app, "production", "1 failing (ci/build)")))
    assert f"pull request #{pr['number']}" in board["note"], board
    forge.api("POST", f"{repo_api(app)}/statuses/{head}", {"state": "success", **ci})
    wait_for_comment(forge, app, pr["number"], "1 passed")

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
    verification = [s for s in combined["statuses"] if s["context"] == "gitops-promote/verification"]
    assert verification and verification[0]["target_url"].startswith(os.environ["PREFECT_UI_URL"]), combined
    if tip != head:  # the verification's outcome is on the pull request's head too, where its page shows it
        on_head = {
            s["context"]: s["status"] for s in forge.api("GET", f"{repo_api(app)}/commits/{head}/status")["statuses"]
        }
        assert on_head["gitops-promote/verification"] == "success", on_head
    comments = forge.api("GET", f"{repo_api(app)}/issues/{pr['number']}/comments")
    # One evidence comment, written while the pull request waited and updated in place as it was verified.
    evidence_comments = [c for c in comments if c["body"].startswith(EVIDENCE_MARKER)]
    assert len(evidence_comments) == 1, comments
    assert "Verified" in evidence_comments[0]["body"] and "production" in evidence_comments[0]["body"]
    assert f"merged by {ADMIN}" in evidence_comments[0]["body"]
    # The plan and the upstream evidence stay in it at every stage.
    assert "| plan | v1.0.0 -> v1.0.1 (rc v1.0.1-rc1), commit " in evidence_comments[0]["body"]
    assert "| upstream | verified in staging at " in evidence_comments[0]["body"]
    promoted = evidence.find(notes(app, "v1.0.1-rc1"), "promoted", app.name, "production", "v1.0.1")
    assert promoted is not None
    assert promoted.details["pull_request"] == f"#{pr['number']} {pr['html_url']}"
    assert promoted.details["merged_by"] == ADMIN


def test_a_pull_request_closed_unmerged_ends_the_run_and_changes_nothing(world: SandboxWorld, forge: Gitea) -> None:
    app = hosted_app(world, forge, "prclosed", approval=False)
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


def test_a_wrong_token_names_the_forge_and_the_variable(
    world: SandboxWorld, forge: Gitea, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = hosted_app(world, forge, "prtoken", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    # The Git token is the forge token here: give the forge API a wrong one of its own.
    with_write_option(app, "token: {env: PROMOTE_TEST_WRONG_FORGE_TOKEN}")
    monkeypatch.setenv("PROMOTE_TEST_WRONG_FORGE_TOKEN", "0" * 40)
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    message = str(state.message)
    assert "Gitea refused the token (HTTP 401)" in message, message
    assert "PROMOTE_TEST_WRONG_FORGE_TOKEN" in message and "0" * 40 not in message


def test_base_moved_under_an_open_pull_request_is_rebased_then_merged(world: SandboxWorld, forge: Gitea) -> None:
    app = hosted_app(world, forge, "prbase", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    first = wait_for_pull_request(forge, app)
    # Someone changes the same file on main meanwhile: the pull request no longer merges cleanly.
    moved = touch_production_on_main(app)
    path = app.workdir / "apps" / "production" / f"{app.name}.yaml"
    # A second promotion of the same version (a re-run, a resume) makes the change again on the new tip, on the
    # same branch and pull request, and pushes only over its own commit.
    from tasks.connections import connect
    from tasks.forges import forge_for
    from tasks.proposals import propose
    from tasks.strategies import strategy_for

    conn = connect(str(app.pipeline_file), lambda line: None)
    conn.repo.fetch()
    env = conn.pipeline.environment("production")
    cand = strategy_for(env).candidate(conn, env, None)
    again = propose(conn, forge_for(conn.pipeline, env), env, cand)
    assert again.pull_request is not None and again.pull_request.number == first["number"]
    assert git(app.origin, "rev-parse", f"{again.head}^") == moved  # made again on the moved main
    # Someone else's commit on the promotion's branch is never pushed over.
    git(app.workdir, "fetch", "--quiet", "origin")
    git(app.workdir, "checkout", "--quiet", "-B", "fix", f"origin/{again.head}")
    (app.workdir / "NOTE.md").write_text("reviewer's fix\n")
    git(app.workdir, "add", "NOTE.md")
    git(app.workdir, "commit", "--quiet", "-m", "review: note")
    git(app.workdir, "push", "--quiet", "origin", f"HEAD:{again.head}")
    git(app.workdir, "checkout", "--quiet", "-B", "main", "origin/main")
    path.write_text(path.read_text() + "# ops again\n")
    git(app.workdir, "commit", "--quiet", "-am", "ops: touch production again")
    git(app.workdir, "push", "--quiet", "origin", "HEAD:main")
    from tasks.gitrepo import ForeignCommitError

    with pytest.raises(ForeignCommitError, match=r"commit\(s\) this tool did not write .*review: note"):
        propose(conn, forge_for(conn.pipeline, env), env, cand)
    pr = forge.api("GET", f"{repo_api(app)}/pulls/{first['number']}")
    assert pr["head"]["sha"] == git(app.origin, "rev-parse", again.head)  # the reviewer's commit stands
    git(app.workdir, "fetch", "--quiet", "origin")
    git(app.workdir, "checkout", "--quiet", "-B", "fix", f"origin/{again.head}")
    git(app.workdir, "merge", "--quiet", "--no-edit", "-X", "ours", "origin/main")
    git(app.workdir, "push", "--quiet", "origin", f"HEAD:{again.head}")
    merge(forge, app, first["number"])
    state = run.join(timeout=300)
    assert state.is_completed(), state.message


@pytest.mark.parametrize("point", ["after-pull-request"])
def test_a_crash_right_after_the_pull_request_was_opened_repeats_nothing(
    world: SandboxWorld, forge: Gitea, point: str
) -> None:
    import subprocess
    import sys

    app = hosted_app(world, forge, "prcrash", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    code = (
        "from flows.promote_production import promote_production; "
        f"promote_production(pipeline_file={str(app.pipeline_file)!r})"
    )
    crashed = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PROMOTE_CRASH_AT": point},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert crashed.returncode == 86, crashed.stdout[-2000:] + crashed.stderr[-2000:]
    first = wait_for_pull_request(forge, app)
    head = first["head"]["sha"]
    assert statuses(forge, app, head) == []  # it died before saying anything on the forge
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    # The re-run finds the pull request and its branch: it reports on the same commit (its gates' checks),
    # opens and pushes nothing.
    wait_for_status(forge, app, head, "success")
    pulls = forge.api("GET", f"{repo_api(app)}/pulls?state=all")
    assert len(pulls) == 1 and pulls[0]["head"]["sha"] == head
    merge(forge, app, first["number"])
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    assert len(forge.api("GET", f"{repo_api(app)}/pulls?state=all")) == 1
    subjects = git(app.origin, "log", "--format=%s", "main").splitlines()
    assert sum(s.startswith(f"promote({app.name}): production") for s in subjects) == 1, subjects


def test_a_four_environment_chain_where_only_production_opens_a_pull_request(world: SandboxWorld, forge: Gitea) -> None:
    from flows.promote_environment import promote_environment

    app = hosted_app(world, forge, "prchain", strategy="chain", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    for env in ("qa", "staging"):
        state = promote_environment(pipeline_file=str(app.pipeline_file), environment=env, return_state=True)
        assert state.is_completed(), state.message
    assert forge.api("GET", f"{repo_api(app)}/pulls?state=all") == []  # pushed, as configured
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    assert pr["head"]["ref"] == f"promote/{app.name}/production/v1.0.1"
    merge(forge, app, pr["number"], "squash")
    state = run.join(timeout=300)
    assert state.is_completed(), state.message


@pytest.mark.parametrize("rollback", ["pull-request", "push"])
def test_a_failed_production_is_rolled_back_through_a_pull_request_or_pushed(
    world: SandboxWorld, forge: Gitea, rollback: str
) -> None:
    app = hosted_app(world, forge, "prback", approval=False)
    if rollback == "push":
        with_write_option(app, "rollback: push")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "v1.0.1"
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    merge(forge, app, pr["number"])
    if rollback == "pull-request":
        back = wait_for_open_pull_request(forge, app)
        assert back["head"]["ref"] == f"promote/{app.name}/production/rollback-v1.0.0", back
        assert "Roll back" in back["title"] and "Degraded" in back["body"]
        merge(forge, app, back["number"])
    state = run.join(timeout=300)
    assert state.is_failed()
    assert "ROLLED BACK to v1.0.0" in str(state.message), state.message
    assert "targetRevision: v1.0.0" in git(app.origin, "show", f"main:apps/production/{app.name}.yaml")
    merged = forge.api("GET", f"{repo_api(app)}/pulls/{pr['number']}")
    combined = forge.api("GET", f"{repo_api(app)}/commits/{merged['merge_commit_sha']}/status")
    assert combined["state"] == "failure", combined  # on the merge: what production ran, and failed
    rolled = evidence.find(notes(app, "v1.0.1-rc1"), "rolled-back", app.name, "production", "v1.0.1")
    assert rolled is not None and rolled.details == {"to": "v1.0.0"}
    comments = forge.api("GET", f"{repo_api(app)}/issues/{pr['number']}/comments")
    assert any("Failed" in c["body"] for c in comments), comments


def test_promoting_a_rolled_back_version_again_opens_a_new_pull_request(world: SandboxWorld, forge: Gitea) -> None:
    app = hosted_app(world, forge, "pragain", approval=False)
    with_write_option(app, "rollback: push")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "v1.0.1"
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    first = wait_for_pull_request(forge, app)
    merge(forge, app, first["number"])
    assert run.join(timeout=300).is_failed()  # rolled back (pushed)
    production.failure = None
    # The merged pull request of v1.0.1 belongs to the promotion that was rolled back: a new one is opened.
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    second = wait_for_open_pull_request(forge, app)
    assert second["number"] != first["number"] and second["head"]["ref"] == first["head"]["ref"], second
    merge(forge, app, second["number"])
    state = run.join(timeout=300)
    assert state.is_completed(), state.message


@pytest.mark.parametrize("strategy", ["overlay", "branch", "helm"])
def test_every_file_writing_strategy_goes_through_a_pull_request(
    world: SandboxWorld, forge: Gitea, strategy: str
) -> None:
    """kustomize-image, branch (the pull request carries the merge of the verified staging commit) and yaml-path,
    each squash-merged: what the forge made of the change is what gets verified."""
    app = hosted_app(world, forge, f"pr{strategy}", strategy=strategy, approval=False)
    app.release_image("1.1.0")  # on main's staging overlay or values, or on the staging branch
    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    main_before = git(app.origin, "rev-parse", "main")
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    assert pr["base"]["ref"] == "main" and pr["head"]["ref"].startswith(f"promote/{app.name}/production/")
    assert git(app.origin, "rev-parse", "main") == main_before
    merge(forge, app, pr["number"], "merge" if strategy == "branch" else "squash")
    state = run.join(timeout=300)
    assert state.is_completed(), state.message
    tip = git(app.origin, "rev-parse", "main")
    written = {
        "overlay": "overlays/production/kustomization.yaml",
        "helm": "envs/production/values.yaml",
        "branch": "deploy/kustomization.yaml",  # main's copy, brought by the merge of staging
    }[strategy]
    assert "1.1.0" in git(app.origin, "show", f"{tip}:{written}")
    combined = forge.api("GET", f"{repo_api(app)}/commits/{tip}/status")
    assert combined["state"] == "success", combined


def test_a_branch_environment_s_pull_request_squashed_is_refused_with_the_fix(
    world: SandboxWorld, forge: Gitea
) -> None:
    app = hosted_app(world, forge, "prsquash", strategy="branch", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    pr = wait_for_pull_request(forge, app)
    merge(forge, app, pr["number"], "squash")
    state = run.join(timeout=300)
    assert state.is_failed()
    assert "must be merged with a merge commit, not squashed or rebased" in str(state.message), state.message


def test_auto_merge_lets_gitea_merge_and_the_run_verifies_it(world: SandboxWorld, forge: Gitea) -> None:
    """``write.auto_merge``: the pull request is scheduled to merge when its required checks pass (this repository
    requires none, so Gitea merges it at once); nobody merges by hand, and the run verifies the merge."""
    app = hosted_app(world, forge, "auto", approval=False)
    with_write_option(app, "auto_merge: true")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_completed(), state.message
    assert wait_for_pull_request(forge, app, "closed")["merged"]
    assert state.result()["merged_by"] == ADMIN  # Gitea merged it, as the token's user
    tip = git(app.origin, "rev-parse", "main")
    assert "targetRevision: v1.0.1" in git(app.origin, "show", f"{tip}:apps/production/{app.name}.yaml")
