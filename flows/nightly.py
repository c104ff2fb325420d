"""nightly: for every pipeline in a directory, cut and verify an rc when there are new commits, then promote
it to production. Pipelines run side by side (bounded); one pipeline's failure does not stop the others."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.fanout import PIPELINE_DEPLOYMENT, FanOut, fan_out, fan_out_to_task_workers
from flows.heartbeat import beats
from flows.inputs import pipeline_path, started_by
from flows.outcomes import Advance, PipelineFailedError, PipelineOutcome
from flows.pipelinerun import promotions_cell, rc_cell
from flows.promote_pipeline import promote_pipeline_flow
from flows.subflows import run_subflow
from pipeline.load import discover_pipelines, load_pipeline
from tasks import markdown as md
from tasks.approval import fail_expired_approvals
from tasks.measure import OVERALL, measure_pipeline
from tasks.metrics import DeliveryMetrics, Window, combine, render_markdown

METRICS_WINDOW = timedelta(days=30)  # the delivery-metrics artifact's window, ending when the nightly ends
_REASON_LIMIT = 300  # a pipeline that could not be measured: why, cut


def _cell(text: object) -> str:
    return md.cell(text, 1000)


def nightly_report(results: dict[str, PipelineOutcome], *, started_by: str, seconds: float) -> str:
    """The nightly's audit record: one row per pipeline file with what promote-rc and the promotions after it
    did (each part leaves its own detailed record in the pipeline's run)."""
    lines = [
        "# nightly",
        "",
        f"started by {md.text(started_by)}; {len(results)} pipeline(s) in {seconds:.1f}s",
        "",
        "| pipeline file | promote-rc | promote-production (and the environments before it) |",
        "|---|---|---|",
    ]
    if any(outcome.run_id for outcome in results.values()):  # fanned out: each run's own closing message
        lines[-2:] = ["| pipeline file | promote-pipeline run | what it did |", "|---|---|---|"]
        for file, outcome in results.items():
            said = f"FAILED: {outcome.failed}" if outcome.failed else outcome.summary or "-"
            lines.append(f"| {_cell(file)} | {_cell(outcome.run_id or '-')} | {_cell(said)} |")
        return "\n".join(lines)
    for file, outcome in results.items():
        lines.append(f"| {_cell(file)} | {_cell(rc_cell(outcome))} | {_cell(promotions_cell(outcome))} |")
    return "\n".join(lines)


def write_metrics_artifact(files: list[str], warn: Callable[[str], None], *, fetch: bool = False) -> None:
    """The ``delivery-metrics`` artifact: the DORA keys of every pipeline over the last METRICS_WINDOW, from
    the evidence in Git (docs/metrics.md). Never raises: a report must not fail the promotions it reports on.
    A pipeline that cannot be measured (unreadable file or notes) gets a line saying why; the rest still count."""
    try:
        now = datetime.now(UTC)
        window = Window(now - METRICS_WINDOW, now)
        measured: list[DeliveryMetrics] = []
        missing: list[str] = []
        for file in files:
            try:  # fetch=False: this process's promotion runs fetched these clones moments ago
                measured.append(measure_pipeline(load_pipeline(file), window, fetch=fetch))
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                missing.append(f"- {_cell(file)}: not measured: {_cell(reason[:_REASON_LIMIT])}")
        rows = [*measured, combine(OVERALL, window, measured)] if measured else []
        markdown = render_markdown(rows, window) + ("\n\n" + "\n".join(missing) if missing else "")
        create_markdown_artifact(
            key="delivery-metrics", markdown=markdown, description="delivery metrics (DORA) from the evidence in Git"
        )
    except Exception as exc:
        warn(f"could not write the delivery-metrics artifact: {exc}")


@beats
@flow(name="nightly", validate_parameters=True)
def nightly(
    pipelines_dir: str = "deployments",
    production: bool = True,
    max_parallel: Annotated[int, Field(ge=1, le=32)] = 10,
    dry_run: bool = False,
    advance: Advance = "all",
    fan_out_to: FanOut = "threads",
    pipeline_deployment: str = PIPELINE_DEPLOYMENT,
    wait_hours: Annotated[float, Field(gt=0, le=48)] = 6.0,
) -> dict[str, PipelineOutcome]:
    """Promote every pipeline in ``pipelines_dir``.

    Args:
        pipelines_dir: directory with pipeline files (*.yaml), on the worker
        production: also promote verified candidates to production (approval gates still apply)
        max_parallel: how many pipelines run at the same time (1-32)
        dry_run: show what would change and change nothing
        advance: "all": each pipeline as far along its chain as gates allow; "one-step": every environment
            takes one step per night (what its upstream verified before tonight)
        fan_out_to: "threads": the pipelines run in this run's process, max_parallel at a time; "deployments":
            one run of pipeline_deployment per pipeline, shared out by the work pool's workers (their limits,
            not max_parallel, bound how many run at once); "task-workers": one background task per pipeline,
            run by Prefect's task workers in their long-lived processes (their --limit bounds how many at once)
        pipeline_deployment: the promote-pipeline deployment fan_out_to="deployments" starts
        wait_hours: with fan_out_to="deployments" or "task-workers", how long to wait for the pipelines to end
    """
    log = get_run_logger()
    started = time.monotonic()
    # Each file too: a symlink in the directory must not lead out of the roots.
    files = [pipeline_path(str(p)) for p in discover_pipelines(pipeline_path(pipelines_dir))]
    if not files:
        log.warning(f"no pipeline files in {pipelines_dir}")
        return {}
    if not dry_run:
        try:  # once here, not in every pipeline's promote-production; housekeeping must not stop the nightly
            for expired in fail_expired_approvals():
                log.warning(f"flow run {expired} waited for approval past its window: ended it as Failed")
        except Exception as exc:
            log.warning(f"could not sweep expired approvals (the next gated promotion will): {exc}")
    results: dict[str, PipelineOutcome] = {}
    failed: list[str] = []
    if fan_out_to != "threads":
        wait_seconds = wait_hours * 3600
        if fan_out_to == "task-workers":
            results = fan_out_to_task_workers(
                files, production=production, dry_run=dry_run, advance=advance, wait_seconds=wait_seconds
            )
        else:
            results = fan_out(
                files,
                production=production,
                dry_run=dry_run,
                advance=advance,
                deployment=pipeline_deployment,
                wait_seconds=wait_seconds,
            )
        failed = [file for file, outcome in results.items() if outcome.failed]
        for file in failed:
            outcome = results[file]
            run = f" (run {outcome.run_id})" if outcome.run_id else ""
            log.error(f"{file}: {outcome.failed_in}: {outcome.failed}{run}")
        # The promotions ran in other processes, maybe on other machines: this one's clones are behind.
        return _close_nightly(results, files, failed, started, fetch=True)
    # Plain threads that carry this run's context, so that each pipeline's promote-pipeline run is its child.
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="pipeline") as pool:
        futures = {
            file: pool.submit(contextvars.copy_context().run, _pipeline_run, file, production, dry_run, advance)
            for file in files
        }
        for file, future in futures.items():
            try:
                results[file] = future.result()
            except PipelineFailedError as exc:  # one pipeline's failure does not stop the others; reported below
                failed.append(file)
                results[file] = exc.reported()
                log.error(f"{file}: {exc}")
            except Exception as exc:
                failed.append(file)
                results[file] = PipelineOutcome(file, failed=str(exc))
                log.error(f"{file}: {exc}")
    return _close_nightly(results, files, failed, started)


