"""``promote status --svg``: the board as a picture (tasks/boardpicture.py), from a real origin through the real
command, read back as XML and shown in headless Chromium (the screenshot is kept in
test-artifacts/board-picture.png)."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from tasks.board import BoardRow
from tasks.boardpicture import LINE_CHARS, Lag, ago, lags, markdown_image, render_svg
from tasks.plan import EnvironmentPlan
from tests.support.boardrepo import BoardRepo, make_board_repo, release_story
from tests.support.cli import promote
from tests.support.gitserver import commit_file
from tests.support.webdriver import browser

SVG = "{http://www.w3.org/2000/svg}"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _parse(svg: str) -> ET.Element:
    # Our own output, and the point is to fail on anything malformed: no entities or DTDs are expected in it.
    assert "<!DOCTYPE" not in svg and "<!ENTITY" not in svg
    return ET.fromstring(svg)  # noqa: S314


def _boxes(svg: str) -> dict[str, list[str]]:
    """Each environment's box, as the lines of text drawn in it (the document must be well-formed XML)."""
    root = _parse(svg)
    return {
        group.attrib["data-environment"]: [text.text or "" for text in group.iter(f"{SVG}text")]
        for group in root.iter(f"{SVG}g")
        if group.attrib.get("class") == "environment"
    }


def _box_colour(svg: str, environment: str) -> str:
    root = _parse(svg)
    for group in root.iter(f"{SVG}g"):
        if group.attrib.get("data-environment") == environment:
            rect = next(group.iter(f"{SVG}rect"))
            return rect.attrib["stroke"]
    raise AssertionError(f"no box for {environment}")


