"""A real ``prefect server start`` on a free loopback port with a throwaway home, for the sandbox demo and the
end-to-end tests. Its output goes to a log file; the shutdown noise never reaches the terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


class PrefectServer:
    def __init__(
        self,
        home: Path | None = None,
        startup_timeout: float = DEFAULT_OVERALL_SECONDS,
        port: int | None = None,
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """``startup_timeout`` is the overall limit; the wait ends earlier when the server makes no progress
        (no CPU, no log) for ``stall_seconds``. ``progress`` hears about a slow start every 30 s."""
        self.home = home or Path(tempfile.mkdtemp(prefix="promote-prefect-"))
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.stall_seconds = stall_seconds
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        return prefect_env(self.home, self.api_url)

    def start(self) -> Self:
        env = self.env()
        # The UI must call this port's API, not the default 4200.
        env["PREFECT_SERVER_UI_API_URL"] = self.api_url
        env.pop("PREFECT_API_URL")
        self.home.mkdir(parents=True, exist_ok=True)
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
