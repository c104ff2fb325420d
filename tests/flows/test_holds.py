"""Holds on production against real parts (a real Prefect server, real Git origins, the real kube-apiserver):
a deny window, the org-wide freeze switch set with ``promote freeze`` through the API, and the soak time,
each holding the promotion with nothing changed, and an override recorded in the audit and in Git."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from flows.nightly import nightly
from flows.promote_production import promote_production
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tests.support.events import wait_for_events
from tests.support.flowruns import api_url, artifacts_of, notes, rc_verified, ready_app, tags

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

ROOT = Path(__file__).resolve().parents[2]


def set_gate(app: SandboxApp, **gate: Any) -> None:
    """Give production the gate ``gate`` in the pipeline file (the rest of the file as it was)."""
    yaml = YAML()
    data = yaml.load(app.pipeline_file.read_text())
    production = next(env for env in data["environments"] if env["name"] == "production")
    production["gate"] = gate
    with app.pipeline_file.open("w") as out:
        yaml.dump(data, out)


def promote_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "promote.cli", *args], capture_output=True, text=True, env=env, timeout=240, check=False
    )


def test_a_deny_window_holds_production_and_an_override_is_recorded(world: SandboxWorld) -> None:
    app = ready_app(world, "window", approval=False)
    rc_verified(app)
    # Opens every minute for an hour: open whenever the test runs, and it never ends (the windows overlap).
    set_gate(app, windows=[{"deny": "* * * * *", "duration": "1h", "name": "change-freeze"}])
    before = git(app.origin, "for-each-ref")
    held = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert held.is_failed()
    assert "(rc v1.0.1-rc1) was not promoted to production: deny window 'change-freeze'" in (held.message or "")
    assert "is open until at least" in (held.message or "")
    assert "override_hold=" in (held.message or "")
    assert git(app.origin, "for-each-ref") == before  # no tag, no write-back, no notes
    frozen = wait_for_events(
        api_url(),
        resource_prefix=f"promote.environment.{app.name}.production",
        names={"promote.frozen"},
        event_prefix="promote.",
    )
    assert [e["event"] for e in frozen] == ["promote.frozen"]  # held, not "failed"
    assert frozen[0]["payload"]["hold"] == "window" and "change-freeze" in frozen[0]["payload"]["reason"]

    # The nightly stops the pipeline at the hold and is not failed by it.
    pipelines = app.pipeline_file.parent / "nightly-dir"
    pipelines.mkdir()
    (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
    night = nightly(pipelines_dir=str(pipelines), return_state=True)
    assert night.is_completed(), night.message
    outcome = next(iter(night.result().values()))
    assert outcome.failed is None and "held: " in (outcome.promotions["production"].nothing_to_do or "")
    night_id = night.state_details.flow_run_id
    assert night_id is not None
    record_of_night = artifacts_of(night_id)["nightly"]  # the nightly's record says why
    assert "| held: " in record_of_night and "deny window 'change-freeze'" in record_of_night
    assert git(app.origin, "for-each-ref") == before

    overridden = promote_production(
        pipeline_file=str(app.pipeline_file),
        override_hold="hotfix for INC-42",
        requested_by="alice",
        return_state=True,
    )
    assert overridden.is_completed(), overridden.message
    assert "v1.0.1" in tags(app)
    record = evidence.find(notes(app, "v1.0.1-rc1"), "override", app.name, "production", "v1.0.1-rc1")
    assert record is not None and record.by == "alice" and record.reason == "hotfix for INC-42"
    assert "change-freeze" in record.details["held_by"]
    run_id = overridden.state_details.flow_run_id
    assert run_id is not None
    audit = artifacts_of(run_id)[f"promote-production-{app.name}"]
    assert "| override | alice: hotfix for INC-42 |" in audit and "| held | deny window 'change-freeze'" in audit


def test_the_org_freeze_holds_every_gated_promotion_until_lifted(world: SandboxWorld) -> None:
    app = ready_app(world, "orgfreeze", approval=False)
    rc_verified(app)
    on = promote_cli("freeze", "on", "--reason", "quarter-end audit", "--by", "carol")
    try:
        assert on.returncode == 0, on.stderr[-2000:]
        assert "is on by carol" in on.stdout and "quarter-end audit" in on.stdout
        shown = promote_cli("freeze")
        assert shown.returncode == 0 and "is on by carol" in shown.stdout, shown.stderr[-2000:]
        held = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
        assert held.is_failed()
        assert "the org-wide freeze (promote_freeze) is on by carol" in (held.message or "")
        assert "v1.0.1" not in tags(app)
    finally:
        off = promote_cli("freeze", "off", "--by", "carol")
    assert off.returncode == 0 and "is off (lifted by carol" in off.stdout, off.stderr[-2000:]
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    assert "v1.0.1" in tags(app)


def test_freeze_on_needs_a_reason() -> None:
    refused = promote_cli("freeze", "on")
    assert refused.returncode == 2 and "--reason is required" in refused.stderr


def test_min_soak_holds_then_a_waiting_gate_promotes_once_soaked(world: SandboxWorld) -> None:
    app = ready_app(world, "soak", approval=False)
    rc_verified(app)
    set_gate(app, min_soak="1h")
    held = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert held.is_failed() and "gate.min_soak is 1h" in (held.message or "")
    assert "v1.0.1" not in tags(app)

    # Soaked 6 s from now, so that the run has to wait (the run before took seconds of the soak already).
    verified = evidence.find(notes(app, "v1.0.1-rc1"), "verified", app.name, "staging", "v1.0.1-rc1")
    assert verified is not None
    soak = int((datetime.now(UTC) - datetime.fromisoformat(verified.at)).total_seconds()) + 6
    set_gate(app, min_soak=f"{soak}s", when_held="wait", max_wait="10m")
    waited = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert waited.is_completed(), waited.message
    promoted = [r for r in notes(app, "v1.0.1-rc1") if r.kind == "promoted" and r.environment == "production"]
    assert promoted
    # Records carry whole seconds: a soak of N s shows as at least N - 1.
    soaked = datetime.fromisoformat(promoted[0].at) - datetime.fromisoformat(verified.at)
    assert soaked.total_seconds() >= soak - 1, (soaked, soak)


def promote_cli_at(api_url_value: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PREFECT_API_URL": api_url_value}
    return subprocess.run(
        [sys.executable, "-m", "promote.cli", *args], capture_output=True, text=True, env=env, timeout=240, check=False
    )


@pytest.mark.usefixtures("prefect_api")
def test_a_frozen_server_read_through_a_wrong_url_is_an_error_not_off() -> None:
    """PREFECT_API_URL without /api: the UI's server answers 404 for any path. That says nothing about the switch,
    so `promote freeze` fails naming the fix instead of reporting a frozen server unfrozen."""
    on = promote_cli("freeze", "on", "--reason", "audit", "--by", "carol")
    try:
        assert on.returncode == 0, on.stderr[-2000:]
        wrong = api_url().removesuffix("/api")
        shown = promote_cli_at(wrong, "freeze")
        assert shown.returncode != 0, shown.stdout
        assert "is off" not in shown.stdout
        assert "end in /api" in shown.stderr or "ends in /api" in shown.stderr, shown.stderr[-2000:]
    finally:
        off = promote_cli("freeze", "off", "--by", "carol")
    assert off.returncode == 0, off.stderr[-2000:]


def test_freeze_on_against_a_server_answering_an_html_page_says_nothing_was_set() -> None:
    """A proxy or the UI answering 200 with a page for everything: `freeze on` must not print "is on"."""
    from http.server import BaseHTTPRequestHandler

    from sandbox.httpserve import serve_http

    class Page(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _page(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html><body>Prefect</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_POST = _page  # noqa: N815

    with serve_http(Page) as url:
        on = promote_cli_at(f"{url}/api", "freeze", "on", "--reason", "audit", "--by", "carol")
        shown = promote_cli_at(f"{url}/api", "freeze")
    assert on.returncode != 0 and "is on" not in on.stdout, on.stdout
    assert "HTML page" in on.stderr, on.stderr[-2000:]
    assert shown.returncode != 0 and "is off" not in shown.stdout


@pytest.mark.usefixtures("prefect_api")
def test_a_freeze_reason_with_escape_sequences_is_shown_not_acted_on() -> None:
    """Was: the reason (anyone with the Variable's edit right writes it) reached the terminal raw."""
    on = promote_cli("freeze", "on", "--reason", "audit\x1b[2J\x1b[31m now", "--by", "carol\r")
    try:
        assert on.returncode == 0, on.stderr[-2000:]
        shown = promote_cli("freeze")
        assert shown.returncode == 0, shown.stderr[-2000:]
        for output in (on.stdout, shown.stdout):
            assert "\x1b" not in output and "\r" not in output, repr(output)
            assert "audit\\x1b[2J" in output
    finally:
        off = promote_cli("freeze", "off", "--by", "carol")
    assert off.returncode == 0, off.stderr[-2000:]
