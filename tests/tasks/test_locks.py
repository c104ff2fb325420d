"""The environment lock (``tasks.locks.EnvironmentLock``, one Kubernetes Lease per environment) against the
session's real kube-apiserver.

Covered: acquiring a free lock (the Lease exists with this holder), re-entry by the same holder, exclusion of
a second holder (with its timeout), renewal moving the expiry past the original TTL, taking over from a dead
holder (its run ended, or it stopped renewing and the lease expired), holding through a suspension with no
process renewing (``hold_for``), and release (frees it, wakes a waiter, never frees another holder's lock).

The Lease is read back through ``CoordinationV1Api``, not through the code under test. No test syncs on a
fixed sleep: each waits on progress (a log line, the wall clock passing an expiry) under a generous deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tasks.kube import KubeClient, KubeError, VerificationError
from tasks.locks import EnvironmentLock, lease_name

pytestmark = pytest.mark.kube

NAME = lease_name("shop", "staging")
DEADLINE = 120.0  # seconds: generous, the machine may be small and busy
HELD_BY_A = "held by run run-a until that run ends"


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    duration: int | None
    acquired: datetime | None
    renewed: datetime
    resource_version: str

    @property
    def expires(self) -> datetime:
        return self.renewed + timedelta(seconds=self.duration or 0)


def read_lease(api: k8s.ApiClient, namespace: str) -> LeaseView | None:
    try:
        lease = k8s.CoordinationV1Api(api).read_namespaced_lease(NAME, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    spec = lease.spec
    assert spec is not None and spec.renew_time is not None, lease
    assert lease.metadata is not None and lease.metadata.resource_version, lease
    return LeaseView(
        holder=spec.holder_identity,
        duration=spec.lease_duration_seconds,
        acquired=spec.acquire_time,
        renewed=spec.renew_time,
        resource_version=lease.metadata.resource_version,
    )


def held(api: k8s.ApiClient, namespace: str) -> LeaseView:
    lease = read_lease(api, namespace)
    assert lease is not None, f"no Lease {namespace}/{NAME}"
    return lease


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout:.0f}s waiting for {what}"
        time.sleep(0.1)


def past(moment: datetime) -> Callable[[], bool]:
    return lambda: datetime.now(UTC) > moment


class Background:
    """Run a blocking call in a thread and collect its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self, timeout: float = DEADLINE) -> BaseException | None:
        assert self.done.wait(timeout), "the call did not return"
        return self.error


@pytest.fixture
def kube(kube_client: k8s.ApiClient) -> KubeClient:
    return KubeClient(kube_client)


