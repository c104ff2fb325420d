"""Runs waiting for a pull request's merge (tasks/merges.py), against the real Prefect server: found by their
pause key, resumed when the forge says the pull request was decided, ended when their window closed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prefect import get_client
from prefect.states import Suspended

from flows.promote_production import promote_production
from tasks.approval import fail_expired_approvals
from tasks.merges import pause_key_prefix, resume_for, sweep

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def _waiting(client, pipeline_file: str, key: str, until: datetime, pin: dict[str, object] | None):
    """A deployment's run (the server reschedules only those on resume; this deployment has no work pool, so
    nothing picks the run up), suspended with ``key``, with the pin a waiting promotion leaves."""
    flow_id = client.create_flow(promote_production)
    deployment = client.create_deployment(flow_id=flow_id, name="merges-test")
    run = client.create_flow_run_from_deployment(deployment, parameters={"pipeline_file": pipeline_file})
    client.set_flow_run_state(run.id, Suspended(pause_expiration_time=until, pause_key=key), force=True)
    if pin is not None:
        client.create_flow_run_input(run.id, f"promote-pull-request-{pin['environment']}", json.dumps(pin))
    return run


def test_the_key_names_the_repository_and_the_pull_request() -> None:
    one = pause_key_prefix("git.example/team/app", 7)
    assert one.startswith("merge-") and one.endswith("-7-")
    assert one != pause_key_prefix("git.example/team/app", 17)  # "-7-" is not a prefix of "-17-"
    assert one != pause_key_prefix("git.example/team/other", 7)
    assert len(one) < 60 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in one)


def test_the_sweeper_resumes_decided_ones_ends_expired_ones_and_leaves_open_ones() -> None:
    start = datetime.now(UTC)
    later = start + timedelta(hours=1)
    states = {1: "merged", 2: "open", 3: "closed"}
    asked: list[tuple[str, str, int]] = []

    def state_of(pipeline_file: str, environment: str, number: int) -> str:
        asked.append((pipeline_file, environment, number))
        return states[number]

    with get_client(sync_client=True) as client:
        merged = _waiting(client, "m.yaml", pause_key_prefix("r", 1) + "1", later, {"number": 1, "environment": "prod"})
        still = _waiting(client, "o.yaml", pause_key_prefix("r", 2) + "1", later, {"number": 2, "environment": "prod"})
        closed = _waiting(client, "c.yaml", pause_key_prefix("r", 3) + "2", later, {"number": 3, "environment": "prod"})
        late = _waiting(client, "l.yaml", pause_key_prefix("r", 4) + "1", start + timedelta(minutes=10), None)
        approval = _waiting(client, "a.yaml", "approve-prod-v1-0-1", start + timedelta(minutes=10), None)
        result = sweep(state_of, now=start + timedelta(minutes=20), limit=200, client=client)
        ours = {merged.id, still.id, closed.id, late.id, approval.id}
        after = {run_id: client.read_flow_run(run_id).state for run_id in ours}
    assert ("m.yaml", "prod", 1) in asked and ("o.yaml", "prod", 2) in asked and ("c.yaml", "prod", 3) in asked
    assert result.resumed >= 2 and result.expired >= 1
    assert after[merged.id].name != "Suspended" and after[closed.id].name != "Suspended"
    assert after[still.id].name == "Suspended"
    assert after[late.id].type.value == "FAILED"
    assert "not merged within write.merge_timeout" in (after[late.id].message or "")
    assert after[approval.id].name == "Suspended"  # an approval is not the sweeper's  # type: ignore[union-attr]
    # ... and a pull request's wait is not the approval sweep's: that one says "approval timed out".
    with get_client(sync_client=True) as client:
        other = _waiting(client, "p.yaml", pause_key_prefix("r", 5) + "1", start + timedelta(minutes=10), None)
    assert str(other.id) not in fail_expired_approvals(now=start + timedelta(minutes=20))


def test_a_webhook_resumes_only_the_runs_waiting_for_that_pull_request() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    with get_client(sync_client=True) as client:
        seven = _waiting(client, "a.yaml", pause_key_prefix("git.example/team/app", 7) + "1", later, None)
        seventeen = _waiting(client, "b.yaml", pause_key_prefix("git.example/team/app", 17) + "1", later, None)
    resumed = resume_for(["git.example/team/app", "git.example/team/app-mirror"], 7)
    assert str(seven.id) in resumed and str(seventeen.id) not in resumed
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(seventeen.id).state.name == "Suspended"
