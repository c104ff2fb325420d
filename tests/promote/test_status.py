"""``promote status`` as users run it (a real subprocess) on a real origin: the board from Git alone."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.board import NONE
from tests.support.boardrepo import make_board_repo, release_story
from tests.support.cli import promote


def test_status_of_a_directory_prints_each_pipeline_in_chain_order(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    story = release_story(board)
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    (deployments / "shop.yaml").write_text(board.pipeline_file.read_text())
    proc = promote("status", str(deployments), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"pipeline shop ({deployments / 'shop.yaml'})"
    assert lines[1].split() == ["environment", "version", "commit", "since", "verified", "approved_by", "run"]
    assert lines[2].split() == [
        "staging", "v1.0.1-rc1", story.rc_commit[:12], "2026-05-01", "10:00:00Z", "2026-05-01", "10:00:00Z", NONE,
        "run-rc",
    ]  # fmt: skip
    assert lines[3].split()[:3] == ["production", "v1.0.1", story.rc_commit[:12]]
    assert "alice (dashboards green)" in lines[3] and lines[3].endswith("run-prod")


def test_status_json_has_full_commits_and_iso_times(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path)
    story = release_story(board)
    proc = promote("status", "--json", str(board.pipeline_file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (found,) = json.loads(proc.stdout)["pipelines"]
    assert found["pipeline"] == "shop" and found["file"] == str(board.pipeline_file)
    production = found["rows"][1]
    assert production["environment"] == "production" and production["commit"] == story.rc_commit
    assert production["since"] == "2026-05-01T11:05:00+00:00"
    assert (production["approved_by"], production["reason"], production["run"]) == (
        "alice",
        "dashboards green",
        "run-prod",
    )


def test_status_names_a_broken_pipeline_and_still_shows_the_others(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    (deployments / "a-missing.yaml").write_text(
        board.pipeline_file.read_text()
        .replace(str(board.origin), str(tmp_path / "no-such.git"))
        .replace("name: shop", "name: missing")
    )
    (deployments / "b-invalid.yaml").write_text("name: Not Valid\n" + "x" * 5000 + "\n")
    (deployments / "shop.yaml").write_text(board.pipeline_file.read_text())
    proc = promote("status", str(deployments), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "promote status: " in proc.stderr and "git fetch failed" in proc.stderr
    assert f"promote status: {deployments / 'b-invalid.yaml'}: invalid pipeline file" in proc.stderr
    assert len(proc.stderr) < 3000  # the 5,000-character line is not echoed
    assert "pipeline shop" in proc.stdout and "nothing recorded" in proc.stdout


def test_status_without_pipeline_files_is_a_usage_error(tmp_path: Path) -> None:
    proc = promote("status", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "promote status: no pipeline files found" in proc.stderr


def test_escape_sequences_from_notes_are_shown_not_acted_on(tmp_path: Path) -> None:
    """Was: an approver name or reason holding terminal escapes reached the terminal raw (clearing the screen,
    rewriting the line)."""
    board = make_board_repo(tmp_path)
    release_story(board, approver="mallory\x1b[2J\x1b[H", reason="ok\rAPPROVED")
    proc = promote("status", str(board.pipeline_file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "mallory" in proc.stdout  # shown ...
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout  # ... as text, not as escape sequences
    assert "\\x1b[2J" in proc.stdout


def test_status_without_a_prefect_server_says_how_to_give_a_secret_block_s_token(tmp_path: Path) -> None:
    """A Secret block is read only from a configured Prefect server: without one, `promote status` starts no server
    of its own (which could not hold the block) and says how to give the token."""
    board = make_board_repo(tmp_path)
    text = board.pipeline_file.read_text().replace(
        f"  url: {board.origin}\n", f"  url: {board.origin}\n  credentials: {{secret_block: gitops-token}}\n", 1
    )
    assert "secret_block" in text
    board.pipeline_file.write_text(text)
    proc = promote("status", str(board.pipeline_file), cwd=tmp_path, without=("PREFECT_API_URL", "PREFECT_UI_URL"))
    output = proc.stdout + proc.stderr
    assert "Prefect Secret block 'gitops-token' is kept by a Prefect server, and none is configured here" in output
    assert "PREFECT_API_URL" in output and "token_env" in output
    assert "telemetry" not in output.lower() and "Starting temporary server" not in output, output[-2000:]
