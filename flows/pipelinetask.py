"""promote-pipeline as a background task, for the nightly's ``fan_out_to="task-workers"``: Prefect's task workers
(``prefect task serve flows/pipelinetask.py:promote_pipeline_task``, on as many machines as you like) pick the
nightly's pipelines up and run each in a thread of their long-lived process, as a promote-pipeline run nested
under the task: no new process, no imports, no pull step per pipeline.
"""

from __future__ import annotations

from prefect import task

from flows.inputs import pipeline_path
from flows.outcomes import Advance, PipelineOutcome
from flows.promote_pipeline import promote_pipeline_flow
from flows.subflows import run_subflow


# No retries: a failed pipeline is reported by the nightly, as in the other modes. Prefect's task workers store
# the result (the pipeline's outcome, or its failure), which is how the nightly reads it back.
@task(name="promote-pipeline-task")
def promote_pipeline_task(pipeline_file: str, production: bool, dry_run: bool, advance: Advance) -> PipelineOutcome:
    """One pipeline of a nightly, in a task worker: its promote-pipeline run, nested under this task run."""
    outcome = run_subflow(
        promote_pipeline_flow,
        pipeline_file=pipeline_path(pipeline_file),
        production=production,
        dry_run=dry_run,
        advance=advance,
    )
    assert isinstance(outcome, PipelineOutcome)
    return outcome
