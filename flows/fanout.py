"""The nightly fanned out: over the work pool (one promote-pipeline run per pipeline file, started as the
nightly's children and shared out by the workers, then waited for; a run suspended for an approval counts as
done), or over Prefect's task workers (one background task per pipeline file, run in their long-lived
processes, then waited for)."""

from __future__ import annotations

import time
from typing import Any, Literal
from uuid import UUID

from prefect import get_run_logger
from prefect.client.schemas.objects import FlowRun, State

from flows.outcomes import Advance, PipelineOutcome
from tasks import prefectapi, prefectruns

FanOut = Literal["threads", "deployments", "task-workers"]
PIPELINE_DEPLOYMENT = "promote-pipeline/default"
_FAN_OUT_POLL_SECONDS = 5.0
_RESULT_SECONDS = 120.0  # reading an ended task's result back (its stored state and result)


def fanned_outcome(pipeline_file: str, run_id: str, state: State[Any] | None, waited: float) -> PipelineOutcome:
    """What a promote-pipeline run's state says, as the nightly reports it (None: not final in time)."""
    outcome = PipelineOutcome(pipeline_file, run_id=run_id)
    if state is None:
        outcome.failed = f"did not end within {waited:.0f}s; it goes on running (see the run)"
    elif state.is_completed():
        outcome.summary = state.message or "completed"
    elif state.is_paused():  # waiting for an approval (suspended): nothing held, the gate decides later
        outcome.summary = f"{state.name}: waiting for approval" + (f" ({state.message})" if state.message else "")
    else:
        outcome.failed = f"{state.name}: {state.message or 'no message'}"
    if outcome.failed:
        outcome.failed_in = "promote-pipeline"
    return outcome


def fan_out(
    files: list[str],
    *,
    production: bool,
    dry_run: bool,
    advance: Advance,
    deployment: str,
    wait_seconds: float,
    poll_seconds: float = _FAN_OUT_POLL_SECONDS,
) -> dict[str, PipelineOutcome]:
    """One run of ``deployment`` per pipeline file, picked up by the work pool's workers; wait for them all.

    A run that suspends for an approval counts as done for tonight. Idempotent per nightly run: a retried
    nightly finds the runs it already started (the idempotency key is the nightly run and the file)."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound
    from prefect.runtime import flow_run

    log = get_run_logger()
    parent = flow_run.get_id() or "local"
    runs: dict[str, str] = {}
    for file in files:
        try:
            run = run_deployment(
                deployment,
                parameters={"pipeline_file": file, "production": production, "dry_run": dry_run, "advance": advance},
                timeout=0,
                as_subflow=True,
                idempotency_key=f"nightly-{parent}-{file}",
            )
        except ObjectNotFound:
            raise RuntimeError(
                f"fan_out_to=deployments needs the deployment {deployment!r}: run `prefect deploy --all` "
                "(prefect.yaml defines promote-pipeline/default)"
            ) from None
        assert isinstance(run, FlowRun)  # called from sync code: the sync variant
        runs[file] = str(run.id)
    log.info(f"started {len(runs)} {deployment} runs; the work pool's workers share them out")
    started = time.monotonic()
    pending = {run_id: file for file, run_id in runs.items()}
    ended: dict[str, State[Any]] = {}
    last_report = started
    with get_client(sync_client=True) as client:
        while pending:
            ids = [UUID(r) for r in pending]
            try:
                found = prefectruns.read_runs(client, ids)
            except prefectapi.PrefectUnavailableError as exc:
                log.warning(f"{exc}; asking again next poll")
                found = []
            for run in found:
                if run.state is not None and (run.state.is_final() or run.state.is_paused()):
                    ended[str(run.id)] = run.state
                    pending.pop(str(run.id), None)
            now = time.monotonic()
            if not pending or now - started >= wait_seconds:
                break
            if now - last_report >= 60:
                log.info(f"{len(ended)} of {len(runs)} pipeline runs ended; waiting for {len(pending)}")
                last_report = now
            time.sleep(min(poll_seconds, max(0.1, wait_seconds - (now - started))))
    waited = time.monotonic() - started
    return {file: fanned_outcome(file, run_id, ended.get(run_id), waited) for file, run_id in runs.items()}


def fan_out_to_task_workers(
    files: list[str], *, production: bool, dry_run: bool, advance: Advance, wait_seconds: float
) -> dict[str, PipelineOutcome]:
    """One promote-pipeline background task per pipeline file, run by whichever task worker takes it
    (flows/pipelinetask.py); wait for them all, for ``wait_seconds`` at most. A pipeline waiting at a gate keeps
    its task running (its nested run pauses), as in the nightly's own threads."""
    from prefect.futures import wait

    from flows.outcomes import PipelineFailedError
    from flows.pipelinetask import promote_pipeline_task

    log = get_run_logger()
    futures = {file: promote_pipeline_task.delay(file, production, dry_run, advance) for file in files}
    log.info(
        f"submitted {len(futures)} promote-pipeline tasks; the task workers share them out"
        " (prefect task serve flows/pipelinetask.py:promote_pipeline_task)"
    )
    started = time.monotonic()
    _done, not_done = wait(list(futures.values()), timeout=wait_seconds)
    waited = time.monotonic() - started
    outcomes: dict[str, PipelineOutcome] = {}
    for file, future in futures.items():
        if future in not_done:
            outcome = PipelineOutcome(
                file,
                failed=f"task run {future.task_run_id} did not end within {waited:.0f}s (is a task worker running?)",
                failed_in="promote-pipeline",
            )
        else:
            try:  # ended: its final state came as an event; the server may record it a moment later
                outcome = future.result(timeout=_RESULT_SECONDS, raise_on_failure=True)
            except PipelineFailedError as exc:
                outcome = exc.reported()
            except Exception as exc:
                outcome = PipelineOutcome(file, failed=str(exc) or type(exc).__name__, failed_in="promote-pipeline")
        outcomes[file] = outcome
    return outcomes
