"""Argo CD Applications on the session's API server as the verification tests write them: an Application, its
status, a writer in the background, and etcd compaction (to make a watch's resource version expire)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from kubernetes import client as k8s

from sandbox.apiserver import LocalKubeAPI

X = "1" * 40


OLD = "0" * 40


ARGO = ("argoproj.io", "v1alpha1")


def ts(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds").replace("+00:00", "Z")


def argo_status(revision: str, health: str = "Healthy", *, finished_ago: float = 60, **extra: Any) -> dict[str, Any]:
    return {
        "sync": {"status": "Synced", "revision": revision},
        "health": {"status": health},
        "operationState": {"phase": "Succeeded", "finishedAt": ts(finished_ago), "syncResult": {"revision": revision}},
        "reconciledAt": ts(0),
        **extra,
    }


def make_app(
    api: k8s.ApiClient, namespace: str, name: str, status: dict[str, Any] | None, sources: int | None = None
) -> None:
    source = {"repoURL": "https://git.example/app.git", "path": "deploy", "targetRevision": "v1.0.0"}
    spec: dict[str, Any] = {"project": "default", "destination": {"namespace": namespace}}
    if sources:
        spec["sources"] = [dict(source) for _ in range(sources)]
    else:
        spec["source"] = source
    body: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(*ARGO, namespace, "applications", body)


def set_app_status(api: k8s.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    # Argo CD's CRD has no status subresource: status is written through the main endpoint.
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object(*ARGO, namespace, "applications", name, {"status": status})


class Background:
    """Run a blocking wait in a thread and collect its outcome."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self, timeout: float = 30) -> Any:
        assert self.done.wait(timeout), "the wait did not return"
        if self.error is not None:
            raise self.error
        return self.result


def _etcd(kube_api: LocalKubeAPI, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{kube_api.etcd_url}{path}", json=body, timeout=10)
    response.raise_for_status()
    return dict(response.json())


def compact_etcd(kube_api: LocalKubeAPI) -> None:
    """Compact etcd at its current revision: a watch from an older resourceVersion then gets 410 Gone."""
    revision = int(_etcd(kube_api, "/v3/kv/range", {"key": "Lw=="})["header"]["revision"])
    _etcd(kube_api, "/v3/kv/compaction", {"revision": str(revision), "physical": True})
