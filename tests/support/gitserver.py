"""Real Git remotes for tests: bare repositories on disk, and one served over HTTP with basic auth
(:mod:`sandbox.gitserve`, re-exported here), so credential handling is exercised against real Git over a real
socket."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.gitserve import Outage, serve_git_over_http

__all__ = ["GIT_ENV", "Outage", "commit_file", "make_origin", "run_git", "serve_git_over_http"]

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run_git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_origin(root: Path, files: dict[str, str], branches: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A bare ``origin.git`` seeded with ``files`` on main, and a working clone ``seed`` for pushing changes."""
    origin = root / "origin.git"
    run_git(root, "init", "--bare", "--initial-branch=main", str(origin))
    seed = root / "seed"
    run_git(root, "clone", "--quiet", str(origin), str(seed))
    run_git(seed, "checkout", "--quiet", "-B", "main")
    for rel, content in files.items():
        path = seed / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    run_git(seed, "add", "-A")
    run_git(seed, "commit", "--quiet", "-m", "initial layout")
    run_git(seed, "push", "--quiet", "origin", "main")
    for branch in branches:
        run_git(seed, "push", "--quiet", "origin", f"main:refs/heads/{branch}")
    return origin, seed


def commit_file(seed: Path, rel: str, content: str, message: str, branch: str = "main") -> str:
    """Commit a change from the seed clone straight to origin (another person pushing)."""
    run_git(seed, "fetch", "--quiet", "origin")
    run_git(seed, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
    path = seed / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    run_git(seed, "add", rel)
    run_git(seed, "commit", "--quiet", "-m", message)
    run_git(seed, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
    return run_git(seed, "rev-parse", "HEAD")
