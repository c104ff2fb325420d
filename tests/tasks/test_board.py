"""What runs where (tasks/board.py) from a real Git origin and evidence written by tasks/evidence.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.board import BoardRow, board_key, board_rows, board_table, render_text
from tests.support.boardrepo import BoardRepo, make_board_repo, release_story
from tests.support.gitserver import commit_file


@pytest.fixture
def board(tmp_path: Path) -> BoardRepo:
    return make_board_repo(tmp_path)


def _by_env(board: BoardRepo) -> dict[str, BoardRow]:
    return {row.environment: row for row in board_rows(board.repo(), board.pipeline)}


def test_nothing_recorded_shows_what_git_says_and_says_so(board: BoardRepo) -> None:
    rows = board_rows(board.repo(), board.pipeline)
    first = board.repo().resolve("v1.0.0")
    assert [(r.environment, r.version, r.commit, r.since, r.note) for r in rows] == [
        ("staging", "v1.0.0", first, None, "nothing recorded"),
        ("production", "v1.0.0", first, None, "nothing recorded"),
    ]


def test_a_release_shows_version_commit_since_verified_approver_and_run(board: BoardRepo) -> None:
    story = release_story(board)
    rows = _by_env(board)
    staging, production = rows["staging"], rows["production"]
    assert (staging.version, staging.commit, staging.run) == ("v1.0.1-rc1", story.rc_commit, "run-rc")
    assert staging.since == staging.verified == "2026-05-01T10:00:00+00:00"
    assert staging.approved_by is None and staging.note == ""
    assert (production.version, production.commit, production.run) == ("v1.0.1", story.rc_commit, "run-prod")
    assert production.since == production.verified == "2026-05-01T11:05:00+00:00"
    assert (production.approved_by, production.reason) == ("alice", "dashboards green")
    # Chain order, as the pipeline file lists the environments.
    assert list(rows) == ["staging", "production"]


def test_a_newer_rc_in_staging_leaves_production_and_its_approval_alone(board: BoardRepo) -> None:
    story = release_story(board)

    rc2 = commit_file(board.seed, "src/app.txt", "even faster\n", "feature: even faster")
    board.tag("v1.0.2-rc1", rc2)
    board.point("staging", "v1.0.2-rc1")
    board.record("verified", "staging", "v1.0.2-rc1", rc2, "2026-05-02T09:00:00+00:00", run="run-rc2")
    rows = _by_env(board)
    assert (rows["staging"].version, rows["staging"].commit, rows["staging"].run) == ("v1.0.2-rc1", rc2, "run-rc2")
    assert rows["staging"].since == rows["staging"].verified == "2026-05-02T09:00:00+00:00"
    assert (rows["production"].version, rows["production"].commit) == ("v1.0.1", story.rc_commit)
    assert rows["production"].approved_by == "alice"


def test_a_rollback_shows_the_target_since_the_rollback_and_no_approval(board: BoardRepo) -> None:
    story = release_story(board)
    board.point("production", "v1.0.0")
    board.record(
        "rolled-back", "production", "v1.0.1", story.rc_commit, "2026-05-01T12:00:00+00:00", run="run-back",
        details={"to": "v1.0.0"},
    )  # fmt: skip
    production = _by_env(board)["production"]
    assert (production.version, production.commit) == ("v1.0.0", story.first_commit)  # not the rc's commit
    assert production.since == production.verified == "2026-05-01T12:00:00+00:00"
    assert production.approved_by is None and production.run == "run-back"
    assert production.note == "rolled back here from v1.0.1"


def test_a_version_written_by_hand_has_no_evidence_and_the_row_says_so(board: BoardRepo) -> None:
    release_story(board)
    board.point("staging", "v9.9.9")
    staging = _by_env(board)["staging"]
    assert staging.version == "v9.9.9" and staging.since is None and staging.verified is None
    assert staging.commit is None  # no such tag: the board does not guess a commit
    assert "no evidence for this version" in staging.note


def test_records_of_another_pipeline_in_the_same_repository_do_not_count(board: BoardRepo) -> None:
    story = release_story(board)
    board.record(
        "promoted", "production", "v1.0.1", story.rc_commit, "2026-06-01T00:00:00+00:00", run="other-run",
        pipeline="other", details={"rc": "v1.0.1-rc1"},
    )  # fmt: skip
    assert _by_env(board)["production"].run == "run-prod"


def test_an_unreadable_environment_is_a_row_with_the_reason(board: BoardRepo) -> None:
    release_story(board)

    commit_file(board.seed, "apps/staging.yaml", "kind: Application\nspec: [not, a, mapping]\n", "broken by hand")
    rows = _by_env(board)
    assert rows["staging"].version is None and rows["staging"].note
    assert rows["production"].version == "v1.0.1"


def test_table_cells_and_text_are_the_same_cells(board: BoardRepo) -> None:
    story = release_story(board)
    rows = board_rows(board.repo(), board.pipeline)
    cells = board_table(rows)
    assert cells[1] == {
        "environment": "production",
        "version": "v1.0.1",
        "commit": story.rc_commit[:12],
        "since": "2026-05-01 11:05:00Z",
        "verified": "2026-05-01 11:05:00Z",
        "approved_by": "alice (dashboards green)",
        "run": "run-prod",
        "note": "",
    }
    text = render_text("shop", rows)
    for cell in cells:
        assert re.search(r"\s+".join(re.escape(v) for v in cell.values() if v), text), text


def test_long_reasons_and_values_are_cut_in_cells() -> None:
    row = BoardRow("staging", "tag", version="v" + "9" * 500, approved_by="bob", reason="x" * 500)
    cells = board_table([row])[0]
    assert cells["approved_by"] == "bob"
    assert len(cells["version"]) <= 80 and cells["version"].endswith("...")


@pytest.mark.parametrize("name", ["shop", "payments-eu-1", "Shop_EU", "shop eu", "../x", "ß"])
def test_board_keys_are_prefect_keys_and_deterministic(name: str) -> None:
    key = board_key(name)
    assert re.fullmatch(r"[a-z0-9-]+", key) and key.startswith("board-")
    assert board_key(name) == key


def test_valid_names_keep_their_spelling_and_unsafe_ones_stay_apart() -> None:
    assert board_key("shop-eu") == "board-shop-eu"
    assert board_key("Shop_EU") != board_key("shop-eu") != board_key("shop_eu")
