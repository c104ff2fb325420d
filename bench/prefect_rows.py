"""What a nightly leaves in Prefect's database, counted per table: the bookkeeping each pipeline costs.

Every flow run, task run, state change, artifact, event and log line is a write the client sends and the
server and its database store; counting them explains the CPU figures beside them (a cut shows up here as a
smaller count before it shows up as fewer CPU-seconds). The counts come straight from the server's database
(PostgreSQL through asyncpg, or the SQLite file), read only after the server's batched writers (events,
task-run states, logs) have stopped adding rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Prefect's own table names (prefect/server/database/orm_models.py): snake case of the model's class name;
# the events table is named explicitly there. The query's rows come in TABLES' order.
TABLES = ("flow runs", "task runs", "flow run states", "task run states", "artifacts", "events", "log lines")
QUERY = (
    "SELECT (SELECT count(*) FROM flow_run), (SELECT count(*) FROM task_run), (SELECT count(*) FROM flow_run_state),"
    " (SELECT count(*) FROM task_run_state), (SELECT count(*) FROM artifact), (SELECT count(*) FROM events),"
    " (SELECT count(*) FROM log)"
)


# What each row is, to see which kind to cut: the flow's name, the task's, the artifact's type and key, the
# event's name, the log line's logger and message (ids, numbers and names with numbers folded, so the same
# line of every pipeline counts as one kind).
KINDS = {
    "flow runs": "SELECT f.name FROM flow_run r JOIN flow f ON r.flow_id = f.id",
    "task runs": "SELECT name FROM task_run",
    "artifacts": "SELECT coalesce(type, '(no type)') || ' ' || coalesce(key, '(no key)') FROM artifact",
    "events": "SELECT event FROM events",
    "log lines": "SELECT name || ': ' || substr(message, 1, 80) FROM log",
}
_FOLD = (
    (re.compile(r"^([a-z-]+)-[0-9a-f]{1,4}$"), r"\1"),  # a task run's name: the task's, then "-" and a counter
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\b[0-9a-f]{7,40}\b"), "<sha>"),
    (re.compile(r"'[^']*'"), "'...'"),
    (re.compile(r"\d+(\.\d+)*"), "#"),
)


def fold(text: str) -> str:
    for pattern, into in _FOLD:
        text = pattern.sub(into, text)
    return text


@dataclass(frozen=True)
class Kinds:
    counts: Mapping[str, Counter[str]]

    def __sub__(self, other: Kinds) -> Kinds:
        return Kinds({table: self.counts[table] - other.counts.get(table, Counter()) for table in self.counts})

    def table(self, pipelines: int, top: int = 12) -> str:
        lines = []
        for name, counter in self.counts.items():
            lines.append(f"    {name} per pipeline, by kind:")
            lines += [f"      {n / pipelines:7.2f}  {kind[:110]}" for kind, n in counter.most_common(top)]
            if len(counter) > top:
                rest = sum(counter.values()) - sum(n for _, n in counter.most_common(top))
                lines.append(f"      {rest / pipelines:7.2f}  ({len(counter) - top} other kinds)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Rows:
    counts: Mapping[str, int]

    def __sub__(self, other: Rows) -> Rows:
        return Rows({name: self.counts[name] - other.counts.get(name, 0) for name in self.counts})

    def per(self, pipelines: int, *, nonzero: bool = False) -> str:
        shown = [name for name in TABLES if self.counts[name] or not nonzero]
        return ", ".join(f"{self.counts[name] / pipelines:g} {name}" for name in shown) or "none"


def _rows(counts: tuple[int, ...] | list[int]) -> Rows:
    return Rows(dict(zip(TABLES, (int(n) for n in counts), strict=True)))


@contextlib.asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[Any]:
    import asyncpg  # type: ignore[import-untyped]  # Prefect's own PostgreSQL driver

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=30)
    try:
        yield conn
    finally:
        await conn.close()


def _sqlite(database: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30))


async def _postgres_count(url: str) -> Rows:
    async with _postgres(url) as conn:
        return _rows(list(await conn.fetchrow(QUERY, timeout=60)))


def count(database: str | Path) -> Rows:
    """The rows now: ``database`` is a PostgreSQL URL (SQLAlchemy's asyncpg form) or a SQLite file."""
    if isinstance(database, str):
        return asyncio.run(_postgres_count(database))
    with _sqlite(database) as conn:
        return _rows(conn.execute(QUERY).fetchone())


async def _postgres_kinds(url: str) -> Kinds:
    async with _postgres(url) as conn:
        return Kinds(
            {name: Counter(fold(r[0] or "") for r in await conn.fetch(q, timeout=120)) for name, q in KINDS.items()}
        )


def kinds(database: str | Path) -> Kinds:
    """Every row of the tables in KINDS, by kind (``database`` as for ``count``)."""
    if isinstance(database, str):
        return asyncio.run(_postgres_kinds(database))
    with _sqlite(database) as conn:
        return Kinds({name: Counter(fold(r[0] or "") for r in conn.execute(q)) for name, q in KINDS.items()})


def settled(database: str | Path, quiet_seconds: float = 2.0, limit_seconds: float = 120.0) -> Rows:
    """The rows once no table has grown for ``quiet_seconds`` (the server writes events, task-run states
    and logs in batches after the client is done), or after ``limit_seconds`` at the most."""
    deadline = time.monotonic() + limit_seconds
    last = count(database)
    while time.monotonic() < deadline:
        time.sleep(quiet_seconds)
        now = count(database)
        if now == last:
            return now
        last = now
    return last
