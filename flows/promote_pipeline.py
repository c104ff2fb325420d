"""promote-pipeline: what the nightly does for one pipeline file, as one flow run (flows/pipelinerun.py).

The nightly runs one of these per pipeline, as its child: side by side in its own process by default, or, with
``fan_out_to="deployments"``, as runs of this flow's deployment that the work pool's workers (on as many machines
as there are) share out: Prefect's own distribution.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed

from flows.heartbeat import beats
from flows.inputs import pipeline_path
from flows.outcomes import Advance, PipelineFailedError
from flows.pipelinerun import outcome_summary, run_pipeline


# persist_result: a run started from the deployment suspends at an approval gate, which Prefect allows only with
# results persisted; resumed, it runs again from the top and every part finds its finished work in Git.
@beats
@flow(name="promote-pipeline", validate_parameters=True, persist_result=True)
def promote_pipeline_flow(
    pipeline_file: str,
    production: bool = True,
    dry_run: bool = False,
    advance: Advance = "all",
) -> State[Any]:
    """promote-rc for one pipeline, then each environment after the entry, as the nightly does.

    Args:
        pipeline_file: path to the pipeline file on the worker
        production: also promote verified candidates to production (approval gates still apply)
        dry_run: show what would change and change nothing
        advance: "all": as far along the chain as gates allow; "one-step": one environment per night
    """
    try:
        outcome = run_pipeline(pipeline_path(pipeline_file), production, dry_run, advance)
    except PipelineFailedError as exc:
        get_run_logger().error(f"{pipeline_file}: {exc}")
        raise  # the nightly reads the stage and what the parts before it did from the error itself
    # The nightly that started this run reads this message back: its row for the pipeline.
    return Completed(message=outcome_summary(outcome), data=outcome)
