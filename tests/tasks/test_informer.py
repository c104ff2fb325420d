"""Shared watches (tasks/informer.py) against a real kube-apiserver, counted on the server's side.

The rule ported is client-go's shared informer (k8s.io/client-go tools/cache/reflector.go, ``ListAndWatch``):
list, watch from the list's resourceVersion, re-list on 410 Gone; every waiter reads the one cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.config import new_client_from_config

from rules.readiness import Judgement, judge_application
from sandbox.apimetrics import ResourceRequests, resource_requests
from sandbox.apiserver import LocalKubeAPI, delete_namespace
from tasks import informer
from tasks.kube import APPLICATION, KubeClient, ObjectNotFoundError, ObjectRef, RequestStats, VerificationError
from tests.support.verifying import OLD, Background, X, argo_status, compact_etcd, make_app, set_app_status

pytestmark = pytest.mark.kube


@pytest.fixture
def own_client(kube_api: LocalKubeAPI) -> Iterator[k8s.ApiClient]:
    """A client of this test's own, so its shared watches are this test's alone."""
    api = new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield api
    informer.stop_all(api)
    close(api)


def close(api: k8s.ApiClient) -> None:
    closer: Any = api  # ApiClient.close() exists; the typed stubs do not list it
    closer.close()


def judge(app: dict[str, Any]) -> Judgement:
    return judge_application(app, X, health_grace_seconds=0)


def applications(api: k8s.ApiClient) -> ResourceRequests:
    return resource_requests(api, "argoproj.io", "applications")


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up after {timeout:.0f}s waiting for {what}"
        time.sleep(0.05)


def start_waits(kube: KubeClient, namespace: str, names: list[str]) -> tuple[dict[str, RequestStats], list[Background]]:
    """One wait per Application in a thread of its own, each with its stats."""
    stats = {name: RequestStats() for name in names}

    def wait(name: str) -> Callable[[], object]:
        return lambda: kube.wait_for(
            ObjectRef(APPLICATION, namespace, name), judge, timeout=60, what=name, stats=stats[name]
        )

    waits = [Background(wait(name)) for name in names]
    return stats, waits


def wait_for_the_list(api: k8s.ApiClient) -> None:
    wait_until(lambda: bool(informer.active(api)) and informer.active(api)[0].synced.is_set(), "the first list")


def test_many_waits_share_one_list_and_one_watch(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    names = [f"app-{i}" for i in range(20)]
    for name in names:
        make_app(kube_client, namespace, name, argo_status(OLD))
    kube = KubeClient(own_client)
    before = applications(kube_client)
    stats, waits = start_waits(kube, namespace, names)
    wait_until(lambda: sum(s.shared_watches for s in stats.values()) == len(names), "every wait to subscribe")
    hubs = informer.active(own_client)
    assert len(hubs) == 1
    wait_until(hubs[0].synced.is_set, "the first list")
    during = applications(kube_client) - before
    assert during.open_watches <= 1, f"the server saw {during.open_watches} more open watches"
    for name in names:
        set_app_status(kube_client, namespace, name, argo_status(X))
    for name, wait in zip(names, waits, strict=True):
        _, verdict = wait.join(60)
        assert verdict.state == "ready", name
    after = applications(kube_client) - before
    # The server's count: one LIST and one WATCH for twenty waits (no per-waiter GET: the cache had them all).
    assert after.count("LIST") == 1, after.by_verb
    assert after.watches_opened == 1, (after.by_verb, after.open_watches)
    assert after.count("GET") == 0, after.by_verb
    assert all(s.gets == 0 and s.watches == 0 and s.events >= 1 for s in stats.values())


def test_a_wait_that_alone_would_watch_by_itself_counts_its_own_watch(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    # The same wait with shared watches off: the comparison the bench makes, here as the server counts it.
    names = [f"app-{i}" for i in range(5)]
    for name in names:
        make_app(kube_client, namespace, name, argo_status(OLD))
    kube = KubeClient(own_client, shared_watches=False)
    before = applications(kube_client)
    stats, waits = start_waits(kube, namespace, names)
    wait_until(lambda: all(s.watches for s in stats.values()), "every wait to open its watch")
    for name in names:
        set_app_status(kube_client, namespace, name, argo_status(X))
    for wait in waits:
        wait.join(60)
    after = applications(kube_client) - before
    assert after.count("GET") == len(names), after.by_verb
    assert after.watches_opened == len(names), (after.by_verb, after.open_watches)
    assert not informer.active(own_client)


def test_410_gone_relists_once_for_every_waiter(
    kube_api: LocalKubeAPI, own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    names = [f"app-{i}" for i in range(8)]
    for name in names:
        make_app(kube_client, namespace, name, argo_status(OLD))
    # Writes elsewhere move etcd's revision on without an event for this namespace's watch.
    elsewhere = f"{namespace[:50]}-x"
    k8s.CoreV1Api(kube_client).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=elsewhere)))
    make_app(kube_client, elsewhere, "noise", argo_status(OLD))
    # Watch windows of one second: the shared watch re-opens from its last resourceVersion every second.
    kube = KubeClient(own_client, watch_timeout_seconds=1)
    stats, waits = start_waits(kube, namespace, names)
    wait_until(lambda: sum(s.shared_watches for s in stats.values()) == len(names), "every wait to subscribe")
    (hub,) = informer.active(own_client)
    wait_until(hub.synced.is_set, "the first list")
    try:
        for i in range(5):  # move etcd's revision past the watch's resourceVersion...
            set_app_status(kube_client, elsewhere, "noise", argo_status(OLD, reconciledAt=f"2026-01-01T00:00:0{i}Z"))
        compact_etcd(kube_api)  # ...and expire it
        wait_until(lambda: hub.relists >= 1, "the shared watch to see 410 Gone")
    finally:
        delete_namespace(kube_client, elsewhere)
    assert hub.relists == 1 and hub.lists == 2  # one re-list, not one per waiter
    assert not any(w.done.is_set() for w in waits)
    for name in names:
        set_app_status(kube_client, namespace, name, argo_status(X))
    for wait in waits:
        _, verdict = wait.join(60)
        assert verdict.state == "ready"
    assert all(s.relists == 1 for s in stats.values()), [s.relists for s in stats.values()]


def test_an_object_created_after_the_list_is_found_and_followed(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    make_app(kube_client, namespace, "first", argo_status(OLD))
    kube = KubeClient(own_client)
    first = Background(
        lambda: kube.wait_for(ObjectRef(APPLICATION, namespace, "first"), judge, timeout=60, what="first")
    )
    wait_for_the_list(own_client)
    make_app(kube_client, namespace, "late", argo_status(OLD))
    stats = RequestStats()
    late = Background(
        lambda: kube.wait_for(ObjectRef(APPLICATION, namespace, "late"), judge, timeout=60, what="late", stats=stats)
    )
    wait_until(lambda: stats.shared_watches == 1, "the late wait to subscribe")
    set_app_status(kube_client, namespace, "late", argo_status(X))
    set_app_status(kube_client, namespace, "first", argo_status(X))
    obj, verdict = late.join(60)
    assert verdict.state == "ready" and obj["kind"] == "Application"
    first.join(60)
    with pytest.raises(ObjectNotFoundError, match=f"Application {namespace}/absent not found"):
        kube.wait_for(ObjectRef(APPLICATION, namespace, "absent"), judge, timeout=10, what="absent")


def test_deletion_ends_a_wait_as_the_caller_asked(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    make_app(kube_client, namespace, "lock", argo_status(OLD))
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    kube = KubeClient(own_client)
    stats = {name: RequestStats() for name in ("lock", "shop")}
    released = Background(
        lambda: kube.wait_for(
            ObjectRef(APPLICATION, namespace, "lock"),
            judge,
            timeout=60,
            what="lock",
            deleted_is_ready=True,
            stats=stats["lock"],
        )
    )
    vanished = Background(
        lambda: kube.wait_for(
            ObjectRef(APPLICATION, namespace, "shop"), judge, timeout=60, what="shop", stats=stats["shop"]
        )
    )
    wait_for_the_list(own_client)
    # Both waits hold their subscription (progress, not a fixed pause) before anything is deleted.
    wait_until(lambda: all(s.shared_watches for s in stats.values()), "both waits to subscribe")
    custom = k8s.CustomObjectsApi(kube_client)
    for name in ("lock", "shop"):
        custom.delete_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "applications", name)
    _, verdict = released.join(60)
    assert verdict.message == f"Application {namespace}/lock was deleted"
    with pytest.raises(VerificationError, match="was deleted while waiting"):
        vanished.join(60)


def test_without_list_on_the_namespace_the_wait_watches_its_object_alone(
    kube_api: LocalKubeAPI, kube_client: k8s.ApiClient, namespace: str, verifier_user: str
) -> None:
    # A Role limited to one object by resourceNames: the API server authorizes a list or watch with a
    # metadata.name field selector against it, not a list of the namespace.
    rbac = k8s.RbacAuthorizationV1Api(kube_client)
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="one-app"),
            rules=[
                k8s.V1PolicyRule(
                    api_groups=["argoproj.io"],
                    resources=["applications"],
                    resource_names=["shop"],
                    verbs=["get", "list", "watch"],
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="one-app"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="one-app"),
            subjects=[k8s.RbacV1Subject(kind="User", name=verifier_user, api_group="rbac.authorization.k8s.io")],
        ),
    )
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    api = new_client_from_config(config_file=str(kube_api.kubeconfig_for(verifier_user)))
    try:
        logs: list[str] = []
        kube = KubeClient(api, log=logs.append)
        stats = RequestStats()
        ref = ObjectRef(APPLICATION, namespace, "shop")
        deadline = time.monotonic() + 10
        while True:  # RBAC changes reach the authorizer's cache within moments
            try:
                kube.get(ref)
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        waiting = Background(lambda: kube.wait_for(ref, judge, timeout=60, what="shop", stats=stats))
        wait_until(lambda: stats.watches >= 1, "the wait to watch its object alone")
        set_app_status(kube_client, namespace, "shop", argo_status(X))
        _, verdict = waiting.join(60)
        assert verdict.state == "ready"
        assert any("forbidden (403)" in line and "watching alone" in line for line in logs), logs
    finally:
        informer.stop_all(api)
        close(api)


def test_an_idle_shared_watch_stops_after_its_linger(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informer, "LINGER_SECONDS", 0.5)
    make_app(kube_client, namespace, "shop", argo_status(X))
    kube = KubeClient(own_client)
    before = applications(kube_client)
    kube.wait_for(ObjectRef(APPLICATION, namespace, "shop"), judge, timeout=30, what="shop")
    (hub,) = informer.active(own_client)
    thread = hub.thread
    assert thread is not None
    wait_until(lambda: not thread.is_alive(), "the idle watch to stop", timeout=30)
    assert not informer.active(own_client)
    wait_until(lambda: (applications(kube_client) - before).open_watches <= 0, "the server to close the watch")
    # A wait after the stop starts a new shared watch.
    kube.wait_for(ObjectRef(APPLICATION, namespace, "shop"), judge, timeout=30, what="shop")
    assert len(informer.active(own_client)) == 1


def test_a_stalled_server_does_not_hold_a_wait_past_its_deadline(
    own_client: k8s.ApiClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    # The wait's own clock rules, whatever the shared watch is doing: here the status never comes.
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    kube = KubeClient(own_client)
    started = time.monotonic()
    with pytest.raises(VerificationError, match=r"timed out after 2\.0s"):
        kube.wait_for(ObjectRef(APPLICATION, namespace, "shop"), judge, timeout=2, what="shop")
    assert time.monotonic() - started < 30
