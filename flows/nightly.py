"""nightly: for every pipeline in a directory, cut and verify an rc when there are new commits, then promote
it to production. Pipelines run side by side (bounded); one pipeline's failure does not stop the others."""

from __future__ import annotations

import random
import threading
import time
from typing import Annotated, Any

import httpx
from prefect import Flow, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import PrefectHTTPStatusError
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from promote.pipeline import discover_pipelines

# How often a subflow whose run the Prefect API refused to create is asked for again (see run_subflow).
CREATE_ATTEMPTS = 3
_UNAVAILABLE = frozenset({429, 502, 503, 504})


def api_unavailable(exc: BaseException) -> bool:
    """The Prefect API could not take the request (overloaded, restarting), as opposed to refusing it."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code in _UNAVAILABLE
    return isinstance(exc, httpx.TransportError)


def run_subflow(subflow: Flow[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    """Call ``subflow`` as a nested run; if the Prefect API refused to *create* the run, ask again.

    Why: on the default SQLite-backed server, creating a run (its tracking task run, then the flow run) is a
    read-then-write transaction that SQLite rejects while any other write is in progress ("database is
    locked" -> HTTP 503). With many pipelines writing task states at once, the client's own retries (after
    2, 4, 8, 16, 32 s) now and then all land on a lock, and the pipeline failed without having run. Only a
    run that never started is asked for again: nothing of it ran, so nothing can happen twice.
    """
    started = threading.Event()
    hooked = subflow.with_options(on_running=[*subflow.on_running_hooks, lambda *_: started.set()])
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            result: dict[str, Any] = hooked(**parameters)
            return result
        except Exception as exc:
            if started.is_set() or not api_unavailable(exc) or attempt == CREATE_ATTEMPTS:
                raise
            status = exc.response.status_code if isinstance(exc, PrefectHTTPStatusError) else type(exc).__name__
            get_run_logger().warning(
                f"{subflow.name}: the Prefect API could not create the run ({status}); "
                f"asking again ({attempt + 1} of {CREATE_ATTEMPTS})"
            )
            time.sleep(random.uniform(1, 3))  # noqa: S311  # jitter: do not come back in step with the others
    raise AssertionError("unreachable")


@task(name="promote-pipeline", cache_policy=NO_CACHE)
def promote_pipeline(
    pipeline_file: str, production: bool, dry_run: bool, slots: threading.BoundedSemaphore
) -> dict[str, Any]:
    with slots:  # bounds how many pipelines promote at once
        rc = run_subflow(promote_rc, pipeline_file=pipeline_file, dry_run=dry_run, requested_by="nightly")
        result: dict[str, Any] = {"pipeline_file": pipeline_file, "rc": rc}
        if production and not dry_run and rc.get("action") != "skip":
            # Tags: exactly the rc just verified. Other strategies: production decides from what is verified
            # upstream (an image policy may not even allow staging's tag, e.g. a release candidate).
            pinned = rc.get("rc") if rc.get("strategy", "tag") == "tag" else None
            result["production"] = run_subflow(
                promote_production, pipeline_file=pipeline_file, rc=pinned, requested_by="nightly"
            )
        return result


@flow(name="nightly", validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=32))  # type: ignore[arg-type]
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
    files = [str(p) for p in discover_pipelines(pipelines_dir)]
    if not files:
        log.warning(f"no pipeline files in {pipelines_dir}")
        return {"pipelines": 0}
    slots = threading.BoundedSemaphore(max_parallel)
    futures = {file: promote_pipeline.submit(file, production, dry_run, slots) for file in files}
    results: dict[str, Any] = {}
    failed: list[str] = []
    for file, future in futures.items():
        future.wait()
        if future.state.is_completed():
            results[file] = future.result()
        else:
            failed.append(file)
            results[file] = {"failed": str(future.state.message)}
            log.error(f"{file}: {future.state.message}")
    log.info(f"nightly: {len(files) - len(failed)} of {len(files)} pipelines succeeded")
    if failed:
        raise RuntimeError(f"nightly: {len(failed)} of {len(files)} pipelines failed: {', '.join(failed)}")
    return results