def _draw(board: BoardRepo, tmp_path: Path) -> str:
    out = tmp_path / "board.svg"
    proc = promote("status", "--svg", str(out), str(board.pipeline_file), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pipeline shop" in proc.stdout  # the table is still printed beside the picture
    return out.read_text()


def test_a_released_pipeline_is_drawn_in_promotion_order_in_step(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    release_story(board)
    svg = _draw(board, tmp_path)
    boxes = _boxes(svg)
    assert list(boxes) == ["staging", "production"]
    staging, production = boxes["staging"], boxes["production"]
    assert staging[:2] == ["staging", "v1.0.1-rc1"] and production[:2] == ["production", "v1.0.1"]
    assert production[3].startswith("verified ") and production[3].endswith(" ago")
    assert production[4] == "in step with staging"
    # promote-rc would cut the next rc: main moved on (the commits that pointed the environments).
    assert staging[4:] == ["entry: new versions start here", "next: v1.0.2-rc1"]
    assert _box_colour(svg, "production") == "#2e7d32"


def test_a_version_verified_upstream_and_not_promoted_shows_as_the_lag(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    release_story(board)
    rc2 = commit_file(board.seed, "src/app.txt", "even faster\n", "feature: even faster")
    board.tag("v1.0.2-rc1", rc2)
    board.point("staging", "v1.0.2-rc1")
    board.record("verified", "staging", "v1.0.2-rc1", rc2, "2026-05-02T09:00:00+00:00", run="run-rc2")
    svg = _draw(board, tmp_path)
    production = _boxes(svg)["production"]
    assert production[1] == "v1.0.1"
    assert production[4] == "behind staging: v1.0.2 waits"
    # What v1.0.2 adds to v1.0.1: the feature and the two commits that pointed the environments at v1.0.1's tags.
    assert production[5] == "3 new commits"
    assert production[6].startswith("verified there ") and production[6].endswith(" ago")
    assert _box_colour(svg, "production") == "#ef6c00"


def test_hostile_texts_are_escaped_and_cut_to_their_box() -> None:
    now = datetime(2026, 5, 2, tzinfo=UTC)
    rows = [
        BoardRow("staging", "tag", version="<script>alert('the board picture')</script>", note="x" * 500 + "\x1b[2J"),
        BoardRow("production", "tag", version="v1&2", verified="2026-05-01T00:00:00+00:00"),
    ]
    svg = render_svg('pipeline "shop"<', rows, {"production": Lag(upstream="staging")}, now)
    assert "<script" not in svg and "\x1b" not in svg
    boxes = _boxes(svg)
    assert boxes["staging"][1] == "<script>alert('the board picture')</script>"[: LINE_CHARS - 1] + "\u2026"
    assert all(len(line) <= LINE_CHARS for lines in boxes.values() for line in lines)
    assert boxes["production"][1] == "v1&2" and boxes["production"][3] == "verified 1d ago"


def test_times_read_as_how_long_ago() -> None:
    now = datetime(2026, 5, 2, 12, 0, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago("2026-05-02T11:59:30+00:00", now) == "30s ago"
    assert ago("2026-05-02T11:15:00+00:00", now) == "45min ago"
    assert ago("2026-05-02T09:00:00+00:00", now) == "3h ago"
    assert ago("2026-04-29T12:00:00+00:00", now) == "3d ago"
    assert ago("not a time", now) == "not a time"
    assert ago("2026-05-02T09:00:00+00:00", None) == "2026-05-02 09:00Z"  # a kept picture: no "ago" to go stale


def test_the_picture_as_a_markdown_image_is_the_svg_itself_and_its_alt_text_is_inert() -> None:
    svg = render_svg("pipeline shop", [BoardRow("staging", "tag", version="v1")], {}, None)
    image = markdown_image(svg, "pipeline [x](javascript:alert(1))")
    alt, _, rest = image.partition("](data:image/svg+xml;base64,")
    assert alt == "![pipeline xjavascriptalert1"
    assert base64.b64decode(rest.removesuffix(")")).decode() == svg


def test_svg_draws_one_pipeline_and_never_writes_through_a_link(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    two = promote(
        "status", "--svg", str(tmp_path / "x.svg"), str(board.pipeline_file), str(board.pipeline_file), cwd=tmp_path
    )
    assert two.returncode == 2 and "--svg draws one pipeline, and 2 were given" in two.stderr

    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "board.svg"
    link.symlink_to(target)
    linked = promote("status", "--svg", str(link), str(board.pipeline_file), cwd=tmp_path)
    assert linked.returncode == 1 and "not a regular file" in linked.stderr
    assert target.read_text() == "keep me\n" and link.is_symlink()

    missing = promote("status", "--svg", str(tmp_path / "nowhere" / "b.svg"), str(board.pipeline_file), cwd=tmp_path)
    assert missing.returncode == 1 and "its folder does not exist" in missing.stderr
    assert not list(tmp_path.glob(".promote-status-*"))  # no temporary file left behind

    folder = tmp_path / "a-folder"
    folder.mkdir()
    over_a_folder = promote("status", "--svg", str(folder), str(board.pipeline_file), cwd=tmp_path)
    assert over_a_folder.returncode == 1 and "not a regular file" in over_a_folder.stderr
    assert "Traceback" not in linked.stderr + missing.stderr + over_a_folder.stderr


def test_the_picture_shows_in_chromium(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    release_story(board)
    out = tmp_path / "board.svg"
    out.write_text(_draw(board, tmp_path))
    with browser() as page:
        page.open(out.as_uri())
        # Chromium parsed it as SVG and laid out the boxes' texts (a parse error shows an error page instead).
        page.find("//*[local-name()='text' and text()='in step with staging']")
        page.find("//*[local-name()='text' and text()='v1.0.1-rc1']")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(ARTIFACTS / "board-picture.png")
    assert (ARTIFACTS / "board-picture.png").stat().st_size > 1000


def test_a_promotion_the_plan_refuses_is_drawn_grey_with_its_reason_never_in_step(tmp_path: Path) -> None:
    board = make_board_repo(tmp_path / "shop")
    plans = [
        EnvironmentPlan("staging", "tag", current="v1.0.0"),
        EnvironmentPlan("production", "tag", current="v1.0.0", note="nothing verified in staging", refused=True),
    ]
    found = lags(board.pipeline, plans)
    assert found["staging"] == Lag(upstream=None) and found["production"].said == "nothing verified in staging"
    rows = [BoardRow("staging", "tag", version="v1.0.0"), BoardRow("production", "tag", version="v1.0.0")]
    svg = render_svg("pipeline shop", rows, found, datetime(2026, 5, 2, tzinfo=UTC))
    assert _boxes(svg)["production"][4] == "nothing verified in staging"
    assert _box_colour(svg, "production") == "#616161"
