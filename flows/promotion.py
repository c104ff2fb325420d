"""One environment promoted from the one before it: the body promote-environment and promote-production share.

choose (only what was verified upstream) -> gate (approval) -> tag -> write -> verify and check; a failure
rolls that environment back to what it ran before and says so loudly -> record.
"""

from __future__ import annotations

import time

from prefect import get_run_logger

from flows import events
from flows.holds import check_holds
from flows.inputs import pipeline_path
from flows.locking import environment_lock
from flows.pullrequest import (
    forge_report,
    pinned_pull_request,
    roll_back_through_pull_request,
    through_pull_request,
    with_pinned_previous,
)
from flows.records import announce, evidence_record, publish_held_boards, record, run_record, tell
from flows.report import PromotionReport
from pipeline.model import Environment
from rules.errors import OutcomeError
from tasks import evidence
from tasks.approval import (
    ApprovalPlan,
    approval_key,
    fail_expired_approvals,
    pin_candidate,
    pinned_candidate,
    wait_for_approval,
)
from tasks.connections import Connections, connect
from tasks.faults import crash_point
from tasks.forges import forge_for
from tasks.forges.base import Forge, PullRequest
from tasks.health import CheckResult
from tasks.locks import EnvironmentLock
from tasks.steps import (
    EvidenceFor,
    EvidenceNotRecordedError,
    HealthCheckError,
    Verified,
    choose_candidate,
    roll_back_promotion,
    tag_and_apply,
    verify,
    verify_and_check,
)
from tasks.strategies import strategy_for
from tasks.strategies.base import Applied, Candidate, NothingToPromoteError
from tasks.verification import VerificationResult


class PromotionError(OutcomeError, RuntimeError):
    """The promotion ended without the new version in the environment; the message says what happened."""


def promote(
    flow_name: str,
    pipeline_file: str,
    environment: str | None,
    requested: str | None,
    *,
    dry_run: bool,
    requested_by: str,
    override_hold: str = "",
) -> PromotionReport:
    """Promote ``environment`` (None: the last) from the environment before it."""
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_path(pipeline_file), log.info)
    pipeline = conn.pipeline
    report = PromotionReport(
        pipeline=pipeline.name, environment=environment or pipeline.last.name, requested_by=requested_by
    )
    key = f"{flow_name}-{pipeline.name}" + (f"-{environment}" if environment else "")
    with run_record(conn, key, f"promotion to {report.environment}", report, started):
        env = pipeline.environment(report.environment)  # an unknown name fails here, with its audit record
        report.strategy = env.tracks.kind
        pinned = pinned_candidate(env.name)  # set when this run was suspended at the gate: promote exactly that
        if pinned is not None:
            log.info(f"resumed after a suspension: promoting {pinned}, the version it was suspended for")
        pull = pinned_pull_request(env.name) if env.pull_requests else None  # its pull request, once opened
        try:
            cand = with_pinned_previous(choose_candidate(conn, env, pinned or requested, fetch=True), pull)
        except NothingToPromoteError as nothing:
            log.info(str(nothing))
            report.nothing_to_do = str(nothing)
            return report
        report.candidate(cand)
        if dry_run:
            action = f"tag {cand.tag.name} at {cand.tag.commit[:12]} and " if cand.tag else ""
            log.info(f"dry run: would {action}promote {env.name} from {cand.previous} to {cand.label}:\n{cand.diff}")
            report.dry_run = True
            return report
        # After the dry-run exit (a dry run changes nothing); only where a gate exists: an ungated run has no
        # approval to wait for, and the nightly sweeps once for all its pipelines.
        if env.gate.approval:
            for expired in fail_expired_approvals():
                log.warning(f"flow run {expired} waited for approval past its window: ended it as Failed")
        # Before the lock and the gate (no one is asked to approve what may not go in; a waiting run holds no
        # lock), and again inside the lock, right before the write: waiting for the lock or an approval can
        # take hours, and a freeze may have begun meanwhile. Inside the lock a hold never waits (a rollback
        # must not queue behind a frozen promotion): it fails, and a re-run reuses the recorded approval.
        # A pull request already opened was let through the holds when it was opened; once merged, what it
        # changed must be verified whatever began since.
        if pull is None:
            check_holds(conn, env, cand, report, override=override_hold, requested_by=requested_by)
        with environment_lock(conn, env) as lock:
            _gate(conn, env, cand, lock, report, resumed=pinned is not None)

            def before_write() -> None:
                check_holds(conn, env, cand, report, override=override_hold, requested_by=requested_by, may_wait=False)

            pr: PullRequest | None = None
            forge = forge_for(pipeline, env) if env.pull_requests else None  # one client (and token read) per run
            if forge is not None:
                applied, pr = through_pull_request(
                    conn, forge, env, cand, lock, report, pinned=pull, before_write=before_write
                )
            else:
                before_write()
                written = tag_and_apply(conn, env, cand.tag, cand)
                assert written is not None  # a candidate was given: there is a write
                applied = written
            crash_point("after-write-back")
            report.write_back = applied.commit
            on_forge = forge_report(conn, forge, env, cand, pr)
            if on_forge is not None:
                on_forge.pending(applied.commit)

            def evidence_for(verification: VerificationResult, _checks: list[CheckResult]) -> list[evidence.Record]:
                details = {"rc": cand.record_tag, "from": cand.previous, "revision": applied.revision}
                details["verification"] = verification.summary()
                if pr is not None:
                    details |= {"pull_request": f"#{pr.number} {pr.url}", "merged_by": pr.merged_by or "unknown"}
                records = [
                    evidence_record(
                        conn, "promoted", env.name, cand.value, cand.anchor, by=requested_by, details=details
                    )
                ]
                if pipeline.downstream_of(env) is not None:  # a chain: the next environment takes it from here
                    key, commit = strategy_for(env).verified_key(cand, applied)
                    records.append(
                        evidence_record(conn, "verified", env.name, key, commit, by=requested_by, details=details)
                    )
                return records

            try:
                verified = _verify_or_roll_back(conn, env, cand, applied, report, forge, evidence_for)
            except Exception as failure:
                if on_forge is not None:
                    on_forge.outcome(applied.commit, ok=False, text=str(failure))
                raise
            if on_forge is not None:
                on_forge.outcome(applied.commit, ok=True, text=verified.verification.summary())
            for rec in verified.recorded:
                announce(conn, rec)
        report.verified(verified.verification.summary(), [c.summary() for c in verified.checks])
        tell(conn, f"{pipeline.name}: {cand.label} is live in {env.name}")
        log.info(f"{cand.label} is live in {env.name}")
        return report


