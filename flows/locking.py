"""The environment's lock as a flow holds it: a Kubernetes Lease held by this flow run, renewed while the run
lives, kept for a suspended run, taken over from a holder whose run has ended (tasks/locks.py is the Lease)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from uuid import UUID, uuid4

from prefect.exceptions import Pause
from prefect.runtime import flow_run

from pipeline.model import Environment
from tasks import prefectruns
from tasks.connections import Connections
from tasks.locks import EnvironmentLock, lease_name


def holder_can_finish(holder: str, now: datetime | None = None) -> bool:
    """Whether the flow run holding a lock can still finish its promotion (paused, or suspended within its
    window for an approval or a merge, counts). Reads only: a holder suspended past its window is left for the
    sweeps to end (Prefect would refuse its late resume)."""
    try:
        run_id = UUID(holder)
    except ValueError:
        return True  # not a flow run id: only the lease's expiry frees it
    return prefectruns.can_still_finish(prefectruns.read_run(run_id), now)


def lock_ttl_seconds() -> int:
    """How long a lock outlives a dead holder process (renewed every third of it while alive)."""
    return max(3, int(os.environ.get("PROMOTE_LOCK_TTL_SECONDS", "60")))


@contextlib.contextmanager
def environment_lock(conn: Connections, env: Environment) -> Iterator[EnvironmentLock]:
    """Hold the environment's Lease for the block; the holder is this flow run, so a suspended run that
    re-runs from the top after approval finds its own lock and carries on. A killed process stops renewing
    and the lock lapses after the TTL."""
    holder = str(flow_run.id or uuid4())
    lock = EnvironmentLock(
        kube=conn.kube(env),
        namespace=env.verify.cluster.lock_namespace,
        name=lease_name(conn.pipeline.name, env.name),
        holder=holder,
        ttl_seconds=lock_ttl_seconds(),
        holder_alive=holder_can_finish,
        log=conn.log,
    )
    lock.acquire(timeout=env.gate.timeout_seconds + env.verify.timeout_seconds + 3600)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(lock.ttl_seconds / 3):
            try:
                lock.renew()
            except Exception as exc:  # a renewal that fails is retried next round; the error is logged
                conn.log(f"lock renewal failed: {exc}")

    renewer = threading.Thread(target=keep_renewing, name=f"lock-{lock.name}", daemon=True)
    renewer.start()
    try:
        yield lock
    except Pause:
        # Suspended for approval: the run is not over, so the environment stays locked for it
        # (hold_for() stretched the lease over the approval window before suspending).
        stop.set()
        raise
    except BaseException:
        stop.set()
        lock.release()
        raise
    stop.set()
    lock.release()
