"""Stopping the processes a test started in a session of their own (a Prefect worker and the flow runs it
started): asked to stop, then the whole group killed if it has not within the grace, and always reaped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_group(proc: subprocess.Popen[Any], grace_seconds: float = 20) -> None:
    """SIGTERM the process, wait up to ``grace_seconds``, then SIGKILL its process group; wait for it either way
    (a process never waited for stays a zombie, and Python warns about it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
