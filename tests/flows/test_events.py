"""Every promotion milestone is a Prefect event on a real server (flows/events.py, docs/events.md)."""

from __future__ import annotations

from typing import Any

import pytest

from flows.events import MILESTONES, PREFIX
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from flows.rollback import rollback
from sandbox.world import SandboxApp, SandboxWorld
from tasks.approval import resume_run
from tests.support.events import wait_for_events
from tests.support.flowruns import InThread, api_url, by_pipeline, ready_app, wait_for_state

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def _milestones(app: SandboxApp, *expected: str) -> list[dict[str, Any]]:
    """The promote.* events of ``app``'s environments, oldest first, once ``expected`` have all arrived."""
    found = wait_for_events(
        api_url(),
        resource_prefix=f"promote.environment.{app.name}.",
        event_prefix=PREFIX,
        names={PREFIX + name for name in expected},
    )
    return found


def _names(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["event"].removeprefix(PREFIX), event["resource"]["promote.environment"]) for event in found]


def _related(event: dict[str, Any]) -> dict[str, str]:
    return {related["prefect.resource.role"]: related["prefect.resource.id"] for related in event["related"]}


def test_rc_cut_verified_and_live_with_the_version_commit_and_run(world: SandboxWorld) -> None:
    app = ready_app(world, "events", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    found = _milestones(app, "rc.cut", "verified", "live")
    assert _names(found) == [("rc.cut", "staging"), ("verified", "staging"), ("live", "production")]
    cut, verified, live = found
    assert cut["resource"]["prefect.resource.id"] == f"promote.environment.{app.name}.staging"
    assert cut["payload"]["version"] == "v1.0.1-rc1" and len(cut["payload"]["commit"]) == 40
    assert verified["payload"]["version"] == "v1.0.1-rc1"
    assert "verification" in verified["payload"]["details"]
    related = _related(live)
    assert related["pipeline"] == f"promote.pipeline.{app.name}"
    assert related["version"] == f"promote.version.{app.name}.v1.0.1"
    assert related["commit"] == f"promote.commit.{live['payload']['commit']}"
    assert related["flow-run"].startswith("prefect.flow-run.")  # Prefect adds the run that emitted it
    # A re-run repeats nothing, and says nothing new either.
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    again = _milestones(app, "rc.cut", "verified", "live")
    assert _names(again) == _names(found)


def test_a_failed_production_says_rolled_back_then_failed(world: SandboxWorld) -> None:
    app = ready_app(world, "events-fail", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "v1.0.1"
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_failed()
    found = _milestones(app, "rolled-back", "failed")
    assert _names(found)[-2:] == [("rolled-back", "production"), ("failed", "production")]
    rolled, failed = found[-2:]
    assert rolled["payload"]["details"] == {"to": "v1.0.0"}
    assert "ROLLED BACK to v1.0.0" in failed["payload"]["message"]
    assert failed["payload"]["rolled_back_to"] == "v1.0.0"
    assert ("live", "production") not in _names(found)


def test_the_gate_waiting_then_rejected(world: SandboxWorld) -> None:
    app = ready_app(world, "events-gate")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    running = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED", timeout=240)
    waiting = _milestones(app, "approval.waiting")[-1]
    assert waiting["payload"]["from_version"] == "v1.0.0" and waiting["payload"]["to_version"] == "v1.0.1"
    resume_run(api_url(), str(paused.id), {"approve": False, "approver": "bob", "reason": "error rate up"})
    assert running.join(timeout=240).is_failed()
    found = _milestones(app, "approval.rejected", "failed")
    names = _names(found)
    assert names[names.index(("approval.waiting", "production")) :] == [
        ("approval.waiting", "production"),
        ("approval.rejected", "production"),
        ("failed", "production"),
    ]
    rejected = found[names.index(("approval.rejected", "production"))]
    assert rejected["payload"]["by"] == "bob" and rejected["payload"]["reason"] == "error rate up"


def test_the_gate_waiting_then_approved_then_live(world: SandboxWorld) -> None:
    app = ready_app(world, "events-approve")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    running = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED", timeout=240)
    resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "looks good"})
    assert running.join(timeout=240).is_completed()
    found = _milestones(app, "approval.waiting", "approval.approved", "live")
    assert [name for name in _names(found) if name[1] == "production"] == [
        ("approval.waiting", "production"),
        ("approval.approved", "production"),
        ("live", "production"),
    ]
    approved = found[_names(found).index(("approval.approved", "production"))]
    assert approved["payload"]["by"] == "alice" and approved["payload"]["reason"] == "looks good"


def test_a_rollback_run_says_rolled_back(world: SandboxWorld) -> None:
    app = ready_app(world, "events-rollback", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    state = rollback(pipeline_file=str(app.pipeline_file), environment="production", return_state=True)
    assert state.is_completed(), state.message
    found = _milestones(app, "live", "rolled-back")
    assert _names(found)[-1] == ("rolled-back", "production")
    assert found[-1]["payload"]["details"] == {"to": "v1.0.0"}


def test_the_documented_event_names_are_exactly_the_milestones() -> None:
    """docs/events.md is the interface: it names exactly the milestones the code emits (each one is asserted
    on a real server by a test above)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    documented = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `promote.")}
    assert documented == {PREFIX + name for name in MILESTONES}
