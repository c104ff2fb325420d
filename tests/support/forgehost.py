"""A forge without a local server, for the sandbox world (sandbox/world.py ForgeHost): the repositories served
over loopback Git HTTP at ``/<owner>/<name>.git`` (the token as the password), the API a contract server of the
forge's description (tests/support/githubcontract.py, gitlabcontract.py). A test merges as the forge's merge
button would: a merge commit on the base, pushed, then told to the stand-in."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.world import ForgeHost, SandboxApp, SandboxWorld
from tests.conftest import unique


class ServedForgeHost:
    provider = ""  # write.provider
    username = ""  # the user Git authenticates as
    owner = "acme"

    def __init__(self, git_url: str, git_root: Path, token: str) -> None:
        self.git_url, self.git_root, self.token = git_url.rstrip("/"), git_root, token

    @property
    def api_url(self) -> str:
        raise NotImplementedError

    def create_repository(self, name: str) -> str:
        path = self.repository_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True)
        return f"{self.git_url}/{self.owner}/{name}.git"

    def repository_path(self, name: str) -> Path:
        return self.git_root / self.owner / f"{name}.git"

    def push_url(self, clone_url: str) -> str:
        return clone_url.replace("http://", f"http://{self.username}:{self.token}@", 1)

    def merge_in_git(self, name: str, head: str, base: str, message: str, workdir: Path) -> str:
        """``head`` merged into ``base`` with a merge commit, pushed; the commit."""
        env = {"GIT_AUTHOR_NAME": "Reviewer", "GIT_AUTHOR_EMAIL": "reviewer@example.com", "PATH": os.environ["PATH"]}
        env |= {"GIT_COMMITTER_NAME": "Forge", "GIT_COMMITTER_EMAIL": "forge@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
        subprocess.run(["git", "clone", "--quiet", str(self.repository_path(name)), str(workdir)], check=True, env=env)
        for args in (
            ["checkout", "--quiet", base],
            ["merge", "--no-ff", "--quiet", "-m", message, f"origin/{head}"],
            ["push", "--quiet", "origin", f"HEAD:{base}"],
        ):
            subprocess.run(["git", *args], cwd=workdir, check=True, env=env, capture_output=True)
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, check=True, capture_output=True, text=True)
        return done.stdout.strip()


def hosted_app(world: SandboxWorld, forge: ForgeHost, name: str, **kwargs: Any) -> SandboxApp:
    """An app whose repository is on ``forge``, once the simulated controllers rolled out v1.0.0, with a change."""
    app = world.create_app(unique(name), forge=forge, **kwargs)
    deadline = time.monotonic() + 300  # the simulated controllers first roll out v1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.commit_change("feature: faster checkout")
    return app


def wait_for(what: str, check: Callable[[], Any], timeout: float = 240) -> Any:
    """``check()``'s first true answer, asked every 0.3 s for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what} did not happen within {timeout}s")
