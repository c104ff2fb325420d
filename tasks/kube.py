"""Kubernetes API access for verification: a client from kubeconfig or in-cluster, errors that say what to
do, retries for transient failures only, and a watch-based wait that re-lists on 410 Gone.

Objects are handled as plain dicts through the generic ``/apis/{group}/{version}`` paths, so Argo CD and
Flux objects need no generated models; the judgement of an object lives in :mod:`tasks.readiness`.
"""

from __future__ import annotations

import json
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

from tasks.errors import PromoteError, TransientError
from tasks.readiness import Judgement

Log = Callable[[str], None]

# Status codes that mean "try again": the server or the path to it is having a moment.
_TRANSIENT_STATUS = frozenset({0, 408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type, spelled as the API path and RBAC want it."""

    group: str
    version: str
    plural: str
    kind: str


APPLICATION = Resource("argoproj.io", "v1alpha1", "applications", "Application")
KUSTOMIZATION = Resource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
GIT_REPOSITORY = Resource("source.toolkit.fluxcd.io", "v1", "gitrepositories", "GitRepository")
DEPLOYMENT = Resource("apps", "v1", "deployments", "Deployment")


@dataclass(frozen=True)
class ObjectRef:
    resource: Resource
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.resource.kind} {self.namespace}/{self.name}"


class KubeError(PromoteError, RuntimeError):
    """A Kubernetes API failure that retrying will not fix; the message says what to do."""


class ObjectNotFoundError(KubeError):
    """The object does not exist (404): a wrong name or namespace, a missing CRD, or a lock just released."""


class VerificationError(RuntimeError):
    """The environment reached a terminal bad state (Degraded, Stalled, deadline exceeded) or timed out."""


class TransientKubeError(KubeError, TransientError):
    """Retries for a transient failure were used up."""


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


def _status_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def describe_api_error(exc: ApiException, verb: str, ref: ObjectRef) -> KubeError:
    """Turn 401/403/404/422 into a message naming the object, the verb and, for 403, the RBAC rule."""
    res = ref.resource
    message = _status_message(exc)
    if exc.status == 401:
        return KubeError(
            f"{verb} {ref}: the API server rejected the credentials (401 Unauthorized); "
            "check the token or client certificate in the kubeconfig"
        )
    if exc.status == 403:
        return KubeError(
            f'{verb} {ref}: forbidden (403): {message}. Missing RBAC rule: apiGroups: ["{res.group}"], '
            f'resources: ["{res.plural}"], verbs: ["{verb}"] in namespace {ref.namespace} '
            "(see manifests/rbac/verifier-role.yaml)"
        )
    if exc.status == 404:
        return ObjectNotFoundError(
            f"{ref} not found ({verb}): check the name and namespace in the pipeline file, and that the "
            f"{res.kind} CRD ({res.plural}.{res.group}) is installed"
        )
    return KubeError(f"{verb} {ref}: HTTP {exc.status}: {message}")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in _TRANSIENT_STATUS
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


@dataclass
class RequestStats:
    """Requests made by one wait, to show that waiting costs a constant number of calls."""

    gets: int = 0
    watches: int = 0
    patches: int = 0
    events: int = 0
    relists: int = 0
    retries: int = 0

    @property
    def requests(self) -> int:
        return self.gets + self.watches + self.patches


@dataclass
class KubeClient:
    """Verification's view of one cluster: get, patch metadata, and wait by watching."""

    api: client.ApiClient
    log: Log = field(default=lambda _msg: None)
    max_attempts: int = 6
    watch_timeout_seconds: int = 300  # server-side; a watch is re-opened from the last resourceVersion
    heartbeat_seconds: float = 30.0

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
            self.log(f"{verb} {ref}: transient error ({_short_error(last)}), retry {attempt} in {delay:.1f}s")
            time.sleep(delay)
        raise TransientKubeError(
            f"{verb} {ref}: still failing after {self.max_attempts} attempts: {_short_error(last)}"
        )

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
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

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

        One GET, then a watch from its resourceVersion: a constant number of requests however long the wait.
        On 410 Gone (the resourceVersion expired) it gets the object again and re-watches; a dropped stream
        is re-opened from the last resourceVersion seen.
        """
        stats = stats if stats is not None else RequestStats()
        deadline = time.monotonic() + timeout
        obj = self.get(ref, stats)
        verdict = judge(obj)
        last_message = ""
        last_log = time.monotonic()
        resource_version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        while True:
            if verdict.state == "ready":
                self.log(f"{what}: {verdict.message}")
                return obj, verdict
            if verdict.state == "failed":
                raise VerificationError(f"{what}: {verdict.message}")
            now = time.monotonic()
            if verdict.message != last_message or now - last_log >= self.heartbeat_seconds:
                waited = timeout - (deadline - now)
                self.log(f"{what}: waiting ({waited:.0f}s of {timeout:.0f}s): {verdict.message}")
                last_message, last_log = verdict.message, now
            remaining = deadline - now
            if remaining <= 0:
                raise VerificationError(
                    f"{what}: timed out after {timeout:.1f}s; last observed status: {verdict.message}"
                )
            window = min(remaining, self.watch_timeout_seconds, self.heartbeat_seconds)
            if verdict.recheck_in is not None:
                window = min(window, verdict.recheck_in)
            stats.watches += 1
            try:
                for event in self._watch_lines(ref, resource_version, max(1, int(window + 0.999))):
                    kind = event.get("type")
                    body = event.get("object") or {}
                    if kind == "ERROR":
                        if body.get("code") == 410:
                            raise _GoneError
                        raise describe_api_error(
                            ApiException(status=body.get("code", 0), reason=body.get("message")), "watch", ref
                        )
                    resource_version = str((body.get("metadata") or {}).get("resourceVersion", resource_version))
                    if kind == "BOOKMARK":
                        continue
                    stats.events += 1
                    if kind == "DELETED":
                        if deleted_is_ready:  # e.g. a released lock: gone is what we waited for
                            return body, Judgement.ready(f"{ref} was deleted")
                        raise VerificationError(f"{what}: {ref} was deleted while waiting")
                    obj = body
                    verdict = judge(obj)
                    if verdict.state != "waiting":
                        break
                    if verdict.message != last_message:
                        break  # log the change before continuing to watch
                else:
                    verdict = judge(obj)  # the window ended: time-based rules (health grace) may have moved
            except _GoneError:
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
                self.log(f"{what}: watch stream interrupted ({_short_error(exc)}), reconnecting")
                time.sleep(random.uniform(0.1, 0.5))  # noqa: S311


class _GoneError(Exception):
    """The watch's resourceVersion is too old (410 Gone)."""


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]
