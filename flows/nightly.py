"""nightly: for every pipeline in a directory, cut and verify an rc when there are new commits, then promote
it to production. Pipelines run side by side (bounded); one pipeline's failure does not stop the others."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from promote.pipeline import discover_pipelines


@task(name="promote-pipeline", cache_policy=NO_CACHE)
def promote_pipeline(
    pipeline_file: str, production: bool, dry_run: bool, slots: threading.BoundedSemaphore
) -> dict[str, Any]:
    with slots:  # bounds how many pipelines promote at once
        rc = promote_rc(pipeline_file=pipeline_file, dry_run=dry_run, requested_by="nightly")
        result: dict[str, Any] = {"pipeline_file": pipeline_file, "rc": rc}
        if production and not dry_run and rc.get("action") != "skip":
            result["production"] = promote_production(
                pipeline_file=pipeline_file, rc=rc.get("rc"), requested_by="nightly"
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
