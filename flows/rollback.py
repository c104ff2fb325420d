"""rollback: point an environment at a previous (or given) version and verify it."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.common import environment_lock, record, release_values, run_record, tell
from pipeline.model import Environment
from tasks import candidates, release, targets
from tasks.connections import Connections, connect
from tasks.steps import fetch_repository, point_environment, roll_back_promotion, verify
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
    summary: dict[str, Any] = {"pipeline": pipeline.name, "environment": environment, "requested_by": requested_by}
    with run_record(conn, f"rollback-{pipeline.name}", f"rollback of {environment}", summary, started):
        env = pipeline.environment(environment)  # an unknown name fails here, with its audit record
        summary["strategy"] = env.tracks.kind
        fetch_repository(conn)
        roll_back = _roll_back_tagged if env.tracks.kind == "tag" else _roll_back_untagged
        roll_back(conn, env, to_version, summary, dry_run=dry_run, requested_by=requested_by)
        if not dry_run:
            log.warning(f"{env.name} ROLLED BACK from {summary['from']} to {summary['to']}")
            tell(conn, f"{pipeline.name}: {env.name} ROLLED BACK from {summary['from']} to {summary['to']}")
        return summary


def _roll_back_tagged(
    conn: Connections,
    env: Environment,
    to_version: str | None,
    summary: dict[str, Any],
    *,
    dry_run: bool,
    requested_by: str,
) -> dict[str, Any]:
    """Tags: point the environment at an earlier stable tag (default: the one before what it runs)."""
    log = get_run_logger()
    pipeline = conn.pipeline
    scheme = pipeline.versioning.scheme
    file = targets.tracked_file(env) or ""
    current = targets.read_current(env, conn.repo.read_file(pipeline.repository.branch, file))
    summary["from"] = current
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
    summary |= {"to": target, "diff": change.diff}
    if dry_run:
        log.info(f"dry run: would point {env.name} from {current} to {target}:\n{change.diff}")
        summary["dry_run"] = True
        return summary
    commit = conn.repo.resolve(target)
    with environment_lock(conn, env):
        write = point_environment(conn, env, target)
        result = verify(conn, env, commit, release_values(pipeline, target, commit))
        record(
            conn, "rolled-back", env.name, current, conn.repo.resolve(current), by=requested_by, details={"to": target}
        )
    summary |= {"write_back": write.commit, "verification": result.summary()}
    return summary


def _roll_back_untagged(
    conn: Connections,
    env: Environment,
    to_version: str | None,
    summary: dict[str, Any],
    *,
    dry_run: bool,
    requested_by: str,
) -> dict[str, Any]:
    """Overlays and image policies: write an earlier image value back. Branches: revert the last promotion's
    merge. The default target is what the environment ran before its last recorded promotion."""
    log = get_run_logger()
    pipeline = conn.pipeline
    current = candidates.current_value(conn.repo, pipeline, env) or ""
    promoted = sorted(
        (
            r
            for r in release.all_records(conn.repo)
            if (r.kind, r.pipeline, r.environment) == ("promoted", pipeline.name, env.name)
        ),
        key=lambda r: r.at,
        reverse=True,
    )
    merge = ""
    if env.tracks.kind == "branch":
        if to_version is not None:
            raise release.ReleaseError(
                f"{env.name} tracks a branch: rollback reverts its last promotion (omit to_version)"
            )
        if not promoted:
            raise release.ReleaseError(f"no promotion of {env.name} is recorded: nothing to revert")
        merge = str(promoted[0].details.get("revision") or "")
        target = f"the tree before {merge[:12]}"
        previous_value = str(promoted[0].details.get("from") or "")
        current = promoted[0].tag  # the promoted source commit: its rollback names it, so a later merge re-applies
    else:
        ran = {str(v) for r in promoted for v in (r.tag, r.details.get("from")) if v}
        if to_version is None:
            earlier = [str(r.details.get("from") or "") for r in promoted if r.tag == current]
            target = next((v for v in earlier if v and v != current), "")
            if not target:
                raise release.ReleaseError(
                    f"{env.name} runs {current}; no recorded promotion says what it ran before: give to_version"
                )
        else:
            target = to_version
            upstream = release.upstream_of(pipeline, env) if env is not pipeline.environments[0] else None
            verified = candidates.standing_verifications(conn.repo, pipeline.name, upstream.name) if upstream else set()
            if target not in ran | verified:
                known = ", ".join(sorted(ran)) or "none recorded"
                raise release.ReleaseError(
                    f"{target} never ran in {env.name} and was not verified upstream; values it ran: {known}"
                )
        previous_value = target
    summary |= {"from": current, "to": target}
    if dry_run:
        log.info(f"dry run: would roll {env.name} back from {current} to {target}")
        summary["dry_run"] = True
        return summary
    cand = candidates.Candidate(
        environment=env.name,
        kind=env.tracks.kind,
        value=current,
        previous=previous_value,
        record_tag=current,
        anchor=conn.repo.resolve(pipeline.repository.branch),
        release_commit=None,
        label=current,
    )
    with environment_lock(conn, env):
        back, values = roll_back_promotion(conn, env, cand, candidates.Applied(merge, True, merge))
        result = verify(conn, env, back.revision, values)
        record(conn, "rolled-back", env.name, current, back.commit, by=requested_by, details={"to": target})
    summary |= {"write_back": back.commit, "verification": result.summary()}
    return summary
