"""What the nightly does for one pipeline, in one flow run: promote-rc, then each environment after the entry.

The steps of each part (decide, tag and write, verify and check, record) are the task runs of that one run, and
each part leaves its own audit record (``promote-rc-<pipeline>``, ``promote-production-<pipeline>``...), as the
flows run on their own do. The parts are not runs of their own: a nested flow run costs the Prefect server and
the client several times a task run, and the parts exist in the nightly only to give the pipeline its order.
"""

from __future__ import annotations

from flows.outcomes import Advance, PipelineFailedError, PipelineOutcome
from flows.promote_environment import promote_environment
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from flows.records import one_board_write
from flows.report import PromotionReport
from pipeline.load import load_pipeline
from pipeline.model import Environment, Pipeline
from rules.windows import HeldError
from tasks.connections import open_repository
from tasks.plan import plan_pipeline


def _promote_env(outcome: PipelineOutcome, pipeline: Pipeline, env: Environment, rc: str | None) -> PromotionReport:
    last = env is pipeline.last
    stage = "promote-production" if last else f"promote-environment {env.name}"
    try:
        if last:
            report = promote_production.fn(pipeline_file=outcome.pipeline_file, rc=rc, requested_by="nightly")
        else:
            report = promote_environment.fn(
                pipeline_file=outcome.pipeline_file, environment=env.name, rc=rc, requested_by="nightly"
            )
    except HeldError as held:
        # A freeze, a window or the soak time: the pipeline stops here tonight, and that is not a failure.
        report = PromotionReport(
            pipeline=pipeline.name, environment=env.name, held=str(held), nothing_to_do=f"held: {held}"
        )
    except Exception as exc:
        raise PipelineFailedError(stage, exc, outcome) from exc
    outcome.promotions[env.name] = report
    return report


def run_pipeline(pipeline_file: str, production: bool, dry_run: bool, advance: Advance = "all") -> PipelineOutcome:
    """promote-rc, then each environment after the entry from the one before it: ``all`` as far as gates allow
    in one night (the rc just verified, pinned for tags), ``one-step`` one environment per night (from the
    last backwards, each from what its upstream verified before tonight, as ``promote plan`` shows it). The
    pipeline's board is written once, at the end (or before a gate waits for a person)."""
    with one_board_write():
        return _run_parts(pipeline_file, production, dry_run, advance)


def _run_parts(pipeline_file: str, production: bool, dry_run: bool, advance: Advance) -> PipelineOutcome:
    outcome = PipelineOutcome(pipeline_file)
    pipeline = load_pipeline(pipeline_file)
    downstream = pipeline.environments[pipeline.environments.index(pipeline.entry) + 1 :]
    if production and not dry_run and advance == "one-step":
        plans = {plan.environment: plan for plan in plan_pipeline(open_repository(pipeline), pipeline)}
        for env in reversed(downstream):
            plan = plans[env.name]
            if plan.proposed and plan.proposed != plan.current:
                _promote_env(outcome, pipeline, env, None)
    try:
        outcome.rc = promote_rc.fn(pipeline_file=pipeline_file, dry_run=dry_run, requested_by="nightly")
    except Exception as exc:
        raise PipelineFailedError("promote-rc", exc, outcome) from exc
    if production and not dry_run and advance == "all" and outcome.rc.action != "skip":
        # Tags: exactly the rc just verified. Other strategies: each environment decides from what is verified
        # upstream (an image policy may not even allow staging's tag, e.g. a release candidate).
        pinned = outcome.rc.rc if outcome.rc.strategy == "tag" else None
        for env in downstream:
            if _promote_env(outcome, pipeline, env, pinned).nothing_to_do:
                break
    return outcome


def promotions_cell(outcome: PipelineOutcome) -> str:
    failure = f"FAILED: {outcome.failed}" if outcome.failed else None
    cells = []
    for env, report in outcome.promotions.items():
        if report.held:
            done = f"held: {report.held}"
        elif report.nothing_to_do:
            done = "nothing to do"
        else:
            done = f"{report.from_ or '?'} -> {report.version or '?'}"
        cells.append(done if len(outcome.promotions) == 1 and failure is None else f"{env}: {done}")
    if failure and outcome.failed_in not in (None, "promote-rc"):
        cells.append(failure)
    return "; ".join(cells) or "-"


def rc_cell(outcome: PipelineOutcome) -> str:
    if outcome.rc is not None:
        rc = " ".join(str(v) for v in (outcome.rc.action, outcome.rc.rc) if v) or "-"
        return rc + (" (dry run)" if outcome.rc.dry_run else "")
    # an unexpected error stopped the pipeline at its start
    return f"FAILED: {outcome.failed}" if outcome.failed and outcome.failed_in in (None, "promote-rc") else "-"


def outcome_summary(outcome: PipelineOutcome) -> str:
    """One line for a pipeline: what promote-rc did, then the promotions after it."""
    return f"promote-rc: {rc_cell(outcome)}; then: {promotions_cell(outcome)}"
