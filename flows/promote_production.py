"""promote-production: the last environment of the chain, promoted from the one before it (a verified rc ->
approval -> stable tag at the same commit -> production -> verify; roll back if production does not come up)."""

from __future__ import annotations

from prefect import flow

from flows.heartbeat import beats
from flows.promotion import PromotionError, promote
from flows.report import PromotionReport

__all__ = ["PromotionError", "promote_production"]


@beats
@flow(name="promote-production", validate_parameters=True, persist_result=True)
def promote_production(
    pipeline_file: str,
    rc: str | None = None,
    dry_run: bool = False,
    requested_by: str = "",
    override_hold: str = "",
) -> PromotionReport:
    """Promote what passed the environment before production to production.

    Args:
        pipeline_file: path of the pipeline file (deployments/*.yaml) on the worker
        rc: what to promote: an rc tag (e.g. v1.2.3-rc2) for tag pipelines, an image tag or digest for
            overlay and image-policy pipelines, a source commit for branch pipelines; default: the newest
            one verified upstream (or the registry's choice by policy)
        dry_run: show what would change and change nothing
        requested_by: who asked for this run (CI passes its actor), for the audit record
        override_hold: promote even if a freeze, a window or the soak time holds it: why (recorded in the
            audit record and in Git); empty: holds apply
    """
    return promote(
        "promote-production",
        pipeline_file,
        None,
        rc,
        dry_run=dry_run,
        requested_by=requested_by,
        override_hold=override_hold,
    )
