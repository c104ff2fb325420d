"""promote-environment: any environment after the entry, promoted from the one before it, with its own gate,
lock, evidence, verification and rollback (chains of any length: dev -> qa -> staging -> prod)."""

from __future__ import annotations

from prefect import flow

from flows.heartbeat import beats
from flows.promotion import promote
from flows.report import PromotionReport


@beats
@flow(name="promote-environment", validate_parameters=True, persist_result=True)
def promote_environment(
    pipeline_file: str,
    environment: str,
    rc: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    override_hold: str = "",
) -> PromotionReport:
    """Promote ``environment`` from the environment before it: only what passed verification there.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        environment: the environment to promote (any after the entry; the last is what promote-production does)
        rc: what to promote (an rc tag, an image tag or digest, a source commit); default: the newest one
            verified in the environment before it
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
        override_hold: promote even if a freeze, a window or the soak time holds it: why (recorded in the
            audit record and in Git); empty: holds apply
    """
    return promote(
        "promote-environment",
        pipeline_file,
        environment,
        rc,
        dry_run=dry_run,
        requested_by=requested_by,
        override_hold=override_hold,
    )
