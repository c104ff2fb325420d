"""The board as a picture: one box per environment in promotion order, each with its version, whether it was
verified there, since when, and how far it lags the environment it is promoted from; an SVG document
(``promote status --svg FILE``) that any browser shows.

Everything drawn comes from the board's rows (tasks/board.py: Git and the evidence notes) and from the plan
(tasks/plan.py: what the flows would promote next), so the picture cannot say more than the table does. Texts
come from files and people: each is cut to fit its box and escaped for XML."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from pipeline.model import Pipeline
from tasks.board import BoardRow
from tasks.plan import EnvironmentPlan
from tasks.terminal import printable

BOX_WIDTH, BOX_HEIGHT, GAP, MARGIN, TITLE_HEIGHT = 260, 170, 56, 16, 36
_ALT_UNSAFE = re.compile(r"[^\w .-]")
LINE_CHARS = 34  # a box's line shows at most this much (SVG text does not wrap)
COLOURS = {  # border, fill: verified and in step / lagging or not verified / unknown
    "ok": ("#2e7d32", "#e8f5e9"),
    "behind": ("#ef6c00", "#fff3e0"),
    "unknown": ("#616161", "#f5f5f5"),
}


@dataclass(frozen=True)
class Lag:
    """How far an environment lags the one it is promoted from (``upstream``; None for the entry and what comes
    before it): ``waiting`` is the version the flows would promote next (None: in step), ``said`` what the plan
    said instead when it could not decide (it is shown, never read as "in step"), ``entry`` for an environment
    before the entry: where versions enter instead."""

    upstream: str | None
    waiting: str | None = None
    said: str | None = None
    entry: str | None = None
    commits: int = 0  # the commits ``waiting`` adds, where the strategy counts them


def lags(pipeline: Pipeline, plans: Sequence[EnvironmentPlan]) -> dict[str, Lag]:
    """Each environment's lag as the plan (tasks/plan.py) sees it."""
    by_name = {plan.environment: plan for plan in plans}
    entry = pipeline.names.index(pipeline.entry.name)
    found: dict[str, Lag] = {}
    for index, env in enumerate(pipeline.environments):
        upstream = pipeline.upstream_of(env)
        plan = by_name.get(env.name)
        if index < entry:
            found[env.name] = Lag(upstream=None, entry=pipeline.entry.name)
        elif plan is None or plan.refused:
            found[env.name] = Lag(upstream.name if upstream else None, said=plan.note if plan else "not planned")
        else:
            waiting = plan.proposed if plan.proposed and plan.proposed != plan.current else None
            commits = plan.commits if waiting else 0
            found[env.name] = Lag(upstream.name if upstream else None, waiting=waiting, commits=commits)
    return found


def ago(when: str | None, now: datetime | None) -> str:
    """An evidence time (ISO 8601) as "3h ago" from ``now``; with no ``now`` (a picture kept for later, such as
    the board artifact's) as the UTC time itself. "never" when there is none, the text itself when unreadable."""
    if not when:
        return "never"
    try:
        then = datetime.fromisoformat(when)
    except ValueError:
        return when
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    if now is None:
        return then.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def lag_lines(lag: Lag, rows: Mapping[str, BoardRow], now: datetime | None) -> list[str]:
    """The box's last lines: where versions enter, in step with its upstream, or what waits and since when."""
    if lag.entry is not None:
        return ["left alone: versions enter", f"at {lag.entry}"]
    if lag.said is not None:
        return [lag.said]
    if lag.upstream is None:
        return ["entry: new versions start here", f"next: {lag.waiting}" if lag.waiting else "nothing new to start"]
    if lag.waiting is None:
        return [f"in step with {lag.upstream}"]
    up = rows.get(lag.upstream)
    since = f"verified there {ago(up.verified, now)}" if up is not None and up.verified else "not verified there"
    more = [f"{lag.commits} new commit{'s' if lag.commits != 1 else ''}"] if lag.commits else []
    return [f"behind {lag.upstream}: {lag.waiting} waits", *more, since]


def state(row: BoardRow, lag: Lag) -> str:
    if row.version is None or lag.said is not None:
        return "unknown"
    return "ok" if row.verified and lag.waiting is None else "behind"


def _cut(text: str) -> str:
    text = printable(text)
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "\u2026"


def _text(x: int, y: int, text: str, *, weight: str = "normal", size: int = 13, colour: str = "#212121") -> str:
    return (
        f'<text x="{x}" y="{y}" font-family="sans-serif" font-size="{size}" font-weight="{weight}" '
        f'fill="{colour}">{escape(_cut(text))}</text>'
    )


def render_svg(title: str, rows: Sequence[BoardRow], lags: Mapping[str, Lag], now: datetime | None) -> str:
    """The SVG document for one pipeline: ``rows`` in promotion order, left to right, an arrow from each
    environment to the next it feeds; ``lags`` per environment (a missing one: drawn as the entry); times as
    "3h ago" from ``now``, or as UTC times without it."""
    by_name = {row.environment: row for row in rows}
    width = 2 * MARGIN + len(rows) * BOX_WIDTH + max(0, len(rows) - 1) * GAP
    height = 2 * MARGIN + TITLE_HEIGHT + BOX_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label={quoteattr(_cut(title))}>',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#424242"/></marker></defs>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        _text(MARGIN, MARGIN + 18, title, weight="bold", size=16),
    ]
    top = MARGIN + TITLE_HEIGHT
    for index, row in enumerate(rows):
        lag = lags.get(row.environment, Lag(upstream=None))
        border, fill = COLOURS[state(row, lag)]
        left = MARGIN + index * (BOX_WIDTH + GAP)
        parts.append(f'<g class="environment" data-environment={quoteattr(_cut(row.environment))}>')
        parts.append(
            f'<rect x="{left}" y="{top}" width="{BOX_WIDTH}" height="{BOX_HEIGHT}" rx="8" '
            f'fill="{fill}" stroke="{border}" stroke-width="2"/>'
        )
        lines = [
            (row.environment, "bold", 15, "#212121"),
            (row.version or "version unknown", "normal", 14, "#212121"),
            (f"since {ago(row.since, now)}", "normal", 12, "#424242"),
            ("verified " + ago(row.verified, now) if row.verified else "not verified", "normal", 12, "#424242"),
        ]
        lines += [(line, "normal", 12, border) for line in lag_lines(lag, by_name, now)]
        if row.note:
            lines.append((row.note, "normal", 11, "#616161"))
        for number, (text, weight, size, colour) in enumerate(lines):
            parts.append(_text(left + 12, top + 24 + number * 19, text, weight=weight, size=size, colour=colour))
        parts.append("</g>")
        if index + 1 < len(rows):
            y = top + BOX_HEIGHT // 2
            parts.append(
                f'<line x1="{left + BOX_WIDTH}" y1="{y}" x2="{left + BOX_WIDTH + GAP - 2}" y2="{y}" '
                'stroke="#424242" stroke-width="2" marker-end="url(#arrow)"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown_image(svg: str, alt: str) -> str:
    """The picture as a markdown image the Prefect UI shows (an artifact's description): a data URI, so it needs
    no file, and a browser shows an SVG image without running anything in it or fetching anything for it."""
    data = base64.b64encode(svg.encode()).decode()
    # Inside ![...] a bracket or parenthesis could end the text early and start a link: keep none of them.
    return f"![{_ALT_UNSAFE.sub('', alt)[:100]}](data:image/svg+xml;base64,{data})"
