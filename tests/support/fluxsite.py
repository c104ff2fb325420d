"""A GitOps repository that real Flux deploys in a test's namespace: a bare origin served over loopback HTTP with
basic auth (tests/support/gitserver.py), a Secret with the credentials, a GitRepository and Kustomizations.

Also :class:`StatusRecorder`, which keeps every version of the objects a test watches, as the controllers wrote
them: the readiness rules are table-tested against these recordings (tests/data/flux/).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client import ApiException

from sandbox.apiserver import apply_manifests
from tests.support.gitserver import serve_git_over_http
from tests.support.servedorigin import ServedOrigin

KUSTOMIZE = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
GIT_REPOSITORY = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "flux"
RECORD_ENV = "PROMOTE_RECORD_FLUX_FIXTURES"  # =1: the real-controller tests write their recordings to DATA_DIR
IMAGE = "registry.sandbox.local/web"


def deployment(name: str = "web", *, image: str = f"{IMAGE}:1.0.0", replicas: int = 2, **template: Any) -> str:
    """A Deployment manifest. ``progressDeadlineSeconds`` is short so that a release whose pods never get ready is
    reported by the controller-manager (ProgressDeadlineExceeded) within seconds; ``template`` adds pod metadata
    (``labels=``, ``annotations=``: see sandbox/kwok/stages.yaml for the ones KWOK reads)."""
    labels = {"app": name, **template.get("labels", {})}
    annotations = template.get("annotations", {})
    meta = json.dumps({"labels": labels, **({"annotations": annotations} if annotations else {})})
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 10
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata: {meta}
    spec:
      containers:
        - name: web
          image: {image}
"""


def running_image(api: k8s.ApiClient, namespace: str) -> str:
    live: Any = k8s.AppsV1Api(api).read_namespaced_deployment("web", namespace)
    return str(live.spec.template.spec.containers[0].image)


# The base the overlays (overlay()) are made from.
OVERLAY_BASE = {"base/deployment.yaml": deployment(), "base/kustomization.yaml": "resources:\n  - deployment.yaml\n"}


def overlay(env: str, tag: str = "1.0.0", pod: dict[str, Any] | None = None) -> str:
    """An overlay of ../../base with the image's tag and, for ``pod``, a patch of the pods' metadata."""
    text = f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: {IMAGE}
    newTag: {tag}   # {env}'s release
"""
    if pod:
        patch = {"spec": {"template": {"metadata": pod}}}
        text += "patches:\n  - target: {kind: Deployment, name: web}\n    patch: |-\n"
        text += "".join(
            f"      {line}\n"
            for line in yaml.safe_dump(
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, **patch}
            ).splitlines()
        )
    return text


KUSTOMIZATION_FILE = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
"""


