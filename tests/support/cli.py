"""The `promote` command line as a user runs it: a subprocess with a cache of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def promote(
    *args: str, cwd: Path, timeout: float = 240, without: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``without``: environment variables the command does not get (e.g. PREFECT_API_URL: no server configured)."""
    env = {**os.environ, "PROMOTE_CACHE_DIR": str(cwd / "cache"), "PYTHONPATH": os.pathsep.join(sys.path)}
    for name in ("NOT_SET_TOKEN_FOR_TEST", *without):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "promote.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
