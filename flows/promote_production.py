"""promote-production: a verified rc -> approval -> stable tag at the same commit -> production -> verify;
roll back to the previous version if production does not come up."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import Pause
from prefect.runtime import flow_run

from flows.common import audit, crash_point, environment_lock, release_values
from tasks import evidence, release, targets
from tasks.approval import ApprovalPlan, approval_key, wait_for_approval
from tasks.connections import Connections, connect
from tasks.notify import notify
from tasks.steps import (
    fetch_repository,
    health_checks,
    point_environment,
    record_evidence,
    run_url,
    tag_release,
    verify,
)


class PromotionError(RuntimeError):
    """The promotion ended without the new version in production; the message says what happened."""


def _record(conn: Connections, kind: evidence.RecordKind, env: str, tag: str, commit: str, **extra: Any) -> None:
    record_evidence(
        conn,
        evidence.Record(
            kind=kind,
            pipeline=conn.pipeline.name,
            environment=env,
            tag=tag,
            commit=commit,
            run=str(flow_run.id or ""),
            **extra,
        ),
    )


@flow(name="promote-production", validate_parameters=True, persist_result=True)
def promote_production(
    pipeline_file: str,
    rc: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> dict[str, Any]:
    """Promote a release candidate that passed staging to production.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        rc: the release candidate tag (e.g. v1.2.3-rc2); default: the newest rc verified upstream
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_file, log.info)
    pipeline = conn.pipeline
    env = release.production_environment(pipeline)
    upstream = release.upstream_of(pipeline, env)
    link = run_url(flow_run.id)
    summary: dict[str, Any] = {"pipeline": pipeline.name, "environment": env.name, "requested_by": requested_by}
    try:
        fetch_repository(conn)
        rc_tag, commit = release.verified_rc(conn.repo, pipeline, upstream, rc)
        stable = release.stable_tag_for(pipeline.versioning.scheme, rc_tag)
        values = release_values(pipeline, stable, commit)
        file = targets.tracked_file(env) or ""
        change = targets.plan_change(env, conn.repo.read_file(pipeline.repository.branch, file), stable)
        previous = change.old
        summary |= {"rc": rc_tag, "version": stable, "commit": commit, "from": previous, "diff": change.diff}
        if dry_run:
            log.info(f"dry run: would tag {stable} at {commit[:12]} and change {file}:\n{change.diff}")
            summary["dry_run"] = True
            return summary

        with environment_lock(conn, env) as lock:
            records = release.records_for(conn.repo, commit)
            approval = evidence.find(records, "approved", pipeline.name, env.name, rc_tag)
            if env.gate.approval and approval is None:
                since = conn.repo.resolve(previous) if previous and previous in conn.repo.tags() else None
                verified = evidence.find(records, "verified", pipeline.name, upstream.name, rc_tag)
                plan = ApprovalPlan(
                    pipeline=pipeline.name,
                    environment=env.name,
                    from_version=previous,
                    to_version=stable,
                    rc_tag=rc_tag,
                    commit=commit,
                    commits=[(e.sha, e.subject) for e in release.changes_since(conn.repo, since, commit)],
                    evidence=f"verified in {upstream.name} at {verified.at}" if verified else "(missing)",
                    file_diff=change.diff,
                )
                notify(
                    pipeline.notifications,
                    f"{pipeline.name}: {stable} waits for approval to {env.name}",
                    log.info,
                    link=link,
                )
                lock.hold_for(env.gate.timeout_seconds + 600)  # a suspended run has no process to renew it
                decision = wait_for_approval(plan, env.gate.timeout_seconds, key=approval_key(env.name, rc_tag))
                lock.hold_for(0)  # answered: back to renew-or-lapse, so a crash from here frees it after the TTL
                if env.gate.approvers and decision.approver not in env.gate.approvers:
                    raise PromotionError(
                        f"{decision.approver!r} may not approve {env.name}; approvers: {', '.join(env.gate.approvers)}"
                    )
                summary |= {"approver": decision.approver, "reason": decision.reason, "approved": decision.approve}
                if not decision.approve:
                    raise PromotionError(f"rejected by {decision.approver}: {decision.reason}")
                _record(conn, "approved", env.name, rc_tag, commit, by=decision.approver, reason=decision.reason)
                crash_point("after-approval")
            elif approval is not None:
                summary |= {"approver": approval.by, "reason": approval.reason, "approved": True}
                log.info(f"approval already recorded: {approval.by} at {approval.at}")

            tag_release(conn, stable, commit, f"{pipeline.name} {stable} (from {rc_tag})")
            crash_point("after-tag-push")
            write = point_environment(conn, env, stable)
            crash_point("after-write-back")
            summary["write_back"] = write.commit
            try:
                verification = verify(conn, env, commit, values)
                checks = health_checks(pipeline, env, values)
            except Exception as failure:
                summary["failure"] = str(failure)
                if previous is None or previous == stable:
                    raise
                log.error(f"{env.name} failed at {stable}: {failure}. ROLLING BACK to {previous}")
                _roll_back(conn, previous, stable, summary)
                raise PromotionError(
                    f"{env.name} did not come up at {stable} ({failure}); ROLLED BACK to {previous}"
                ) from None
            _record(
                conn,
                "promoted",
                env.name,
                stable,
                commit,
                by=requested_by,
                details={"rc": rc_tag, "verification": verification.summary()},
            )
        summary |= {"verification": verification.summary(), "checks": [c.summary() for c in checks]}
        notify(pipeline.notifications, f"{pipeline.name}: {stable} is live in {env.name}", log.info, link=link)
        log.info(f"{stable} is live in {env.name}")
        return summary
    except Pause:
        summary["suspended"] = "waiting for approval"  # the run re-runs from the top once resumed
        raise
    except Exception as exc:
        notify(pipeline.notifications, f"{pipeline.name}: promotion to {env.name} FAILED: {exc}", log.info, link=link)
        summary.setdefault("failure", str(exc))
        raise
    finally:
        if "suspended" not in summary:
            audit(f"promote-production-{pipeline.name}", summary, started)


def _roll_back(conn: Connections, previous: str, failed: str, summary: dict[str, Any]) -> None:
    pipeline = conn.pipeline
    env = release.production_environment(pipeline)
    point_environment(conn, env, previous)
    commit = conn.repo.resolve(previous)
    values = release_values(pipeline, previous, commit)
    rollback_verification = verify(conn, env, commit, values)
    summary["rolled_back_to"] = previous
    summary["rollback_verification"] = rollback_verification.summary()
    _record(conn, "rolled-back", env.name, failed, conn.repo.resolve(failed), details={"to": previous})
