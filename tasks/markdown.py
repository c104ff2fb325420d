"""Untrusted text into markdown (the approval form, audit records, the board, verification artifacts).

Commit subjects, approval reasons, ``requested_by``, hold reasons, note fields and controller messages are
written by people and systems we do not control. Everything that reaches markdown goes through one of these, so
it stays the text it was: no new lines (fake headings or table rows), no closed code fences, no links but
http(s) ones, no HTML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

# Inline syntax only (the text is one line inside a cell or after a list marker): emphasis, code, links and
# images (an escaped "[" opens neither), raw HTML and autolinks (an escaped "<" starts neither), entities,
# strikethrough, table pipes. Nothing else is escaped, so "1.0.0 -> 1.0.1" stays readable in the raw text.
# An underscore inside a word is never emphasis (CommonMark): only one at a word's edge is escaped, so
# snake_case names stay readable in the raw text.
_SPECIAL = re.compile(r"([\\`*\[<|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_BACKTICKS = re.compile(r"`+")


def _flat(value: object, limit: int) -> str:
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text(value: object, limit: int = 300) -> str:
    """Inline text: one line, at most ``limit`` characters, every character markdown could read as inline syntax
    escaped (so ``[x](javascript:...)`` is shown, not linked, and ``<b>`` is not HTML)."""
    return _SPECIAL.sub(r"\\\1", _flat(value, limit))


def cell(value: object, limit: int = 300) -> str:
    """A table cell: :func:`text` (``|`` is escaped there too, so a cell never splits into two)."""
    return text(value, limit)


def code(value: object, limit: int = 300) -> str:
    """An inline code span whose fence is longer than any run of backticks in the value."""
    flat = _flat(value, limit)
    longest = max((len(run) for run in _BACKTICKS.findall(flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def code_block(body: str, info: str = "") -> str:
    """A fenced block that nothing inside can close: its fence is longer than any backtick run in ``body``."""
    longest = max((len(run) for run in _BACKTICKS.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    info = re.sub(r"[^A-Za-z0-9_-]", "", info)[:20]
    return f"{fence}{info}\n{body.rstrip()}\n{fence}"


def link(url: str, label: str) -> str:
    """A link for http(s) URLs only; anything else (``javascript:``, ``data:``) is shown as escaped text."""
    parts = urlsplit(url.strip()) if len(url) <= 2000 else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return text(f"{label} ({url})")
    safe = quote(url.strip(), safe=":/?#@!$&'*+,;=%~-._")
    return f"[{text(label)}]({safe.replace('(', '%28').replace(')', '%29')})"


def commit_list(commits: Sequence[tuple[str, str]], most: int = 30) -> list[str]:
    """``- <sha> subject`` lines for the first ``most`` commits (subjects escaped), and how many more."""
    lines = [f"- {code(sha[:12])} {text(subject, 200)}" for sha, subject in commits[:most]] or ["- (none)"]
    if len(commits) > most:
        lines.append(f"- ... and {len(commits) - most} more")
    return lines


def table(rows: Sequence[Mapping[str, object]], limit: int = 300) -> list[str]:
    """Rows of the same keys as a markdown table (header from the first row); every cell made safe."""
    if not rows:
        return []
    keys = list(rows[0])
    lines = ["| " + " | ".join(cell(k) for k in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(cell("" if row.get(k) is None else row.get(k), limit) for k in keys) + " |")
    return lines
