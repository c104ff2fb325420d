"""What a flow run is given and by whom: the pipeline file it may read, and who started it."""

from __future__ import annotations

from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from pipeline.paths import configured_roots, confine, default_roots


def pipeline_path(path: str) -> str:
    """``path`` as a flow run may read it: confined to the pipeline roots (pipeline/paths.py) when
    PROMOTE_PIPELINE_ROOTS is set or the run belongs to a deployment (its parameters are anyone's who can start
    a run); as given for a run started in this process (the CLI, a test)."""
    roots = configured_roots()
    if roots is None:
        context = FlowRunContext.get()
        run = context.flow_run if context is not None else None
        if run is None or run.deployment_id is None:
            return path
        roots = default_roots()
    return str(confine(path, roots))


def started_by() -> str:
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None:
        return "local call"
    # The engine's copy of the run carries all we need: no API read (a nightly writes many audit records;
    # prefect.runtime's deployment.id reads the run from the API when it is not a deployment's).
    if run.created_by is not None:
        return f"{(run.created_by.type or '').lower()} {run.created_by.display_value}".strip()
    if run.deployment_id is not None:
        return f"deployment {flow_run.flow_name}/{run.deployment_id}"
    if run.parent_task_run_id is not None:  # the calling flow's own audit says who started it
        return "nested run"
    return "local run"
