"""Deployment runs as the suspend-and-resume tests watch them: started through the API, waited for by state."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

from prefect.deployments import run_deployment

from tests.support.flowruns import read_run


def suspended_run(app_file: Path) -> UUID:
    flow_run = run_deployment("promote-production/default", parameters={"pipeline_file": str(app_file)}, timeout=0)
    return flow_run.id


def wait_for(run_id: UUID, name: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_run(run_id).state
        if state is not None and state.name == name:
            return
        if state is not None and state.is_final():
            raise AssertionError(f"flow run {run_id} ended {state.name}: {state.message}")
        time.sleep(0.3)
    raise AssertionError(f"flow run {run_id} was not {name} within {timeout}s (it is {read_run(run_id).state})")


def left_suspension(run_id: UUID, timeout: float = 120) -> float:
    """Seconds until the run is no longer Suspended."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        state = read_run(run_id).state
        if state is not None and state.name != "Suspended":
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"flow run {run_id} was still Suspended after {timeout}s")


def wait_final(run_id: UUID, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_run(run_id).state
        if state is not None and state.is_final():
            assert state.is_completed(), f"{state.name}: {state.message}"
            return
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout}s")
