"""A GitOps repository that real Argo CD deploys into a test's namespace: a bare origin served over loopback HTTP
with basic auth (tests/support/gitserver.py), a repository Secret in the argocd namespace, and Applications there
whose destination is the test's namespace. The verifier reads them through a RoleBinding in the argocd namespace
(made once by the session fixture)."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client import ApiException

from sandbox.apiserver import apply_manifests
from sandbox.cluster import ARGOCD_NAMESPACE
from tests.support.gitserver import serve_git_over_http
from tests.support.servedorigin import ServedOrigin

APPLICATION = ("argoproj.io", "v1alpha1", "applications")


@dataclass
class ArgoSite(ServedOrigin):
    """One test's Git origin, served to Argo CD, and the Applications that deploy it into ``namespace``."""

    applications: list[str] = field(default_factory=list)

    def create_origin(self, files: dict[str, str], branches: tuple[str, ...] = ()) -> str:
        """The origin (ServedOrigin.create_origin) and the repository Secret Argo CD reads its credentials from."""
        commit = super().create_origin(files, branches)
        apply_manifests(
            self.api,
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": f"repo-{self.namespace}"[:63],
                        "labels": {"argocd.argoproj.io/secret-type": "repository"},
                    },
                    "stringData": {"url": self.url, "username": self.username, "password": self.token, "type": "git"},
                }
            ],
            namespace=ARGOCD_NAMESPACE,
        )
        return commit

    def create_application(
        self,
        path: str,
        *,
        auto_sync: bool = True,
        revision: str = "main",
        more: tuple[tuple[str, str], ...] = (),
        destination: str | None = None,
    ) -> str:
        """An Application of this origin's ``path`` into ``destination`` (default: the test's namespace); its name
        (unique per test). ``more``: further (path, revision) sources of the same origin (multi-source)."""
        name = f"{self.namespace}-{len(self.applications)}"[:53]
        first = {"repoURL": self.url, "targetRevision": revision, "path": path}
        spec: dict[str, Any] = {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": destination or self.namespace},
        }
        if more:
            spec["sources"] = [first, *({"repoURL": self.url, "targetRevision": r, "path": p} for p, r in more)]
        else:
            spec["source"] = first
        if auto_sync:
            spec["syncPolicy"] = {"automated": {}}
        apply_manifests(
            self.api,
            [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name}, "spec": spec}],
            namespace=ARGOCD_NAMESPACE,
        )
        self.applications.append(name)
        return name

    def application(self, name: str) -> dict[str, Any]:
        group, version, plural = APPLICATION
        found: dict[str, Any] = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            group, version, ARGOCD_NAMESPACE, plural, name
        )
        return found

    def wait_until_healthy(self, name: str, revision: str, timeout: float = 240) -> dict[str, Any]:
        """The Application once Argo CD says Synced and Healthy at ``revision``."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.application(name).get("status") or {}
            sync, health = status.get("sync") or {}, status.get("health") or {}
            synced = sync.get("revision") or (sync.get("revisions") or [None])[0]  # multi-source: the first's
            if sync.get("status") == "Synced" and synced == revision and health.get("status") == "Healthy":
                return status
            time.sleep(0.3)
        raise AssertionError(f"Application {name} was not Synced/Healthy at {revision[:12]} in {timeout}s: {status}")

    def delete_applications(self) -> None:
        group, version, plural = APPLICATION
        for name in self.applications:
            with suppress(ApiException):
                k8s.CustomObjectsApi(self.api).delete_namespaced_custom_object(
                    group, version, ARGOCD_NAMESPACE, plural, name
                )


@contextmanager
def served_argo_site(api: k8s.ApiClient, namespace: str, root: Path, name: str = "site") -> Iterator[ArgoSite]:
    """An :class:`ArgoSite` whose origin under ``root`` is served over loopback HTTP for the block; its
    Applications are deleted afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    username, token = "argo", os.urandom(12).hex() + secrets.token_hex(2)
    with serve_git_over_http(root, username, token) as url:
        site = ArgoSite(api, namespace, root, url.rstrip("/"), username, token, name=name)
        try:
            yield site
        finally:
            site.delete_applications()


ARGO_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "argocd"
ARGO_RECORD_ENV = "PROMOTE_RECORD_ARGOCD_FIXTURES"  # =1: the real Argo CD tests write their recordings


class ApplicationRecorder:
    """Keeps every version of the argocd namespace's Applications that the API server sends to a watch, with its
    arrival (monotonic and UTC): what the real controller wrote, step by step."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.events: list[tuple[float, str, dict[str, Any]]] = []  # (monotonic, UTC ISO time, object)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _list(self, **kwargs: Any) -> Any:
        group, version, plural = APPLICATION
        return k8s.CustomObjectsApi(self.api).list_namespaced_custom_object(
            group, version, ARGOCD_NAMESPACE, plural, **kwargs
        )

    def _watch(self) -> None:
        version = ""
        while not self._stop.is_set():
            stream: Any = watch.Watch()
            try:
                event: Any
                for event in stream.stream(self._list, resource_version=version, timeout_seconds=5):
                    obj = event["object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        arrived = datetime.now(UTC).isoformat(timespec="microseconds")
                        with self._lock:
                            self.events.append((time.monotonic(), arrived, obj))
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise
                version = ""
            finally:
                stream.stop()

    def __enter__(self) -> ApplicationRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def of(self, name: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            return [e for e in self.events if e[2]["metadata"]["name"] == name]

    def save(self, scenario: str, name: str, *, revision: str, previous: str, expect: str, message: str) -> None:
        """With PROMOTE_RECORD_ARGOCD_FIXTURES=1, write the Application's recorded versions to tests/data/argocd/
        (operation, status and the refresh annotation: what the rules read), for the rules' table test."""
        if os.environ.get(ARGO_RECORD_ENV) != "1":
            return
        versions = []
        for _, arrived, obj in self.of(name):
            annotations = (obj["metadata"].get("annotations") or {}).items()
            versions.append(
                {
                    "arrived": arrived,
                    "metadata": {
                        "name": obj["metadata"]["name"],
                        "annotations": {k: v for k, v in annotations if k == "argocd.argoproj.io/refresh"},
                    },
                    **({"operation": obj["operation"]} if obj.get("operation") is not None else {}),
                    "status": obj.get("status") or {},
                }
            )
        ARGO_DATA_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "recorded_from": "Argo CD v3.6.1 application controller + repo server (tests/real/)",
            "scenario": scenario,
            "revision": revision,
            "previous": previous,
            "expect": expect,
            "expect_message": message,
            "versions": versions,
        }
        (ARGO_DATA_DIR / f"{scenario}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
