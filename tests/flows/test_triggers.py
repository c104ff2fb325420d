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


def _promote_rc_runs(pipeline_file: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
    return [
        r
        for r in runs
        if r.name and (r.parameters or {}).get("pipeline_file") == pipeline_file and r.deployment_id is not None
    ]


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

            deadline = time.monotonic() + 300  # debounce, the event, the trigger, the worker's next poll
            runs: list[Any] = []
            while time.monotonic() < deadline:
                runs = _promote_rc_runs(pipeline_file)
                if runs and runs[0].state is not None and runs[0].state.is_final():
                    break
                time.sleep(0.5)
            assert runs, f"no promote-rc run within 300 s of the push; receiver refused: {rx.refused}"
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
