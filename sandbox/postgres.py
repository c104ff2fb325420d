"""A throwaway PostgreSQL server on loopback, for a Prefect server that many workers and pipelines share
(the bench and the fan-out tests). PostgreSQL refuses to run as root, so as root it runs as ``nobody``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "install PostgreSQL's server programs (Debian: apt-get install postgresql), or put initdb and pg_ctl on PATH"
)


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's server programs are not installed."""


@dataclass(frozen=True)
class LocalPostgres:
    url: str  # the SQLAlchemy/asyncpg URL Prefect's PREFECT_SERVER_DATABASE_CONNECTION_URL takes
    data: Path  # the data directory (postmaster.pid names the server's pid)


def postgres_bindir() -> Path | None:
    """Where PostgreSQL's server programs are: on PATH, or where Debian installs them (not on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    return max(versions, key=lambda p: int(p.parts[-3])).parent if versions else None


@contextlib.contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """Start a PostgreSQL server in a temporary directory; stop it and remove the directory afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        raise PostgresUnavailableError(f"PostgreSQL is not installed: {INSTALL_HINT}")
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="promote-pg-"))
    if as_user:
        shutil.chown(base, "nobody")
    data = base / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
            )

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust")
        # synchronous_commit=off: like the SQLite server's WAL with synchronous=NORMAL, no flush per commit.
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c synchronous_commit=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        try:
            yield LocalPostgres(f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres", data)
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