@pytest.fixture
def make_lock(kube: KubeClient, namespace: str) -> Callable[..., EnvironmentLock]:
    def make(
        holder: str,
        *,
        ttl: int = 600,
        holder_alive: Callable[[str], bool] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> EnvironmentLock:
        return EnvironmentLock(
            kube=kube,
            namespace=namespace,
            name=NAME,
            holder=holder,
            ttl_seconds=ttl,
            holder_alive=holder_alive or (lambda _holder: True),
            log=log or (lambda _msg: None),
        )

    return make


def test_acquire_takes_a_free_lock_is_reentrant_and_keeps_a_second_holder_out(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    logs: list[str] = []
    a = make_lock("run-a", ttl=60, log=logs.append)
    assert read_lease(kube_client, namespace) is None

    a.acquire(timeout=0)  # free: no time needed at all
    lease = held(kube_client, namespace)
    assert (lease.holder, lease.duration) == ("run-a", 60)
    assert logs == [f"lock {namespace}/{NAME} acquired"]

    # Re-entrant: the same object again, and a new one for the same holder (a suspended run resumed from
    # the top after approval finds its own lock).
    a.acquire(timeout=0)
    make_lock("run-a", ttl=60).acquire(timeout=0)
    reentered = held(kube_client, namespace)
    assert (reentered.holder, reentered.duration) == ("run-a", 60)

    b = make_lock("run-b")  # holder_alive says True: only a release or the lease's expiry frees it
    with pytest.raises(KubeError, match=rf"lock {namespace}/{NAME}: gave up after 0s: {HELD_BY_A}"):
        b.acquire(timeout=0)

    # With some time it waits that long, then gives up. Which error it raises depends on where the deadline
    # falls (KubeError "gave up" before a wait, the wait's own VerificationError "timed out" during one).
    started = time.monotonic()
    with pytest.raises((KubeError, VerificationError), match=HELD_BY_A):
        b.acquire(timeout=2)
    waited = time.monotonic() - started
    assert 1.9 <= waited < DEADLINE, waited
    assert held(kube_client, namespace) == reentered  # the second holder changed nothing


def test_renew_keeps_the_lock_past_its_original_ttl(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    ttl = 5
    a = make_lock("run-a", ttl=ttl)
    a.acquire(timeout=0)
    first = held(kube_client, namespace)
    b = make_lock("run-b")
    renewals = [first.renewed]
    deadline = time.monotonic() + DEADLINE
    # Renew (as the renewer thread does, more often) until a whole TTL past where the lease would have expired.
    while datetime.now(UTC) <= first.expires + timedelta(seconds=ttl):
        assert time.monotonic() < deadline, "the clock did not pass the original expiry"
        a.renew()
        lease = held(kube_client, namespace)
        assert (lease.holder, lease.duration) == ("run-a", ttl)
        assert lease.renewed >= renewals[-1]
        renewals.append(lease.renewed)
        with pytest.raises(KubeError, match=HELD_BY_A):
            b.acquire(timeout=0)
        time.sleep(0.5)  # pacing of the renewals, not a sync point
    last = held(kube_client, namespace)
    assert last.holder == "run-a"
    assert last.renewed > first.expires  # renewTime moved forward past the original expiry
    assert last.expires > first.expires + timedelta(seconds=ttl)
    assert last.acquired == first.acquired  # a renewal is not a new acquisition


def test_a_holder_whose_run_ended_is_taken_over_at_once(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    a = make_lock("run-a", ttl=600)  # ten minutes from expiring: only holder_alive can free it now
    a.acquire(timeout=0)
    asked: list[str] = []

    def alive(holder: str) -> bool:
        asked.append(holder)
        return holder != "run-a"

    logs: list[str] = []
    b = make_lock("run-b", holder_alive=alive, log=logs.append)
    b.acquire(timeout=0)  # no time to wait: the takeover is immediate
    assert held(kube_client, namespace).holder == "run-b"
    assert asked == ["run-a"]
    assert logs == [f"lock {namespace}/{NAME} acquired (run run-a ended without releasing the lock)"]

    # The old holder, were it to come back, finds its lock lost, and its release leaves the new holder's alone.
    with pytest.raises(KubeError, match="was lost"):
        a.renew()
    a.release()
    assert held(kube_client, namespace).holder == "run-b"


def test_a_holder_that_stopped_renewing_is_taken_over_once_its_lease_expires(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    a = make_lock("run-a", ttl=3)
    a.acquire(timeout=0)  # and then never renews, as a killed process
    expiry = held(kube_client, namespace).expires
    logs: list[str] = []
    b = make_lock("run-b", log=logs.append)  # holder_alive says True: only the expiry frees it
    b.acquire(timeout=DEADLINE)
    assert datetime.now(UTC) >= expiry, "taken over before the lease expired"
    lease = held(kube_client, namespace)
    assert (lease.holder, lease.duration) == ("run-b", 600)
    assert f"lock {namespace}/{NAME} acquired (lease of run run-a expired at " in logs[-1]

    with pytest.raises(KubeError, match="was lost"):
        a.renew()


def test_two_waiters_for_an_expired_lock_do_not_both_win(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    make_lock("run-a", ttl=600).acquire(timeout=0)

    def dead_a(holder: str) -> bool:
        return holder != "run-a"

    start = threading.Barrier(2)

    def contend(holder: str) -> Callable[[], None]:
        lock = make_lock(holder, holder_alive=dead_a)

        def run() -> None:
            start.wait(DEADLINE)
            lock.acquire(timeout=3)

        return run

    b, c = Background(contend("run-b")), Background(contend("run-c"))
    errors = {"run-b": b.join(), "run-c": c.join()}
    winners = [holder for holder, error in errors.items() if error is None]
    assert len(winners) == 1, errors
    winner = winners[0]
    (loser_error,) = (error for error in errors.values() if error is not None)
    assert isinstance(loser_error, KubeError | VerificationError), repr(loser_error)
    assert f"held by run {winner} until that run ends" in str(loser_error)
    assert held(kube_client, namespace).holder == winner


def test_hold_for_keeps_the_lock_through_a_suspension_with_no_renewals(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    ttl = 3
    a = make_lock("run-a", ttl=ttl)
    a.acquire(timeout=0)
    a.hold_for(60)
    stretched = held(kube_client, namespace)
    assert stretched.holder == "run-a"
    assert stretched.duration is not None and 58 <= stretched.duration <= 61, stretched
    a.renew()  # a renewal while the hold lasts keeps the stretch
    stretched = held(kube_client, namespace)
    assert stretched.duration is not None and stretched.duration >= 58, stretched

    # Suspended: no process, no renewals. Let more than the TTL pass.
    wait_until(past(stretched.renewed + timedelta(seconds=ttl + 1)), "more than the TTL to pass")
    b = make_lock("run-b")  # holder_alive says True: a suspended run is alive
    with pytest.raises(KubeError, match=rf"gave up after 0s: {HELD_BY_A}"):
        b.acquire(timeout=0)
    assert held(kube_client, namespace) == stretched  # untouched

    # Approved and resumed: hold_for(0) brings the lease back to the TTL, which then lapses unrenewed.
    a.hold_for(0)
    back = held(kube_client, namespace)
    assert (back.holder, back.duration) == ("run-a", ttl)
    b.acquire(timeout=DEADLINE)
    assert datetime.now(UTC) >= back.expires, "taken over before the shortened lease expired"
    assert held(kube_client, namespace).holder == "run-b"


def test_release_after_a_hold_frees_the_lock_at_once(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    logs: list[str] = []
    a = make_lock("run-a", ttl=3, log=logs.append)
    a.acquire(timeout=0)
    a.hold_for(600)
    a.release()
    assert read_lease(kube_client, namespace) is None
    assert logs[-1] == f"lock {namespace}/{NAME} released"
    make_lock("run-b").acquire(timeout=0)
    assert held(kube_client, namespace).holder == "run-b"


def test_release_frees_the_lock_and_wakes_a_waiting_holder(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    a = make_lock("run-a", ttl=600)  # neither expiry nor holder_alive can free it within the test
    a.acquire(timeout=0)
    b_logs: list[str] = []
    b = make_lock("run-b", log=b_logs.append)
    waiter = Background(lambda: b.acquire(timeout=DEADLINE))
    wait_until(
        lambda: f"another promotion of this environment is in progress; waiting: {HELD_BY_A}" in b_logs,
        "the second holder to wait",
    )
    assert not waiter.done.is_set()
    a.release()
    assert waiter.join() is None
    assert held(kube_client, namespace).holder == "run-b"
    assert b_logs[-1] == f"lock {namespace}/{NAME} acquired"


def test_release_never_frees_another_holders_lock(
    make_lock: Callable[..., EnvironmentLock], kube_client: k8s.ApiClient, namespace: str
) -> None:
    a = make_lock("run-a")
    a.release()  # nothing to release: no error
    assert read_lease(kube_client, namespace) is None

    make_lock("run-b").acquire(timeout=0)
    before = held(kube_client, namespace)
    a.release()  # run-a never held it
    assert held(kube_client, namespace) == before  # same holder, same resourceVersion: not even touched
    with pytest.raises(KubeError, match="gave up after 0s: held by run run-b"):
        a.acquire(timeout=0)
