"""Kubernetes API access for verification: a client from kubeconfig or in-cluster, errors that say what to
do, retries for transient failures only, and a watch-based wait that re-lists on 410 Gone.

Objects are handled as plain dicts through the generic ``/apis/{group}/{version}`` paths, so Argo CD and
Flux objects need no generated models; the judgement of an object lives in :mod:`rules.readiness`.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from rules.readiness import Judgement
from tasks import informer
from tasks.kubeobjects import (
    APPLICATION,
    DEPLOYMENT,
    GIT_REPOSITORY,
    KUSTOMIZATION,
    POD,
    REPLICASET,
    KubeError,
    Log,
    ObjectNotFoundError,
    ObjectRef,
    Resource,
    TransientKubeError,
    VerificationError,
    WatchExpiredError,
    describe_api_error,
    is_transient,
    short_error,
    watch_events,
)

__all__ = [
    "APPLICATION",
    "DEPLOYMENT",
    "GIT_REPOSITORY",
    "KUSTOMIZATION",
    "POD",
    "REPLICASET",
    "KubeClient",
    "KubeError",
    "Log",
    "ObjectNotFoundError",
    "ObjectRef",
    "RequestStats",
    "Resource",
    "TransientKubeError",
    "VerificationError",
    "describe_api_error",
    "is_transient",
    "load_api_client",
]

# How long a wait gives a new shared watch to list its namespace before it watches its object alone.
SHARED_WATCH_START_SECONDS = 10.0

# Clients reused within a process for a few minutes: a new one costs ~20 ms of CPU (kubeconfig parse, TLS
# context, handshake) against 0.4 ms per request on a warm one, and a nightly opens one per environment per
# flow run. The kubeconfig's identity (path, mtime, size) is part of the key, so an edited file is read
# again; the short lifetime bounds how long credentials from an exec plugin are reused.
_CLIENT_TTL_SECONDS = 300.0
_clients: dict[tuple[object, ...], tuple[float, client.ApiClient]] = {}
_clients_lock = threading.Lock()


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client from a kubeconfig file (and context), or the in-cluster service account when neither is set
    and we run in a pod, else ``~/.kube/config``. Shared within the process for a few minutes."""
    path = Path(kubeconfig or "~/.kube/config").expanduser()
    try:
        stat = path.stat()
        key: tuple[object, ...] = (str(path), stat.st_mtime_ns, stat.st_size, context, kubeconfig is None)
    except OSError:
        key = (str(path), None, None, context, kubeconfig is None)
    now = time.monotonic()
    with _clients_lock:
        cached = _clients.get(key)
        if cached is not None and now - cached[0] < _CLIENT_TTL_SECONDS:
            return cached[1]
    api = _new_api_client(kubeconfig, context)
    with _clients_lock:
        # Drop clients whose time is up (and those of edited kubeconfigs, once theirs is): a long-lived worker
        # would otherwise keep one per kubeconfig version it ever saw. A caller still using one keeps it.
        for stale in [k for k, (at, _) in _clients.items() if now - at >= _CLIENT_TTL_SECONDS]:
            del _clients[stale]
        _clients[key] = (now, api)
    return api


# A shared client serves every pipeline of a nightly at once (up to 32), each holding a watch open; the
# library's default pool (5 per CPU) then discards connections with a warning and handshakes again.
_POOL_SIZE = 64


def _configuration() -> client.Configuration:
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = _POOL_SIZE  # type: ignore[attr-defined]  # stubs lag
    return configuration


def _new_api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    try:
        if kubeconfig is None and context is None:
            try:
                configuration = _configuration()
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration=configuration)
            except config.ConfigException:
                pass  # not in a pod: the default kubeconfig, into a fresh configuration
        path = str(Path(kubeconfig).expanduser()) if kubeconfig else None
        return config.new_client_from_config(  # type: ignore[call-arg]  # stubs lag the library
            config_file=path, context=context, client_configuration=_configuration()
        )
    except (config.ConfigException, OSError) as exc:
        where = kubeconfig or "~/.kube/config"
        ctx = f", context {context!r}" if context else ""
        raise KubeError(f"cannot load Kubernetes credentials from {where}{ctx}: {exc}") from None


