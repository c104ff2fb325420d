"""The Kubernetes objects verification reads, and what its API errors mean: resource types, object
references, the error classes, and which failures are worth a retry. Shared by :mod:`tasks.kube` (requests,
waits) and :mod:`tasks.informer` (the shared watches)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from rules.errors import OutcomeError, PromoteError, TransientError

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
REPLICASET = Resource("apps", "v1", "replicasets", "ReplicaSet")
POD = Resource("", "v1", "pods", "Pod")


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


class VerificationError(OutcomeError, RuntimeError):
    """The environment reached a terminal bad state (Degraded, Stalled, deadline exceeded) or timed out."""


class TransientKubeError(KubeError, TransientError):
    """Retries for a transient failure were used up."""


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


def short_error(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): get or list again, then watch from there."""


def watch_events(response: Any, stopped: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """The events of a watch response, one JSON object per line, until it ends or ``stopped()`` says so.

    An ERROR event for 410 Gone raises :class:`WatchExpiredError`; other ERROR events are the caller's."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                event = json.loads(line)
                if event.get("type") == "ERROR" and (event.get("object") or {}).get("code") == 410:
                    raise WatchExpiredError
                yield event
        if stopped():
            return