def _gate(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    lock: EnvironmentLock,
    report: PromotionReport,
    *,
    resumed: bool,
) -> None:
    """The environment's gate: an approval already recorded for this version counts (a re-run does not ask
    twice); otherwise, with ``gate.approval``, wait for a person and raise unless they approve."""
    pipeline = conn.pipeline
    approval = evidence.find_record(conn.repo, "approved", pipeline.name, env.name, cand.record_tag)
    problem = approval_problem(approval, env, cand.anchor) if approval is not None else None
    if problem is not None:
        get_run_logger().warning(f"a recorded approval of {cand.record_tag} does not count: {problem}")
        approval = None
    if approval is not None:
        report.approver, report.reason, report.approved = approval.by, approval.reason, True
        get_run_logger().info(f"approval already recorded: {approval.by} at {approval.at}")
    elif env.gate.approval:
        _approve(conn, env, cand, lock, report, resumed=resumed)


def approval_problem(approval: evidence.Record, env: Environment, commit: str) -> str | None:
    """Why a recorded approval does not let this promotion through, or None: it must be for the commit being
    promoted (a tag can be deleted and cut again elsewhere), and its approver allowed by the gate as configured
    now (``gate.approvers`` may have changed since)."""
    if approval.commit != commit:
        return f"it approved commit {approval.commit[:12]}, this is {commit[:12]}"
    if env.gate.approvers and approval.by not in env.gate.approvers:
        return f"{approval.by[:64]!r} is not in {env.name}'s gate.approvers"
    return None


