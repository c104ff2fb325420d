"""Promotion milestones as Prefect events: a stable interface for automations, notifications and dashboards.

Every event's resource is the environment (``promote.environment.<pipeline>.<environment>``); the pipeline,
the version and the commit are related resources, and Prefect adds the flow run, flow and deployment itself.
docs/events.md lists the names; they only ever gain fields.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final, Literal, get_args

Milestone = Literal[
    "rc.cut",
    "verified",
    "approval.waiting",
    "approval.approved",
    "approval.rejected",
    "live",
    "failed",
    "rolled-back",
    "frozen",
    "frozen.overridden",
]
MILESTONES: Final[tuple[Milestone, ...]] = get_args(Milestone)
PREFIX: Final = "promote."
_TEXT_LIMIT = 500  # payload strings: enough for a message, never a whole diff or log

# Evidence record kinds (tasks/evidence.py) and the milestone each one is.
FOR_RECORD: Final[Mapping[str, Milestone]] = {
    "verified": "verified",
    "promoted": "live",
    "approved": "approval.approved",
    "rolled-back": "rolled-back",
    "override": "frozen.overridden",
}


def environment_resource(pipeline: str, environment: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"promote.environment.{pipeline}.{environment}",
        "prefect.resource.name": f"{pipeline}/{environment}",
        "promote.pipeline": pipeline,
        "promote.environment": environment,
    }


def related_resources(pipeline: str, version: str | None, commit: str | None) -> list[dict[str, str]]:
    related = [
        {
            "prefect.resource.id": f"promote.pipeline.{pipeline}",
            "prefect.resource.role": "pipeline",
            "prefect.resource.name": pipeline,
        }
    ]
    if version:
        related.append(
            {
                "prefect.resource.id": f"promote.version.{pipeline}.{version}",
                "prefect.resource.role": "version",
                "prefect.resource.name": version,
            }
        )
    if commit:
        related.append({"prefect.resource.id": f"promote.commit.{commit}", "prefect.resource.role": "commit"})
    return related


def _bounded(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= _TEXT_LIMIT else value[: _TEXT_LIMIT - 3] + "..."
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value[:50]]
    if isinstance(value, dict):
        return {str(key): _bounded(item) for key, item in list(value.items())[:50]}
    return value


def emit(
    milestone: Milestone,
    pipeline: str,
    environment: str,
    *,
    version: str | None = None,
    commit: str | None = None,
    **payload: object,
) -> None:
    """Emit ``promote.<milestone>``. Never raises: an event that cannot be sent must not fail a promotion."""
    from prefect.events import emit_event

    body = {key: _bounded(value) for key, value in payload.items() if value not in (None, "", [], {})}
    body |= {"pipeline": pipeline, "environment": environment} | ({"version": version} if version else {})
    if commit:
        body["commit"] = commit
    try:
        emit_event(
            event=PREFIX + milestone,
            resource=environment_resource(pipeline, environment),
            related=related_resources(pipeline, version, commit),
            payload=body,
        )
    except Exception as exc:
        logging.getLogger(__name__).warning(f"could not emit the {PREFIX}{milestone} event: {exc}")
