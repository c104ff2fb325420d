"""One promotion per environment at a time: a Kubernetes ``Lease`` per environment, held by the flow run id.

Why not a Prefect concurrency slot: a slot is held by a live process, and a run suspended for approval has
no process left (a deployment's ``concurrency_limit`` does not even hold through a pause). The Lease lives
in the environment's cluster, survives suspension, and is sized to the approval timeout plus
verification. It is released at every ending by the run itself; if the run died without releasing it
(crash, kill -9), the next promotion sees that the holder run is in a terminal state, or that the lease
expired, and takes it over.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rules.readiness import Judgement, parse_time
from tasks.kube import (
    KubeClient,
    KubeError,
    ObjectNotFoundError,
    ObjectRef,
    Resource,
    TransientKubeError,
    describe_api_error,
)

LEASE = Resource("coordination.k8s.io", "v1", "leases", "Lease")


def _micro(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_name(pipeline: str, environment: str) -> str:
    return f"promote-{pipeline}-{environment}"[:253]


@dataclass
class EnvironmentLock:
    """Acquire with :meth:`acquire`, give back with :meth:`release`; re-entrant for the same holder (a
    suspended run re-runs from the top after approval and must find its own lock)."""

    kube: KubeClient
    namespace: str
    name: str
    holder: str
    ttl_seconds: int = 60
    holder_alive: Callable[[str], bool] = lambda _holder: True
    log: Callable[[str], None] = lambda _msg: None
    # While the process lives it renews the lease every ttl/3; before a suspension (no process left)
    # hold_for() stretches it over the whole approval window.
    _hold_until: float | None = None

    def _duration(self) -> int:
        if self._hold_until is None:
            return self.ttl_seconds
        return max(self.ttl_seconds, int(self._hold_until - time.time()) + 1)

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(LEASE, self.namespace, self.name)

    def _body(self, now: datetime, resource_version: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": self._duration(),
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
            },
        }

    def _judge_free(self, lease: dict[str, Any]) -> Judgement:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self.holder:
            return Judgement.ready("free" if not holder else "held by this run")
        renewed = parse_time(spec.get("renewTime")) or datetime.now(UTC)
        expires = renewed + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
        if expires <= datetime.now(UTC):
            return Judgement.ready(f"lease of run {holder} expired at {expires.isoformat()}")
        if not self.holder_alive(holder):
            return Judgement.ready(f"run {holder} ended without releasing the lock")
        # No timestamps in the message: the wait logs it again only when it changes.
        return Judgement.waiting(f"held by run {holder} until that run ends", recheck_in=5)

    def acquire(self, timeout: float) -> None:
        custom = self.kube.custom
        deadline = time.monotonic() + timeout
        while True:
            now = datetime.now(UTC)
            try:
                custom.create_namespaced_custom_object(
                    LEASE.group, LEASE.version, self.namespace, LEASE.plural, self._body(now)
                )
                self.log(f"lock {self.namespace}/{self.name} acquired")
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise describe_api_error(exc, "create", self.ref) from None
            try:
                lease = self.kube.get(self.ref)
            except ObjectNotFoundError:
                continue  # released between our create and our get
            verdict = self._judge_free(lease)
            if verdict.state != "ready":
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KubeError(
                        f"lock {self.namespace}/{self.name}: gave up after {timeout:.0f}s: {verdict.message}"
                    )
                self.log(f"another promotion of this environment is in progress; waiting: {verdict.message}")
                with contextlib.suppress(ObjectNotFoundError):  # released between our create and our get: again
                    self.kube.wait_for(
                        self.ref, self._judge_free, timeout=left, what=f"lock {self.name}", deleted_is_ready=True
                    )
                continue
            version = (lease.get("metadata") or {}).get("resourceVersion")
            try:
                # resourceVersion makes the takeover conditional: two waiters cannot both win.
                custom.replace_namespaced_custom_object(
                    LEASE.group, LEASE.version, self.namespace, LEASE.plural, self.name, self._body(now, version)
                )
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise describe_api_error(exc, "update", self.ref) from None
            self.log(f"lock {self.namespace}/{self.name} acquired ({verdict.message})")
            return

    def renew(self) -> None:
        """Push the expiry forward; raises if another run took the lease (it had expired)."""
        custom = self.kube.custom
        for _ in range(5):
            lease = self.kube.get(self.ref)
            if (lease.get("spec") or {}).get("holderIdentity") != self.holder:
                raise KubeError(f"lock {self.namespace}/{self.name} was lost: it expired and another run took it")
            spec = dict(lease["spec"])
            spec["renewTime"] = _micro(datetime.now(UTC))
            spec["leaseDurationSeconds"] = self._duration()
            lease["spec"] = spec
            try:
                custom.replace_namespaced_custom_object(
                    LEASE.group, LEASE.version, self.namespace, LEASE.plural, self.name, lease
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise describe_api_error(exc, "update", self.ref) from None
        raise KubeError(f"lock {self.namespace}/{self.name}: could not renew (kept conflicting)")

    def hold_for(self, seconds: float) -> None:
        """Keep the lock for ``seconds`` even with no process renewing it (a suspended approval)."""
        self._hold_until = time.time() + seconds
        self.renew()

    def release(self) -> None:
        """Delete the lease if this run still holds it (never someone else's)."""
        custom = self.kube.custom
        try:
            lease = self.kube.get(self.ref)
        except TransientKubeError:
            raise
        except KubeError:
            return
        if (lease.get("spec") or {}).get("holderIdentity") != self.holder:
            return
        version = (lease.get("metadata") or {}).get("resourceVersion")
        try:
            custom.delete_namespaced_custom_object(
                LEASE.group,
                LEASE.version,
                self.namespace,
                LEASE.plural,
                self.name,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=version)),
            )
            self.log(f"lock {self.namespace}/{self.name} released")
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise describe_api_error(exc, "delete", self.ref) from None
