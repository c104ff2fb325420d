"""A real Gitea on loopback, for the pull-request tests and ``hack/sandbox --write pull-request``.

The binary comes from ``hack/build-cluster-binaries gitea`` (built once per machine, into the versioned cache,
under a file lock). The server runs from a private work directory: sqlite, no SSH, no mail, no registration,
webhooks allowed to loopback only. An admin user and an access token with every scope are made through
Gitea's own CLI, so nothing is created over an unauthenticated API.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from sandbox.apiserver import BUILD_SCRIPT, REPO_ROOT, die_with_parent, free_ports, run_forwarding_stderr
from sandbox.patience import DEFAULT_OVERALL_SECONDS, Patience
from sandbox.patience import tail as log_tail

ADMIN = "promote-admin"
_STOP_GRACE_SECONDS = 10.0


class GiteaUnavailableError(RuntimeError):
    """Gitea could not be built or started; the message says what to install or where the log is."""


def gitea_directory() -> Path:
    """Where the build script put Gitea (the binary, its templates and options), building it if missing."""
    returncode, stdout, stderr_tail = run_forwarding_stderr(["bash", str(BUILD_SCRIPT), "gitea"], REPO_ROOT)
    lines = stdout.strip().splitlines()
    script = BUILD_SCRIPT.relative_to(REPO_ROOT)
    if returncode != 0 or len(lines) != 1:
        tail = "\n".join(stderr_tail) or "(no output)"
        raise GiteaUnavailableError(
            f"Gitea is not built and could not be built ({script} gitea exited {returncode}). It needs Go 1.26+ "
            "(`go` on PATH) with the Go module proxy and a C compiler (Debian: apt-get install gcc libc6-dev), "
            f"and caches it under ~/.cache/gitops-promote. Its last output:\n{tail}"
        )
    directory = Path(lines[0])
    if not os.access(directory / "gitea", os.X_OK):
        raise GiteaUnavailableError(f"{script} finished but {directory / 'gitea'} is missing or not executable")
    return directory


def _app_ini(work: Path, static: Path, port: int) -> str:
    return f"""APP_NAME = gitops-promote test forge
RUN_MODE = prod
RUN_USER = {os.environ.get("USER") or _user()}
WORK_PATH = {work}

[database]
DB_TYPE = sqlite3
PATH = {work}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = http://127.0.0.1:{port}/
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = {static}
APP_DATA_PATH = {work}/data

[repository]
ROOT = {work}/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(24)}
INTERNAL_TOKEN = {secrets.token_hex(40)}
PASSWORD_HASH_ALGO = pbkdf2_hi

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_ALLOW_CREATE_ORGANIZATION = true

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[mailer]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[log]
MODE = file
LEVEL = Info
ROOT_PATH = {work}/log
"""


def _token_line(output: str) -> str:
    """The access token in ``gitea admin user generate-access-token --raw``'s output (40 hex digits)."""
    found = re.search(r"^[0-9a-f]{40}$", output, re.MULTILINE)
    if found is None:
        raise GiteaUnavailableError("gitea admin user generate-access-token printed no token")
    return found.group(0)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


