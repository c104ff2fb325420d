"""nightly: for every pipeline in a directory, cut and verify an rc when there are new commits, then promote
it to production. Pipelines run side by side (bounded); one pipeline's failure does not stop the others."""

from __future__ import annotations

import contextvars
import functools
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import httpx
from prefect import Flow, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import Field

from flows.common import started_by
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from pipeline.load import discover_pipelines
from tasks.approval import fail_expired_approvals

# How often a subflow whose run the Prefect API refused to create is asked for again (see run_subflow).
CREATE_ATTEMPTS = 3
_UNAVAILABLE = frozenset({429, 502, 503, 504})


def api_unavailable(exc: BaseException) -> bool:
    """The Prefect API could not take the request (overloaded, restarting), as opposed to refusing it."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code in _UNAVAILABLE
    return isinstance(exc, httpx.TransportError)


_progress = threading.local()  # per pipeline thread: whether the subflow being called got to Running


def _mark_running(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    _progress.started = True


@functools.cache
def _watched(subflow: Flow[..., dict[str, Any]]) -> Flow[..., dict[str, Any]]:
    """``subflow`` with a hook noting that it started. Built once per flow: ``with_options`` rebuilds the
    flow's parameter schema, a visible cost when done for every call."""
    return subflow.with_options(on_running=[*subflow.on_running_hooks, _mark_running])


