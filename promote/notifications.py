"""``promote notifications apply``: Prefect automations that send promotion events (flows/events.py) to a
Prefect notification block (Slack, Microsoft Teams, PagerDuty, Opsgenie, email, a custom webhook: whatever
the block is), set up idempotently: one automation per block, found by its name and rewritten in place.

The server does the sending (its actions service), so notifications need no code in the flows and reach
every block Prefect supports; the pipeline file's ``notifications.webhook_url_env`` stays the simple path."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from flows.events import MILESTONES, PREFIX
from rules.errors import RefusedError

DEFAULT_EVENTS = ("failed", "rolled-back", "approval.waiting", "frozen", "live")
NAME_PREFIX = "gitops-promote: notify "
_BLOCK = re.compile(r"^[a-z0-9-]{1,100}/[a-z0-9-]{1,100}$")
_PIPELINE = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")

# Jinja, rendered by the server for each event (Prefect's automation templates): what happened, where, and the
# version, then the message of a failure or hold when there is one.
SUBJECT = "promote: {{ event.event | replace('promote.', '') }} {{ event.resource['promote.pipeline'] }}/" + (
    "{{ event.resource['promote.environment'] }}"
)
BODY = """\
{{ event.event | replace('promote.', '') }}: {{ event.resource['promote.pipeline'] }} \
{{ event.resource['promote.environment'] }} {{ event.payload.version or '' }}
{% if event.payload.message %}{{ event.payload.message }}
{% endif %}{% if event.payload.reason %}{{ event.payload.reason }}
{% endif %}{% if event.payload.by %}by {{ event.payload.by }}
{% endif %}commit {{ event.payload.commit or '-' }} at {{ event.occurred }}"""


class NotificationsError(RefusedError, RuntimeError):
    """The automation could not be set up; the message names the block or event and the fix."""


@dataclass(frozen=True)
class Applied:
    name: str
    created: bool  # False: an automation of that name existed and was rewritten
    events: tuple[str, ...]


def parse_events(text: str) -> tuple[str, ...]:
    """``failed,rolled-back`` -> the milestones, checked against the stable names (docs/events.md)."""
    names = tuple(dict.fromkeys(part.strip().removeprefix(PREFIX) for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in MILESTONES]
    if unknown or not names:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5]) or "none given"
        raise NotificationsError(f"--on: unknown event(s) {shown}; the events are: {', '.join(MILESTONES)}")
    return names


def automation_name(block: str) -> str:
    return f"{NAME_PREFIX}{block}"


def apply(block: str, events: Sequence[str], pipeline: str | None = None) -> Applied:
    """Create or rewrite the automation that sends ``events`` (of ``pipeline``, or of every pipeline) to the
    notification block ``block`` (``BLOCK-TYPE-SLUG/BLOCK-NAME``, e.g. ``slack-webhook/ops``)."""
    from prefect import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.exceptions import ObjectNotFound

    if not _BLOCK.fullmatch(block):
        raise NotificationsError(
            f"--block {block[:80]!r}: expected BLOCK-TYPE/BLOCK-NAME, e.g. slack-webhook/ops or "
            "custom-webhook/oncall (the block's type slug and name, as the UI's Blocks page shows them)"
        )
    if pipeline is not None and not _PIPELINE.fullmatch(pipeline):
        raise NotificationsError(f"--pipeline {pipeline[:80]!r} is not a pipeline name (lowercase letters, digits, -)")
    kind, name = block.split("/")
    resource = f"promote.environment.{pipeline}.*" if pipeline else "promote.environment.*"
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name=name, block_type_slug=kind)
        except ObjectNotFound:
            raise NotificationsError(
                f"no notification block {block}: create it in the UI (Blocks -> +) or in Python "
                f"(e.g. SlackWebhook(url=...).save({name!r})), then run this again"
            ) from None
        automation = AutomationCore(
            name=automation_name(block),
            description="Sends gitops-promote events to a notification block (promote notifications apply).",
            enabled=True,
            tags=["gitops-promote"],
            trigger=EventTrigger(
                match={"prefect.resource.id": resource},
                expect={PREFIX + event for event in events},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[SendNotification(block_document_id=document.id, subject=SUBJECT, body=BODY)],
        )
        existing = client.read_automations_by_name(automation.name)
        for extra in existing[1:]:  # a name is meant to be one automation: keep the first, drop copies
            client.delete_automation(extra.id)
        if existing:
            client.update_automation(existing[0].id, automation)
            return Applied(automation.name, created=False, events=tuple(events))
        client.create_automation(automation)
        return Applied(automation.name, created=True, events=tuple(events))


def describe(applied: Applied, block: str, pipeline: str | None) -> str:
    verb = "created" if applied.created else "updated"
    scope = f"pipeline {pipeline}" if pipeline else "every pipeline"
    return f"{verb} automation {applied.name!r}: {', '.join(applied.events)} of {scope} -> block {block}"
