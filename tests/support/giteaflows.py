"""Pull requests on the real Gitea as the flow tests drive them (tests/support/forgehost.py puts an app on the
forge): its pull request, a merge by each method, a change on main under an open pull request."""

from __future__ import annotations

import time
from typing import Any

from sandbox.gitea import ADMIN, Gitea, GiteaUnavailableError
from sandbox.world import SandboxApp, git


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


def touch_production_on_main(app: SandboxApp) -> str:
    """Someone else changes production's Application file on main, on the line a promotion writes (so an open
    pull request of it no longer merges); main's new commit."""
    git(app.workdir, "fetch", "--quiet", "origin")
    git(app.workdir, "checkout", "--quiet", "-B", "main", "origin/main")
    path = app.workdir / "apps" / "production" / f"{app.name}.yaml"
    path.write_text(path.read_text().replace("targetRevision: v1.0.0", "targetRevision: v1.0.0 "))
    git(app.workdir, "commit", "--quiet", "-am", "ops: touch production")
    git(app.workdir, "push", "--quiet", "origin", "HEAD:main")
    return git(app.origin, "rev-parse", "main")


def merge(forge: Gitea, app: SandboxApp, number: int, style: str = "merge", timeout: float = 120) -> None:
    """Merge as a reviewer would. Gitea checks a pull request's mergeability in the background after it is
    opened or updated, and answers 405 "Please try again later" until it has: so does a person's click."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            forge.api("POST", f"{repo_api(app)}/pulls/{number}/merge", {"Do": style})
            return
        except GiteaUnavailableError as exc:
            if "HTTP 405" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
