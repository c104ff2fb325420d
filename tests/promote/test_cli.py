"""The ``promote`` command line as users run it (a real subprocess): runtime failures and hostile files are a
named one-line-per-problem message and a nonzero exit, never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import promote
from tests.support.gitserver import make_origin
from tests.support.slowhttp import Fixed, Trickle, serve_fixed, serve_trickle

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: shop
repository:
  url: {url}
{credentials}environments:
  - name: staging
    tracks:
{tracks}
"""
TAG_TRACKS = "      kind: tag\n      application_file: apps/staging.yaml"
IMAGE_TRACKS = """\
      kind: image-policy
      path: img
      policy: flux-system:shop
      registry: {url: 'http://127.0.0.1:1', repository: shop}
      choose: {semver: 1.x}"""


def _assert_named_failure(proc: subprocess.CompletedProcess[str], prefix: str, *expected: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    assert prefix in proc.stderr, proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, proc.stderr[-2000:]


# --- promote plan -------------------------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    bare, _seed = make_origin(
        tmp_path,
        {
            "apps/staging.yaml": "kind: Application\n",
            "img/deploy.yaml": 'image: shop:1.0.0 # {"$imagepolicy": "flux-system:shop"}\n',
        },
    )
    return bare


@pytest.mark.parametrize(
    ("url", "credentials", "tracks", "expected"),
    [
        ("{missing}", "", TAG_TRACKS, ["git fetch failed", "does not appear to be a git repository"]),
        (
            "https://127.0.0.1:1/gitops.git",
            "  credentials: {token_env: NOT_SET_TOKEN_FOR_TEST}\n",
            TAG_TRACKS,
            ["environment variable NOT_SET_TOKEN_FOR_TEST is not set"],
        ),
        ("{origin}", "", IMAGE_TRACKS, ["registry http://127.0.0.1:1 did not answer"]),
    ],
    ids=["git", "credentials", "registry"],
)
def test_plan_runtime_errors_are_messages_not_tracebacks(
    tmp_path: Path, origin: Path, url: str, credentials: str, tracks: str, expected: list[str]
) -> None:
    """Guards the CLI's handling of every PromoteError: a Git failure (GitError) and a registry that does not
    answer (a TransientError) ended `promote plan` with a traceback, as only RefusedError was caught."""
    url = url.format(missing=tmp_path / "no-such-repo.git", origin=origin)
    file = tmp_path / "shop.yaml"
    file.write_text(PIPELINE.format(url=url, credentials=credentials, tracks=tracks))
    _assert_named_failure(promote("plan", str(file), cwd=tmp_path), "promote plan: ", *expected)


# --- promote validate on files that are not plain UTF-8 YAML -------------------------------------------


def test_validate_latin1_file_names_the_line_and_the_encoding(tmp_path: Path) -> None:
    """Guards the decoding error: a latin-1 file raised UnicodeDecodeError (a traceback)."""
    file = tmp_path / "shop.yaml"
    file.write_bytes("name: shop\n# caf\u00e9\n".encode("latin-1"))
    proc = promote("validate", str(file), cwd=tmp_path)
    _assert_named_failure(proc, f"{file}: invalid pipeline file", "line 2: not UTF-8 text", "save the file as UTF-8")


def test_validate_deep_nesting_is_a_message(tmp_path: Path) -> None:
    """Guards the nesting bound: 50,000 nested lists raised RecursionError (a traceback)."""
    file = tmp_path / "shop.yaml"
    file.write_text("name: shop\nversioning: " + "[" * 50_000 + "]" * 50_000 + "\n")
    proc = promote("validate", str(file), cwd=tmp_path)
    _assert_named_failure(proc, f"{file}: invalid pipeline file", "nested more than 64 levels deep")
    assert len(proc.stderr) < 1000


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_validate_symlink_to_a_device_is_refused_before_reading(tmp_path: Path, device: str) -> None:
    """Guards the regular-file check: a symlink to /dev/zero was read without end."""
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    link = tmp_path / "shop.yaml"
    link.symlink_to(device)
    proc = promote("validate", str(link), cwd=tmp_path, timeout=120)
    _assert_named_failure(proc, f"{link}: invalid pipeline file", "not a regular file (a character device)")


def test_validate_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    """Guards the regular-file check for FIFOs: opening one for reading waited for a writer forever."""
    fifo = tmp_path / "shop.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    proc = promote("validate", str(fifo), cwd=tmp_path, timeout=120)
    assert time.monotonic() - started < 60
    _assert_named_failure(proc, f"{fifo}: invalid pipeline file", "not a regular file (a FIFO)")


