"""Untrusted text in markdown stays text: parsed back with markdown-it (CommonMark + tables, the dialect the
Prefect UI renders), hostile input adds no table rows, headings, links, images, HTML or code-fence ends."""

from __future__ import annotations

from typing import Any

import pytest
from markdown_it import MarkdownIt

from tasks import markdown as md
from tasks.approval import ApprovalPlan

HOSTILE = [
    "ok\n| approved_by | THE SECURITY TEAM |\n# APPROVED BY THE SECURITY TEAM",
    "[click](javascript:alert(1)) ![x](javascript:alert(2)) <img src=x onerror=alert(3)>",
    "<https://evil.example> `code` *bold* ~~gone~~ &lt;b&gt; \\| pipe | pipe",
    "line\r\nbreak\u2028sep\x1b[31mred\x00nul",
]


def tokens(markdown: str) -> list[Any]:
    parser = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    flat: list[Any] = []
    for token in parser.parse(markdown):
        flat.append(token)
        flat.extend(token.children or [])
    return flat


def kinds(markdown: str) -> list[str]:
    return [t.type for t in tokens(markdown)]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_cell_is_one_cell_of_one_row(value: str) -> None:
    table = "\n".join(["| field | value |", "|---|---|", f"| reason | {md.cell(value)} |", "| by | alice |"])
    found = kinds(table)
    assert found.count("tr_open") == 3  # header + our two rows: nothing added
    assert found.count("td_open") == 4
    for forbidden in ("heading_open", "link_open", "image", "html_inline", "html_block", "s_open", "code_inline"):
        assert forbidden not in found, (forbidden, table)


@pytest.mark.parametrize("value", HOSTILE)
def test_text_renders_as_the_same_characters(value: str) -> None:
    """Escaping changes how text is written, not what it says: the rendered text is the input, flattened."""
    rendered = MarkdownIt("commonmark").renderInline(md.text(value))
    import html

    shown = html.unescape(rendered)
    flat = " ".join(value.replace("\x00", " ").replace("\x1b", " ").split())
    assert " ".join(shown.split()) == flat


def test_a_code_block_cannot_be_closed_from_inside() -> None:
    body = "+ image: web:1.0.1\n   ```\n# not a heading\n````\n[x](javascript:alert(1))\n"
    found = tokens(md.code_block(body, "diff"))
    fences = [t for t in found if t.type == "fence"]
    assert len(fences) == 1 and fences[0].content == body
    assert "heading_open" not in [t.type for t in found]


def test_code_spans_hold_backticks() -> None:
    found = tokens(md.code("a `b` ``c``"))
    spans = [t for t in found if t.type == "code_inline"]
    assert [s.content for s in spans] == ["a `b` ``c``"]


def test_only_http_links_are_links() -> None:
    for url in ("javascript:alert(1)", "data:text/html,<b>x</b>", "JAVASCRIPT:alert(1)", "//evil.example", "ftp://x"):
        assert "link_open" not in kinds(md.link(url, "run")), url
    found = tokens(md.link("https://prefect.example/runs/flow-run/1?a=(b)", "the run"))
    links = [t for t in found if t.type == "link_open"]
    assert [t.attrs["href"] for t in links] == ["https://prefect.example/runs/flow-run/1?a=%28b%29"]


def test_the_approval_form_shows_hostile_commits_and_diffs_as_text() -> None:
    plan = ApprovalPlan(
        pipeline="shop",
        environment="production",
        from_version="1.0.0",
        to_version="1.0.1` **APPROVED**",
        rc_tag="v1.0.1-rc1",
        commit="a" * 40,
        commits=[("b" * 40, HOSTILE[1]), ("c" * 40, "fix: `x` [docs](https://docs.example)")],
        evidence="verified in staging at 2026-12-06T10:00:00+00:00\n## APPROVED",
        file_diff="-  newTag: 1.0.0\n+  newTag: 1.0.1\n   ```\n## Approved by security\n",
    )
    found = tokens(plan.markdown())
    headings = [t for t in found if t.type == "heading_open"]
    assert len(headings) == 3  # the form's own: title, Commits, Change
    assert not [t for t in found if t.type in ("link_open", "image", "html_inline", "html_block")]
    assert [t.content for t in found if t.type == "fence"] == [plan.file_diff]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_table_of_rows_has_exactly_those_rows_and_cells(value: str) -> None:
    rows: list[dict[str, object]] = [
        {"check": value, "result": "FAILED", "p50 ms": None},
        {"check": "web", "result": value, "p50 ms": 1.5},
    ]
    found = kinds("\n".join(md.table(rows)))
    assert found.count("tr_open") == 3 and found.count("th_open") == 3 and found.count("td_open") == 6
    for forbidden in ("heading_open", "link_open", "image", "html_inline", "html_block", "s_open", "code_inline"):
        assert forbidden not in found, forbidden
    assert md.table([]) == []
