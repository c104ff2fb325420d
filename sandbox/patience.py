"""How long to wait for a local server to come up: as long as it makes progress, within a generous limit.

A fixed start window fails on a busy machine (a Prefect server needs 5 s on a quiet 2-core machine and minutes
at a load average of 15) and wastes minutes when a server is stuck. Progress here is what a person watching
would look at: the process tree uses CPU or writes its log. A server that does neither for ``stall_seconds``
is stuck; one that keeps working is given up to ``overall_seconds``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

DEFAULT_OVERALL_SECONDS = 900.0
DEFAULT_STALL_SECONDS = 120.0

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of a live process, from /proc; None when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        # fields[1] is the parent pid; [11], [12] user and system time; [13], [14] those of reaped children.
        ticks = sum(int(value) for value in fields[11:15])
        return int(fields[1]), ticks / _CLOCK_TICKS
    except (IndexError, ValueError):
        return None


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds used so far by ``roots`` and every live descendant (a server that forks its workers)."""
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            parent, seconds = found
            used[int(entry.name)] = seconds
            children.setdefault(parent, []).append(int(entry.name))
    total, pending, seen = 0.0, list(roots), set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += used.get(pid, 0.0)
        pending.extend(children.get(pid, ()))
    return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


class Patience:
    """Decides when to stop waiting for a starting server. Call :meth:`check` in the wait loop."""

    def __init__(
        self,
        pids: Callable[[], Sequence[int]],
        logs: Sequence[Path],
        *,
        overall_seconds: float = DEFAULT_OVERALL_SECONDS,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pids, self._logs, self._clock = pids, tuple(logs), clock
        self.overall_seconds, self.stall_seconds = overall_seconds, stall_seconds
        self.started = self._last_progress = clock()
        self._marker: tuple[float, tuple[int, ...]] | None = None

    def elapsed(self) -> float:
        return self._clock() - self.started

    def _observe(self) -> None:
        now = self._clock()
        marker = (round(tree_cpu_seconds(self._pids()), 2), tuple(_size(log) for log in self._logs))
        if marker != self._marker:
            self._marker, self._last_progress = marker, now

    def check(self) -> str | None:
        """None while waiting is reasonable; otherwise why to give up (for the error message)."""
        self._observe()
        now = self._clock()
        if now - self.started >= self.overall_seconds:
            return f"not ready within {self.overall_seconds:.0f}s"
        if now - self._last_progress >= self.stall_seconds:
            return (
                f"not ready after {now - self.started:.0f}s, and no progress for {self.stall_seconds:.0f}s "
                "(no CPU used, nothing logged)"
            )
        return None

    def cpu_seconds(self) -> float:
        return self._marker[0] if self._marker else 0.0


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log, for an error message."""
    try:
        with path.open("rb") as handle:
            return b"".join(deque(handle, maxlen=lines)).decode(errors="replace").rstrip()
    except OSError:
        return f"({path} is missing)"
