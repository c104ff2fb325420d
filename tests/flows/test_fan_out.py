"""The nightly fanned out over a work pool: a Prefect server of this test's own on PostgreSQL, `prefect deploy
--all`, two process workers, and the nightly (itself a deployment run) starting one promote-pipeline run per
pipeline, which the two workers share out."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

from flows.fanout import fanned_outcome
from flows.nightly import nightly_report
from sandbox.postgres import INSTALL_HINT, PostgresUnavailableError, local_postgres
from sandbox.prefect_server import PrefectServer
from sandbox.world import SandboxWorld
from tests.support.flowruns import ROOT, ready_app, tags
from tests.support.processes import stop_group

pytestmark = [pytest.mark.kube, pytest.mark.prefect]


def run(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def start_logged(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker process of the project's, in a process group of its own, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def postgres_prefect() -> Iterator[PrefectServer]:
    """A Prefect server on a throwaway PostgreSQL (the database many workers should share)."""
    try:
        postgres = local_postgres()
        database = postgres.__enter__()
    except PostgresUnavailableError:
        pytest.fail(f"the fan-out test runs a Prefect server on PostgreSQL: {INSTALL_HINT}", pytrace=False)
    server = PrefectServer(
        home=Path(tempfile.mkdtemp(prefix="promote-fanout-prefect-")),
        extra_env={"PREFECT_SERVER_DATABASE_CONNECTION_URL": database.url},
    )
    try:
        with server:
            yield server
    finally:
        postgres.__exit__(None, None, None)


def test_a_fanned_out_nightly_shares_its_pipelines_between_two_workers(
    world: SandboxWorld, postgres_prefect: PrefectServer, tmp_path: Path
) -> None:
    env = {
        **postgres_prefect.env(),
        "PROMOTE_PROJECT_DIR": str(ROOT),
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # the workers look for runs every second
        "PROMOTE_PIPELINE_ROOTS": str(tmp_path),  # deployment runs read pipeline files only under these
    }
    prefect = [sys.executable, "-m", "prefect"]
    created = run(*prefect, "work-pool", "create", "promote", "--type", "process", "--overwrite", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run(*prefect, "--no-prompt", "deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "promote-pipeline/default" in deployed.stdout, deployed.stdout

    apps = [ready_app(world, f"fan{i}", approval=False) for i in range(4)]
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    for app in apps:
        (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())

    for name in ("one", "two"):  # both caches hold every clone as it is before tonight (then stale)
        status = run(
            sys.executable, "-m", "promote.cli", "status", str(pipelines),
            env={**env, "PROMOTE_CACHE_DIR": str(tmp_path / f"cache-{name}")},
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr

    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for name in ("one", "two"):
            log = tmp_path / f"worker-{name}.log"
            # Each worker keeps its clones in a cache of its own, as on two machines: what one worker's runs
            # pushed, the other's cache has not fetched.
            cache = {"PROMOTE_CACHE_DIR": str(tmp_path / f"cache-{name}")}
            # Three runs each at most: the nightly holds a slot while it waits, so neither worker can take all
            # four pipelines.
            start = [*prefect, "worker", "start", "--pool", "promote", "--name", name, "--limit", "3"]
            workers.append((start_logged(start, {**env, **cache}, log), log))
        nightly = run(
            sys.executable,
            "-m",
            "promote.cli",
            "trigger",
            "nightly/default",
            "--param",
            f"pipelines_dir={pipelines}",
            "--param",
            "fan_out_to=deployments",
            "--wait",
            "--timeout",
            "900",
            env=env,
            timeout=960,
        )
        logs = {log.name: log.read_text(errors="replace") for _, log in workers}
        assert nightly.returncode == 0, nightly.stdout + nightly.stderr + "\n".join(logs.values())[-4000:]
    finally:
        for proc, _ in workers:
            proc.terminate()
        for proc, _ in workers:
            stop_group(proc, grace_seconds=30)

    for app in apps:  # every pipeline went all the way to production
        assert "v1.0.1" in tags(app), (app.name, tags(app))
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(postgres_prefect.api_url) as client:
        runs = [r for r in client.read_flow_runs(limit=200) if (r.parameters or {}).get("pipeline_file")]
        flow_names = {r.flow_id: client.read_flow(r.flow_id).name for r in client.read_flow_runs(limit=200)}
        pipeline_runs = {str(r.id): r for r in runs if flow_names[r.flow_id] == "promote-pipeline"}
        nightly_run = next(r for r in client.read_flow_runs(limit=200) if flow_names.get(r.flow_id) == "nightly")
        # The run's own artifacts, waited for on a busy machine (the run ends after it wrote them, but a read may
        # still come before they are visible); what the run logged says why if they never come.
        deadline = time.monotonic() + 120
        while True:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[nightly_run.id]))
            )
            if {"nightly", "delivery-metrics"} <= {a.key for a in artifacts} or time.monotonic() > deadline:
                break
            time.sleep(1)
        run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[nightly_run.id]))
        run_logs = [entry.message for entry in client.read_logs(log_filter=run_filter)]
    keys = {a.key for a in artifacts}
    assert {"nightly", "delivery-metrics"} <= keys, (keys, nightly_run.state, run_logs[-20:])
    assert len(pipeline_runs) == 4, [r.name for r in runs]
    for pipeline_run in pipeline_runs.values():
        assert pipeline_run.parent_task_run_id is not None  # a child of the nightly in the UI
        assert pipeline_run.state is not None and pipeline_run.state.is_completed(), pipeline_run.state
        assert (pipeline_run.state.message or "").startswith("promote-rc: create v1.0.1-rc1; then: v1.0.0 -> v1.0.1")
    report = {a.key: str(a.data) for a in artifacts}
    assert "| pipeline file | promote-pipeline run | what it did |" in report["nightly"], report["nightly"]
    # The delivery metrics come from the nightly's own clones, fetched after the runs (on whichever worker
    # ran it): one production promotion per pipeline, whichever worker made it.
    for app in apps:
        assert f"| {app.name} | 1 (0.03) |" in report["delivery-metrics"], report["delivery-metrics"]
    # Which worker ran which pipeline run: each worker logs the runs it submits.
    ran = {
        name: {run_id for run_id in pipeline_runs if re.search(rf"submitting flow run '{run_id}'", text)}
        for name, text in logs.items()
    }
    assert all(ran.values()), {name: len(ids) for name, ids in ran.items()}
    assert set().union(*ran.values()) == set(pipeline_runs)


def test_what_a_fanned_out_run_ended_with_is_the_nightly_s_row() -> None:
    from prefect.states import Completed, Failed, Suspended

    done = fanned_outcome("a.yaml", "r1", Completed(message="promote-rc: create v1.0.1-rc1; then: -"), 10)
    assert done.summary == "promote-rc: create v1.0.1-rc1; then: -" and done.failed is None
    waiting = fanned_outcome("b.yaml", "r2", Suspended(), 10)
    assert waiting.failed is None and "waiting for approval" in (waiting.summary or "")
    failed = fanned_outcome("c.yaml", "r3", Failed(message="promote-rc: Degraded"), 10)
    assert failed.failed == "Failed: promote-rc: Degraded" and failed.failed_in == "promote-pipeline"
    late = fanned_outcome("d.yaml", "r4", None, 21600)
    assert late.failed is not None and re.search(r"did not end within 21600s", late.failed)
    report = nightly_report(
        {o.pipeline_file: o for o in (done, waiting, failed, late)}, started_by="schedule", seconds=1.0
    )
    assert "| pipeline file | promote-pipeline run | what it did |" in report
    assert "| a.yaml | r1 | promote-rc: create v1.0.1-rc1; then: - |" in report
    assert "| c.yaml | r3 | FAILED: Failed: promote-rc: Degraded |" in report


def test_a_nightly_fanned_out_to_task_workers_shares_its_pipelines_between_two_of_them(
    world: SandboxWorld, postgres_prefect: PrefectServer, tmp_path: Path
) -> None:
    """fan_out_to="task-workers": two of Prefect's task workers (long-lived processes, `prefect task serve`) on one
    PostgreSQL-backed server take the nightly's four pipelines between them, each as a promote-pipeline run nested
    under its background task; the nightly reads every pipeline's outcome back from them, a failed one's too."""
    env = {
        **postgres_prefect.env(),
        "PROMOTE_PROJECT_DIR": str(ROOT),
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PROMOTE_PIPELINE_ROOTS": str(tmp_path),
    }
    apps = [ready_app(world, f"tw{i}", approval=False) for i in range(4)]
    *good, bad = apps
    bad.env("staging").failure = "degraded"
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    for app in apps:
        (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
    prefect = [sys.executable, "-m", "prefect"]
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for name in ("one", "two"):
            log = tmp_path / f"task-worker-{name}.log"
            cache = {"PROMOTE_CACHE_DIR": str(tmp_path / f"cache-{name}")}  # as on two machines
            serve = [*prefect, "task", "serve", "flows/pipelinetask.py:promote_pipeline_task", "--limit", "2"]
            workers.append((start_logged(serve, {**env, **cache}, log), log))
        # Both subscribed before the pipelines come (a slow start must not leave them all to the other one).
        deadline = time.monotonic() + 180
        while not all("Subscribing to runs of task(s)" in log.read_text(errors="replace") for _, log in workers):
            assert time.monotonic() < deadline, [log.read_text(errors="replace")[-2000:] for _, log in workers]
            assert all(proc.poll() is None for proc, _ in workers), "a task worker exited"
            time.sleep(0.5)
        nightly = run(
            sys.executable, "-m", "promote.cli", "nightly", str(pipelines), "--fan-out-to", "task-workers",
            env={**env, "PROMOTE_CACHE_DIR": str(tmp_path / "cache-nightly")}, timeout=900,
        )  # fmt: skip
        logs = {log.name: log.read_text(errors="replace") for _, log in workers}
        said = nightly.stdout + nightly.stderr
        assert nightly.returncode == 1 and "1 of 4 pipelines failed" in said, (said[-4000:], logs)
    finally:
        for proc, _ in workers:
            stop_group(proc, grace_seconds=30)
    for app in good:  # every other pipeline went all the way to production
        assert "v1.0.1" in tags(app), (app.name, tags(app))
    assert "v1.0.1" not in tags(bad)
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(postgres_prefect.api_url) as client:
        flow_names = {r.flow_id: client.read_flow(r.flow_id).name for r in client.read_flow_runs(limit=200)}
        runs = client.read_flow_runs(limit=200)
        pipeline_runs = [r for r in runs if flow_names[r.flow_id] == "promote-pipeline"]
        nightly_run = next(r for r in runs if flow_names[r.flow_id] == "nightly")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[nightly_run.id]))
        )
    assert len(pipeline_runs) == 4 and sum(r.state is not None and r.state.is_completed() for r in pipeline_runs) == 3
    assert all(r.parent_task_run_id is not None for r in pipeline_runs)  # nested under its background task
    report = {a.key: str(a.data) for a in artifacts}["nightly"]
    for app in good:  # the nightly's row for each pipeline, read back from the task workers
        row = next(line for line in report.splitlines() if app.pipeline_file.name in line)
        assert "| create v1.0.1-rc1 | v1.0.0 -> v1.0.1 |" in row, report
    # The failed one: its error came back through the task's stored result, stage and reason apart.
    row = next(line for line in report.splitlines() if bad.pipeline_file.name in line)
    assert "| FAILED: " in row and "Degraded" in row and row.endswith("| - |"), row
    # Every pipeline ran in a task worker's process, none in the nightly's (each worker logs the promote-pipeline
    # runs it begins). Which worker takes which is Prefect's affair: a task worker accepts scheduled runs as they
    # come, beyond its --limit (it queues them), so one may take all four while the other waits.
    began = r"Beginning subflow run '[^']+' for flow 'promote-pipeline'"
    took = {name: len(re.findall(began, text)) for name, text in logs.items()}
    assert sum(took.values()) == 4, took
    assert not re.search(began, nightly.stdout + nightly.stderr)