def _pipeline_run(pipeline_file: str, production: bool, dry_run: bool, advance: Advance) -> PipelineOutcome:
    """One pipeline as one nested promote-pipeline run (its steps are that run's task runs)."""
    outcome = run_subflow(
        promote_pipeline_flow, pipeline_file=pipeline_file, production=production, dry_run=dry_run, advance=advance
    )
    assert isinstance(outcome, PipelineOutcome)
    return outcome


def _close_nightly(
    results: dict[str, PipelineOutcome], files: list[str], failed: list[str], started: float, *, fetch: bool = False
) -> dict[str, PipelineOutcome]:
    """The nightly's artifacts and outcome, however the pipelines ran."""
    log = get_run_logger()
    log.info(f"nightly: {len(files) - len(failed)} of {len(files)} pipelines succeeded")
    try:
        create_markdown_artifact(
            key="nightly",
            markdown=nightly_report(results, started_by=started_by(), seconds=time.monotonic() - started),
            description="nightly audit record: what each pipeline did",
        )
    except Exception as exc:  # the pipelines' outcome decides the run, not a missing report
        log.warning(f"could not write the nightly's audit artifact: {exc}")
    write_metrics_artifact(files, log.warning, fetch=fetch)
    if failed:
        raise RuntimeError(f"nightly: {len(failed)} of {len(files)} pipelines failed: {', '.join(failed)}")
    return results
