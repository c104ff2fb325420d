"""promote-rc: cut (or reuse) the next release candidate, point the rc environment at it, verify, record."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.common import audit, crash_point, environment_lock, release_values
from tasks import evidence, release, targets
from tasks.connections import connect
from tasks.steps import (
    decide_release_candidate,
    fetch_repository,
    health_checks,
    point_environment,
    record_evidence,
    tag_release,
    verify,
)


@flow(name="promote-rc", log_prints=False, validate_parameters=True)
def promote_rc(
    pipeline_file: str,
    bump: Literal["major", "minor", "patch"] | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> dict[str, Any]:
    """Tag the next release candidate on the pipeline's branch, point the first tag-tracking environment
    (staging) at it, verify through the Kubernetes API that exactly that commit runs, run the health checks
    and record the evidence in Git. Safe to re-run: a candidate with no new commits since is reused.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        bump: override the pipeline's versioning.bump for this run
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_file, log.info)
    pipeline = conn.pipeline
    env = release.rc_environment(pipeline)
    summary: dict[str, Any] = {"pipeline": pipeline.name, "environment": env.name, "requested_by": requested_by}
    fetch_repository(conn)
    decision = decide_release_candidate(conn, bump)
    summary |= {"action": decision.action, "rc": decision.tag, "commit": decision.commit}
    if decision.action == "skip" or decision.tag is None:
        log.info(f"nothing to do: {decision.reason}")
        audit(f"promote-rc-{pipeline.name}", summary, started)
        return summary
    tag = decision.tag
    values = release_values(pipeline, tag, decision.commit)
    if dry_run:
        text = conn.repo.read_file(pipeline.repository.branch, targets.tracked_file(env) or "")
        change = targets.plan_change(env, text, tag)
        summary |= {"dry_run": True, "from": change.old, "diff": change.diff}
        log.info(f"dry run: would tag {tag} at {decision.commit[:12]} and change {change.file}:\n{change.diff}")
        audit(f"promote-rc-{pipeline.name}", summary, started)
        return summary

    already = evidence.find(release.records_for(conn.repo, decision.commit), "verified", pipeline.name, env.name, tag)
    if already is not None:
        log.info(f"{tag} was already verified in {env.name} at {already.at}; nothing to repeat")
        summary["already_verified"] = True
        audit(f"promote-rc-{pipeline.name}", summary, started)
        return summary

    with environment_lock(conn, env):
        tag_release(conn, tag, decision.commit, f"{pipeline.name} release candidate {tag}")
        crash_point("after-tag-push")
        write = point_environment(conn, env, tag)
        crash_point("after-write-back")
        verification = verify(conn, env, decision.commit, values)
        checks = health_checks(pipeline, env, values)
        record_evidence(
            conn,
            evidence.Record(
                kind="verified",
                pipeline=pipeline.name,
                environment=env.name,
                tag=tag,
                commit=decision.commit,
                run=str(flow_run.id or ""),
                by=requested_by,
                details={
                    "verification": verification.summary(),
                    "checks": [c.summary() for c in checks],
                    "write_back": write.commit,
                },
            ),
        )
    summary |= {
        "write_back": write.commit,
        "verification": verification.summary(),
        "checks": [c.summary() for c in checks],
    }
    audit(f"promote-rc-{pipeline.name}", summary, started)
    log.info(f"{tag} verified in {env.name}: ready for production")
    return summary