def run_subflow(subflow: Flow[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    """Call ``subflow`` as a nested run; if the Prefect API refused to *create* the run, ask again.

    Why: on the default SQLite-backed server, creating a run (its tracking task run, then the flow run) is a
    read-then-write transaction that SQLite rejects while any other write is in progress ("database is
    locked" -> HTTP 503). With many pipelines writing task states at once, the client's own retries (after
    2, 4, 8, 16, 32 s) now and then all land on a lock, and the pipeline failed without having run. Only a
    run that never started is asked for again: nothing of it ran, so nothing can happen twice. (A sync
    subflow runs its hooks in the calling thread, so a thread-local flag tells whether it started.)
    """
    watched = _watched(subflow)
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        _progress.started = False
        try:
            result: dict[str, Any] = watched(**parameters)
            return result
        except Exception as exc:
            if _progress.started or not api_unavailable(exc) or attempt == CREATE_ATTEMPTS:
                raise
            status = exc.response.status_code if isinstance(exc, PrefectHTTPStatusError) else type(exc).__name__
            get_run_logger().warning(
                f"{subflow.name}: the Prefect API could not create the run ({status}); "
                f"asking again ({attempt + 1} of {CREATE_ATTEMPTS})"
            )
            time.sleep(random.uniform(1, 3))  # noqa: S311  # jitter: do not come back in step with the others
    raise AssertionError("unreachable")


class PipelineFailedError(RuntimeError):
    """A pipeline's nested run failed: which one (``stage``), and what the runs before it did (``result``)."""

    def __init__(self, stage: str, cause: Exception, result: dict[str, Any]) -> None:
        super().__init__(str(cause))
        self.stage, self.result = stage, result


def promote_pipeline(pipeline_file: str, production: bool, dry_run: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"pipeline_file": pipeline_file}
    try:
        rc = run_subflow(promote_rc, pipeline_file=pipeline_file, dry_run=dry_run, requested_by="nightly")
    except Exception as exc:
        raise PipelineFailedError("promote-rc", exc, result) from exc
    result["rc"] = rc
    if production and not dry_run and rc.get("action") != "skip":
        # Tags: exactly the rc just verified. Other strategies: production decides from what is verified
        # upstream (an image policy may not even allow staging's tag, e.g. a release candidate).
        pinned = rc.get("rc") if rc.get("strategy", "tag") == "tag" else None
        try:
            result["production"] = run_subflow(
                promote_production, pipeline_file=pipeline_file, rc=pinned, requested_by="nightly"
            )
        except Exception as exc:
            raise PipelineFailedError("promote-production", exc, result) from exc
    return result


def _cell(text: object) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def nightly_report(results: dict[str, Any], *, started_by: str, seconds: float) -> str:
    """The nightly's audit record: one row per pipeline file with what promote-rc and promote-production
    did (each nested run leaves its own detailed record)."""
    lines = [
        "# nightly",
        "",
        f"started by {started_by}; {len(results)} pipeline(s) in {seconds:.1f}s",
        "",
        "| pipeline file | promote-rc | promote-production |",
        "|---|---|---|",
    ]
    for file, result in results.items():
        failure = f"FAILED: {result['failed']}" if "failed" in result else None
        stage = result.get("failed_in", "promote-rc")  # an unexpected error stopped the pipeline at its start
        summary = result.get("rc")
        if summary is not None:
            rc = " ".join(str(v) for v in (summary.get("action"), summary.get("rc")) if v) or "-"
            rc += " (dry run)" if summary.get("dry_run") else ""
        else:
            rc = failure if failure and stage == "promote-rc" else "-"
        prod = result.get("production")
        if failure and stage == "promote-production":
            production = failure
        elif prod is None:
            production = "-"
        elif prod.get("nothing_to_do"):
            production = "nothing to do"
        else:
            production = f"{prod.get('from') or '?'} -> {prod.get('version') or '?'}"
        lines.append(f"| {_cell(file)} | {_cell(rc)} | {_cell(production)} |")
    return "\n".join(lines)


@flow(name="nightly", validate_parameters=True)
def nightly(
    pipelines_dir: str = "deployments",
    production: bool = True,
    max_parallel: Annotated[int, Field(ge=1, le=32)] = 10,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Promote every pipeline in ``pipelines_dir``.

    Args:
        pipelines_dir: directory with pipeline files (*.yaml), on the worker
        production: also promote verified candidates to production (approval gates still apply)
        max_parallel: how many pipelines run at the same time (1-32)
        dry_run: show what would change and change nothing
    """
    log = get_run_logger()
    started = time.monotonic()
    files = [str(p) for p in discover_pipelines(pipelines_dir)]
    if not files:
        log.warning(f"no pipeline files in {pipelines_dir}")
        return {"pipelines": 0}
    if not dry_run:
        try:  # once here, not in every pipeline's promote-production; housekeeping must not stop the nightly
            for expired in fail_expired_approvals():
                log.warning(f"flow run {expired} waited for approval past its window: ended it as Failed")
        except Exception as exc:
            log.warning(f"could not sweep expired approvals (the next gated promotion will): {exc}")
    results: dict[str, Any] = {}
    failed: list[str] = []
    # Plain threads that carry this run's context (so the subflows are its children), not a task per
    # pipeline: the promote-rc and promote-production runs already show each pipeline, and a task run per
    # pipeline cost the Prefect server about as much as a promotion step.
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="pipeline") as pool:
        futures = {
            file: pool.submit(contextvars.copy_context().run, promote_pipeline, file, production, dry_run)
            for file in files
        }
        for file, future in futures.items():
            try:
                results[file] = future.result()
            except PipelineFailedError as exc:  # one pipeline's failure does not stop the others; reported below
                failed.append(file)
                results[file] = {**exc.result, "failed": str(exc), "failed_in": exc.stage}
                log.error(f"{file}: {exc.stage}: {exc}")
            except Exception as exc:
                failed.append(file)
                results[file] = {"pipeline_file": file, "failed": str(exc)}
                log.error(f"{file}: {exc}")
    log.info(f"nightly: {len(files) - len(failed)} of {len(files)} pipelines succeeded")
    try:
        create_markdown_artifact(
            key="nightly",
            markdown=nightly_report(results, started_by=started_by(), seconds=time.monotonic() - started),
            description="nightly audit record: what each pipeline did",
        )
    except Exception as exc:  # the pipelines' outcome decides the run, not a missing report
        log.warning(f"could not write the nightly's audit artifact: {exc}")
    if failed:
        raise RuntimeError(f"nightly: {len(failed)} of {len(files)} pipelines failed: {', '.join(failed)}")
    return results