@dataclass
class RequestStats:
    """Requests made by one wait, to show that waiting costs a constant number of calls."""

    gets: int = 0
    lists: int = 0
    watches: int = 0
    patches: int = 0
    events: int = 0
    relists: int = 0
    retries: int = 0
    shared_watches: int = 0  # waits served by a shared watch (tasks/informer.py): no watch of their own

    @property
    def requests(self) -> int:
        return self.gets + self.lists + self.watches + self.patches


@dataclass
class KubeClient:
    """Verification's view of one cluster: get, patch metadata, and wait by watching."""

    api: client.ApiClient
    log: Log = field(default=lambda _msg: None)
    max_attempts: int = 6
    watch_timeout_seconds: int = 300  # server-side; a watch is re-opened from the last resourceVersion
    heartbeat_seconds: float = 30.0
    # One watch per (kind, namespace) for all waits in the process; PROMOTE_SHARED_WATCHES=0 turns it off.
    shared_watches: bool = field(default_factory=lambda: os.environ.get("PROMOTE_SHARED_WATCHES", "1") != "0")

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def _retrying(self, verb: str, ref: ObjectRef, call: Callable[[], Any], stats: RequestStats | None) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except ApiException as exc:
                if not is_transient(exc):
                    raise describe_api_error(exc, verb, ref) from None
                last: BaseException = exc
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                last = exc
            if stats is not None:
                stats.retries += 1
            delay = min(10.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.5)  # noqa: S311
            self.log(f"{verb} {ref}: transient error ({short_error(last)}), retry {attempt} in {delay:.1f}s")
            time.sleep(delay)
        raise TransientKubeError(f"{verb} {ref}: still failing after {self.max_attempts} attempts: {short_error(last)}")

    def get(self, ref: ObjectRef, stats: RequestStats | None = None) -> dict[str, Any]:
        res = ref.resource
        if stats is not None:
            stats.gets += 1
        obj = self._retrying(
            "get",
            ref,
            lambda: self.custom.get_namespaced_custom_object(
                res.group, res.version, ref.namespace, res.plural, ref.name
            ),
            stats,
        )
        return dict(obj)

    def list_objects(
        self, resource: Resource, namespace: str, *, label_selector: str = "", stats: RequestStats | None = None
    ) -> list[dict[str, Any]]:
        """The objects of a kind in ``namespace`` matching ``label_selector``, as plain dicts (core kinds too)."""
        if stats is not None:
            stats.lists += 1
        ref = ObjectRef(resource, namespace, "*")

        def call() -> Any:
            if resource.group:
                return self.custom.list_namespaced_custom_object(
                    resource.group,
                    resource.version,
                    namespace,
                    resource.plural,
                    label_selector=label_selector or None,
                    _request_timeout=(10, 60),
                )
            if resource.plural != "pods":
                raise ValueError(f"listing core {resource.plural} is not supported")
            # The generated models would drop what they do not know; the raw JSON keeps the object as served.
            response: Any = client.CoreV1Api(self.api).list_namespaced_pod(  # type: ignore[call-arg]
                namespace, label_selector=label_selector or None, _preload_content=False, _request_timeout=(10, 60)
            )
            try:
                return json.loads(response.data)
            finally:
                response.release_conn()

        listed = self._retrying("list", ref, call, stats)
        items = listed.get("items") if isinstance(listed, dict) else None
        return [item for item in items or [] if isinstance(item, dict)]

    def patch(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (the client picks merge-patch for a dict body)."""
        res = ref.resource
        obj = self._retrying(
            "patch",
            ref,
            lambda: self.custom.patch_namespaced_custom_object(
                res.group, res.version, ref.namespace, res.plural, ref.name, body
            ),
            None,
        )
        return dict(obj)

    def annotate(self, ref: ObjectRef, annotations: dict[str, str | None]) -> dict[str, Any]:
        """Patch only ``metadata.annotations`` (what the verifier role is meant to change)."""
        return self.patch(ref, {"metadata": {"annotations": annotations}})

    def _watch_lines(self, ref: ObjectRef, resource_version: str, timeout: int) -> Iterator[dict[str, Any]]:
        res = ref.resource
        response = self.custom.list_namespaced_custom_object(  # type: ignore[call-arg]  # stubs lack _preload_content
            res.group,
            res.version,
            ref.namespace,
            res.plural,
            field_selector=f"metadata.name={ref.name}",
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout,
            watch=True,
            _preload_content=False,
            # A read timeout a little past the server's own ends a silently dropped stream.
            _request_timeout=(10, timeout + 15),
        )
        try:
            yield from watch_events(response)
        finally:
            response.release_conn()

    def poll(self, read: Callable[[], Judgement], *, timeout: float, what: str, max_interval: float = 2.0) -> Judgement:
        """Judge what ``read`` returns until ready (returned) or failed (raised), or ``timeout`` passes.

        For judgements over several objects (a ReplicaSet's pods) that one watch cannot follow. Quick at first, as
        the answer is usually there already, then every ``max_interval`` seconds.
        """
        progress = _Progress(what, timeout, self.log, self.heartbeat_seconds)
        delay = 0.2
        while True:
            verdict = read()
            window = progress.settle(verdict)
            if window is None:
                return verdict
            time.sleep(min(window, delay))
            delay = min(max_interval, delay * 2)

    def wait_for(
        self,
        ref: ObjectRef,
        judge: Callable[[dict[str, Any]], Judgement],
        *,
        timeout: float,
        what: str,
        stats: RequestStats | None = None,
        deleted_is_ready: bool = False,
    ) -> tuple[dict[str, Any], Judgement]:
        """Watch ``ref`` until ``judge`` says ready (returned) or failed (raised), or ``timeout`` passes.

        Through the process's shared watch of the object's kind and namespace (:mod:`tasks.informer`): the
        API server sees one watch there however many waits are in flight. Where that watch cannot run (no
        ``list`` on the namespace, or it does not start within a few seconds), the object is watched alone.
        """
        stats = stats if stats is not None else RequestStats()
        progress = _Progress(what, timeout, self.log, self.heartbeat_seconds)
        if self.shared_watches:
            done = self._wait_shared(ref, judge, progress, stats, deleted_is_ready)
            if done is not None:
                return done
        return self._wait_alone(ref, judge, progress, stats, deleted_is_ready)

    def _wait_shared(
        self,
        ref: ObjectRef,
        judge: Callable[[dict[str, Any]], Judgement],
        progress: _Progress,
        stats: RequestStats,
        deleted_is_ready: bool,
    ) -> tuple[dict[str, Any], Judgement] | None:
        """Wait through the shared watch; None (after a log line) when the object must be watched alone."""
        window = min(self.watch_timeout_seconds, informer.MAX_WINDOW_SECONDS)
        sub = informer.subscribe(self.api, ref, window_seconds=window)
        hub = sub.hub
        relists_before = hub.relists
        stats.shared_watches += 1
        try:
            if not hub.synced.wait(max(0.0, min(progress.remaining(), SHARED_WATCH_START_SECONDS))):
                self.log(f"{progress.what}: {hub} did not start in {SHARED_WATCH_START_SECONDS:.0f}s; watching alone")
                return None
            if hub.failure is not None:
                self.log(f"{progress.what}: {hub.failure}; watching alone")
                return None
            sub.changed.clear()
            obj = sub.current()
            if obj is None and sub.gone:  # deleted after this wait subscribed, before its first look
                return _deleted(ref, progress, {}, deleted_is_ready)
            if obj is None:
                # Not in the cache: absent, or created a moment ago and the watch has not delivered it yet.
                obj = self.get(ref, stats)
            verdict = judge(obj)
            while True:
                window_left = progress.settle(verdict)
                if window_left is None:
                    return obj, verdict
                sub.changed.wait(window_left)
                sub.changed.clear()
                if hub.relists - relists_before > stats.relists:
                    stats.relists = hub.relists - relists_before
                    self.log(f"{progress.what}: watch expired (410 Gone), {hub} listed again")
                if hub.failure is not None or (hub.stopped and not sub.gone):
                    self.log(f"{progress.what}: {hub.failure or str(hub) + ' stopped'}; watching alone")
                    return None
                events, sub.events = sub.events, 0
                stats.events += events
                if sub.gone:
                    return _deleted(ref, progress, obj, deleted_is_ready)
                latest = sub.current()
                if latest is not None:
                    obj = latest
                verdict = judge(obj)  # also when nothing changed: time-based rules (health grace) may have moved
        finally:
            sub.close()

    def _wait_alone(
        self,
        ref: ObjectRef,
        judge: Callable[[dict[str, Any]], Judgement],
        progress: _Progress,
        stats: RequestStats,
        deleted_is_ready: bool,
    ) -> tuple[dict[str, Any], Judgement]:
        """One GET, then a watch of the one object from its resourceVersion.

        A constant number of requests however long the wait. On 410 Gone (the resourceVersion expired) it gets
        the object again and re-watches; a dropped stream is re-opened from the last resourceVersion seen.
        """
        obj = self.get(ref, stats)
        verdict = judge(obj)
        resource_version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        what = progress.what
        while True:
            window_left = progress.settle(verdict)
            if window_left is None:
                return obj, verdict
            window = min(window_left, self.watch_timeout_seconds)
            stats.watches += 1
            try:
                for event in self._watch_lines(ref, resource_version, max(1, int(window + 0.999))):
                    kind = event.get("type")
                    body = event.get("object") or {}
                    if kind == "ERROR":
                        raise describe_api_error(
                            ApiException(status=body.get("code", 0), reason=body.get("message")), "watch", ref
                        )
                    resource_version = str((body.get("metadata") or {}).get("resourceVersion", resource_version))
                    if kind == "BOOKMARK":
                        continue
                    stats.events += 1
                    if kind == "DELETED":  # e.g. a released lock: gone may be what the caller waits for
                        return _deleted(ref, progress, body, deleted_is_ready)
                    obj = body
                    verdict = judge(obj)
                    if verdict.state != "waiting":
                        break
                    if progress.changed(verdict):
                        break  # log the change before continuing to watch
                else:
                    verdict = judge(obj)  # the window ended: time-based rules (health grace) may have moved
            except WatchExpiredError:
                stats.relists += 1
                self.log(f"{what}: watch expired (410 Gone), getting {ref} again")
                obj = self.get(ref, stats)
                resource_version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                verdict = judge(obj)
            except ApiException as exc:
                if exc.status == 410:
                    stats.relists += 1
                    obj = self.get(ref, stats)
                    resource_version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    verdict = judge(obj)
                elif is_transient(exc):
                    stats.retries += 1
                    time.sleep(random.uniform(0.2, 1.0))  # noqa: S311
                else:
                    raise describe_api_error(exc, "watch", ref) from None
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                # A dropped or stalled stream: re-open it from the last resourceVersion seen.
                stats.retries += 1
                self.log(f"{what}: watch stream interrupted ({short_error(exc)}), reconnecting")
                time.sleep(random.uniform(0.1, 0.5))  # noqa: S311


def _deleted(
    ref: ObjectRef, progress: _Progress, last: dict[str, Any], deleted_is_ready: bool
) -> tuple[dict[str, Any], Judgement]:
    """The end of a wait whose object was deleted: what it waited for (a released lock), or a failure."""
    if deleted_is_ready:
        return last, Judgement.ready(f"{ref} was deleted")
    raise VerificationError(f"{progress.what}: {ref} was deleted while waiting")


class _Progress:
    """One wait's clock and log: ends it on a final verdict, logs each new status (and every heartbeat)."""

    def __init__(self, what: str, timeout: float, log: Log, heartbeat_seconds: float) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.log = log
        self.heartbeat_seconds = heartbeat_seconds
        self.last_message = ""
        self.last_log = time.monotonic()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def changed(self, verdict: Judgement) -> bool:
        return verdict.message != self.last_message

    def settle(self, verdict: Judgement) -> float | None:
        """None when ``verdict`` is ready; raise when it failed or time is up; else how long to wait now."""
        if verdict.state == "ready":
            self.log(f"{self.what}: {verdict.message}")
            return None
        if verdict.state == "failed":
            raise VerificationError(f"{self.what}: {verdict.message}")
        now = time.monotonic()
        if verdict.message != self.last_message or now - self.last_log >= self.heartbeat_seconds:
            waited = self.timeout - (self.deadline - now)
            self.log(f"{self.what}: waiting ({waited:.0f}s of {self.timeout:.0f}s): {verdict.message}")
            self.last_message, self.last_log = verdict.message, now
        remaining = self.deadline - now
        if remaining <= 0:
            raise VerificationError(
                f"{self.what}: timed out after {self.timeout:.1f}s; last observed status: {verdict.message}"
            )
        window = min(remaining, self.heartbeat_seconds)
        if verdict.recheck_in is not None:
            window = min(window, verdict.recheck_in)
        return window
