"""The README's first command: the sandbox demo runs a whole nightly promotion and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.kube, pytest.mark.prefect]


def run_demo(*args: str) -> tuple[int, str]:
    """The demo as a user starts it: its own Prefect server and API server, none of the session's settings."""
    session = {"PROMOTE_CACHE_DIR", "PROMOTE_LOCK_TTL_SECONDS"}  # set by conftest; PROMOTE_KUBE_BIN_DIR stays
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in session}
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "--delay", "0.1", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def assert_promoted_and_cleaned_up(out: str, *, tags: bool = True) -> None:
    workspace = re.search(r"workspace: (\S+)", out)
    assert workspace, out[-4000:]
    assert "nightly run: Completed" in out
    if tags:
        assert re.search(r"tags in origin: +v1\.0\.0 v1\.0\.1-rc1 v1\.0\.1\b", out), out[-4000:]
    assert re.search(r"production runs: +\S*:1\.0\.1\b", out), out[-4000:]
    assert re.search(r"pods of Deployment shop-production/shop: Deployment shop: \d pods of ReplicaSet", out)
    assert "approvals given on your behalf: 1" in out
    assert f"cleaned up {workspace.group(1)}" in out and not Path(workspace.group(1)).exists()


@pytest.mark.real_controllers
@pytest.mark.parametrize(
    ("strategy", "controllers"),
    [
        (None, "the real Argo CD"),  # the README's first command as it stands: --strategy tag
        ("overlay", "the real Argo CD"),
        ("helm", "the real Argo CD"),
        ("chain", "the real Argo CD"),
        ("branch", "the real Flux"),
        ("image-policy", "the real Flux"),
    ],
    ids=["tag", "overlay", "helm", "chain", "branch", "image-policy"],
)
def test_sandbox_demo_on_the_real_controllers(real_cluster: object, strategy: str | None, controllers: str) -> None:
    """Every strategy's demo deployed by the real Argo CD or Flux. The demo starts a cluster of its own; the
    ``real_cluster`` fixture only makes sure the binaries are built (minutes on a fresh machine, more than a demo
    run's own timeout)."""
    returncode, out = run_demo(*(("--strategy", strategy) if strategy else ()))
    assert returncode == 0, out[-4000:]
    assert f"every environment runs 1.0.0, put there by {controllers}" in out, out[-4000:]
    assert_promoted_and_cleaned_up(out, tags=strategy in (None, "chain"))


def test_sandbox_demo_on_the_simulated_controllers() -> None:
    returncode, out = run_demo("--controllers", "simulated")
    assert returncode == 0, out[-4000:]
    assert "put there by" not in out
    assert_promoted_and_cleaned_up(out)


@pytest.mark.gitea
def test_sandbox_demo_through_a_pull_request_on_gitea(gitea: object) -> None:
    """``hack/sandbox --write pull-request``: production's change is a pull request on a real Gitea, merged by
    the demo on the user's behalf (the ``gitea`` fixture only makes sure the binary is built)."""
    returncode, out = run_demo("--write", "pull-request")
    assert returncode == 0, out[-4000:]
    assert "nightly run: Completed" in out
    assert "The sandbox demo MERGES IT ON YOUR BEHALF" in out
    assert "pull requests merged on your behalf: 1" in out
    assert re.search(r"production runs: +\S*:1\.0\.1\b", out), out[-4000:]
    assert re.search(r"last commit on main: Merge pull request .*promote/shop/production/v1\.0\.1", out), out[-4000:]
