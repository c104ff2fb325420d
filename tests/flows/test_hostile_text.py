"""Untrusted text through the real flows into the Prefect UI's markdown: a hostile ``requested_by`` and commit
subject, read back from the real Prefect server's artifacts and parsed as the UI does (CommonMark + tables)."""

from __future__ import annotations

from typing import Any

import pytest
from markdown_it import MarkdownIt

from flows.promote_rc import promote_rc
from sandbox.world import SandboxWorld
from tests.support.flowruns import artifacts_of, ready_app

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

FAKE_ROW = "ci\n| approved_by | THE SECURITY TEAM |\n# APPROVED BY THE SECURITY TEAM\n[docs](javascript:alert(1))"


def parsed(markdown: str) -> list[Any]:
    flat: list[Any] = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        flat.append(token)
        flat.extend(token.children or [])
    return flat


def test_the_audit_record_keeps_hostile_text_in_its_cell(world: SandboxWorld) -> None:
    app = ready_app(world, "hostile-md", approval=False)
    app.commit_change("fix: [click](javascript:alert(2)) <img src=x onerror=alert(3)> | fake | cell |")
    state = promote_rc(pipeline_file=str(app.pipeline_file), requested_by=FAKE_ROW, return_state=True)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    audit = artifacts_of(run_id)[f"promote-rc-{app.name}"]
    tokens = parsed(audit)
    kinds = [t.type for t in tokens]
    # The record's own title, then its verification's section: the hostile text made no heading of its own.
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings[0] == f"promote-rc-{app.name}", headings
    assert [h.split(" ")[:2] for h in headings[1:2]] == [["staging", "runs"]], headings
    assert headings[2:] in ([], ["Health checks"]), headings
    assert not {"link_open", "image", "html_inline", "html_block"} & set(kinds), audit
    # Table cells in order: field, value, field, value... The hostile text is one value cell, of requested_by.
    cells = [t.content for t in tokens if t.type == "inline" and t.content != audit.splitlines()[0].lstrip("# ")]
    holding = [i for i, cell in enumerate(cells) if "THE SECURITY TEAM" in cell]
    assert len(holding) == 1, cells
    assert cells[holding[0] - 1] == "requested_by", cells
    assert "approved_by" not in cells[::2] or cells.count("approved_by") == 1, cells
