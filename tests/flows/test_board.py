"""The board artifact on a real Prefect server: real promotions (real Git, kube-apiserver, the stand-in Argo CD)
rewrite ``board-<pipeline>``; its rows are what ``promote status`` computes from Git, and the Prefect UI shows
it (headless Chromium; the screenshot is kept in test-artifacts/board.png)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from flows.nightly import nightly
from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from flows.rollback import rollback
from pipeline.load import load_pipeline
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks.approval import resume_run
from tasks.board import NONE, board_key, board_rows, board_table
from tasks.connections import open_repository
from tasks.plan import plan_pipeline
from tests.support.flowruns import (
    ROOT,
    InThread,
    api_url,
    board_picture,
    board_writes,
    by_pipeline,
    latest_board,
    ready_app,
    wait_for_state,
)
from tests.support.webdriver import browser

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

ARTIFACTS = ROOT / "test-artifacts"


def from_git(app: SandboxApp) -> list[dict[str, str]]:
    """What ``promote status`` computes for the pipeline now."""
    pipeline = load_pipeline(app.pipeline_file)
    repo = open_repository(pipeline)
    repo.fetch()
    return board_table(board_rows(repo, pipeline))


def commit_of(app: SandboxApp, tag: str) -> str:
    return git(app.origin, "rev-parse", f"{tag}^{{commit}}")[:12]


def test_promotions_rewrite_the_board_with_what_git_records(world: SandboxWorld) -> None:
    app = ready_app(world, "board")
    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    _id, rows = latest_board(app)
    assert [(r["environment"], r["version"]) for r in rows] == [("staging", "v1.0.1-rc1"), ("production", "v1.0.0")]
    assert rows[0]["run"] == str(rc.state_details.flow_run_id)
    assert rows[0]["commit"] == commit_of(app, "v1.0.1-rc1") and rows[0]["verified"] != NONE

    running = InThread(lambda: promote_production(pipeline_file=str(app.pipeline_file), return_state=True))
    paused = wait_for_state(by_pipeline(app), "PAUSED", timeout=240)
    resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "dashboards green"})
    prod = running.join(timeout=240)
    assert prod.is_completed(), prod.message
    _id, rows = latest_board(app)
    production = rows[1]
    assert (production["environment"], production["version"]) == ("production", "v1.0.1")
    assert production["commit"] == commit_of(app, "v1.0.1-rc1")  # the stable tag sits on the rc's commit
    assert production["approved_by"] == "alice (dashboards green)"
    assert production["run"] == str(prod.state_details.flow_run_id)
    assert production["since"] != NONE and production["since"] >= rows[0]["since"]
    assert rows == from_git(app)  # the artifact and `promote status` print the same cells
    # Beside the table, the picture: the same versions, production in step with what staging verified.
    picture = board_picture(app)
    texts = re.findall(">([^<]+)</text>", picture)
    assert {"v1.0.1-rc1", "v1.0.1", "in step with staging"} <= set(texts), texts
    assert "ago<" not in picture  # a kept picture shows times, not "3h ago" that goes stale
    # `promote plan` agrees: production runs what staging verified (was: "v1.0.0 -> v1.0.1" once more, read from
    # the value before the write that already landed).
    pipeline = load_pipeline(app.pipeline_file)
    plans = {plan.environment: plan for plan in plan_pipeline(open_repository(pipeline), pipeline)}
    assert plans["production"].render().startswith("production (tag): v1.0.1 (no change)")

    back = rollback(pipeline_file=str(app.pipeline_file), environment="production", return_state=True)
    assert back.is_completed(), back.message
    _id, rows = latest_board(app)
    assert rows[1]["version"] == "v1.0.0" and rows[1]["commit"] == commit_of(app, "v1.0.0")
    assert rows[1]["approved_by"] == NONE and rows[1]["run"] == str(back.state_details.flow_run_id)
    assert rows[1]["note"] == "rolled back here from v1.0.1"
    assert rows == from_git(app)


def test_a_nightly_writes_a_pipeline_s_board_once_and_before_its_gate_waits(
    world: SandboxWorld, tmp_path: Path
) -> None:
    """Inside the nightly's promote-pipeline run each part's board rewrite is held back: written once at the
    end, and before the production gate waits, so that the board shows staging's new version meanwhile."""
    ungated, gated = ready_app(world, "board-n1", approval=False), ready_app(world, "board-n2")
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    for app in (ungated, gated):
        (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
    running = InThread(lambda: nightly(pipelines_dir=str(pipelines), return_state=True))
    copy = str(pipelines / gated.pipeline_file.name)  # the nightly's runs name the file in its directory
    paused = wait_for_state(lambda r: (r.parameters or {}).get("pipeline_file") == copy, "PAUSED", timeout=240)
    waiting = latest_board(gated)[1]  # written before the wait: staging runs the rc, production not yet
    assert [(r["environment"], r["version"]) for r in waiting] == [("staging", "v1.0.1-rc1"), ("production", "v1.0.0")]
    assert board_writes(gated) == 1
    resume_run(api_url(), str(paused.id), {"approve": True, "approver": "alice", "reason": "ok"})
    state = running.join(timeout=240)
    assert state.is_completed(), state.message
    for app in (ungated, gated):
        rows = latest_board(app)[1]
        assert [(r["environment"], r["version"]) for r in rows] == [("staging", "v1.0.1-rc1"), ("production", "v1.0.1")]
        assert rows == from_git(app)
    assert board_writes(ungated) == 1  # promote-rc and promote-production changed it: one write at the end
    assert board_writes(gated) == 2  # before the gate, and at the end


def test_a_dry_run_leaves_the_board_alone(world: SandboxWorld) -> None:
    app = ready_app(world, "board-dry", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    before, _rows = latest_board(app)
    app.commit_change("feature: not yet")
    assert promote_rc(pipeline_file=str(app.pipeline_file), dry_run=True, return_state=True).is_completed()
    assert latest_board(app)[0] == before


def test_the_prefect_ui_shows_the_board(world: SandboxWorld) -> None:
    app = ready_app(world, "board-ui", approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    artifact_id, rows = latest_board(app)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with browser() as page:
            page.open(f"{os.environ['PREFECT_UI_URL']}/artifacts/artifact/{artifact_id}")
            # Wait on the rendered cells themselves (as long as the browser works: tests/support/webdriver.py).
            page.find("//*[contains(text(), 'v1.0.1-rc1')]")
            page.find(f"//*[contains(text(), '{rows[1]['commit']}')]")
            page.find("//img[starts-with(@src, 'data:image/svg+xml;base64,')]")  # the picture, beside the table
            page.screenshot(ARTIFACTS / "board.png")
            dom = page.source()
            (ARTIFACTS / "board.html").write_text(dom)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert board_key(app.name) in dom
    assert all(cell in dom for cell in ("staging", "production", "v1.0.1", rows[1]["run"]))
    assert (ARTIFACTS / "board.png").stat().st_size > 10_000
