"""A real ``prefect server start`` on a free loopback port with a throwaway home, for the sandbox demo and the
end-to-end tests. Its output goes to a log file; the shutdown noise never reaches the terminal.

A fresh home's first start migrates an empty database (about a hundred migrations) and registers every block
type: most of a cold start. The first server started with a given Prefect install leaves a snapshot of its
database, taken right after it became ready (nothing but the schema and block types in it), in
``~/.cache/gitops-promote/prefect-db-<key>/``; later servers start from a copy of it, with block registration
skipped (the snapshot holds it). The key is Prefect's version and every installed ``prefect*`` distribution,
so an upgrade or a new collection makes a new snapshot. ``PROMOTE_PREFECT_DB_TEMPLATE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from sandbox.patience import DEFAULT_OVERALL_SECONDS, DEFAULT_STALL_SECONDS, Patience, tail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """Environment for Prefect processes that must not touch ~/.prefect or phone home."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
    }
    for inherited in ("PREFECT_API_KEY", "PREFECT_PROFILE"):
        env.pop(inherited, None)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


_DB = "prefect.db"


def template_dir() -> Path | None:
    """Where the migrated-database snapshot for this Prefect install lives; None when turned off."""
    if os.environ.get("PROMOTE_PREFECT_DB_TEMPLATE", "1") == "0":
        return None
    if any(os.environ.get(f"PREFECT_{part}_DATABASE_CONNECTION_URL") for part in ("API", "SERVER")):
        return None  # the server uses another database: a copied prefect.db would sit unused
    installed = sorted(
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if str(dist.metadata["Name"] or "").lower().startswith("prefect")
    )
    version = importlib.metadata.version("prefect")
    key = hashlib.sha256("\n".join(installed).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gitops-promote"
    return base / f"prefect-db-{version}-{key}"


def seed_home(home: Path, template: Path | None) -> bool:
    """Copy the snapshot into a home that has no database yet; False if there is none to copy."""
    if template is None or not (template / _DB).is_file() or (home / _DB).exists():
        return False
    shutil.copyfile(template / _DB, home / _DB)
    return True


def save_template(home: Path, template: Path) -> None:
    """Snapshot ``home``'s database (the server may be running: SQLite's backup API copies a consistent state,
    WAL included) into ``template``, atomically: a half-written snapshot is never used."""
    template.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{template.name}-", dir=template.parent))
    try:
        source = sqlite3.connect(f"file:{home / _DB}?mode=ro", uri=True)
        target = sqlite3.connect(staging / _DB)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        staging.chmod(0o755)
        staging.rename(template)
    except OSError:
        # Another process saved it first (rename onto a non-empty directory fails), or the cache is not
        # writable: either way this start goes on; the snapshot is only an optimisation.
        shutil.rmtree(staging, ignore_errors=True)
    except sqlite3.Error:
        shutil.rmtree(staging, ignore_errors=True)


class PrefectServer:
    def __init__(
        self,
        home: Path | None = None,
        startup_timeout: float = DEFAULT_OVERALL_SECONDS,
        port: int | None = None,
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        progress: Callable[[str], None] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``startup_timeout`` is the overall limit; the wait ends earlier when the server makes no progress
        (no CPU, no log) for ``stall_seconds``. ``progress`` hears about a slow start every 30 s.
        ``extra_env`` goes to the server (and :meth:`env`) on top of this process's environment, e.g. a
        PostgreSQL connection URL for this server only."""
        self.extra_env = dict(extra_env or {})
        self.home = home or Path(tempfile.mkdtemp(prefix="promote-prefect-"))
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.stall_seconds = stall_seconds
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.ready_seconds: float | None = None
        self.from_template = False  # whether this start copied the migrated-database snapshot
        # stop() came, maybe before start() (on another thread) launched the process: one server per object.
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def pid(self) -> int | None:
        """The server process (the bench counts its CPU), while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        return {**prefect_env(self.home, self.api_url), **self.extra_env}

    def start(self) -> Self:
        env = self.env()
        # The UI must call this port's API, not the default 4200.
        env["PREFECT_SERVER_UI_API_URL"] = self.api_url
        env.pop("PREFECT_API_URL")
        self.home.mkdir(parents=True, exist_ok=True)
        other_db = any(key.endswith("_DATABASE_CONNECTION_URL") for key in self.extra_env)
        template = None if other_db else template_dir()
        fresh = not (self.home / _DB).exists()
        self.from_template = seed_home(self.home, template)
        if self.from_template:
            # The snapshot holds the block types already; Prefect's own memo of that is keyed by the database
            # path, which differs per home, so it would register them all again.
            env["PREFECT_API_BLOCKS_REGISTER_ON_START"] = "false"
        self._log = self.log_file.open("wb")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = self._proc
        if self._stopped.is_set():  # stopped while starting (from another thread): do not leave it running
            self.stop()
            raise RuntimeError("prefect server: stopped while starting")
        patience = Patience(
            lambda: [proc.pid], [self.log_file], overall_seconds=self.startup_timeout, stall_seconds=self.stall_seconds
        )
        next_report = 30.0
        while True:
            if proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"prefect server exited ({proc.returncode}) while starting; last lines of {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=5).status_code == 200:
                    self.ready_seconds = time.monotonic() - started
                    if template is not None and fresh and not self.from_template and not template.exists():
                        save_template(self.home, template)
                    return self
            except httpx.HTTPError:
                pass
            if (reason := patience.check()) is not None:
                self.stop()
                raise RuntimeError(f"prefect server {reason}; last lines of {self.log_file}:\n{tail(self.log_file)}")
            if self._progress is not None and patience.elapsed() >= next_report:
                self._progress(
                    f"prefect server still starting after {patience.elapsed():.0f}s "
                    f"({patience.cpu_seconds():.0f} CPU-s used so far)"
                )
                next_report += 30.0
            time.sleep(0.3)

    def stop(self) -> None:
        self._stopped.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