def test_validate_directory_with_a_fifo_reports_it_and_goes_on(tmp_path: Path) -> None:
    """A FIFO among the files of a directory is refused like any bad file; the others are still checked."""
    os.mkfifo(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: shop\n")
    proc = promote("validate", str(tmp_path), cwd=tmp_path, timeout=120)
    _assert_named_failure(proc, "a.yaml: invalid pipeline file", "a FIFO", "b.yaml: invalid pipeline file")


# --- promote approve / trigger against what is not the Prefect API (issue 14 items 4, 7, 16) ----------

RUN_ID = "0b7c8d6e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"


def _against(url: str, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    os.environ["PREFECT_API_URL"], previous = url, os.environ.get("PREFECT_API_URL")
    try:
        return promote(*args, cwd=cwd, timeout=timeout)
    finally:
        if previous is None:
            del os.environ["PREFECT_API_URL"]
        else:
            os.environ["PREFECT_API_URL"] = previous


@pytest.mark.parametrize("run_id", ["../../deployments/abc", "abc", "0b7c8d6e/../x", "%2e%2e"])
def test_approve_refuses_an_id_that_is_not_a_uuid_before_any_request(tmp_path: Path, run_id: str) -> None:
    """Was: `promote approve ../../deployments/abc` posted to a path outside /api."""
    fixed = Fixed(status=200, content_type="application/json", body=b'{"status": "ACCEPT"}')
    with serve_fixed(fixed) as url:
        proc = _against(f"{url}/api", "approve", run_id, "--reason", "ok", cwd=tmp_path)
    _assert_named_failure(proc, "promote approve: ", "is not a flow run id")
    assert fixed.paths == []


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        ("text/html; charset=utf-8", b"<!doctype html><html><title>Prefect</title></html>", "an HTML page"),
        ("application/json", b'[{"id": "x"}]', "a JSON list"),
    ],
    ids=["html", "json-list"],
)
@pytest.mark.parametrize("command", ["approve", "reject", "trigger"])
def test_an_answer_that_is_not_the_api_names_the_fix(
    tmp_path: Path, command: str, content_type: str, body: bytes, named: str
) -> None:
    """Was a traceback (JSONDecodeError / AttributeError on a list) when PREFECT_API_URL lacks /api: the UI
    answers every path with its page."""
    fixed = Fixed(status=200, content_type=content_type, body=body)
    args = {
        "approve": ["approve", RUN_ID],
        "reject": ["reject", RUN_ID, "--reason", "no"],
        "trigger": ["trigger", "promote-rc/default"],
    }[command]
    with serve_fixed(fixed) as url:
        proc = _against(url, *args, cwd=tmp_path)
    _assert_named_failure(proc, f"promote {command}: ", named, "usually ends in /api")
    assert len(fixed.paths) == 1


@pytest.mark.parametrize("phase", ["headers", "body"])
@pytest.mark.parametrize("command", ["approve", "trigger"])
def test_timeout_holds_against_a_trickling_api(tmp_path: Path, command: str, phase: str) -> None:
    """Was: `promote trigger --timeout 10` ran 136 s against a server trickling a byte every 2 s."""
    trickle = Trickle(phase=phase, pause_s=0.3)  # type: ignore[arg-type]
    args = {
        "approve": ["approve", RUN_ID, "--timeout", "3"],
        "trigger": ["trigger", "promote-rc/default", "--wait", "--timeout", "3"],
    }[command]
    with serve_trickle(trickle) as url:
        started = time.monotonic()
        proc = _against(f"{url}/api", *args, cwd=tmp_path)
        elapsed = time.monotonic() - started
    _assert_named_failure(proc, f"promote {command}: ", "3")
    # The command's own start (imports) takes a few seconds on a busy machine; the 3 s limit must hold after it.
    assert elapsed < 30, f"--timeout 3 took {elapsed:.1f}s"


@pytest.mark.parametrize(("given", "expected"), [(None, "false"), ("true", "true")])
def test_the_command_line_turns_prefect_s_usage_data_off_unless_the_user_turned_it_on(
    tmp_path: Path, given: str | None, expected: str
) -> None:
    """A Prefect server the command starts for itself sends no usage data (on a machine without internet it logs
    an error for each try); a user's own setting wins."""
    script = (
        "import os, sys; from promote.cli import main; main(['validate', sys.argv[1]]); "
        "print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    if given is not None:
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = given
    example = Path(__file__).resolve().parents[2] / "deployments" / "examples" / "tags.yaml"
    done = subprocess.run(
        [sys.executable, "-c", script, str(example)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == expected
