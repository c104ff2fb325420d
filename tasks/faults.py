"""Fault points for the crash-and-rerun tests: where a power cut is simulated, inert in production."""

from __future__ import annotations

import os


def crash_point(name: str) -> None:
    """Fault injection for the crash-and-rerun tests: ``PROMOTE_CRASH_AT=<name>`` kills the process here,
    as a power cut would (no exception handlers, no cleanup). Inert unless that variable is set."""
    if os.environ.get("PROMOTE_CRASH_AT") == name:
        os._exit(86)
