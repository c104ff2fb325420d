"""promote-pipeline: what the nightly does for one pipeline file, as a flow of its own.

The nightly's ``fan_out_to="deployments"`` starts one run of this flow's deployment per pipeline, so the work
pool's workers (on as many machines as there are) share the pipelines out: Prefect's own distribution.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed

from flows.heartbeat import beats
from flows.inputs import pipeline_path
from flows.nightly import outcome_summary, promote_pipeline
from flows.outcomes import Advance, PipelineFailedError


@beats
@flow(name="promote-pipeline", validate_parameters=True)
def promote_pipeline_flow(
    pipeline_file: str,
    production: bool = True,
    dry_run: bool = False,
    advance: Advance = "all",
) -> State[Any]:
    """promote-rc for one pipeline, then each environment after the entry as the nightly would.

    Args:
        pipeline_file: path to the pipeline file on the worker
        production: also promote verified candidates to production (approval gates still apply)
        dry_run: show what would change and change nothing
        advance: "all": as far along the chain as gates allow; "one-step": one environment per night
    """
    try:
        outcome = promote_pipeline(pipeline_path(pipeline_file), production, dry_run, advance)
    except PipelineFailedError as exc:
        get_run_logger().error(f"{pipeline_file}: {exc.stage}: {exc}")
        raise RuntimeError(f"{exc.stage}: {exc}") from exc
    # The nightly that started this run reads this message back: its row for the pipeline.
    return Completed(message=outcome_summary(outcome), data=outcome)
