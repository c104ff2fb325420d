"""rollback: point an environment at a previous (or given) version and verify it."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.heartbeat import beats
from flows.inputs import pipeline_path
from flows.locking import environment_lock
from flows.records import record, run_record, tell
from flows.report import PromotionReport
from tasks.connections import connect
from tasks.steps import fetch_repository, roll_back_promotion, verify
from tasks.strategies import strategy_for


@beats
@flow(name="rollback", validate_parameters=True)
def rollback(
    pipeline_file: str,
    environment: str = "production",
    to_version: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
) -> PromotionReport:
    """Point an environment back at an earlier release and verify that it runs it.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        environment: the environment to roll back (default: production)
        to_version: the version to go back to (e.g. v1.2.2); default: tags: the stable release before the
            current one; others: what the environment ran before its last promotion (branches: the last
            promotion's merge is reverted)
        dry_run: show what would change and change nothing
        requested_by: who asked for this run, for the audit record
    """
    log = get_run_logger()
    started = time.monotonic()
    conn = connect(pipeline_path(pipeline_file), log.info)
    pipeline = conn.pipeline
    report = PromotionReport(pipeline=pipeline.name, environment=environment, requested_by=requested_by)
    with run_record(conn, f"rollback-{pipeline.name}", f"rollback of {environment}", report, started):
        env = pipeline.environment(environment)  # an unknown name fails here, with its audit record
        report.strategy = env.tracks.kind
        fetch_repository(conn)
        plan = strategy_for(env).rollback_plan(conn, env, to_version)
        report.from_, report.to, report.diff = plan.current, plan.target, plan.diff
        if dry_run:
            log.info(f"dry run: would roll {env.name} back from {plan.current} to {plan.target}\n{plan.diff}".rstrip())
            report.dry_run = True
            return report
        with environment_lock(conn, env):
            back, values = roll_back_promotion(conn, env, plan.candidate, plan.applied)
            verified = verify(conn, env, back.revision, values)
            report.sections.append(verified.section)
            commit = plan.record_commit or back.commit
            record(conn, "rolled-back", env.name, plan.current, commit, by=requested_by, details={"to": plan.target})
        report.write_back, report.verification = back.commit, verified.verification.summary()
        log.warning(f"{env.name} ROLLED BACK from {plan.current} to {plan.target}")
        tell(conn, f"{pipeline.name}: {env.name} ROLLED BACK from {plan.current} to {plan.target}")
        return report
