"""From a registry push to a promote-rc run, all real: a docker-registry whose notifications go to the receiver
(``promote receive``'s server, in this process), the promote.source.pushed event on the real Prefect server,
the deployment trigger that ``prefect deploy --all`` created from prefect.yaml, and a process worker running
the triggered promote-rc, which writes the registry's new tag to staging."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import get_client

from sandbox.world import SandboxWorld
from tests.support.events import read_events
from tests.support.flowruns import ready_app, running_image
from tests.support.registry import push_image, run_registry
from webhooks.receiver import Debouncer, Receiver, emit_prefect_event, routes_from, serve

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

TOKEN = "registry-notify-token-4711"


WAIT_SECONDS = 600


def _why_not(runs: list[Any], rx: Receiver, worker: dict[str, str], app: str, tmp_path: Path) -> str:
    """What there is to see when no promote-rc run ended in time: the runs, the events, the worker's log."""
    states = [(r.name, r.state.name if r.state else None) for r in runs]
    events = read_events(worker["PREFECT_API_URL"], resource_prefix=f"promote.pipeline.{app}", event_prefix="promote.")
    log = tmp_path / "worker.log"
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no worker log)"
    return (
        f"no promote-rc run ended within {WAIT_SECONDS} s of the push; runs: {states}; receiver refused: "
        f"{rx.refused}; promote events: {[e['event'] for e in events]}; the worker's log ends:\n{tail}"
    )


def _promote_rc_runs(pipeline_file: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [
        r
        for r in runs
        if r.name and (r.parameters or {}).get("pipeline_file") == pipeline_file and r.deployment_id is not None
    ]


# The wait below is bounded on its own (and says why when it ends); the whole test, with the world, the worker's
# `prefect deploy --all` and the registry before it, gets room for that bound on a busy machine.
@pytest.mark.timeout(1200)
def test_a_burst_of_registry_pushes_starts_one_promote_rc_through_the_worker(
    world: SandboxWorld,
    worker: dict[str, str],
    tmp_path: Path,
) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    debouncer = Debouncer(emit_prefect_event, seconds=2)
    rx = Receiver(lambda: routes_from(pipelines), {"registry": TOKEN}, debouncer)
    server = serve(rx, "127.0.0.1", 0)
    endpoint = {
        "name": "promote",
        "url": f"http://127.0.0.1:{server.server_address[1]}/registry",
        "headers": {"Authorization": [f"Bearer {TOKEN}"]},
        "timeout": "5s",
        "threshold": 3,
        "backoff": "1s",
    }
    try:
        with run_registry(tmp_path / "registry", notifications={"endpoints": [endpoint]}) as registry:
            world.registry_url = registry.url
            app = ready_app(world, "trig", strategy="image-policy", approval=False)
            (pipelines / app.pipeline_file.name).symlink_to(app.pipeline_file)
            pipeline_file = str(pipelines / app.pipeline_file.name)
            pushed = datetime.now(UTC)
            push_image(registry.url, f"sandbox/{app.name}", ["1.0.1", "1.1.0-rc.1"])

            # Debounce, the event, the trigger, the worker's next poll, the run: generous, for a busy machine.
            deadline = time.monotonic() + WAIT_SECONDS
            runs: list[Any] = []
            while time.monotonic() < deadline:
                runs = _promote_rc_runs(pipeline_file)
                if runs and runs[0].state is not None and runs[0].state.is_final():
                    break
                time.sleep(0.5)
            assert runs and runs[0].state is not None and runs[0].state.is_final(), _why_not(
                runs, rx, worker, app.name, tmp_path
            )
            run = runs[0]
            assert run.state is not None and run.state.is_completed(), run.state
            assert run.start_time is not None
            # For the closing note: what a user waits from a push to the run (debounce 2 s, worker polling).
            print(f"registry push -> promote-rc run started: {(run.start_time - pushed).total_seconds():.1f}s")
            assert running_image(world, app, "staging").endswith(":1.1.0-rc.1")
            assert (run.parameters or {}).get("requested_by") == "registry push by anonymous"
            events = read_events(
                worker["PREFECT_API_URL"], resource_prefix=f"promote.pipeline.{app.name}", event_prefix="promote.source"
            )
            assert len(events) == 1 and events[0]["payload"]["pushes"] >= 2  # two tags, one event
            assert len(_promote_rc_runs(pipeline_file)) == 1
    finally:
        server.shutdown()
        server.server_close()
