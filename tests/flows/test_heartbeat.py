"""Heartbeats without Prefect's per-run second (flows/heartbeat.py), against a real Prefect server.

Prefect's engine beats from a thread it joins when the run ends (prefect/flow_engine.py, ``_send_heartbeats``);
where we start runs ourselves that thread is off and ours beats instead: the same event, for the same run.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prefect import flow
from prefect.settings import get_current_settings

from flows.heartbeat import beats, runs_without_the_wait
from flows.subflows import run_subflow
from tests.support.events import wait_for_events

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

seen: dict[str, Any] = {}


def _ours() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("promote-heartbeat-")]


@beats
@flow(name="heartbeat-probe")
def probe() -> str:
    from prefect.runtime import flow_run

    seen["frequency"] = get_current_settings().flows.heartbeat_frequency
    seen["ours"] = [thread.name for thread in _ours()]
    return str(flow_run.id)


@beats
@flow(name="heartbeat-parent")
def parent() -> str:
    seen["parent_frequency"] = get_current_settings().flows.heartbeat_frequency
    child: str = run_subflow(probe)  # the nightly's way of a nested run
    return child


def _heartbeats_of(api_url: str, run_id: str) -> list[dict[str, Any]]:
    return wait_for_events(
        api_url, resource_prefix=f"prefect.flow-run.{run_id}", names={"prefect.flow-run.heartbeat"}, timeout=120
    )


def test_a_run_started_without_the_wait_beats_from_our_thread_and_it_stops_with_the_run(prefect_api: str) -> None:
    with runs_without_the_wait():
        run_id = probe()
    assert seen["frequency"] is None, "Prefect's own heartbeat thread was on: its join costs every run a second"
    assert seen["ours"] == [f"promote-heartbeat-{run_id[:8]}"]
    for thread in _ours():
        thread.join(timeout=60)  # stopped by the run's end: returns at once (it is never joined in production)
    assert _ours() == []
    beats_seen = [e for e in _heartbeats_of(prefect_api, run_id) if e["event"] == "prefect.flow-run.heartbeat"]
    beat = beats_seen[0]  # one at least, or a zombie-run automation would never arm
    assert beat["resource"]["prefect.resource.id"] == f"prefect.flow-run.{run_id}"
    roles = {related["prefect.resource.role"] for related in beat["related"]}
    assert "flow" in roles  # what Prefect's own heartbeat names, so automations written for it match ours


def test_a_run_started_elsewhere_keeps_prefects_heartbeat_and_gets_no_second_one() -> None:
    probe()
    assert seen["frequency"] == 180  # Prefect's default (prefect/settings/models/flows.py)
    assert seen["ours"] == []


def test_prefects_heartbeat_can_be_kept_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTE_PREFECT_HEARTBEATS", "1")
    with runs_without_the_wait():
        probe()
    assert seen["frequency"] == 180 and seen["ours"] == []


def test_the_nightlys_nested_runs_do_without_the_wait_while_their_parent_keeps_prefects() -> None:
    parent()
    assert seen["parent_frequency"] == 180  # a top-level run started by a worker: Prefect's, untouched
    assert seen["frequency"] is None and len(seen["ours"]) == 1


def test_the_hooks_leave_no_lines_in_the_runs_log() -> None:
    """Prefect logs two INFO lines per hook; ours run on every run and stay out of its log."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    keep = Keep()
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(keep)
    try:
        with runs_without_the_wait():
            probe()
    finally:
        logger.removeHandler(keep)
    assert any("Finished in state Completed" in line for line in lines), lines  # the handler did see the run
    assert not [line for line in lines if "_heartbeat_" in line]
