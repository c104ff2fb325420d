"""What the pull request shows of a promotion's gates (flows/pullrequest.py's gate_statuses) and the board's note
for a waiting pull request (tasks/board.py's with_notes): pure, no server."""

from __future__ import annotations

from pathlib import Path

from flows.pullrequest import gate_statuses
from flows.report import PromotionReport
from pipeline.load import parse_pipeline
from pipeline.model import Environment
from tasks.board import BoardRow, with_notes

EXAMPLE = (Path(__file__).resolve().parents[2] / "deployments" / "examples" / "pull-request-github.yaml").read_text()


def production(gate: str = "") -> Environment:
    text = EXAMPLE.replace("    write:\n      mode: pull-request", f"{gate}    write:\n      mode: pull-request")
    return parse_pipeline(text).environment("production")


def test_an_ungated_environment_shows_only_the_freeze_check() -> None:
    report = PromotionReport(pipeline="app", environment="production")
    assert gate_statuses(production(), report, "staging") == [
        ("gitops-promote/freeze", "success", "no freeze or window held it when the pull request was opened")
    ]


def test_each_gate_the_environment_has_is_a_check_of_its_own() -> None:
    env = production("    gate:\n      approval: true\n      min_soak: 2h\n")
    report = PromotionReport(pipeline="app", environment="production", approver="alice")
    report.held, report.override = "the freeze switch is on: incident 42", "bob: hotfix for the outage"
    assert gate_statuses(env, report, "staging") == [
        (
            "gitops-promote/freeze",
            "success",
            "held (the freeze switch is on: incident 42), overridden by bob: hotfix for the outage",
        ),
        ("gitops-promote/soak", "success", "soaked at least 2h in staging"),
        ("gitops-promote/approval", "success", "approved by alice"),
    ]
    report.override = None  # waited until the hold ended
    assert gate_statuses(env, report, "staging")[0][2] == (
        "passed once the hold ended (the freeze switch is on: incident 42)"
    )


def test_a_waiting_pull_request_is_noted_before_the_row_s_own_note() -> None:
    rows = [BoardRow("staging", "tag", "v1"), BoardRow("production", "tag", "v0", note="rolled back here from v1")]
    noted = with_notes(rows, {"production": "waiting for the merge of pull request #4; checks: 1 failing (ci)"})
    assert noted[0] == rows[0]
    assert noted[1].note == "waiting for the merge of pull request #4; checks: 1 failing (ci); rolled back here from v1"
    assert with_notes(rows, {}) == rows
