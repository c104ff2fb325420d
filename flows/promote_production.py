"""promote-production: a verified rc -> approval -> stable tag at the same commit -> production -> verify;
roll back to the previous version if production does not come up."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.common import crash_point, environment_lock, record, release_values, run_record, tell
from pipeline.model import Environment
from tasks import release
from tasks.approval import (
    ApprovalPlan,
    approval_key,
    fail_expired_approvals,
    pin_candidate,
    pinned_candidate,
    wait_for_approval,
)
from tasks.candidates import Applied, Candidate, NothingToPromoteError, verification_values
from tasks.connections import Connections, connect
from tasks.locks import EnvironmentLock
from tasks.steps import (
    apply_promotion,
    choose_candidate,
    roll_back_promotion,
    tag_release,
    verify,
    verify_and_check,
)


class PromotionError(RuntimeError):
    """The promotion ended without the new version in production; the message says what happened."""


_AUDIT_COMMITS = 50  # commits listed in the audit record; the rest are counted


@flow(name="promote-production", validate_parameters=True, persist_result=True)
def promote_production(
    pipeline_file: str,
    rc: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> dict[str, Any]:
    """Promote what passed the environment before production to production.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        rc: what to promote: an rc tag (e.g. v1.2.3-rc2) for tag pipelines, an image tag or digest for
            overlay and image-policy pipelines, a source commit for branch pipelines; default: the newest
            one verified upstream (or the registry's choice by policy)
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_file, log.info)
    pipeline = conn.pipeline
    env = release.production_environment(pipeline)
    summary: dict[str, Any] = {
        "pipeline": pipeline.name,
        "environment": env.name,
        "strategy": env.tracks.kind,
        "requested_by": requested_by,
    }
    with run_record(conn, f"promote-production-{pipeline.name}", f"promotion to {env.name}", summary, started):
        pinned = pinned_candidate(env.name)  # set when this run was suspended at the gate: promote exactly that
        if pinned is not None:
            log.info(f"resumed after the approval gate: promoting {pinned}, the version that was up for approval")
        try:
            cand = choose_candidate(conn, env, pinned or rc, fetch=True)
        except NothingToPromoteError as nothing:
            log.info(str(nothing))
            summary["nothing_to_do"] = str(nothing)
            return summary
        is_tag = env.tracks.kind == "tag"
        summary |= {"rc": cand.record_tag, "version": cand.value, "from": cand.previous, "diff": cand.diff}
        if cand.release_commit:
            summary["commit"] = cand.release_commit
        if cand.commits:  # what this promotion brings, as the approval form showed it
            listed = [f"{sha[:12]} {subject}" for sha, subject in cand.commits[:_AUDIT_COMMITS]]
            more = len(cand.commits) - len(listed)
            summary["commits"] = listed + ([f"... and {more} more"] if more > 0 else [])
        if dry_run:
            action = f"tag {cand.value} at {cand.anchor[:12]} and " if is_tag else ""
            log.info(f"dry run: would {action}promote {env.name} from {cand.previous} to {cand.label}:\n{cand.diff}")
            summary["dry_run"] = True
            return summary

        # After the dry-run exit (a dry run changes nothing); only where a gate exists: an ungated run has no
        # approval to wait for, and the nightly sweeps once for all its pipelines.
        if env.gate.approval:
            for expired in fail_expired_approvals():
                log.warning(f"flow run {expired} waited for approval past its window: ended it as Failed")
        with environment_lock(conn, env) as lock:
            approval = release.find_record(conn.repo, "approved", pipeline.name, env.name, cand.record_tag)
            if env.gate.approval and approval is None:
                _approve(conn, env, cand, lock, summary, resumed=pinned is not None)
            elif approval is not None:
                summary |= {"approver": approval.by, "reason": approval.reason, "approved": True}
                log.info(f"approval already recorded: {approval.by} at {approval.at}")

            if is_tag:
                assert cand.release_commit is not None
                tag_release(
                    conn, cand.value, cand.release_commit, f"{pipeline.name} {cand.value} (from {cand.record_tag})"
                )
                crash_point("after-tag-push")
            applied = apply_promotion(conn, env, cand)
            crash_point("after-write-back")
            summary["write_back"] = applied.commit
            values = (
                release_values(pipeline, cand.value, applied.revision)
                if is_tag
                else verification_values(cand.value, applied.revision)
            )
            try:
                verification, checks = verify_and_check(conn, env, applied.revision, values)
            except Exception as failure:
                summary["failure"] = str(failure)
                if cand.previous is None or not cand.changes_anything:
                    raise
                log.error(f"{env.name} failed at {cand.label}: {failure}. ROLLING BACK to {cand.previous}")
                try:
                    _roll_back(conn, env, cand, applied, summary)
                except Exception as stuck:  # say both: why we rolled back, and that it did not take
                    summary["rollback_failure"] = str(stuck)
                    raise PromotionError(
                        f"{env.name} did not come up at {cand.label} ({failure}), and the ROLLBACK to "
                        f"{cand.previous} FAILED too ({stuck}): {env.name} needs a person"
                    ) from None
                raise PromotionError(
                    f"{env.name} did not come up at {cand.label} ({failure}); ROLLED BACK to {cand.previous}"
                ) from None
            record(
                conn,
                "promoted",
                env.name,
                cand.value,
                cand.anchor,
                by=requested_by,
                details={
                    "rc": cand.record_tag,
                    "from": cand.previous,
                    "revision": applied.revision,
                    "verification": verification.summary(),
                },
            )
        summary |= {"verification": verification.summary(), "checks": [c.summary() for c in checks]}
        tell(conn, f"{pipeline.name}: {cand.label} is live in {env.name}")
        log.info(f"{cand.label} is live in {env.name}")
        return summary


