"""Chains of four environments (dev -> qa -> staging -> production, tags all the way) through the real flows:
a real Prefect server, real Git origins, the real kube-apiserver with the simulated Argo CD."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from flows.nightly import nightly
from flows.promote_environment import promote_environment
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tests.conftest import unique

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]
ROOT = Path(__file__).resolve().parents[2]


def chain(world: SandboxWorld, name: str, **kwargs: Any) -> SandboxApp:
    app = world.create_app(unique(name), strategy="chain", **kwargs)
    deadline = time.monotonic() + 300  # the simulated controllers first roll out v1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.commit_change("feature: faster checkout")
    return app


def image(world: SandboxWorld, app: SandboxApp, env: str) -> str:
    deployment = client.AppsV1Api(world.api).read_namespaced_deployment(app.name, f"{app.name}-{env}")
    return str(deployment.spec.template.spec.containers[0].image).rsplit(":", 1)[1]


def revision(app: SandboxApp, env: str) -> str:
    text = git(app.origin, "show", f"main:apps/{env}/{app.name}.yaml")
    return next(line.split()[1] for line in text.splitlines() if "targetRevision:" in line)


def tags(app: SandboxApp) -> list[str]:
    return sorted(git(app.origin, "tag", "--list").split())


def verified_in(app: SandboxApp, env: str, tag: str) -> bool:
    commit = git(app.origin, "rev-parse", f"{tag}^{{commit}}")
    note = git(app.origin, "notes", "--ref=promote", "show", commit)
    return evidence.find(evidence.parse_records(note), "verified", app.name, env, tag) is not None


def test_four_environments_end_to_end_each_from_the_one_before(world: SandboxWorld) -> None:
    app = chain(world, "chain", approval=False)
    file = str(app.pipeline_file)
    assert promote_rc(pipeline_file=file, return_state=True).is_completed()
    assert (revision(app, "dev"), revision(app, "qa")) == ("v1.0.1-rc1", "v1.0.0")
    # staging before qa verified the rc: refused, nothing changed
    early = promote_environment(pipeline_file=file, environment="staging", return_state=True)
    assert early.is_failed() and "has passed verification in qa" in str(early.message)
    assert revision(app, "staging") == "v1.0.0"
    for env in ("qa", "staging"):
        state = promote_environment(pipeline_file=file, environment=env, return_state=True)
        assert state.is_completed(), state.message
        assert (state.result().version, state.result()["from"]) == ("v1.0.1-rc1", "v1.0.0")
        assert image(world, app, env) == "1.0.1-rc1" and verified_in(app, env, "v1.0.1-rc1")
    prod = promote_production(pipeline_file=file, return_state=True)
    assert prod.is_completed(), prod.message
    assert (prod.result().version, prod.result().rc) == ("v1.0.1", "v1.0.1-rc1")
    assert tags(app) == ["v1.0.0", "v1.0.1", "v1.0.1-rc1"]
    assert git(app.origin, "rev-parse", "v1.0.1^{commit}") == git(app.origin, "rev-parse", "v1.0.1-rc1^{commit}")
    assert [image(world, app, env) for env in ("dev", "qa", "staging", "production")] == [
        "1.0.1-rc1",
        "1.0.1-rc1",
        "1.0.1-rc1",
        "1.0.1",
    ]


def test_a_failure_in_the_third_environment_rolls_back_that_environment_only(world: SandboxWorld) -> None:
    app = chain(world, "chainfail", approval=False)
    staging = app.env("staging")
    staging.failure, staging.failure_ref = "degraded", "v1.0.1-rc1"
    file = str(app.pipeline_file)
    assert promote_rc(pipeline_file=file, return_state=True).is_completed()
    assert promote_environment(pipeline_file=file, environment="qa", return_state=True).is_completed()
    failed = promote_environment(pipeline_file=file, environment="staging", return_state=True)
    assert failed.is_failed()
    assert "staging did not come up at v1.0.1-rc1" in str(failed.message)
    assert "ROLLED BACK to v1.0.0" in str(failed.message)
    assert [revision(app, env) for env in ("dev", "qa", "staging", "production")] == [
        "v1.0.1-rc1",
        "v1.0.1-rc1",
        "v1.0.0",
        "v1.0.0",
    ]
    assert image(world, app, "staging") == "1.0.0" and image(world, app, "production") == "1.0.0"
    assert not verified_in(app, "staging", "v1.0.1-rc1")
    # production takes only what staging verified: nothing, so it refuses and stays untouched
    prod = promote_production(pipeline_file=file, return_state=True)
    assert prod.is_failed() and "has passed verification in staging" in str(prod.message)
    assert "v1.0.1" not in tags(app) and revision(app, "production") == "v1.0.0"


CRASH = """
import sys
from flows.promote_environment import promote_environment
state = promote_environment(pipeline_file=sys.argv[1], environment=sys.argv[2], return_state=True)
print("unexpectedly finished:", state)
"""


@pytest.mark.parametrize("point", ["after-write-back"])
def test_crash_and_rerun_in_the_middle_of_the_chain_repeats_nothing(world: SandboxWorld, point: str) -> None:
    app = chain(world, "chaincrash", approval=False)
    file = str(app.pipeline_file)
    assert promote_rc(pipeline_file=file, return_state=True).is_completed()
    env = {**os.environ, "PROMOTE_CRASH_AT": point, "PYTHONPATH": str(ROOT)}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH, file, "qa"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert crashed.returncode == 86, crashed.stdout + crashed.stderr  # killed at the crash point
    again = promote_environment(pipeline_file=file, environment="qa", return_state=True)
    assert again.is_completed(), again.message
    subjects = git(app.origin, "log", "--format=%s", "main").splitlines()
    assert subjects.count(f"promote({app.name}): qa v1.0.0 -> v1.0.1-rc1") == 1
    assert tags(app) == ["v1.0.0", "v1.0.1-rc1"] and verified_in(app, "qa", "v1.0.1-rc1")
    assert promote_environment(pipeline_file=file, environment="staging", return_state=True).is_completed()


def test_the_nightly_advances_a_chain_all_the_way_or_one_step_per_night(world: SandboxWorld, tmp_path: Path) -> None:
    fast, slow = chain(world, "nightall", approval=False), chain(world, "nightstep", approval=False)
    for app, advance in ((fast, "all"), (slow, "one-step")):
        pipelines = tmp_path / advance
        pipelines.mkdir()
        (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
        state = nightly(pipelines_dir=str(pipelines), advance=advance, return_state=True)
        assert state.is_completed(), state.message
    assert [revision(fast, env) for env in ("dev", "qa", "staging", "production")] == [
        "v1.0.1-rc1",
        "v1.0.1-rc1",
        "v1.0.1-rc1",
        "v1.0.1",
    ]
    nights = []
    for _ in range(3):
        nights.append([revision(slow, env) for env in ("dev", "qa", "staging", "production")])
        state = nightly(pipelines_dir=str(tmp_path / "one-step"), advance="one-step", return_state=True)
        assert state.is_completed(), state.message
    nights.append([revision(slow, env) for env in ("dev", "qa", "staging", "production")])
    rc = "v1.0.1-rc1"
    assert nights == [
        [rc, "v1.0.0", "v1.0.0", "v1.0.0"],
        [rc, rc, "v1.0.0", "v1.0.0"],
        [rc, rc, rc, "v1.0.0"],
        [rc, rc, rc, "v1.0.1"],
    ]
