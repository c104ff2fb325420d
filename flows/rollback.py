"""rollback: point an environment at a previous (or given) version and verify it."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.common import audit, environment_lock, release_values
from tasks import evidence, release, targets
from tasks.connections import connect
from tasks.steps import fetch_repository, point_environment, record_evidence, verify
from tasks.versions import ReleaseVersion


@flow(name="rollback", validate_parameters=True)
def rollback(
    pipeline_file: str,
    environment: str = "production",
    to_version: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> dict[str, Any]:
    """Point an environment back at an earlier release and verify that it runs it.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        environment: the environment to roll back (default: production)
        to_version: the tag to go back to (e.g. v1.2.2); default: the stable release before the current one
        dry_run: show what would change and change nothing
        requested_by: who asked for this run, for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_file, log.info)
    pipeline = conn.pipeline
    env = pipeline.environment(environment)
    scheme = pipeline.versioning.scheme
    fetch_repository(conn)
    file = targets.tracked_file(env) or ""
    current = targets.read_current(env, conn.repo.read_file(pipeline.repository.branch, file))
    if to_version is None:
        current_version = scheme.parse(current)
        older = [v for v in scheme.versions(conn.repo.tags()) if not v.is_rc and v < current_version]
        if not older:
            raise release.ReleaseError(f"{env.name} runs {current}; there is no earlier stable release to go back to")
        target = scheme.tag(max(older, key=ReleaseVersion.sort_key))
    else:
        target = scheme.tag(scheme.parse(to_version))
        if target not in conn.repo.tags():
            raise release.ReleaseError(f"{target} is not a tag of the repository; nothing to roll back to")
    change = targets.plan_change(env, conn.repo.read_file(pipeline.repository.branch, file), target)
    summary: dict[str, Any] = {
        "pipeline": pipeline.name,
        "environment": env.name,
        "from": current,
        "to": target,
        "requested_by": requested_by,
        "diff": change.diff,
    }
    if dry_run:
        log.info(f"dry run: would point {env.name} from {current} to {target}:\n{change.diff}")
        summary["dry_run"] = True
        audit(f"rollback-{pipeline.name}", summary, started)
        return summary
    commit = conn.repo.resolve(target)
    with environment_lock(conn, env):
        write = point_environment(conn, env, target)
        result = verify(conn, env, commit, release_values(pipeline, target, commit))
        record_evidence(
            conn,
            evidence.Record(
                kind="rolled-back",
                pipeline=pipeline.name,
                environment=env.name,
                tag=current,
                commit=conn.repo.resolve(current),
                run=str(flow_run.id or ""),
                by=requested_by,
                details={"to": target},
            ),
        )
    summary |= {"write_back": write.commit, "verification": result.summary()}
    log.warning(f"{env.name} ROLLED BACK from {current} to {target}")
    audit(f"rollback-{pipeline.name}", summary, started)
    return summary
