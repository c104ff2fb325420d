"""Startup waits follow the server's progress (CPU used by its process tree, log growth), not a fixed window.

The clock is injected so "two minutes later" needs no two minutes; the processes and their CPU use are real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.patience import Patience, tree_cpu_seconds
from sandbox.prefect_server import PrefectServer

BUSY = "while True: pass"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        # The whole group: a grandchild (bash -> python) outlives its parent's kill and would spin on.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(procs: list[subprocess.Popen[bytes]], *argv: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(argv), start_new_session=True)
    procs.append(proc)
    return proc


def _until_cpu_grows(pid: int, above: float) -> None:
    deadline = time.monotonic() + 120  # a busy machine may give the child little CPU: wait for it, generously
    while tree_cpu_seconds([pid]) <= above + 0.02:
        assert time.monotonic() < deadline, "the busy child used no CPU in 120 s"
        time.sleep(0.05)


def test_a_process_that_neither_works_nor_logs_is_given_up_after_the_stall_limit(spawn, tmp_path: Path) -> None:
    idle = _start(spawn, "sleep", "600")
    clock = Clock()
    patience = Patience(lambda: [idle.pid], [tmp_path / "log"], stall_seconds=120, clock=clock)
    assert patience.check() is None
    clock.now += 119
    assert patience.check() is None
    clock.now += 2
    reason = patience.check()
    assert reason is not None and "no progress for 120s" in reason and "not ready after 121s" in reason


def test_a_process_using_cpu_keeps_the_wait_going(spawn) -> None:
    busy = _start(spawn, sys.executable, "-c", BUSY)
    clock = Clock()
    patience = Patience(lambda: [busy.pid], [], stall_seconds=120, overall_seconds=900, clock=clock)
    for _ in range(3):  # six stall windows in all, each with CPU used in between
        before = tree_cpu_seconds([busy.pid])
        assert patience.check() is None
        _until_cpu_grows(busy.pid, before)
        clock.now += 200
        assert patience.check() is None


def test_log_lines_count_as_progress(spawn, tmp_path: Path) -> None:
    idle = _start(spawn, "sleep", "600")
    log = tmp_path / "server.log"
    log.write_text("starting\n")
    clock = Clock()
    patience = Patience(lambda: [idle.pid], [log], stall_seconds=120, clock=clock)
    assert patience.check() is None
    clock.now += 110
    with log.open("a") as handle:
        handle.write("migrating the database\n")
    assert patience.check() is None
    clock.now += 110  # 220 s since the start, 110 since the last line
    assert patience.check() is None
    clock.now += 20
    assert patience.check() is not None


def test_the_overall_limit_holds_even_while_the_server_works(spawn) -> None:
    busy = _start(spawn, sys.executable, "-c", BUSY)
    clock = Clock()
    patience = Patience(lambda: [busy.pid], [], stall_seconds=120, overall_seconds=300, clock=clock)
    assert patience.check() is None
    _until_cpu_grows(busy.pid, 0.0)
    clock.now += 301
    assert patience.check() == "not ready within 300s"


def test_cpu_of_descendants_counts(spawn) -> None:
    """A server that forks its workers (uvicorn under ``prefect server start``) makes progress in a child."""
    parent = _start(spawn, "bash", "-c", f'{sys.executable} -c "{BUSY}"; true')
    deadline = time.monotonic() + 120
    while tree_cpu_seconds([parent.pid]) < 0.05:
        assert time.monotonic() < deadline, "the grandchild's CPU never showed up in its parent's tree"
        time.sleep(0.05)
    assert tree_cpu_seconds([2**22 + 7]) == 0.0  # a pid that does not exist uses nothing


def test_a_prefect_server_that_is_not_up_in_time_names_the_reason_and_its_log(tmp_path: Path) -> None:
    server = PrefectServer(home=tmp_path / "prefect", startup_timeout=0.5)
    with pytest.raises(RuntimeError, match=r"prefect server not ready within 0s; last lines of .*server\.log"):
        server.start()
    assert server._proc is not None and server._proc.poll() is not None, "the server was left running"
