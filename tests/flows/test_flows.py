"""The promotion flows against real parts: a real Prefect server, real Git origins, the real kube-apiserver
(with the simulated Argo CD writing status through it) and a real health endpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.objects import FlowRun

from flows.nightly import nightly, nightly_report
from flows.outcomes import PipelineOutcome
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from flows.report import PromotionReport
from flows.rollback import rollback
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tasks.approval import ResumeError, resume_run
from tasks.prefectruns import suspendable
from tests.support.flowruns import (
    CRASH_SCRIPT,
    ROOT,
    InThread,
    api_url,
    artifacts_of,
    by_pipeline,
    notes,
    rc_verified,
    read_run,
    ready_app,
    subjects,
    tags,
    wait_for_state,
)
from tests.support.gitserver import Outage, make_origin, serve_git_over_http
from tests.support.webhook import Webhook, serve_webhook

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def file_at_main(app: SandboxApp, rel: str) -> str:
    return git(app.origin, "show", f"main:{rel}")


def test_rc_then_production_without_gate(world: SandboxWorld) -> None:
    app = ready_app(world, "plain", approval=False)
    rc = promote_rc(pipeline_file=str(app.pipeline_file), requested_by="ci-bot", return_state=True)
    assert rc.is_completed(), rc.message
    assert sorted(tags(app)) == ["v1.0.0", "v1.0.1-rc1"]
    assert "targetRevision: v1.0.1-rc1   # the release this environment runs" in file_at_main(
        app, f"apps/staging/{app.name}.yaml"
    )
    verified = evidence.find(notes(app, "v1.0.1-rc1"), "verified", app.name, "staging", "v1.0.1-rc1")
    assert verified is not None and verified.by == "ci-bot"
    assert "Synced and Healthy" in verified.details["verification"]
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_completed(), prod.message
    assert git(app.origin, "rev-parse", "v1.0.1^{commit}") == git(app.origin, "rev-parse", "v1.0.1-rc1^{commit}")
    assert "targetRevision: v1.0.1   #" in file_at_main(app, f"apps/production/{app.name}.yaml")
    run_id = prod.state_details.flow_run_id
    assert run_id is not None
    found = artifacts_of(run_id)
    audit = found[f"promote-production-{app.name}"]
    assert "| version | v1.0.1 |" in audit and "| from | v1.0.0 |" in audit
    assert "| started_by | local run |" in audit
    assert "feature: faster checkout" in audit.split("| commits | ")[1].split("\n")[0]  # what the release brings
    # The verification's steps and the health checks' table are sections of the audit record, not artifacts
    assert "## production runs " in audit and "Synced and Healthy" in audit, audit
    assert "### Health checks" in audit and "| passed |" in audit, audit
    assert not any(key.startswith(("health-", "verification-")) for key in found), sorted(found)
    # A second run has nothing new to do and changes nothing.
    before = git(app.origin, "for-each-ref")
    again = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert again.is_completed() and again.result()["action"] == "skip"
    assert git(app.origin, "for-each-ref") == before


def test_production_refuses_an_rc_without_staging_evidence(world: SandboxWorld) -> None:
    app = ready_app(world, "noevid", approval=False)
    head = git(app.origin, "rev-parse", "main")
    git(app.origin, "tag", "-a", "v1.0.1-rc1", "-m", "hand-made rc", head)
    before = git(app.origin, "for-each-ref")
    state = promote_production(pipeline_file=str(app.pipeline_file), rc="v1.0.1-rc1", return_state=True)
    assert state.is_failed()
    assert "v1.0.1-rc1 has no record of a passed verification in staging" in (state.message or "")
    assert git(app.origin, "for-each-ref") == before  # nothing tagged, nothing written


def test_approve_through_the_api(world: SandboxWorld) -> None:
    app = ready_app(world, "approve")
    rc_verified(app)
    running = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED")
    assert "v1.0.1" not in tags(app)  # nothing happens to production before the decision
    new_state = resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "looks good"})
    assert new_state == "Running"
    state = running.join()
    assert state.is_completed(), state.message
    approved = evidence.find(notes(app, "v1.0.1-rc1"), "approved", app.name, "production", "v1.0.1-rc1")
    assert approved is not None and approved.by == "alice" and approved.reason == "looks good"
    audit = artifacts_of(paused.id)[f"promote-production-{app.name}"]
    assert "| approver | alice |" in audit and "| reason | looks good |" in audit
    with pytest.raises(ResumeError, match=r"was not resumed \(ABORT\)"):
        resume_run(api_url(), str(paused.id), {"approve": True, "approver": "late", "reason": ""})


def test_reject_ends_failed_and_leaves_production_alone(world: SandboxWorld) -> None:
    app = ready_app(world, "reject")
    rc_verified(app)
    prod_file = file_at_main(app, f"apps/production/{app.name}.yaml")
    running = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED")
    with pytest.raises(ResumeError):  # the server enforces "reason required on reject" (schema)
        resume_run(api_url(), str(paused.id), {"approve": False, "approver": "bob", "reason": ""})
    cli = [sys.executable, "-m", "promote.cli", "reject", str(paused.id), "--approver", "bob"]
    no_reason = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert no_reason.returncode != 0 and "--reason" in no_reason.stderr
    rejected = subprocess.run(
        [*cli, "--reason", "error rate up"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert f"rejected run {paused.id} as bob" in rejected.stdout
    state = running.join()
    assert state.is_failed()
    assert "rejected by bob: error rate up" in (state.message or "")
    assert "v1.0.1" not in tags(app)
    assert file_at_main(app, f"apps/production/{app.name}.yaml") == prod_file


def test_approval_timeout_ends_the_run_cleanly(world: SandboxWorld) -> None:
    app = ready_app(world, "timeout", approval_timeout=2)
    rc_verified(app)
    started = time.monotonic()
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    # The run says why it ended, not Prefect's "never resumed" (its rule for a closed pause window used to
    # win a race against the engine's report of our exception).
    assert "approval timed out after 2s" in str(state.result(raise_on_failure=False))
    stored = read_run(state.state_details.flow_run_id).state  # type: ignore[arg-type]
    assert stored is not None and stored.is_failed() and "approval timed out after 2s" in (stored.message or "")
    audit = artifacts_of(state.state_details.flow_run_id)[f"promote-production-{app.name}"]  # type: ignore[arg-type]
    assert "approval timed out after 2s" in audit
    assert time.monotonic() - started < 30
    assert "v1.0.1" not in tags(app)
    assert "targetRevision: v1.0.0" in file_at_main(app, f"apps/production/{app.name}.yaml")


def test_suspended_run_past_its_approval_window_ends_failed() -> None:
    """A suspended (deployment) run has no process to notice its timeout; the next promotion's sweep ends it
    as Failed on the real server, and leaves a run whose window is still open alone. A fanned-out nightly's
    promote-pipeline run suspends at its gate as a whole, and is swept the same way."""
    from datetime import UTC, datetime, timedelta

    from prefect.states import Suspended

    from flows.promote_pipeline import promote_pipeline_flow
    from tasks.approval import fail_expired_approvals

    with get_client(sync_client=True) as client:
        expired = client.create_flow_run(promote_production, parameters={"pipeline_file": "x.yaml"})
        pipeline = client.create_flow_run(promote_pipeline_flow, parameters={"pipeline_file": "p.yaml"})
        waiting = client.create_flow_run(promote_production, parameters={"pipeline_file": "y.yaml"})
        # Both windows are still open on the server's clock, so its own pause-expiry service (which fails
        # runs past their window every few seconds) cannot race the sweep; the sweep is told a later "now".
        start = datetime.now(UTC)
        soon, later = start + timedelta(minutes=10), start + timedelta(hours=1)
        client.set_flow_run_state(expired.id, Suspended(pause_expiration_time=soon), force=True)
        client.set_flow_run_state(pipeline.id, Suspended(pause_expiration_time=soon), force=True)
        client.set_flow_run_state(waiting.id, Suspended(pause_expiration_time=later), force=True)
    sweep_time = start + timedelta(minutes=20)
    ended = fail_expired_approvals(now=sweep_time)
    assert str(expired.id) in ended and str(pipeline.id) in ended and str(waiting.id) not in ended
    for gone in (expired, pipeline):
        run = read_run(gone.id)
        assert run.state is not None and run.state.type.value == "FAILED"
        message = run.state.message or ""
        assert "approval timed out" in message and "production was not changed" in message, message
    still = read_run(waiting.id)
    assert still.state is not None and still.state.name == "Suspended"
    assert fail_expired_approvals(now=sweep_time) == []  # nothing left to end


def test_the_lock_reads_whether_its_holder_can_finish_and_changes_no_run() -> None:
    """The environment lock's liveness check (flows/locking.py) on the real server: a holder suspended past its
    window cannot finish (its lock may be taken over), one within its window can; asking ends no run."""
    from datetime import UTC, datetime, timedelta
    from uuid import uuid4

    from prefect.states import Completed, Suspended

    from flows.locking import holder_can_finish

    with get_client(sync_client=True) as client:
        suspended = client.create_flow_run(promote_production, parameters={"pipeline_file": "x.yaml"})
        ended = client.create_flow_run(promote_production, parameters={"pipeline_file": "y.yaml"})
        start = datetime.now(UTC)
        client.set_flow_run_state(suspended.id, Suspended(pause_expiration_time=start + timedelta(hours=1)), force=True)
        client.set_flow_run_state(ended.id, Completed(), force=True)
    assert holder_can_finish(str(suspended.id), now=start)
    assert not holder_can_finish(str(suspended.id), now=start + timedelta(hours=2))
    assert not holder_can_finish(str(ended.id)) and not holder_can_finish(str(uuid4()))
    assert holder_can_finish("not-a-run-id")  # only the lease's expiry frees a holder that is not a flow run
    still = read_run(suspended.id)
    assert still.state is not None and still.state.name == "Suspended", still.state


def test_production_failure_rolls_back(world: SandboxWorld) -> None:
    app = ready_app(world, "rollback", approval=False)
    rc_verified(app)
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "v1.0.1"
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    assert "did not come up at v1.0.1" in (state.message or "") and "ROLLED BACK to v1.0.0" in (state.message or "")
    assert "targetRevision: v1.0.0" in file_at_main(app, f"apps/production/{app.name}.yaml")
    assert world.agent is not None
    assert world.agent.desired_revision(production) is not None
    assert world.agent.desired_revision(production)[1] == "v1.0.0"  # type: ignore[index]
    rolled = evidence.find(notes(app, "v1.0.1"), "rolled-back", app.name, "production", "v1.0.1")
    assert rolled is not None and rolled.details == {"to": "v1.0.0"}
    # The failed deployment is in Git too (delivery metrics count it), written before the rollback's record.
    records = notes(app, "v1.0.1")
    failed = evidence.find(records, "failed", app.name, "production", "v1.0.1")
    assert failed is not None and failed.run == str(state.state_details.flow_run_id), failed
    assert failed.details["from"] == "v1.0.0" and "Degraded" in failed.details["message"], failed.details
    assert records.index(failed) < records.index(rolled) and failed.at <= rolled.at
    assert evidence.find(records, "promoted", app.name, "production", "v1.0.1") is None
    # A re-run that fails the same way adds no second record of the same fact.
    again = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert again.is_failed() and "did not come up at v1.0.1" in (again.message or ""), again.message
    assert [r.kind for r in notes(app, "v1.0.1")].count("failed") == 1


def test_failing_production_health_checks_roll_back(world: SandboxWorld) -> None:
    """Verification passes (the rollout happened) but the health check does not: production goes back too."""
    app = ready_app(world, "sick", approval=False)
    rc_verified(app)
    head, tail = app.pipeline_file.read_text().split(f"/{app.name}/production/version")
    tail = tail.replace("timeout_seconds: 30", "timeout_seconds: 2", 1)  # the production check's window
    app.pipeline_file.write_text(head + f"/{app.name}/production/missing" + tail)  # answers 404
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "did not come up at v1.0.1" in message and "ROLLED BACK to v1.0.0" in message, message
    assert "production serves the promoted version" in message, message  # the check that failed
    assert "targetRevision: v1.0.0" in file_at_main(app, f"apps/production/{app.name}.yaml")
    rolled = evidence.find(notes(app, "v1.0.1"), "rolled-back", app.name, "production", "v1.0.1")
    assert rolled is not None and rolled.details == {"to": "v1.0.0"}
    assert evidence.find(notes(app, "v1.0.1"), "promoted", app.name, "production", "v1.0.1") is None
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    # The audit record shows the verification of v1.0.1 with its failed check's row, then the rollback's
    # verification (no checks).
    audit = artifacts_of(run_id)[f"promote-production-{app.name}"]
    promoted, rolled_back = audit.split("## production runs ")[1:]
    assert "### Health checks" in promoted and "| FAILED |" in promoted, promoted
    assert "Health checks" not in rolled_back, rolled_back


def test_production_failure_whose_rollback_fails_too_says_both(world: SandboxWorld) -> None:
    app = ready_app(world, "stuck", approval=False)
    rc_verified(app)
    app.env("production").failure = "degraded"  # at every revision: the rollback's verification fails as well
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    message = state.message or ""
    assert "did not come up at v1.0.1" in message and "the ROLLBACK to v1.0.0 FAILED too" in message, message
    assert "production needs a person" in message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    audit = artifacts_of(run_id)[f"promote-production-{app.name}"]
    assert "| failure | " in audit and "| rollback_failure | " in audit and "Degraded" in audit, audit
    failed = evidence.find(notes(app, "v1.0.1"), "failed", app.name, "production", "v1.0.1")
    assert failed is not None and failed.run == str(run_id)  # recorded although no rollback followed
    assert evidence.find(notes(app, "v1.0.1"), "rolled-back", app.name, "production", "v1.0.1") is None


def test_a_verified_production_whose_record_cannot_be_written_is_not_rolled_back(world: SandboxWorld) -> None:
    """The records are written in the verification's step: a failure to write them must not read as a failed
    verification. Production keeps the verified version, the run fails saying so, and a re-run records it."""
    app = ready_app(world, "unrecorded", approval=False)
    rc_verified(app)
    hook = app.origin / "hooks" / "pre-receive"  # the origin refuses the notes today (a real push refusal)
    hook.write_text(
        "#!/bin/sh\nwhile read old new ref; do case $ref in refs/notes/*) echo 'notes are frozen' >&2; exit 1;;"
        " esac; done\n"
    )
    hook.chmod(0o755)
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    message = state.message or ""
    assert state.is_failed(), message
    assert "verified, but its 'promoted' record could not be written to Git" in message, message
    assert "nothing was rolled back" in message and "ROLLED BACK" not in message, message
    deployed = file_at_main(app, f"apps/production/{app.name}.yaml")
    assert "targetRevision: v1.0.1" in deployed, deployed
    assert world.agent is not None and world.agent.desired_revision(app.env("production"))[1] == "v1.0.1"  # type: ignore[index]
    assert not [r for r in notes(app, "v1.0.1") if r.environment == "production"]
    head = git(app.origin, "rev-parse", "main")
    hook.unlink()
    again = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert again.is_completed(), again.message
    promoted = evidence.find(notes(app, "v1.0.1"), "promoted", app.name, "production", "v1.0.1")
    assert promoted is not None and promoted.run == str(again.state_details.flow_run_id)
    assert git(app.origin, "rev-parse", "main") == head  # the re-run wrote nothing but the record


def test_rollback_flow_and_dry_run(world: SandboxWorld) -> None:
    app = ready_app(world, "rbflow", approval=False)
    rc_verified(app)
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    before = git(app.origin, "for-each-ref")
    plan = rollback(pipeline_file=str(app.pipeline_file), dry_run=True)
    assert plan["to"] == "v1.0.0" and "-    targetRevision: v1.0.1" in plan["diff"]
    assert git(app.origin, "for-each-ref") == before  # the dry run changed nothing
    done = rollback(pipeline_file=str(app.pipeline_file))
    assert done["from"] == "v1.0.1" and "Synced and Healthy" in done["verification"]
    assert "targetRevision: v1.0.0" in file_at_main(app, f"apps/production/{app.name}.yaml")


def test_every_run_leaves_its_audit_and_tells_the_webhook(world: SandboxWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = Webhook()
    with serve_webhook(hook) as base:
        monkeypatch.setenv("PROMOTE_TEST_FLOW_WEBHOOK", f"{base}/services/T0/B0/secret")
        monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example")
        app, bad = ready_app(world, "told", approval=False), ready_app(world, "toldbad", approval=False)
        for each in (app, bad):
            with each.pipeline_file.open("a") as pipeline:
                pipeline.write("notifications: {webhook_url_env: PROMOTE_TEST_FLOW_WEBHOOK}\n")
        bad.env("staging").failure = "degraded"
        failed = promote_rc(pipeline_file=str(bad.pipeline_file), return_state=True)
        assert failed.is_failed()
        assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
        assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
        assert rollback(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
        refused = rollback(pipeline_file=str(app.pipeline_file), to_version="v9.9.9", return_state=True)
        assert refused.is_failed()
    texts = [str(body["text"]) for _, _, body in hook.received]
    expected = [
        f"{bad.name}: release candidate for staging FAILED: ",
        f"{app.name}: v1.0.1-rc1 verified in staging, ready for production",
        f"{app.name}: v1.0.1 (rc v1.0.1-rc1) is live in production",
        f"{app.name}: production ROLLED BACK from v1.0.1 to v1.0.0",
        f"{app.name}: rollback of production FAILED: v9.9.9 is not a tag of the repository",
    ]
    assert len(texts) == len(expected), texts
    for text, start in zip(texts, expected, strict=True):
        assert text.startswith(start), (text, start)
    assert all("<http://prefect.example/runs/flow-run/" in t for t in texts)
    # The failed runs left their audit records too, with what went wrong.
    for state, key in ((failed, f"promote-rc-{bad.name}"), (refused, f"rollback-{app.name}")):
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        audit = artifacts_of(run_id)[key]
        assert "| failure | " in audit and "| started_by | local run |" in audit, audit
    assert "v9.9.9 is not a tag" in artifacts_of(refused.state_details.flow_run_id)[f"rollback-{app.name}"]  # type: ignore[arg-type]


def test_only_a_deployments_own_top_level_run_is_suspended() -> None:
    """The server refuses to suspend runs without a deployment and nested runs ("Cannot suspend subflows."):
    promote-production nested in a scheduled nightly must pause instead (its process keeps waiting)."""
    from uuid import uuid4

    flow_id = uuid4()
    deployment_run = FlowRun(flow_id=flow_id, deployment_id=uuid4())
    nested_in_deployment = FlowRun(flow_id=flow_id, parent_task_run_id=uuid4())
    nested_with_deployment = FlowRun(flow_id=flow_id, deployment_id=uuid4(), parent_task_run_id=uuid4())
    assert suspendable(deployment_run)
    assert not suspendable(FlowRun(flow_id=flow_id))
    assert not suspendable(nested_in_deployment) and not suspendable(nested_with_deployment)
    assert not suspendable(None)


def test_two_production_promotions_at_once_the_second_waits(world: SandboxWorld) -> None:
    app = ready_app(world, "twice")
    rc_run = rc_verified(app)
    first = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED")
    second = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    time.sleep(8)  # longer than the lock TTL (3 s): the paused run keeps renewing, so the lock holds
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if by_pipeline(app)(r) and r.id != rc_run]
    states = sorted(r.state.type.value for r in runs if r.state)
    assert states == ["PAUSED", "RUNNING"], states  # the second is waiting for the lock, not at the gate
    assert second.thread.is_alive()
    resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "ok"})
    assert first.join().is_completed()
    second_state = second.join()
    # The second found the approval and the tag already there: it completes without a second gate or tag.
    assert second_state.is_completed(), second_state.message
    assert subjects(app).count(f"promote({app.name}): production v1.0.0 -> v1.0.1") == 1


def run_until_crash(app: SandboxApp, module: str, flow: str, point: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMOTE_CRASH_AT": point, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT.format(module=module, flow=flow), str(app.pipeline_file)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("point", ["after-tag-push", "after-write-back"])
def test_rc_crash_and_rerun_repeats_nothing(world: SandboxWorld, point: str) -> None:
    app = ready_app(world, "crashrc", approval=False)
    proc = run_until_crash(app, "promote_rc", "promote_rc", point)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 86, out  # killed at the crash point, like a power cut
    assert "v1.0.1-rc1" in tags(app)
    state = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_completed(), state.message
    assert sorted(tags(app)) == ["v1.0.0", "v1.0.1-rc1"]  # no -rc2
    assert subjects(app).count(f"promote({app.name}): staging v1.0.0 -> v1.0.1-rc1") == 1
    assert evidence.find(notes(app, "v1.0.1-rc1"), "verified", app.name, "staging", "v1.0.1-rc1") is not None


@pytest.mark.parametrize("point", ["after-approval", "after-tag-push", "after-write-back"])
def test_production_crash_and_rerun_repeats_nothing(world: SandboxWorld, point: str) -> None:
    app = ready_app(world, "crashprod")
    rc_verified(app)
    proc = run_until_crash(app, "promote_production", "promote_production", point)
    paused = wait_for_state(by_pipeline(app), "PAUSED")
    resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "go"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 86, out
    # The re-run must not ask again: the approval is recorded in Git. (A pause would hang this call.)
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_completed(), state.message
    assert sorted(tags(app)) == ["v1.0.0", "v1.0.1", "v1.0.1-rc1"]
    assert subjects(app).count(f"promote({app.name}): production v1.0.0 -> v1.0.1") == 1
    records = notes(app, "v1.0.1-rc1")
    assert [r.kind for r in records].count("approved") == 1


def test_nightly_one_failure_does_not_stop_the_others(world: SandboxWorld, tmp_path: Path) -> None:
    good = ready_app(world, "nightok", approval=False)
    bad = ready_app(world, "nightbad", approval=False)
    bad.env("staging").failure = "degraded"
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    for app in (good, bad):
        (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
    from datetime import UTC, datetime, timedelta

    from prefect.states import Suspended

    with get_client(sync_client=True) as client:  # an approval nobody answered: the nightly's sweep ends it
        stale = client.create_flow_run(promote_production, parameters={"pipeline_file": "z.yaml"})
        client.set_flow_run_state(
            stale.id, Suspended(pause_expiration_time=datetime.now(UTC) - timedelta(1)), force=True
        )
    state = nightly(pipelines_dir=str(pipelines), return_state=True)
    assert state.is_failed()
    stale_state = read_run(stale.id).state
    assert stale_state is not None and stale_state.type.value == "FAILED", stale_state
    assert f"1 of 2 pipelines failed: {pipelines / bad.pipeline_file.name}" in (state.message or "")
    assert "v1.0.1" in tags(good)  # the good one went all the way to production
    assert "v1.0.1" not in tags(bad)
    # Every pipeline's runs are children of the nightly run (the UI nests them; cancelling it reaches them).
    nightly_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = [
            run
            for run in client.read_flow_runs(limit=200)
            if (run.parameters or {}).get("pipeline_file", "").startswith(str(pipelines))
        ]
        parents = {
            client.read_task_run(run.parent_task_run_id).flow_run_id for run in children if run.parent_task_run_id
        }
    assert len(children) == 2, [run.name for run in children]  # one promote-pipeline run per pipeline
    assert all(run.parent_task_run_id is not None for run in children) and parents == {nightly_id}
    audits = [text for run in children for key, text in artifacts_of(run.id).items() if key.startswith("promote-")]
    report = artifacts_of(nightly_id)["nightly"]  # type: ignore[arg-type]
    assert "started by local run; 2 pipeline(s)" in report
    assert f"| {pipelines / good.pipeline_file.name} | create v1.0.1-rc1 | v1.0.0 -> v1.0.1 |" in report, report
    bad_row = next(line for line in report.splitlines() if str(pipelines / bad.pipeline_file.name) in line)
    assert bad_row.startswith(f"| {pipelines / bad.pipeline_file.name} | FAILED: ") and "Degraded" in bad_row
    assert bad_row.endswith("| - |"), bad_row  # it never reached production
    # Three parts, three audit records (the failed promote-rc's too), each saying its run was nested.
    assert len(audits) == 3 and all("| started_by | nested run |" in text for text in audits), audits
    # The delivery metrics of the last 30 days, from Git: one production promotion (1 / 30 days = 0.03 a day)
    # whose lead time is the minutes since the change was committed; the bad one never reached production.
    metrics = artifacts_of(nightly_id)["delivery-metrics"]  # type: ignore[arg-type]
    lead = r"(\d+m )?\d+s / (\d+m )?\d+s"
    assert re.search(rf"^\| {good.name} \| 1 \(0\.03\) \| {lead} \| 0% \(0/1\) \| - / - \|$", metrics, re.M), metrics
    assert f"| {bad.name} | 0 (0.00) | - / - | n/a (no production promotion) | - / - |" in metrics, metrics
    assert re.search(rf"^\| \(all pipelines\) \| 1 \(0\.03\) \| {lead} \| 0% \(0/1\) \|", metrics, re.M), metrics


def test_promote_plan_on_a_tag_pipeline_shows_each_environment_and_changes_nothing(world: SandboxWorld) -> None:
    app = ready_app(world, "planned", approval=False)
    before = git(app.origin, "for-each-ref")
    cli = [sys.executable, "-m", "promote.cli", "plan", str(app.pipeline_file)]
    first = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "staging (tag): v1.0.0 -> v1.0.1-rc1" in out and "new tags: v1.0.1-rc1" in out, out
    assert "+    targetRevision: v1.0.1-rc1" in out, out
    assert "production (tag): v1.0.0 (no change)" in out, out  # no rc has staging evidence yet
    assert git(app.origin, "for-each-ref") == before  # nothing pushed: no tag, no commit, no note
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    second = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    # Now production would take the verified rc: a new stable tag and the production file's diff.
    assert "production (tag): v1.0.0 -> v1.0.1" in second.stdout and "new tags: v1.0.1" in second.stdout
    assert "+    targetRevision: v1.0.1 " in second.stdout, second.stdout


def test_a_task_retries_a_remote_having_a_bad_minute_but_not_a_refusal(tmp_path: Path) -> None:
    """Prefect's retry_condition_fn at work on a real task: a 503 from the Git host is retried (with backoff),
    wrong credentials are not."""
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    from pipeline.load import load_pipeline
    from tasks.connections import Connections
    from tasks.gitrepo import GitAuth, GitRepository
    from tasks.steps import fetch_repository

    bare, _ = make_origin(tmp_path, {"README.md": "hello\n"})
    pipeline = load_pipeline(str(ROOT / "deployments" / "examples" / "tags.yaml"))
    outage = Outage(fail_next=1)
    quiet = {PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}  # a task alone has no flow run to log to
    with serve_git_over_http(tmp_path, "ci", "token-1234", outage) as base, temporary_settings(updates=quiet):
        url = f"{base}/{bare.name}"
        good = Connections(pipeline, GitRepository(url, tmp_path / "a", auth=GitAuth("ci", "token-1234")), print)
        state = fetch_repository(good, return_state=True)
        assert state.is_completed(), state.message
        assert outage.fail_next == 0 and outage.requests >= 2  # the first attempt met the 503, a retry passed
        outage.requests = 0
        bad = Connections(pipeline, GitRepository(url, tmp_path / "b", auth=GitAuth("ci", "wrong")), print)
        refused = fetch_repository(bad, return_state=True)
        assert refused.is_failed() and "git fetch failed" in (refused.message or ""), refused.message
        assert outage.requests <= 3  # one attempt (git asks, is refused, asks with credentials): no retries


def test_nightly_report_puts_each_failure_under_the_run_that_failed() -> None:
    def rc(**fields: str) -> PromotionReport:
        return PromotionReport.model_validate({"pipeline": "app", "environment": "staging", **fields})

    rc1, rc2 = rc(action="create", rc="v1.0.1-rc1"), rc(action="create", rc="v2.0.0-rc1")
    production = PromotionReport.model_validate(
        {"pipeline": "app", "environment": "production", "version": "v2.0.0", "from": "v1.9.0"}
    )
    results = {
        "a.yaml": PipelineOutcome("a.yaml", rc1, failed="rejected by bob: no", failed_in="promote-production"),
        "b.yaml": PipelineOutcome("b.yaml", failed="staging Degraded", failed_in="promote-rc"),
        "c.yaml": PipelineOutcome("c.yaml", rc(action="skip")),
        "d.yaml": PipelineOutcome("d.yaml", rc2, {"production": production}),
    }
    report = nightly_report(results, started_by="local run", seconds=12.5)
    assert "started by local run; 4 pipeline(s) in 12.5s" in report
    assert "| a.yaml | create v1.0.1-rc1 | FAILED: rejected by bob: no |" in report
    assert "| b.yaml | FAILED: staging Degraded | - |" in report
    assert "| c.yaml | skip | - |" in report
    assert "| d.yaml | create v2.0.0-rc1 | v1.9.0 -> v2.0.0 |" in report


def test_rc_dry_run_changes_nothing(world: SandboxWorld) -> None:
    app = ready_app(world, "dry", approval=False)
    before = git(app.origin, "for-each-ref")
    result = promote_rc(pipeline_file=str(app.pipeline_file), dry_run=True)
    assert result["dry_run"] is True and result["rc"] == "v1.0.1-rc1"
    assert "+    targetRevision: v1.0.1-rc1" in result["diff"]
    assert git(app.origin, "for-each-ref") == before
