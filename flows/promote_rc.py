"""promote-rc: cut (or reuse) the next release candidate, point the rc environment at it, verify, record."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.common import crash_point, environment_lock, record, release_values, run_record, tell
from pipeline.model import Environment, TrackBranch
from tasks import candidates, evidence, release, targets
from tasks.connections import Connections, connect
from tasks.steps import (
    apply_promotion,
    choose_candidate,
    decide_release_candidate,
    fetch_repository,
    point_environment,
    tag_release,
    verify_and_check,
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
    with run_record(conn, f"promote-rc-{pipeline.name}", f"release candidate for {env.name}", summary, started):
        if env.tracks.kind != "tag":
            fetch_repository(conn)
            return _enter_untagged(conn, env, summary, dry_run=dry_run, requested_by=requested_by)
        return _cut_and_verify(conn, env, summary, bump, dry_run=dry_run, requested_by=requested_by)


def _cut_and_verify(
    conn: Connections,
    env: Environment,
    summary: dict[str, Any],
    bump: Literal["major", "minor", "patch"] | None,
    *,
    dry_run: bool,
    requested_by: str,
) -> dict[str, Any]:
    """Tags: the next rc on the branch (or the one already cut for these commits), tagged, pointed at,
    verified and recorded."""
    log = get_run_logger()
    pipeline = conn.pipeline
    decision = decide_release_candidate(conn, bump)
    summary |= {"action": decision.action, "rc": decision.tag, "commit": decision.commit}
    if decision.action == "skip" or decision.tag is None:
        log.info(f"nothing to do: {decision.reason}")
        return summary
    tag = decision.tag
    values = release_values(pipeline, tag, decision.commit)
    if dry_run:
        text = conn.repo.read_file(pipeline.repository.branch, targets.tracked_file(env) or "")
        change = targets.plan_change(env, text, tag)
        summary |= {"dry_run": True, "from": change.old, "diff": change.diff}
        log.info(f"dry run: would tag {tag} at {decision.commit[:12]} and change {change.file}:\n{change.diff}")
        return summary

    already = evidence.find(release.records_for(conn.repo, decision.commit), "verified", pipeline.name, env.name, tag)
    if already is not None:
        log.info(f"{tag} was already verified in {env.name} at {already.at}; nothing to repeat")
        summary["already_verified"] = True
        return summary

    with environment_lock(conn, env):
        tag_release(conn, tag, decision.commit, f"{pipeline.name} release candidate {tag}")
        crash_point("after-tag-push")
        write = point_environment(conn, env, tag)
        crash_point("after-write-back")
        verification, checks = verify_and_check(conn, env, decision.commit, values)
        details = {"verification": verification.summary(), "checks": [c.summary() for c in checks]}
        record(
            conn,
            "verified",
            env.name,
            tag,
            decision.commit,
            by=requested_by,
            details=details | {"write_back": write.commit},
        )
    summary |= {
        "write_back": write.commit,
        "verification": verification.summary(),
        "checks": [c.summary() for c in checks],
    }
    log.info(f"{tag} verified in {env.name}: ready for production")
    tell(conn, f"{pipeline.name}: {tag} verified in {env.name}, ready for production")
    return summary


def _enter_untagged(
    conn: Connections, env: Environment, summary: dict[str, Any], *, dry_run: bool, requested_by: str
) -> dict[str, Any]:
    """The first environment of a pipeline without release tags: verify what its branch head or overlay runs
    (an image policy first takes the registry's choice), and record it as verified for the next environment.
    """
    log = get_run_logger()
    pipeline = conn.pipeline
    summary["strategy"] = env.tracks.kind
    if env is release.production_environment(pipeline):
        summary["action"] = "not-applicable"
        log.info(f"{env.name} is the pipeline's only environment: promote-production promotes it (with its gate)")
        return summary
    if env.tracks.kind == "image-policy":
        try:
            cand = choose_candidate(conn, env, None)
        except candidates.NothingToPromoteError as nothing:
            log.info(str(nothing))
            summary |= {"action": "skip", "nothing_to_do": str(nothing)}
            return summary
        value, diff = cand.value, cand.diff
    else:
        value = candidates.current_value(conn.repo, pipeline, env) or ""
        diff = ""
    summary |= {"rc": value, "diff": diff}
    downstream = release.production_environment(pipeline)
    already = release.find_record(conn.repo, "verified", pipeline.name, env.name, value)
    if already is not None:
        released = _downstream_has(conn, downstream, value)
        summary["action"] = "skip" if released else "reuse"
        log.info(
            f"{value} was already verified in {env.name} at {already.at}"
            + (", and is live in " + downstream.name if released else "")
        )
        return summary
    summary["action"] = "create"
    if dry_run:
        summary["dry_run"] = True
        log.info(f"dry run: would verify {env.name} at {value}" + (f" after this change:\n{diff}" if diff else ""))
        return summary
    with environment_lock(conn, env):
        if env.tracks.kind == "image-policy":
            applied = apply_promotion(conn, env, cand)
            revision = applied.revision
            summary["write_back"] = applied.commit
        elif env.tracks.kind == "branch":
            revision = value
        else:
            revision = conn.repo.resolve(pipeline.repository.branch)
        values = candidates.verification_values(value, revision)
        verification, checks = verify_and_check(conn, env, revision, values)
        details = {"verification": verification.summary(), "checks": [c.summary() for c in checks]}
        record(conn, "verified", env.name, value, revision, by=requested_by, details=details)
    summary |= {"commit": revision, "verification": verification.summary(), "checks": [c.summary() for c in checks]}
    log.info(f"{value} verified in {env.name}: ready for {downstream.name}")
    tell(conn, f"{pipeline.name}: {value} verified in {env.name}, ready for {downstream.name}")
    return summary


def _downstream_has(conn: Connections, downstream: Environment, value: str) -> bool:
    """Whether the next environment already runs ``value`` (then a nightly has nothing to promote)."""
    if isinstance(downstream.tracks, TrackBranch):
        return conn.repo.is_ancestor(value, conn.repo.resolve(downstream.tracks.branch))
    if downstream.tracks.kind == "tag":
        return False
    return candidates.current_value(conn.repo, conn.pipeline, downstream) == value
