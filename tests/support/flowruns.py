"""Flow runs as the flow tests drive and read them: a sandbox app ready to promote, a flow run in a thread, runs
by state, a run's artifacts, the board artifact, an origin's tags, subjects and evidence notes, the image a
Deployment runs, and commands run from the project root."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from kubernetes import client
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun, State
from prefect.client.schemas.sorting import ArtifactSort

from flows.promote_rc import promote_rc
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tasks.board import board_key
from tests.conftest import unique

ROOT = Path(__file__).resolve().parents[2]


def tags(app: SandboxApp) -> list[str]:
    return git(app.origin, "tag", "--list").split()


def subjects(app: SandboxApp) -> list[str]:
    return git(app.origin, "log", "--format=%s", "main").splitlines()


def notes(app: SandboxApp, ref: str) -> list[evidence.Record]:
    commit = git(app.origin, "rev-parse", f"{ref}^{{commit}}")
    try:
        text = git(app.origin, "notes", "--ref=promote", "show", commit)
    except subprocess.CalledProcessError:
        return []
    return evidence.parse_records(text)


def read_run(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def wait_for_state(name_filter: Callable[[FlowRun], bool], state: str, timeout: float = 60) -> FlowRun:
    """The first flow run matching ``name_filter`` that reaches ``state`` (e.g. PAUSED)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(limit=200):
                if run.state and run.state.type.value == state and name_filter(run):
                    return run
        time.sleep(0.3)
    raise AssertionError(f"no flow run reached {state} within {timeout}s")


def by_pipeline(app: SandboxApp, flow_prefix: str = "") -> Callable[[FlowRun], bool]:
    return lambda run: (run.parameters or {}).get("pipeline_file") == str(app.pipeline_file)


def artifacts_of(run_id: UUID) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key or "": str(a.data) for a in found}


class InThread:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.state: State[Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.state = fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 120) -> State[Any]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the flow did not finish"
        if self.error:
            raise self.error
        assert self.state is not None
        return self.state


def api_url() -> str:
    return os.environ["PREFECT_API_URL"]


def ready_app(world: SandboxWorld, name: str, **kwargs: Any) -> SandboxApp:
    app = world.create_app(unique(name), **kwargs)
    deadline = time.monotonic() + 300  # the simulated Argo CD first rolls out v1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.commit_change("feature: faster checkout")
    return app


def rc_verified(app: SandboxApp) -> UUID | None:
    state = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id


CRASH_SCRIPT = """
import sys
from flows.{module} import {flow}
state = {flow}(pipeline_file=sys.argv[1], return_state=True)
print("unexpectedly finished:", state)
"""


def _newest_board(app: SandboxApp) -> Any:
    """The newest ``board-<pipeline>`` artifact, read through the Prefect client."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[board_key(app.name)])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {board_key(app.name)}"
    return found[0]


def latest_board(app: SandboxApp) -> tuple[str, list[dict[str, str]]]:
    """(artifact id, rows) of the newest ``board-<pipeline>`` artifact."""
    newest = _newest_board(app)
    data: Any = newest.data
    return str(newest.id), json.loads(data) if isinstance(data, str) else data


def board_picture(app: SandboxApp) -> str:
    """The SVG document of the newest ``board-<pipeline>`` artifact's picture (a data URI in its description)."""
    description = _newest_board(app).description or ""
    marker = "(data:image/svg+xml;base64,"
    assert marker in description, f"no picture in the board's description: {description[:300]!r}"
    encoded = description.split(marker, 1)[1].split(")", 1)[0]
    return base64.b64decode(encoded).decode()


def board_writes(app: SandboxApp) -> int:
    """How many versions of ``board-<pipeline>`` the server holds (each rewrite is one)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[board_key(app.name)])), limit=200
        )
    return len(found)


def running_image(world: SandboxWorld, app: SandboxApp, env: str) -> str:
    deployment = client.AppsV1Api(world.api).read_namespaced_deployment(app.name, f"{app.name}-{env}")
    return str(deployment.spec.template.spec.containers[0].image)


ARTIFACTS = ROOT / "test-artifacts"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
