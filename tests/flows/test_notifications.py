"""Notifications through Prefect automations, against real parts: ``promote notifications apply`` sets up an
automation on the real Prefect server; a real failing promotion emits ``promote.failed``; the server's own
triggers and actions services send it through a real notification block (Prefect's custom webhook block) to
a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from promote.notifications import NotificationsError, automation_name, parse_events
from sandbox.world import SandboxWorld
from tests.conftest import unique
from tests.support.flowruns import ready_app
from tests.support.webhook import Webhook, serve_webhook

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def promote_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "promote.cli", *args], capture_output=True, text=True, env=env, timeout=240, check=False
    )


@pytest.fixture
def hook() -> Iterator[tuple[Webhook, str]]:
    state = Webhook()
    with serve_webhook(state) as url:
        yield state, url


def test_a_failed_promotion_reaches_the_notification_block(world: SandboxWorld, hook: tuple[Webhook, str]) -> None:
    state, url = hook
    block = unique("oncall")
    CustomWebhookNotificationBlock(
        name=block, url=f"{url}/hooks/oncall", json_data={"text": "{{subject}}\n{{body}}"}, headers={}, cookies={}
    ).save(block)
    app = ready_app(world, "notify", approval=False)
    first = promote_cli(
        "notifications",
        "apply",
        "--block",
        f"custom-webhook/{block}",
        "--on",
        "failed,rolled-back",
        "--pipeline",
        app.name,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"created automation 'gitops-promote: notify custom-webhook/{block}'" in first.stdout
    # Applying again rewrites it: still one automation of that name.
    again = promote_cli(
        "notifications", "apply", "--block", f"custom-webhook/{block}", "--on", "failed", "--pipeline", app.name
    )
    assert again.returncode == 0 and "updated automation" in again.stdout, again.stderr[-2000:]
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(automation_name(f"custom-webhook/{block}"))
    assert len(found) == 1 and found[0].trigger.expect == {"promote.failed"}

    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "v1.0.1"
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_failed()

    deadline = time.monotonic() + 180  # event -> triggers service -> actions service -> the block's POST
    while not state.received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.received, "no notification reached the webhook within 180 s"
    path, _type, body = state.received[0]
    assert path == "/hooks/oncall"
    text = str(body["text"])
    assert text.startswith(f"promote: failed {app.name}/production"), text
    assert "ROLLED BACK to v1.0.0" in text and "v1.0.1" in text


def test_unknown_events_and_blocks_are_named() -> None:
    with pytest.raises(NotificationsError, match=r"unknown event.*'falied'.*the events are: rc\.cut"):
        parse_events("falied")
    missing = promote_cli("notifications", "apply", "--block", "slack-webhook/no-such-block")
    assert missing.returncode == 1 and "no notification block slack-webhook/no-such-block" in missing.stderr
    bad = promote_cli("notifications", "apply", "--block", "not a block")
    assert bad.returncode == 1 and "expected BLOCK-TYPE/BLOCK-NAME" in bad.stderr
