"""What each kind of Prefect bookkeeping costs, side by side in one run: the price list behind a pipeline's bill.

A parent flow run does N items of one kind (a nested flow run, a task run, an artifact, a log line, an event, and
the variants the flows could use instead); the same parent with no items is the baseline. The price of an item is
(CPU with N items - CPU of the baseline) / N, counted over the client (this process), the Prefect server and
PostgreSQL, after the server's batched writers are done (bench/prefect_rows.py), minus what the server and
database use idle over the same wait. Rounds interleave the kinds so a noisy machine slows all alike; the table
gives the median per kind, and the rows each item leaves in the database.

Multiply by the counts `hack/bench --breakdown` prints per pipeline to see where a pipeline's CPU goes.

Run: .venv/bin/python bench/prefect_items.py [--items 40] [--rounds 3]   (PostgreSQL's server programs needed)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(tempfile.mkdtemp(prefix="promote-bench-items-"))

from sandbox.postgres import PostgresUnavailableError, local_postgres  # noqa: E402
from sandbox.prefect_server import PrefectServer, prefect_env  # noqa: E402

SERVER = PrefectServer(home=ROOT / "prefect")
os.environ.update(prefect_env(SERVER.home, SERVER.api_url))
os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"  # log lines reach the server, as a user's runs send them
os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.events import emit_event  # noqa: E402

from bench import prefect_rows  # noqa: E402
from bench.cpu import postmaster_pid, tree_cpu  # noqa: E402
from flows.heartbeat import runs_without_the_wait  # noqa: E402
from tasks.steps import _RETRYING  # noqa: E402

IDLE_SECONDS = 3.0


@flow(name="bench-child")
def child() -> None:
    pass


@flow(name="bench-child-unvalidated", validate_parameters=False)
def child_unvalidated() -> None:
    pass


@flow(name="bench-child-persisted", persist_result=True)
def child_persisted() -> int:
    return 1


@task(name="bench-step", **_RETRYING)
def step() -> None:
    pass


@task(name="bench-step-plain")
def step_plain() -> None:
    pass


def _nested(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with runs_without_the_wait():
            return fn()

    return run


def _artifact() -> None:
    create_markdown_artifact(key="bench-item", markdown="## a verification\n\n- step: ok (0.1s)")


def _log() -> None:
    get_run_logger().info("a progress line of a promotion step, of the usual length: waiting (3s of 600s)")


def _event() -> None:
    emit_event(event="promote.bench", resource={"prefect.resource.id": "promote.pipeline.bench"})


# Each kind with how many of it a run does per --items: the cheap ones ten times as many, so their price stands
# out of the noise.
ITEMS: dict[str, tuple[Callable[[], object], int]] = {
    "nested flow run": (_nested(child), 1),
    "nested flow run, validate_parameters=False": (_nested(child_unvalidated), 1),
    "nested flow run, persist_result=True": (_nested(child_persisted), 1),
    "task run (the steps' options: retries, NO_CACHE)": (step, 1),
    "task run (Prefect's defaults)": (step_plain, 1),
    "artifact (markdown, keyed)": (_artifact, 4),
    "log line (run logger, INFO)": (_log, 10),
    "event (emit_event)": (_event, 10),
}


@flow(name="bench-parent")
def parent(kind: str, count: int) -> None:
    if kind:
        item, times = ITEMS[kind]
        for _ in range(count * times):
            item()


class Meter:
    def __init__(self, database_url: str, data: Path) -> None:
        self.database_url, self.data = database_url, data

    def cpu(self) -> tuple[float, float, float]:
        assert SERVER.pid is not None
        server = tree_cpu(SERVER.pid)
        client = tree_cpu(os.getpid(), exclude={SERVER.pid})
        return client, server, tree_cpu(postmaster_pid(self.data))

    def idle_rate(self) -> float:
        """CPU-s per second the server and database use with nothing to do (their own housekeeping)."""
        before = self.cpu()
        time.sleep(IDLE_SECONDS)
        after = self.cpu()
        return (after[1] - before[1] + after[2] - before[2]) / IDLE_SECONDS

    def measure(self, kind: str, count: int, idle: float) -> tuple[float, prefect_rows.Rows]:
        rows_before = prefect_rows.settled(self.database_url)
        before, started = self.cpu(), time.monotonic()
        with runs_without_the_wait():
            parent(kind, count)
        rows_after = prefect_rows.settled(self.database_url)  # the batched writes, charged to this run
        after, seconds = self.cpu(), time.monotonic() - started
        spent = sum(a - b for a, b in zip(after, before, strict=True)) - idle * seconds
        return spent, rows_after - rows_before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40, help="items per parent run (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median counts (default 3)")
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, ROOT, True)
            try:
                postgres = stack.enter_context(local_postgres())
            except PostgresUnavailableError as exc:
                raise SystemExit(f"{exc} (hack/bench installs it)") from None
            os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres.url
            stack.enter_context(SERVER)
            meter = Meter(postgres.url, postgres.data)
            parent("", 0)  # warm-up: imports, the client, the flow's registration
            for kind in ITEMS:
                parent(kind, 2)
            idle = meter.idle_rate()
            spent: dict[str, list[float]] = {kind: [] for kind in ["", *ITEMS]}
            rows: dict[str, prefect_rows.Rows] = {}
            for _ in range(args.rounds):
                for kind in spent:
                    cpu, left = meter.measure(kind, args.items, idle)
                    spent[kind].append(cpu)
                    rows[kind] = left
            base = statistics.median(spent[""])
            print(
                f"Prefect's price per item, CPU-ms over client + server + PostgreSQL ({args.items} items per run,"
                f" median of {args.rounds} interleaved rounds; the parent run alone: {base * 1000:.0f} ms;"
                f" idle server + database: {idle * 1000:.0f} ms/s, subtracted):"
            )
            for kind, (_, times) in ITEMS.items():
                done = args.items * times
                price = (statistics.median(spent[kind]) - base) / done
                extra = rows[kind] - rows[""]
                print(f"  {kind:<50} {price * 1000:7.1f} ms   rows per item: {extra.per(done, nonzero=True)}")
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