def _approve(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    lock: EnvironmentLock,
    summary: dict[str, Any],
    *,
    resumed: bool,
) -> None:
    """Wait for a person; raise unless they approve. Records the approval so a re-run does not ask twice.
    ``resumed``: this is the re-run of a suspended run after its answer; the wait was announced already."""
    pipeline = conn.pipeline
    upstream = release.upstream_of(pipeline, env) if len(pipeline.environments) > 1 else None
    verified = (
        release.find_record(conn.repo, "verified", pipeline.name, upstream.name, cand.record_tag) if upstream else None
    )
    plan = ApprovalPlan(
        pipeline=pipeline.name,
        environment=env.name,
        from_version=cand.previous,
        to_version=cand.label,
        rc_tag=cand.record_tag,
        commit=cand.anchor,
        commits=list(cand.commits),
        evidence=f"verified in {upstream.name} at {verified.at}" if upstream and verified else "(none upstream)",
        file_diff=cand.diff,
    )
    if not resumed:
        tell(conn, f"{pipeline.name}: {cand.label} waits for approval to {env.name}")
    lock.hold_for(env.gate.timeout_seconds + 600)  # a suspended run has no process to renew it
    pin_candidate(env.name, cand.record_tag)
    decision = wait_for_approval(plan, env.gate.timeout_seconds, key=approval_key(env.name, cand.record_tag))
    lock.hold_for(0)  # answered: back to renew-or-lapse, so a crash from here frees it after the TTL
    if env.gate.approvers and decision.approver not in env.gate.approvers:
        raise PromotionError(
            f"{decision.approver!r} may not approve {env.name}; approvers: {', '.join(env.gate.approvers)}"
        )
    summary |= {"approver": decision.approver, "reason": decision.reason, "approved": decision.approve}
    if not decision.approve:
        raise PromotionError(f"rejected by {decision.approver}: {decision.reason}")
    record(conn, "approved", env.name, cand.record_tag, cand.anchor, by=decision.approver, reason=decision.reason)
    crash_point("after-approval")


def _roll_back(conn: Connections, env: Environment, cand: Candidate, applied: Applied, summary: dict[str, Any]) -> None:
    back, values = roll_back_promotion(conn, env, cand, applied)
    rollback_verification = verify(conn, env, back.revision, values)
    summary["rolled_back_to"] = cand.previous
    summary["rollback_verification"] = rollback_verification.summary()
    record(conn, "rolled-back", env.name, cand.value, cand.anchor, details={"to": cand.previous})