def _approve(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    lock: EnvironmentLock,
    report: PromotionReport,
    *,
    resumed: bool,
) -> None:
    """Wait for a person; raise unless they approve. Records the approval so a re-run does not ask twice.
    ``resumed``: this is the re-run of a suspended run after its answer; the wait was announced already."""
    pipeline = conn.pipeline
    upstream = pipeline.upstream_of(env)
    verified = (
        evidence.find_record(conn.repo, "verified", pipeline.name, upstream.name, cand.record_tag) if upstream else None
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
        events.emit(
            "approval.waiting",
            pipeline.name,
            env.name,
            version=cand.record_tag,
            commit=cand.anchor,
            from_version=cand.previous,
            to_version=cand.value,
            timeout_seconds=env.gate.timeout_seconds,
        )
    publish_held_boards()  # a nightly pipeline's board shows what runs now while the gate waits
    lock.hold_for(env.gate.timeout_seconds + 600)  # a suspended run has no process to renew it
    pin_candidate(env.name, cand.record_tag)
    decision = wait_for_approval(plan, env.gate.timeout_seconds, key=approval_key(env.name, cand.record_tag))
    lock.hold_for(0)  # answered: back to renew-or-lapse, so a crash from here frees it after the TTL
    if env.gate.approvers and decision.approver not in env.gate.approvers:
        raise PromotionError(
            f"{decision.approver!r} may not approve {env.name}; approvers: {', '.join(env.gate.approvers)}"
        )
    report.approver, report.reason, report.approved = decision.approver, decision.reason, decision.approve
    if not decision.approve:
        events.emit(
            "approval.rejected",
            pipeline.name,
            env.name,
            version=cand.record_tag,
            commit=cand.anchor,
            by=decision.approver,
            reason=decision.reason,
        )
        raise PromotionError(f"rejected by {decision.approver}: {decision.reason}")
    record(conn, "approved", env.name, cand.record_tag, cand.anchor, by=decision.approver, reason=decision.reason)
    crash_point("after-approval")


def _verify_or_roll_back(
    conn: Connections,
    env: Environment,
    cand: Candidate,
    applied: Applied,
    report: PromotionReport,
    forge: Forge | None,
    evidence_for: EvidenceFor,
) -> Verified:
    """Verify and check ``env`` at the promoted revision, then record ``evidence_for``'s records; on a failure
    to verify, roll it back to what it ran before (through a pull request on ``forge`` when the environment's
    ``write.rollback`` says so), verify that, and raise saying both what failed and where the environment is
    now. A verified environment whose records could not be written is not rolled back."""
    values = strategy_for(env).values(conn, env, cand.value, applied.revision)
    try:
        verified = verify_and_check(conn, env, applied.revision, values, evidence_for)
    except EvidenceNotRecordedError as lost:
        report.sections.append(lost.section)
        raise
    except Exception as failure:
        if isinstance(failure, HealthCheckError):
            report.sections.append(failure.section)
        report.failure = str(failure)
        if cand.changes_anything:  # the write reached the environment: a failed deployment, whatever comes next
            _record_failure(conn, env, cand, applied, failure)
        if cand.previous is None or not cand.changes_anything:
            raise
        get_run_logger().error(f"{env.name} failed at {cand.label}: {failure}. ROLLING BACK to {cand.previous}")
        try:
            if forge is not None and env.write.rollback == "pull-request":
                back, back_values = roll_back_through_pull_request(conn, forge, env, cand, applied, str(failure))
            else:
                back, back_values = roll_back_promotion(conn, env, cand, applied)
            back_verified = verify(conn, env, back.revision, back_values)
            report.sections.append(back_verified.section)
            report.rollback_verification = back_verified.verification.summary()
            report.rolled_back_to = cand.previous
            record(conn, "rolled-back", env.name, cand.value, cand.anchor, details={"to": cand.previous})
        except Exception as stuck:  # say both: why we rolled back, and that it did not take
            report.rollback_failure = str(stuck)
            raise PromotionError(
                f"{env.name} did not come up at {cand.label} ({failure}), and the ROLLBACK to "
                f"{cand.previous} FAILED too ({stuck}): {env.name} needs a person"
            ) from None
        raise PromotionError(
            f"{env.name} did not come up at {cand.label} ({failure}); ROLLED BACK to {cand.previous}"
        ) from None
    report.sections.append(verified.section)
    return verified


FAILURE_MESSAGE_LIMIT = 500  # the note keeps why, not a whole controller status dump


def _record_failure(conn: Connections, env: Environment, cand: Candidate, applied: Applied, failure: Exception) -> None:
    """Record that ``env`` was changed to ``cand`` and did not come up, before rolling back (so the rollback's
    record follows it and the time between them is the time to restore). Never raises: the promotion's own
    failure is what the run reports. A re-run failing the same way finds the record and adds nothing."""
    message = str(failure)
    if len(message) > FAILURE_MESSAGE_LIMIT:
        message = message[: FAILURE_MESSAGE_LIMIT - 3] + "..."
    details = {"from": cand.previous, "revision": applied.revision, "message": message}
    try:
        record(conn, "failed", env.name, cand.value, cand.anchor, details=details)
    except Exception as lost:
        get_run_logger().warning(f"could not record the failed promotion of {env.name} in Git: {lost}")
