"""pull-request-sweeper: the fallback for promotions waiting for a pull request's merge when no webhook reaches
``promote receive``. Every few minutes (prefect.yaml), one bounded round: for each suspended run, one read of its
pull request on the forge; merged or closed ones are resumed, ones past write.merge_timeout end as Failed."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.inputs import pipeline_path
from tasks.forges import forge_for
from tasks.merges import sweep


def pull_request_state(pipeline_file: str, environment: str, number: int) -> str:
    """open / merged / closed / conflict (open, but the forge cannot merge it: its base moved under it), as the
    pipeline's forge says now (its pipeline file read under the roots). All but open resume the run: on a
    conflict it makes the change again on the base's new tip and waits again."""
    from pipeline.load import load_pipeline

    pipeline = load_pipeline(pipeline_path(pipeline_file))
    pr = forge_for(pipeline, pipeline.environment(environment), timeout=20).pull_request(number)
    return "conflict" if pr.state == "open" and pr.mergeable is False else pr.state


@flow(name="pull-request-sweeper", validate_parameters=True)
def pull_request_sweeper(limit: int = 50) -> dict[str, int]:
    """Resume the promotions whose pull request was merged or closed (the fallback when no webhook arrives).

    Args:
        limit: at most this many waiting runs are looked at (one forge read each) per round
    """
    log = get_run_logger()
    result = sweep(pull_request_state, limit=max(1, min(limit, 500)), say=log.info)
    log.info(
        f"looked at {result.looked_at} waiting run(s): {result.resumed} resumed, {result.expired} past their window, "
        f"{result.problems} could not be checked"
    )
    return {"looked_at": result.looked_at, "resumed": result.resumed, "expired": result.expired}
