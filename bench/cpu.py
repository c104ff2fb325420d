"""CPU-seconds by who spent them (Linux /proc): a process and its descendants, one thread of this process.

The nightly bench splits a pipeline's cost into the client (the flow's process, minus the stand-in
controllers' thread, which the product does not have), the Prefect server and its database.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _fields(stat: str) -> list[str]:
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return stat[stat.rindex(")") + 2 :].split()


def _process(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU-s of the process and of its children it has reaped)."""
    try:
        fields = _fields(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError):
        return None  # gone meanwhile
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14-17.
    return int(fields[1]), sum(int(value) for value in fields[11:15]) / _TICK


def _table() -> tuple[dict[int, int], dict[int, float]]:
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _process(int(entry.name))
        if found is not None:
            parents[int(entry.name)], cpu[int(entry.name)] = found
    return parents, cpu


def _tree(root: int, parents: dict[int, int], exclude: Collection[int] = ()) -> set[int]:
    """``root`` and its live descendants, without the subtrees of ``exclude``."""
    members = set()
    for pid in parents:
        walk = pid
        while walk in parents and walk != root and walk > 1 and walk not in exclude:
            walk = parents[walk]
        if walk == root:
            members.add(pid)
    return members


def descendants(root: int) -> set[int]:
    """``root`` and every live process below it."""
    return _tree(root, _table()[0])


def tree_cpu(root: int, exclude: Collection[int] = ()) -> float:
    """CPU-s of ``root`` and every live descendant (plus what their exited children used), leaving out the
    subtrees rooted at ``exclude`` (servers this process started, charged on their own)."""
    parents, cpu = _table()
    return sum(cpu[pid] for pid in _tree(root, parents, exclude))


def children_named(root: int, names: Collection[str]) -> set[int]:
    """Live descendants of ``root`` whose command name is one of ``names`` (e.g. kube-apiserver, etcd)."""
    found = set()
    for pid in descendants(root):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            found.add(pid)
    return found


def thread_cpu(native_id: int) -> float:
    """CPU-s of one thread of this process (0 when it has ended)."""
    try:
        fields = _fields(Path(f"/proc/self/task/{native_id}/stat").read_text())
    except (OSError, ValueError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def postmaster_pid(data_dir: Path) -> int:
    """The PostgreSQL server's pid, from the first line of its data directory's postmaster.pid."""
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
