"""End to end as people use it: `prefect deploy --all` against a real server, a process worker, runs created
through the REST API as CI does (`promote trigger`), the approval form in the Prefect UI (headless Chromium),
approval through the API (`promote approve`), and a Completed run with its artifacts."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.world import SandboxWorld, git
from tests.support.flowruns import (
    ARTIFACTS,
    InThread,
    artifacts_of,
    by_pipeline,
    read_run,
    ready_app,
    run,
    subjects,
    tags,
    wait_for_state,
)
from tests.support.webdriver import browser
from tests.support.webhook import Webhook

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def test_deploy_trigger_approve_complete(
    world: SandboxWorld, worker: dict[str, str], webhook: tuple[Webhook, str]
) -> None:
    app = ready_app(world, "e2e")
    with app.pipeline_file.open("a") as pipeline:
        pipeline.write("notifications: {webhook_url_env: PROMOTE_E2E_WEBHOOK}\n")
    promote = [sys.executable, "-m", "promote.cli"]
    env = {**worker, "GITHUB_RUN_ID": f"e2e-{app.name}", "GITHUB_RUN_ATTEMPT": "1"}

    refused = run(
        *promote,
        "trigger",
        "promote-rc/default",
        "--param",
        f"pipeline_file={app.pipeline_file}",
        "--param",
        "bumpp=minor",
        env=env,
    )
    assert refused.returncode == 1 and "promote-rc/default has no parameter bumpp" in refused.stderr
    ill_typed = run(
        *promote, "trigger", "promote-rc/default", "--param", f"pipeline_file={app.pipeline_file}", "--param",
        "bump=huge", env=env,
    )  # fmt: skip
    assert ill_typed.returncode == 1 and "bump" in ill_typed.stderr, ill_typed.stdout + ill_typed.stderr
    # A deployment run reads pipeline files only under the roots: not a file elsewhere on the worker, and its
    # content is never repeated (was: /etc/shadow lines in the run's failure message).
    secret = world.root.parent.parent / f"{world.root.parent.name}-not-a-pipeline.yaml"  # outside the roots
    secret.write_text("root:$6$HASHED-SECRET-4711:19000:0:99999:7:::\n")
    outside = run(
        *promote, "trigger", "promote-rc/default", "--param", f"pipeline_file={secret}", "--wait", "--timeout",
        "240", env=env,
    )  # fmt: skip
    assert outside.returncode == 1, outside.stdout + outside.stderr
    assert "outside the pipeline roots" in outside.stdout + outside.stderr, outside.stdout + outside.stderr
    assert "HASHED-SECRET-4711" not in outside.stdout + outside.stderr
    rc = run(
        *promote,
        "trigger",
        "promote-rc/default",
        "--param",
        f"pipeline_file={app.pipeline_file}",
        "--param",
        "requested_by=ci",
        "--wait",
        "--timeout",
        "240",
        env=env,
    )
    assert rc.returncode == 0, rc.stdout + rc.stderr
    assert "Completed" in rc.stdout
    # The same CI run id again: the API returns the run it already created, nothing new happens.
    again = run(
        *promote,
        "trigger",
        "promote-rc/default",
        "--param",
        f"pipeline_file={app.pipeline_file}",
        "--param",
        "requested_by=ci",
        env=env,
    )
    first_id = re.search(r"\(([0-9a-f-]{36})\)", rc.stdout)
    assert first_id and first_id.group(1) in again.stdout

    prod = run(
        *promote,
        "trigger",
        "promote-production/default",
        "--param",
        f"pipeline_file={app.pipeline_file}",
        env={**env, "GITHUB_RUN_ID": f"e2e-prod-{app.name}"},
    )
    assert prod.returncode == 0, prod.stdout + prod.stderr
    run_id = re.search(r"\(([0-9a-f-]{36})\)", prod.stdout)
    assert run_id
    paused = wait_for_state(lambda r: str(r.id) == run_id.group(1), "PAUSED", timeout=240)
    assert paused.state is not None and paused.state.name == "Suspended"  # the worker was freed

    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with browser() as page:
            page.open(f"{os.environ['PREFECT_UI_URL']}/runs/flow-run/{paused.id}")
            page.click(page.find("//button[contains(., 'Resume')]"))
            time.sleep(3)
            page.screenshot(ARTIFACTS / "approval-form.png")
            dom = page.source()
            (ARTIFACTS / "approval-form.html").write_text(dom)
            page.find("//*[contains(., 'Approve promotion of')]")  # the plan, in the form's description
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert "v1.0.0" in dom and "v1.0.1" in dom
    assert "Approver" in dom and "Reason" in dom and "Submit" in dom  # the form fields

    # While it waits, a newer rc passes staging. The suspended run re-runs from the top once approved, and
    # must promote what was approved (v1.0.1-rc1), not the newest verified rc.
    app.commit_change("feature: newer than the approval")
    newer = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert newer.is_completed() and newer.result()["rc"] == "v1.0.1-rc2"

    approved = run(
        *promote, "approve", str(paused.id), "--approver", "alice", "--reason", "dashboards green", env=worker
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = read_run(paused.id).state
        if state is not None and state.is_final():
            break
        time.sleep(1)
    assert state is not None and state.is_completed(), state
    assert "v1.0.1" in git(app.origin, "tag", "--list").split()
    assert git(app.origin, "rev-parse", "v1.0.1^{commit}") == git(app.origin, "rev-parse", "v1.0.1-rc1^{commit}")
    assert "targetRevision: v1.0.1 " in git(app.origin, "show", f"main:apps/production/{app.name}.yaml")
    audit = artifacts_of(paused.id)[f"promote-production-{app.name}"]
    assert "| approver | alice |" in audit and "| version | v1.0.1 |" in audit
    assert "| started_by | deployment promote-production/" in audit  # created through the REST API, as CI does
    again = run(*promote, "approve", str(paused.id), "--reason", "late", env=worker)
    assert again.returncode == 1 and "was not resumed (ABORT)" in again.stderr
    # A run that ends Failed makes the CI step fail.
    failing = run(
        *promote, "trigger", "rollback/default", "--param", f"pipeline_file={app.pipeline_file}", "--param",
        "to_version=v9.9.9", "--wait", "--timeout", "240", env={**env, "GITHUB_RUN_ID": f"e2e-rb-{app.name}"},
    )  # fmt: skip
    assert failing.returncode == 1 and "Failed" in failing.stdout, failing.stdout + failing.stderr
    # The webhook heard the rc, the wait once (not again when the suspended run re-ran from the top), the
    # end and the failed rollback. (rc2 ran in this process, which has no webhook variable.)
    texts = [str(body["text"]).split("\n")[0] for _, _, body in webhook[0].received]
    assert texts == [
        f"{app.name}: v1.0.1-rc1 verified in staging, ready for production",
        f"{app.name}: v1.0.1 (rc v1.0.1-rc1) waits for approval to production",
        f"{app.name}: v1.0.1 (rc v1.0.1-rc1) is live in production",
        f"{app.name}: rollback of production FAILED: v9.9.9 is not a tag of the repository; nothing to roll back to",
    ], texts


def test_scheduled_nightly_pauses_its_nested_production_run_for_approval(
    world: SandboxWorld, worker: dict[str, str], tmp_path: Path
) -> None:
    """The nightly's deployment run (as its schedule starts it) reaches a gated production: the pipeline's
    nested promote-pipeline run cannot be suspended (the server refuses to suspend subflows), so it pauses, and
    an approval through the API lets the nightly complete."""
    app = ready_app(world, "e2enight")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
    promote = [sys.executable, "-m", "promote.cli"]
    env = {**worker, "GITHUB_RUN_ID": f"e2e-nightly-{app.name}", "GITHUB_RUN_ATTEMPT": "1"}
    started = run(*promote, "trigger", "nightly/default", "--param", f"pipelines_dir={pipelines}", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    nightly_id = re.search(r"\(([0-9a-f-]{36})\)", started.stdout)
    assert nightly_id
    waiting = wait_for_state(
        lambda r: (r.parameters or {}).get("pipeline_file") == str(pipelines / app.pipeline_file.name),
        "PAUSED",
        timeout=240,
    )
    assert waiting.state is not None and waiting.state.name == "Paused"  # nested: paused, not suspended
    approved = run(*promote, "approve", str(waiting.id), "--approver", "bob", "--reason", "nightly ok", env=worker)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = read_run(UUID(nightly_id.group(1))).state
        if state is not None and state.is_final():
            break
        time.sleep(1)
    assert state is not None and state.is_completed(), state
    assert "targetRevision: v1.0.1 " in git(app.origin, "show", f"main:apps/production/{app.name}.yaml")
    audit = artifacts_of(waiting.id)[f"promote-production-{app.name}"]
    assert "| approver | bob |" in audit and "| started_by | nested run |" in audit


def test_a_pipeline_run_from_its_deployment_suspends_at_the_gate_and_finishes_once_approved(
    world: SandboxWorld, worker: dict[str, str]
) -> None:
    """The fanned-out nightly's unit of work: a promote-pipeline run started from its deployment reaches a gated
    production and is suspended (its worker freed, no process left). Approved, it runs again from the top: its
    promote-rc part finds its work done in Git, and production is promoted once."""
    app = ready_app(world, "e2epipe")
    promote = [sys.executable, "-m", "promote.cli"]
    env = {**worker, "GITHUB_RUN_ID": f"e2e-pipeline-{app.name}", "GITHUB_RUN_ATTEMPT": "1"}
    started = run(
        *promote, "trigger", "promote-pipeline/default", "--param", f"pipeline_file={app.pipeline_file}", env=env
    )
    assert started.returncode == 0, started.stdout + started.stderr
    found = re.search(r"\(([0-9a-f-]{36})\)", started.stdout)
    assert found
    run_id = UUID(found.group(1))
    suspended = wait_for_state(lambda r: r.id == run_id, "PAUSED", timeout=240)
    assert suspended.state is not None and suspended.state.name == "Suspended"  # not paused: the worker was freed
    assert sorted(tags(app)) == ["v1.0.0", "v1.0.1-rc1"]  # the rc part ran before the gate
    approved = run(*promote, "approve", str(run_id), "--approver", "bob", "--reason", "go", env=worker)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    deadline = time.monotonic() + 240
    state = read_run(run_id).state
    while time.monotonic() < deadline and not (state is not None and state.is_final()):
        time.sleep(1)
        state = read_run(run_id).state
    assert state is not None and state.is_completed(), state
    assert (state.message or "").startswith("promote-rc: "), state.message  # the nightly's row for it
    assert sorted(tags(app)) == ["v1.0.0", "v1.0.1", "v1.0.1-rc1"]  # no second rc on the re-run
    assert subjects(app).count(f"promote({app.name}): production v1.0.0 -> v1.0.1") == 1
    audit = artifacts_of(run_id)[f"promote-production-{app.name}"]
    assert "| approver | bob |" in audit, audit


def test_a_suspended_promotion_keeps_its_environment_locked(
    world: SandboxWorld, worker: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The trap: a suspended run has no process left to renew a lock. The environment's Lease is sized to the
    approval window, so a second promotion waits (past several lock TTLs) until the first, approved,
    finishes; then it finds the work done and completes without a second gate, tag or commit."""
    app = ready_app(world, "e2elock")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    promote = [sys.executable, "-m", "promote.cli"]
    env = {**worker, "GITHUB_RUN_ID": f"e2e-lock-{app.name}", "GITHUB_RUN_ATTEMPT": "1"}
    param = f"pipeline_file={app.pipeline_file}"
    first = run(*promote, "trigger", "promote-production/default", "--param", param, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    first_id = re.search(r"\(([0-9a-f-]{36})\)", first.stdout)
    assert first_id
    suspended = wait_for_state(lambda r: str(r.id) == first_id.group(1), "PAUSED", timeout=240)
    assert suspended.state is not None and suspended.state.name == "Suspended"  # no process of it is left
    caplog.set_level(logging.INFO, logger="prefect")
    second = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    deadline = time.monotonic() + 120
    while "another promotion of this environment is in progress" not in caplog.text:  # it reached the lock
        assert time.monotonic() < deadline and second.thread.is_alive(), caplog.text[-3000:]
        time.sleep(0.2)
    time.sleep(10)  # more than three lock TTLs (3 s in tests): a lock held by a live process alone would lapse
    assert second.thread.is_alive()
    with get_client(sync_client=True) as client:
        others = [r for r in client.read_flow_runs(limit=200) if by_pipeline(app)(r) and r.id != suspended.id]
    waiting = [r.state.type.value for r in others if r.state and r.flow_id == suspended.flow_id]
    assert waiting == ["RUNNING"], waiting  # waiting for the lock, not at a gate of its own
    approved = run(*promote, "approve", str(suspended.id), "--approver", "carol", "--reason", "ok", env=worker)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    second_state = second.join(timeout=240)
    assert second_state.is_completed(), second_state.message
    assert read_run(suspended.id).state.is_completed()
    assert subjects(app).count(f"promote({app.name}): production v1.0.0 -> v1.0.1") == 1
    assert git(app.origin, "tag", "--list").split().count("v1.0.1") == 1
