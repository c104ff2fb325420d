"""Shared watches: one LIST + WATCH per (API client, resource, namespace), feeding every wait in the process.

A large nightly verifies many environments at once from one process. Watching each object on its own costs
the API server one open watch per waiter (and one connection each from our pool); a shared watch keeps
that at one per (cluster, kind, namespace) however many waits are in flight, like client-go's informers:
a paged LIST fills a cache, a WATCH from the list's resourceVersion keeps it current, and a 410 Gone
re-lists once for every waiter. It stops a little while after its last waiter leaves.

It needs ``list`` and ``watch`` on the whole namespace (manifests/rbac/verifier-role.yaml grants both). When
it cannot have them (a Role limited by ``resourceNames``, say) it reports a failure and :mod:`tasks.kube`
falls back to watching the one object.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tasks.kubeobjects import (
    KubeError,
    ObjectRef,
    Resource,
    WatchExpiredError,
    describe_api_error,
    is_transient,
    short_error,
    watch_events,
)

_logger = logging.getLogger(__name__)  # a shared watch outlives the run that started it: not a run's log

MAX_WINDOW_SECONDS = 300  # a watch is re-opened from its last resourceVersion at least this often
LINGER_SECONDS = 30.0  # an idle watch stays this long: the next step of a run often waits in the same place
_PAGE_SIZE = 500
_MAX_BACKOFF_SECONDS = 10.0


def _version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Subscription:
    """One waiter's view of one object in a shared watch."""

    def __init__(self, hub: SharedWatch, name: str) -> None:
        self.hub = hub
        self.name = name
        self.changed = threading.Event()  # set by the watch whenever this object changes (or the watch stops)
        self.gone = False  # the object was deleted after this waiter saw it
        self.events = 0

    def current(self) -> dict[str, Any] | None:
        """The cached object, or None when the cache does not hold it (not yet seen, or deleted)."""
        return self.hub.lookup(self.name)

    def close(self) -> None:
        self.hub.unsubscribe(self)