@dataclass
class FluxSite(ServedOrigin):
    """One test's Git origin, served to Flux, and the Flux objects that deploy it into ``namespace``."""

    def create_source(self, name: str = "site", ref: dict[str, str] | None = None) -> None:
        """A GitRepository for the origin (basic auth from a Secret), polling once a minute: tests get changes
        picked up sooner only by asking (reconcile.fluxcd.io/requestedAt), as verification does."""
        core = k8s.CoreV1Api(self.api)
        secret = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=f"{name}-auth"),
            string_data={"username": self.username, "password": self.token},
        )
        try:
            core.create_namespaced_secret(self.namespace, secret)
        except ApiException as exc:
            if exc.status != 409:
                raise
        apply_manifests(
            self.api,
            [
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "GitRepository",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": {
                        "url": self.url,
                        "interval": "1m",
                        "timeout": "30s",
                        "ref": ref or {"branch": "main"},
                        "secretRef": {"name": f"{name}-auth"},
                    },
                }
            ],
        )

    def create_kustomization(
        self, name: str, path: str, *, source: str = "site", wait: bool = True, timeout: str = "60s", **spec: Any
    ) -> None:
        """A Kustomization applying ``path`` into the namespace. ``timeout`` bounds Flux's own health checks."""
        body = {
            "interval": "1m",
            "retryInterval": "1m",
            "path": path,
            "prune": True,
            "wait": wait,
            "timeout": timeout,
            "targetNamespace": self.namespace,
            "sourceRef": {"kind": "GitRepository", "name": source},
            **spec,
        }
        apply_manifests(
            self.api,
            [
                {
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": body,
                }
            ],
        )

    def kustomization(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            *KUSTOMIZE[:2], self.namespace, KUSTOMIZE[2], name
        )
        return obj

    def wait_until_applied(self, name: str, commit: str, *, timeout: float = 300) -> dict[str, Any]:
        """Until Flux reports Ready=True with ``commit`` applied (the starting state of a test)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.kustomization(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            status = last.get("status") or {}
            ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
            if ready.get("status") == "True" and str(status.get("lastAppliedRevision", "")).endswith(commit):
                return last
            time.sleep(0.2)
        raise AssertionError(f"Flux did not apply {commit[:12]} with {name} in {timeout:.0f}s; last status: {last}")

    def deployment(self, name: str = "web") -> Any:
        return k8s.AppsV1Api(self.api).read_namespaced_deployment(name, self.namespace)


@contextmanager
def served_site(api: k8s.ApiClient, namespace: str, root: Path, name: str = "site") -> Iterator[FluxSite]:
    """A :class:`FluxSite` whose origins under ``root`` are served over loopback HTTP for the block."""
    root.mkdir(parents=True, exist_ok=True)
    username, token = "flux", os.urandom(12).hex()
    with serve_git_over_http(root, username, token) as url:
        yield FluxSite(api, namespace, root, url.rstrip("/"), username, token, name=name)


class StatusRecorder:
    """Keeps every version of the namespace's Kustomizations and Deployments the API server sends to a watch,
    with the time it arrived (monotonic): what the controllers wrote, step by step."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.events: list[tuple[float, str, dict[str, Any]]] = []  # (arrived, kind, object)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._watch, args=("Kustomization", self._list_kustomizations), daemon=True),
            threading.Thread(target=self._watch, args=("Deployment", self._list_deployments), daemon=True),
        ]

    def _list_kustomizations(self, **kwargs: Any) -> Any:
        group, version, plural = KUSTOMIZE
        return k8s.CustomObjectsApi(self.api).list_namespaced_custom_object(
            group, version, self.namespace, plural, **kwargs
        )

    def _list_deployments(self, **kwargs: Any) -> Any:
        return k8s.AppsV1Api(self.api).list_namespaced_deployment(self.namespace, **kwargs)

    def _watch(self, kind: str, lister: Callable[..., Any]) -> None:
        version = ""
        while not self._stop.is_set():
            stream: Any = watch.Watch()
            try:
                event: Any
                for event in stream.stream(
                    lister, resource_version=version, timeout_seconds=5, allow_watch_bookmarks=False
                ):
                    raw = event.get("raw_object") or event["object"]
                    obj = raw if isinstance(raw, dict) else self.api.sanitize_for_serialization(raw)
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        with self._lock:
                            self.events.append((time.monotonic(), kind, obj))
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise
                version = ""
            finally:
                stream.stop()

    def __enter__(self) -> StatusRecorder:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def of(self, kind: str, name: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, o) for t, k, o in self.events if k == kind and o["metadata"]["name"] == name]

    def first(self, kind: str, name: str, predicate: Callable[[dict[str, Any]], bool]) -> float | None:
        """When the first version matching ``predicate`` arrived (monotonic), or None."""
        return next((t for t, obj in self.of(kind, name) if predicate(obj)), None)

    def save(self, scenario: str, name: str, *, revision: str, previous: str, expect: str, message: str) -> None:
        """With PROMOTE_RECORD_FLUX_FIXTURES=1, write the Kustomization's recorded versions to tests/data/flux/
        (status and the fields the rules read; nothing else), for the readiness rules' table test."""
        if os.environ.get(RECORD_ENV) != "1":
            return
        versions = []
        for _, obj in self.of("Kustomization", name):
            meta = obj["metadata"]
            versions.append(
                {
                    "metadata": {
                        "name": meta["name"],
                        "generation": meta.get("generation"),
                        "annotations": {
                            k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("reconcile.")
                        },
                    },
                    "status": obj.get("status") or {},
                }
            )
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "recorded_from": "Flux kustomize-controller v1.9.6 + source-controller v1.9.6 (tests/real/)",
            "scenario": scenario,
            "revision": revision,
            "previous": previous,
            "expect": expect,
            "expect_message": message,
            "versions": versions,
        }
        (DATA_DIR / f"{scenario}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
