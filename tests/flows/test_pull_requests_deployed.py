"""Promotions through pull requests as deployments run them: a process worker, the run suspended while the pull
request is open (no worker held), resumed by ``promote receive`` on Gitea's webhook, or by the sweeper when no
webhook arrives. Real Gitea, real Prefect server and worker, the session's API server."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from flows.promote_rc import promote_rc
from flows.pullrequest_sweeper import pull_request_sweeper
from sandbox.gitea import ADMIN, Gitea
from sandbox.world import SandboxApp, SandboxWorld, git
from tests.support.deployedruns import left_suspension, suspended_run, wait_final, wait_for
from tests.support.flowruns import ARTIFACTS, read_run
from tests.support.forgehost import hosted_app
from tests.support.giteaflows import merge, repo_api, touch_production_on_main, wait_for_pull_request
from webhooks.receiver import Debouncer, Receiver, serve

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.gitea, pytest.mark.usefixtures("prefect_api")]

SECRET = "pull-request-webhook-secret-for-tests"


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    got = Receiver(lambda: [], {"gitea": SECRET}, Debouncer(lambda *args: None, seconds=0.1))
    server = serve(got, "127.0.0.1", 0)
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def waiting_for_its_pull_request(gitea: Gitea, app: SandboxApp) -> tuple[UUID, dict[str, Any]]:
    """promote-rc, then promote-production as a deployment run, suspended while its pull request is open (the
    worker is free): the run's id and the pull request."""
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    run_id = suspended_run(app.pipeline_file)
    wait_for(run_id, "Suspended")
    return run_id, wait_for_pull_request(gitea, app)


def note(line: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "pull-request-resume.txt").open("a") as out:
        out.write(line + "\n")


def test_a_suspended_promotion_is_resumed_by_the_merge_webhook(
    forge: Gitea,
    world: SandboxWorld,
    worker: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    got, url = receiver
    app = hosted_app(world, forge, "prhook", approval=False)
    forge.api(
        "POST",
        f"{repo_api(app)}/hooks",
        {
            "type": "gitea",
            "active": True,
            "events": ["pull_request"],
            "config": {"url": f"{url}/gitea", "content_type": "json", "secret": SECRET},
        },
    )
    run_id, pr = waiting_for_its_pull_request(forge, app)

    # A delivery without the right signature is refused before anything is read; the run stays suspended.
    clone_url = f"{forge.url}/{ADMIN}/{app.name}.git"
    body = json.dumps(
        {
            "action": "closed",
            "number": pr["number"],
            "pull_request": {"number": pr["number"], "merged": True},
            "repository": {"clone_url": clone_url},
        }
    ).encode()
    headers = {"X-Gitea-Event": "pull_request", "Content-Type": "application/json"}
    forged = httpx.post(f"{url}/gitea", content=body, headers={**headers, "X-Gitea-Signature": "0" * 64})
    assert forged.status_code == 401
    assert any("bad signature" in reason for reason in got.refused)
    time.sleep(1)
    assert read_run(run_id).state.name == "Suspended"
    # Signed but untrue ("merged" while it is open, as a leaked secret could send): the run wakes, asks Gitea
    # itself, and goes back to waiting; main is not touched.
    main_before = git(app.origin, "rev-parse", "main")
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    nudged = httpx.post(f"{url}/gitea", content=body, headers={**headers, "X-Gitea-Signature": signature})
    assert nudged.status_code == 202, nudged.text
    left_suspension(run_id)
    wait_for(run_id, "Suspended")
    assert git(app.origin, "rev-parse", "main") == main_before

    merge(forge, app, pr["number"])
    seconds = left_suspension(run_id)
    note(f"webhook: merged -> resumed in {seconds:.2f}s")
    wait_final(run_id)


def test_without_a_webhook_the_sweeper_resumes_the_promotion(
    forge: Gitea,
    world: SandboxWorld,
    worker: dict[str, str],
) -> None:
    app = hosted_app(world, forge, "prpoll", approval=False)
    run_id, pr = waiting_for_its_pull_request(forge, app)
    quiet = pull_request_sweeper()  # still open: nothing resumed
    assert quiet["looked_at"] >= 1 and read_run(run_id).state.name == "Suspended"
    merge(forge, app, pr["number"])
    began = time.monotonic()
    swept = pull_request_sweeper()
    assert swept["resumed"] >= 1
    note(f"sweeper: merged -> resumed in {time.monotonic() - began + left_suspension(run_id):.2f}s (one round)")
    wait_final(run_id)


def test_a_base_that_moved_under_a_waiting_pull_request_gets_the_change_made_again(
    forge: Gitea,
    world: SandboxWorld,
    worker: dict[str, str],
) -> None:
    """Someone changes the same line on main while the run waits: Gitea can no longer merge the pull request;
    the sweeper resumes the run, which makes the change again on main's new tip (its own commit only) and waits
    again; the pull request merges."""
    app = hosted_app(world, forge, "prmoved", approval=False)
    run_id, pr = waiting_for_its_pull_request(forge, app)
    moved = touch_production_on_main(app)
    deadline = time.monotonic() + 120
    while forge.api("GET", f"{repo_api(app)}/pulls/{pr['number']}").get("mergeable") is not False:
        assert time.monotonic() < deadline, "Gitea never saw the conflict"
        time.sleep(0.5)
    assert pull_request_sweeper()["resumed"] >= 1
    head = pr["head"]["ref"]
    deadline = time.monotonic() + 240
    while git(app.origin, "rev-parse", f"{head}^") != moved:
        assert time.monotonic() < deadline, "the change was not made again on main's new tip"
        time.sleep(0.5)
    wait_for(run_id, "Suspended")  # waiting again, for the same pull request
    assert len(forge.api("GET", f"{repo_api(app)}/pulls?state=all")) == 1
    merge(forge, app, pr["number"])
    assert pull_request_sweeper()["resumed"] >= 1
    wait_final(run_id)
