"""promote-rc: what enters the pipeline (the next release candidate, a branch head, an overlay's image, the
registry's choice by policy) is written where needed, verified in the entry environment, and recorded."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows import events
from flows.heartbeat import beats
from flows.inputs import pipeline_path
from flows.locking import environment_lock
from flows.records import announce, evidence_record, run_record, tell
from flows.report import PromotionReport
from pipeline.model import Environment
from tasks import evidence
from tasks.connections import Connections, connect
from tasks.faults import crash_point
from tasks.health import CheckResult
from tasks.steps import EvidenceNotRecordedError, HealthCheckError, decide_entry, tag_and_apply, verify_and_check
from tasks.strategies import strategy_for
from tasks.strategies.base import Entry, NothingToPromoteError, TagToCreate
from tasks.verification import VerificationResult


@beats
@flow(name="promote-rc", log_prints=False, validate_parameters=True)
def promote_rc(
    pipeline_file: str,
    bump: Literal["major", "minor", "patch"] | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> PromotionReport:
    """Enter the next version into the pipeline's entry environment (tags: cut the next release candidate on
    the pipeline's branch and point staging at it), verify through the Kubernetes API that exactly that
    revision runs, run the health checks and record the evidence in Git. Safe to re-run: a candidate with no
    new commits since is reused, and one verified already is not verified again.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        bump: override the pipeline's versioning.bump for this run
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_path(pipeline_file), log.info)
    pipeline, env = conn.pipeline, conn.pipeline.entry
    report = PromotionReport(
        pipeline=pipeline.name, environment=env.name, strategy=env.tracks.kind, requested_by=requested_by
    )
    with run_record(conn, f"promote-rc-{pipeline.name}", f"release candidate for {env.name}", report, started):
        if env is pipeline.last and not env.tracks.cuts_release_candidates:
            report.action = "not-applicable"
            log.info(f"{env.name} is the pipeline's only environment: promote-production promotes it (with its gate)")
            return report
        try:
            entry = decide_entry(conn, env, bump)
        except NothingToPromoteError as nothing:
            log.info(str(nothing))
            report.action, report.nothing_to_do = "skip", str(nothing)
            return report
        report.action, report.rc, report.commit = entry.action, entry.value or None, entry.revision
        report.from_, report.diff = entry.previous, entry.diff
        if entry.action == "skip":
            log.info(f"nothing to do: {entry.reason}")
            return report
        if dry_run:
            report.dry_run = True
            log.info(f"dry run: would verify {env.name} at {entry.value} ({entry.reason})\n{entry.diff}".rstrip())
            return report
        if _already_verified(conn, env, entry, report):
            return report
        with environment_lock(conn, env):
            _enter(conn, env, entry, report)
        downstream = pipeline.downstream_of(env)
        ready = f"ready for {downstream.name}" if downstream else "done"
        log.info(f"{entry.value} verified in {env.name}: {ready}")
        tell(conn, f"{pipeline.name}: {entry.value} verified in {env.name}, {ready}")
        return report


def _already_verified(conn: Connections, env: Environment, entry: Entry, report: PromotionReport) -> bool:
    """A re-run, or a nightly with nothing new: the value has its verification already. Then nothing is
    repeated; ``skip`` when the next environment runs it too (a nightly then has nothing to promote)."""
    pipeline = conn.pipeline
    already = evidence.find_record(conn.repo, "verified", pipeline.name, env.name, entry.value)
    if already is None:
        return False
    downstream = pipeline.downstream_of(env)
    released = downstream is not None and strategy_for(downstream).runs(conn, downstream, entry.value)
    report.action, report.already_verified = ("skip" if released else "reuse"), True
    live = f", and is live in {downstream.name}" if released and downstream else ""
    get_run_logger().info(f"{entry.value} was already verified in {env.name} at {already.at}{live}; nothing to repeat")
    return True


def _enter(conn: Connections, env: Environment, entry: Entry, report: PromotionReport) -> None:
    """Tag, write, verify and record: the steps of an entry, each one a no-op when a re-run finds it done."""

    def cut(tag: TagToCreate) -> None:
        events.emit("rc.cut", conn.pipeline.name, env.name, version=tag.name, commit=tag.commit)

    revision = entry.revision
    if entry.tag is not None or entry.write is not None:
        applied = tag_and_apply(conn, env, entry.tag, entry.write, tagged=cut)
        if applied is not None:
            crash_point("after-write-back")
            report.write_back, revision = applied.commit, revision or applied.revision
    assert revision is not None
    values = strategy_for(env).values(conn, env, entry.value, revision)
    at = revision

    def evidence_for(verification: VerificationResult, checks: list[CheckResult]) -> list[evidence.Record]:
        details: dict[str, Any] = {"verification": verification.summary(), "checks": [c.summary() for c in checks]}
        if report.write_back:
            details["write_back"] = report.write_back
        return [evidence_record(conn, "verified", env.name, entry.value, at, by=report.requested_by, details=details)]

    # The record is written in the verification's step: a step of its own costs the Prefect server a task run
    try:
        verified = verify_and_check(conn, env, revision, values, evidence_for)
    except (HealthCheckError, EvidenceNotRecordedError) as failed:
        report.sections.append(failed.section)
        raise
    report.sections.append(verified.section)
    report.commit = revision
    report.verified(verified.verification.summary(), [c.summary() for c in verified.checks])
    for rec in verified.recorded:
        announce(conn, rec)
