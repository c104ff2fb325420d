"""Text from notes, variables and remote systems, made safe to print on a terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """Control characters (escape sequences, carriage returns, NUL) shown as ``\\xNN`` instead of acting on the
    terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