class Gitea:
    """Gitea serving on a free loopback port from ``workdir``, with an admin user and its token. Use as a
    context manager: it stops the server (SIGTERM, SIGKILL after a grace period) on exit."""

    provider = "gitea"  # what a pipeline's write.provider says (sandbox/world.py ForgeHost)
    username = ADMIN  # whose token it is: the user Git authenticates as

    def __init__(self, workdir: Path, *, progress: Any = None) -> None:
        self.workdir = Path(workdir)
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api/v1"
        self.token = ""
        self.password = secrets.token_hex(12)
        self._progress = progress or (lambda line: None)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "gitea.out"

    @property
    def config(self) -> Path:
        return self.workdir / "app.ini"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "GITEA_WORK_DIR": str(self.workdir), "HOME": str(self.workdir)}
        env["GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"] = "true"  # test machines and containers run as root
        for var in ("NO_PROXY", "no_proxy"):
            env[var] = ",".join(filter(None, [env.get(var, ""), "127.0.0.1", "localhost"]))
        return env

    def _cli(self, binary: Path, *args: str) -> str:
        done = subprocess.run(
            [str(binary), "--config", str(self.config), "--work-path", str(self.workdir), *args],
            capture_output=True,
            text=True,
            env=self._env(),
            cwd=self.workdir,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise GiteaUnavailableError(f"gitea {args[0]} {args[1]} failed: {(done.stderr or done.stdout)[-800:]}")
        return done.stdout

    def start(self) -> Self:
        directory = gitea_directory()
        binary = directory / "gitea"
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "log", "repositories"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.config.write_text(_app_ini(self.workdir, directory, self.port))
        self.config.chmod(0o600)
        self._progress(f"starting Gitea on {self.url}")
        began = time.monotonic()
        self._log_handle = self.log.open("ab")
        self._proc = subprocess.Popen(
            [str(binary), "web", "--config", str(self.config), "--work-path", str(self.workdir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        atexit.register(self.stop)
        try:
            self._wait_until_healthy()
            self._cli(
                binary,
                "admin",
                "user",
                "create",
                "--admin",
                "--username",
                ADMIN,
                "--password",
                self.password,
                "--email",
                f"{ADMIN}@localhost",
                "--must-change-password=false",
            )
            # As root, Gitea logs a warning to the same stdout, before or after the token (its logger writes
            # asynchronously): take the token's own line.
            self.token = _token_line(
                self._cli(
                    binary,
                    "admin",
                    "user",
                    "generate-access-token",
                    "--username",
                    ADMIN,
                    "--token-name",
                    "promote-tests",
                    "--scopes",
                    "all",
                    "--raw",
                )
            )
        except BaseException:
            self.stop()
            raise
        self._progress(f"Gitea is up in {time.monotonic() - began:.1f}s")
        return self

    def _wait_until_healthy(self) -> None:
        assert self._proc is not None
        proc = self._proc
        patience = Patience(lambda: [proc.pid], [self.log], overall_seconds=DEFAULT_OVERALL_SECONDS)
        while True:
            if proc.poll() is not None:
                raise GiteaUnavailableError(
                    f"Gitea exited with {proc.returncode} while starting; its log ({self.log}):\n{log_tail(self.log)}"
                )
            try:
                if httpx.get(f"{self.url}/api/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if (why := patience.check()) is not None:
                raise GiteaUnavailableError(
                    f"Gitea did not come up: {why}; its log ({self.log}):\n{log_tail(self.log)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        atexit.unregister(self.stop)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    # --- the admin's API, for tests and the sandbox -------------------------------------------------------------

    def api(self, method: str, path: str, json: Any = None, *, expect: tuple[int, ...] = (200, 201, 204)) -> Any:
        """One call as the admin (tests and the sandbox only); raises with Gitea's answer when unexpected."""
        response = httpx.request(
            method,
            f"{self.api_url}{path}",
            json=json,
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
        )
        if response.status_code not in expect:
            raise GiteaUnavailableError(f"Gitea {method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def create_repository(self, name: str, *, owner: str = ADMIN) -> str:
        """An empty repository of the admin's; its clone URL (http, token by the credential helper)."""
        self.api("POST", "/user/repos", {"name": name, "private": False, "auto_init": False, "default_branch": "main"})
        return f"{self.url}/{owner}/{name}.git"

    def repository_path(self, name: str, *, owner: str = ADMIN) -> Path:
        """Where Gitea keeps the repository on disk (a bare repository: the simulated controllers read it)."""
        return self.workdir / "repositories" / owner.lower() / f"{name.lower()}.git"

    def push_url(self, clone_url: str) -> str:
        """``clone_url`` with the admin's credentials, for a test's own ``git push`` (never the tool's)."""
        return clone_url.replace("http://", f"http://{ADMIN}:{self.token}@", 1)
