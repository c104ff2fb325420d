"""Fixtures the flow tests share: a webhook receiver, the deployments with a process worker, and the real Gitea
with its token exported for the runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.gitea import Gitea
from sandbox.world import FORGE_TOKEN_ENV, SandboxWorld
from tests.support.flowruns import (
    ROOT,
    run,
)
from tests.support.processes import stop_group
from tests.support.webhook import Webhook, serve_webhook


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    hook = Webhook()
    with serve_webhook(hook) as base:
        yield hook, f"{base}/services/T0/B0/e2e-secret"


@pytest.fixture
def worker(world: SandboxWorld, tmp_path: Path, webhook: tuple[Webhook, str]) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "PROMOTE_E2E_WEBHOOK": webhook[1],  # flow runs inherit the worker's environment
        "PROMOTE_PROJECT_DIR": str(ROOT),
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PROMOTE_PIPELINE_ROOTS": str(tmp_path),  # deployment runs read pipeline files only under these
    }
    prefect = [sys.executable, "-m", "prefect"]
    created = run(*prefect, "work-pool", "create", "promote", "--type", "process", "--overwrite", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run(*prefect, "--no-prompt", "deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for flow in ("promote-rc", "promote-production", "promote-environment", "nightly", "rollback", "receiver"):
        assert f"{flow}/default" in deployed.stdout, deployed.stdout
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [*prefect, "worker", "start", "--pool", "promote"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield env
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture
def forge(gitea: Gitea, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gitea]:
    monkeypatch.setenv(FORGE_TOKEN_ENV, gitea.token)
    monkeypatch.setenv("PROMOTE_PULL_REQUEST_POLL_SECONDS", "1")
    yield gitea