class SharedWatch:
    """A cache of one resource type in one namespace, kept current by a single watch in a thread."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        namespace: str,
        *,
        window_seconds: int,
        linger_seconds: float,
        forget: Callable[[SharedWatch], None],
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.window_seconds = max(1, window_seconds)
        self.linger_seconds = linger_seconds
        self._forget = forget
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._count = 0
        self._idle_generation = 0
        self._stop = threading.Event()
        self._response: Any = None
        self.synced = threading.Event()
        self.failure: KubeError | None = None
        self.thread: threading.Thread | None = None
        # What it cost the API server, for the bench and the tests.
        self.lists = 0
        self.watches = 0
        self.relists = 0
        self.retries = 0

    def __str__(self) -> str:
        return f"shared watch of {self.resource.kind} in {self.namespace}"

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- waiters ---------------------------------------------------------------------------------------------

    def subscribe(self, name: str) -> Subscription | None:
        """A subscription to ``name``; None when this watch has just stopped (ask the registry for a new one)."""
        with self._lock:
            if self._stop.is_set():
                return None
            sub = Subscription(self, name)
            self._subscribers.setdefault(name, set()).add(sub)
            self._count += 1
            self._idle_generation += 1
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"watch-{self.resource.plural}", daemon=True)
                self.thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.name)
            if subs is None or sub not in subs:
                return
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.name]
            self._count -= 1
            if self._count:
                return
            self._idle_generation += 1
            generation = self._idle_generation
        timer = threading.Timer(self.linger_seconds, self._stop_if_idle, args=(generation,))
        timer.daemon = True
        timer.start()

    def lookup(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get(name)

    def _stop_if_idle(self, generation: int) -> None:
        with self._lock:
            if self._count or generation != self._idle_generation:
                return  # someone subscribed meanwhile
            self._stop.set()
        self._shutdown()

    def stop(self) -> None:
        """Stop now, waiters or not (they fall back to watching alone)."""
        with self._lock:
            self._stop.set()
        self._shutdown()
        self._wake_all()

    def _shutdown(self) -> None:
        self._forget(self)
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed: nothing to end
                response.shutdown()  # ends a read blocked in the stream (urllib3 2.3+)

    # -- the watch ---------------------------------------------------------------------------------------------

    def _notify(self, names: Collection[str], *, gone: Collection[str] = (), added: Collection[str] = ()) -> None:
        """Wake the waiters of ``names``; called with the lock held."""
        for name in names:
            for sub in self._subscribers.get(name, ()):
                if name in gone:
                    sub.gone = True
                elif name in added:
                    sub.gone = False
                sub.events += 1
                sub.changed.set()

    def _wake_all(self) -> None:
        with self._lock:
            for subs in self._subscribers.values():
                for sub in subs:
                    sub.changed.set()

    def _complete(self, obj: dict[str, Any]) -> dict[str, Any]:
        # List items of built-in types come without apiVersion and kind; a GET has them. Same shape either way.
        obj.setdefault("apiVersion", f"{self.resource.group}/{self.resource.version}")
        obj.setdefault("kind", self.resource.kind)
        return obj

    def _list(self) -> str:
        custom = client.CustomObjectsApi(self.api)
        res = self.resource
        items: dict[str, dict[str, Any]] = {}
        token: str | None = None
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": _PAGE_SIZE, "_request_timeout": (10, 60)}
            if token:
                kwargs["_continue"] = token
            self.lists += 1
            page = custom.list_namespaced_custom_object(res.group, res.version, self.namespace, res.plural, **kwargs)
            metadata = page.get("metadata") or {}
            if not resource_version:
                resource_version = str(metadata.get("resourceVersion") or "")
            for item in page.get("items") or []:
                name = (item.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    items[name] = self._complete(item)
            token = metadata.get("continue") or None
            if not token:
                break
        with self._lock:
            old = self._objects
            gone = {name for name in old if name not in items}
            added = {name for name in items if name not in old}
            changed = {name for name, item in items.items() if name in old and _version(old[name]) != _version(item)}
            self._objects = items
            self._notify(gone | added | changed, gone=gone, added=added)
        self.synced.set()
        return resource_version

    def _stream(self, resource_version: str) -> Iterator[dict[str, Any]]:
        res = self.resource
        response = client.CustomObjectsApi(self.api).list_namespaced_custom_object(  # type: ignore[call-arg]  # stubs lack _preload_content
            res.group,
            res.version,
            self.namespace,
            res.plural,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.window_seconds,
            watch=True,
            _preload_content=False,
            _request_timeout=(10, self.window_seconds + 15),  # ends a silently dropped stream
        )
        self.watches += 1
        self._response = response
        try:
            if self._stop.is_set():
                return
            yield from watch_events(response, self._stop.is_set)
        finally:
            self._response = None
            response.release_conn()

    def _watch(self, resource_version: str) -> str:
        for event in self._stream(resource_version):
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                raise ApiException(status=body.get("code", 0), reason=body.get("message"))
            resource_version = str((body.get("metadata") or {}).get("resourceVersion") or resource_version)
            if kind == "BOOKMARK":
                continue
            name = (body.get("metadata") or {}).get("name")
            if not isinstance(name, str):
                continue
            with self._lock:
                if kind == "DELETED":
                    self._objects.pop(name, None)
                    self._notify({name}, gone={name})
                else:
                    self._objects[name] = self._complete(body)
                    self._notify({name}, added={name})
        return resource_version

    def _run(self) -> None:
        ref = ObjectRef(self.resource, self.namespace, "*")
        resource_version: str | None = None
        backoff = 0.2
        while not self._stop.is_set():
            verb = "list" if resource_version is None else "watch"
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                backoff = 0.2
                continue
            except WatchExpiredError:
                self.relists += 1
                _logger.info("%s: watch expired (410 Gone), listing again for every waiter", self)
                resource_version = None
                continue
            except ApiException as exc:
                if exc.status == 410:
                    self.relists += 1
                    resource_version = None
                    continue
                if not is_transient(exc):
                    self._fail(describe_api_error(exc, verb, ref))
                    return
                trouble: BaseException = exc
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
                trouble = exc
            except Exception as exc:  # a waiter must hear of it, not wait on a dead thread
                if not self._stop.is_set():  # a stop shuts the stream down under the read: not a failure
                    self._fail(KubeError(f"{self} stopped: {short_error(exc)}"))
                return
            if self._stop.is_set():
                return
            with self._lock:
                idle = self._count == 0
            if idle:  # nobody waits: stop instead of retrying (the cluster may be gone); the next wait starts anew
                with self._lock:
                    self._stop.set()
                self._forget(self)
                return
            self.retries += 1
            _logger.info("%s: %s interrupted (%s), again in %.1fs", self, verb, short_error(trouble), backoff)
            self._stop.wait(backoff)
            backoff = min(_MAX_BACKOFF_SECONDS, backoff * 2)

    def _fail(self, error: KubeError) -> None:
        self.failure = error
        _logger.info("%s unavailable (%s); waits watch their objects alone", self, error)
        with self._lock:
            self._stop.set()
        self._forget(self)
        self.synced.set()  # waiting for the first list is over: it will not come
        self._wake_all()


# One registry per API client: clients are shared per kubeconfig (tasks/kube.py), so this is per cluster
# identity. Weak keys let a client the process dropped go once its watches have stopped.
_registry: weakref.WeakKeyDictionary[client.ApiClient, dict[tuple[Resource, str], SharedWatch]] = (
    weakref.WeakKeyDictionary()
)
_registry_lock = threading.Lock()


def subscribe(
    api: client.ApiClient,
    ref: ObjectRef,
    *,
    window_seconds: int,
    linger_seconds: float | None = None,
) -> Subscription:
    """Subscribe to ``ref`` through the shared watch of its kind and namespace, starting one if needed."""
    key = (ref.resource, ref.namespace)
    while True:
        with _registry_lock:
            hubs = _registry.setdefault(api, {})
            hub = hubs.get(key)
            if hub is None or hub.stopped:
                hub = SharedWatch(
                    api,
                    ref.resource,
                    ref.namespace,
                    window_seconds=window_seconds,
                    linger_seconds=LINGER_SECONDS if linger_seconds is None else linger_seconds,
                    forget=_forgetter(api, key),
                )
                hubs[key] = hub
        sub = hub.subscribe(ref.name)
        if sub is not None:
            return sub


def _forgetter(api: client.ApiClient, key: tuple[Resource, str]) -> Callable[[SharedWatch], None]:
    api_ref = weakref.ref(api)

    def forget(hub: SharedWatch) -> None:
        owner = api_ref()
        if owner is None:
            return
        with _registry_lock:
            hubs = _registry.get(owner)
            if hubs is not None and hubs.get(key) is hub:
                del hubs[key]

    return forget


def active(api: client.ApiClient) -> list[SharedWatch]:
    """The running shared watches of one client (for tests and the bench)."""
    with _registry_lock:
        return [hub for hub in (_registry.get(api) or {}).values() if not hub.stopped]


def stop_all(api: client.ApiClient | None = None) -> None:
    """Stop the shared watches of one client (of every client when None), as before closing it."""
    with _registry_lock:
        clients = [api] if api is not None else list(_registry.keys())
    for owner in clients:
        for hub in active(owner):
            hub.stop()
