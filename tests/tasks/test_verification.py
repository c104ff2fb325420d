"""Verification against a real kube-apiserver: the waits watch real objects whose status a test (playing the
controller) writes through the API, as envtest does."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from pipeline.model import Environment
from rules.readiness import judge_application
from sandbox.apiserver import RBAC_DIR, LocalKubeAPI, apply_manifests
from sandbox.rollouts import run_pods
from tasks import kube as kube_module
from tasks.kube import (
    APPLICATION,
    KubeClient,
    KubeError,
    ObjectRef,
    RequestStats,
    VerificationError,
    load_api_client,
)
from tasks.verification import ARGO_REFRESH_ANNOTATION, FLUX_RECONCILE_ANNOTATION, verify_environment
from tests.support.verifying import ARGO, OLD, Background, X, argo_status, compact_etcd, make_app, set_app_status, ts

pytestmark = pytest.mark.kube

FLUX = ("kustomize.toolkit.fluxcd.io", "v1")


def env_for(
    kind: str,
    name: str,
    namespace: str,
    *,
    deployments: list[dict[str, Any]] | None = None,
    timeout: float = 20,
    source_index: int | None = None,
) -> Environment:
    tracks: dict[str, Any] = {"kind": "tag", "application_file": "apps/x.yaml"}
    if source_index is not None:
        tracks["source_index"] = source_index
    return Environment.model_validate(
        {
            "name": "staging",
            "tracks": tracks,
            "verify": {
                "gitops": {"kind": kind, "name": name, "namespace": namespace},
                "deployments": deployments or [],
                "timeout_seconds": timeout,
                "health_grace_seconds": 0,
            },
        }
    )


@pytest.fixture
def kube(kube_client: k8s.ApiClient) -> Iterator[KubeClient]:
    logs: list[str] = []
    yield KubeClient(kube_client, log=logs.append)


def test_stale_synced_at_previous_revision_is_not_a_pass(
    kube: KubeClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    env = env_for("argocd", "shop", namespace)
    waiting = Background(lambda: verify_environment(kube, env, X, {}))
    time.sleep(1.0)
    assert not waiting.done.is_set(), "verification passed on a status synced to the previous commit"
    app = k8s.CustomObjectsApi(kube_client).get_namespaced_custom_object(*ARGO, namespace, "applications", "shop")
    assert app["metadata"]["annotations"][ARGO_REFRESH_ANNOTATION] == "normal"  # it asked Argo CD to look now
    set_app_status(kube_client, namespace, "shop", argo_status(X))
    result = waiting.join()
    assert result.steps[0].message == f"Synced and Healthy at {X[:12]}"
    # One GET and a handful of watches: waiting costs a constant number of requests, not one per second.
    assert result.stats.gets <= 1 and result.stats.watches == 0 and result.stats.shared_watches == 1


def test_degraded_fails_fast_with_its_message(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    env = env_for("argocd", "shop", namespace, timeout=60)
    started = time.monotonic()
    waiting = Background(lambda: verify_environment(kube, env, X, {}))
    time.sleep(0.3)
    status = argo_status(X, "Degraded")
    status["health"]["message"] = "Back-off restarting failed container app"
    set_app_status(kube_client, namespace, "shop", status)
    with pytest.raises(VerificationError, match="Degraded at 111111111111: Back-off restarting failed container"):
        waiting.join()
    assert time.monotonic() - started < 10  # failed on the event, long before the 60 s timeout


def test_degraded_after_another_health_at_our_revision_fails(
    kube: KubeClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    """argo-cd waitOnApplicationStatus fails on a transition to Degraded from any health but Unknown/Degraded,
    not only from Progressing: here Missing -> Degraded at our revision, synced by an operation that was not ours
    (the last one recorded is for the previous commit), must fail on the event instead of waiting for the timeout."""
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    env = env_for("argocd", "shop", namespace, timeout=60)
    started = time.monotonic()
    waiting = Background(lambda: verify_environment(kube, env, X, {}))
    missing = argo_status(X, "Missing")
    missing["operationState"]["syncResult"] = {"revision": OLD}
    set_app_status(kube_client, namespace, "shop", missing)
    # Wait for the verifier to have seen Missing at X: it is still waiting, and its refresh annotation is set.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not waiting.done.is_set():
        app = k8s.CustomObjectsApi(kube_client).get_namespaced_custom_object(*ARGO, namespace, "applications", "shop")
        if ARGO_REFRESH_ANNOTATION in (app["metadata"].get("annotations") or {}):
            break
        time.sleep(0.1)
    time.sleep(0.5)  # let the watch deliver the Missing status (more time only makes the test stricter)
    degraded = argo_status(X, "Degraded")
    degraded["operationState"]["syncResult"] = {"revision": OLD}
    degraded["health"]["message"] = "Back-off restarting failed container app"
    set_app_status(kube_client, namespace, "shop", degraded)
    with pytest.raises(VerificationError, match="Degraded at 111111111111"):
        waiting.join(timeout=55)
    assert time.monotonic() - started < 50  # failed on the event, before the 60 s timeout


def test_comparison_error_fails_fast(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    status = argo_status(OLD, conditions=[{"type": "ComparisonError", "message": "path deploy does not exist"}])
    make_app(kube_client, namespace, "shop", status)
    with pytest.raises(VerificationError, match="ComparisonError: path deploy does not exist"):
        verify_environment(kube, env_for("argocd", "shop", namespace), X, {})


def test_multi_source_application(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    status = argo_status(X)
    status["sync"] = {"status": "Synced", "revisions": [OLD, X]}
    status["operationState"]["syncResult"] = {"revisions": [OLD, X]}
    make_app(kube_client, namespace, "multi", status, sources=2)
    result = verify_environment(kube, env_for("argocd", "multi", namespace, source_index=1), X, {})
    assert result.steps[0].message.startswith("Synced and Healthy")
    with pytest.raises(VerificationError, match=r"timed out .* last observed status: want 111111111111"):
        verify_environment(kube, env_for("argocd", "multi", namespace, source_index=0, timeout=1.5), X, {})


def test_missing_application_is_a_clear_error(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(KubeError, match=rf"Application {namespace}/nope not found \(patch\): check the name"):
        verify_environment(kube, env_for("argocd", "nope", namespace), X, {})


def test_timeout_reports_last_observed_status(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    started = time.monotonic()
    with pytest.raises(VerificationError) as caught:
        verify_environment(kube, env_for("argocd", "shop", namespace, timeout=1.5), X, {})
    assert re.search(
        r"timed out after 1\.\ds; last observed status: want 111111111111; sync Synced at 000000000000",
        str(caught.value),
    )
    assert "still the previous revision" in str(caught.value)
    assert time.monotonic() - started < 6


def test_watch_expiry_410_mid_wait_relists_and_continues(
    kube_api: LocalKubeAPI, kube_client: k8s.ApiClient, namespace: str
) -> None:
    make_app(kube_client, namespace, "shop", argo_status(OLD))
    make_app(kube_client, namespace, "noise", argo_status(OLD))
    # A wait watching its object alone (tests/tasks/test_informer.py has the shared watch's 410), in short
    # windows: the waiter re-opens its watch from its last resourceVersion every half second.
    kube = KubeClient(kube_client, heartbeat_seconds=0.5, shared_watches=False)
    stats = RequestStats()
    ref = ObjectRef(APPLICATION, namespace, "shop")
    waiting = Background(
        lambda: kube.wait_for(
            ref, lambda app: judge_application(app, X, health_grace_seconds=0), timeout=30, what="shop", stats=stats
        )
    )
    time.sleep(0.5)
    for i in range(5):  # move etcd's revision past the waiter's resourceVersion...
        set_app_status(kube_client, namespace, "noise", argo_status(OLD, reconciledAt=ts(i)))
    compact_etcd(kube_api)  # ...and expire it
    deadline = time.monotonic() + 10
    while stats.relists == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats.relists >= 1, "the waiter never saw 410 Gone"
    assert not waiting.done.is_set()
    set_app_status(kube_client, namespace, "shop", argo_status(X))
    _, verdict = waiting.join()
    assert verdict.state == "ready"


def kustomization(api: k8s.ApiClient, namespace: str, name: str) -> None:
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        *FLUX,
        namespace,
        "kustomizations",
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": name},
            "spec": {
                "interval": "5m",
                "path": "./",
                "prune": True,
                "sourceRef": {"kind": "GitRepository", "name": name},
            },
        },
    )
    custom.create_namespaced_custom_object(
        "source.toolkit.fluxcd.io",
        "v1",
        namespace,
        "gitrepositories",
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": name},
            "spec": {"interval": "1m", "url": "https://git.example/app.git", "ref": {"branch": "main"}},
        },
    )


def flux_status(api: k8s.ApiClient, namespace: str, name: str, **status: Any) -> None:
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        *FLUX, namespace, "kustomizations", name, {"status": status}
    )


def test_flux_ready_with_observed_generation_behind_is_not_a_pass(
    kube: KubeClient, kube_client: k8s.ApiClient, namespace: str
) -> None:
    kustomization(kube_client, namespace, "apps")
    custom = k8s.CustomObjectsApi(kube_client)
    ready = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "ReconciliationSucceeded",
            "message": "ok",
            "lastTransitionTime": ts(),
        }
    ]
    env = env_for("flux", "apps", namespace)
    waiting = Background(lambda: verify_environment(kube, env, X, {}))
    time.sleep(0.5)
    ks = custom.get_namespaced_custom_object(*FLUX, namespace, "kustomizations", "apps")
    token = ks["metadata"]["annotations"][FLUX_RECONCILE_ANNOTATION]
    generation = ks["metadata"]["generation"]
    # Ready=True at our revision, reconcile handled, but the spec generation has not been observed.
    flux_status(
        kube_client,
        namespace,
        "apps",
        observedGeneration=generation - 1,
        lastHandledReconcileAt=token,
        lastAppliedRevision=f"main@sha1:{X}",
        lastAttemptedRevision=f"main@sha1:{X}",
        conditions=ready,
    )
    time.sleep(1.0)
    assert not waiting.done.is_set(), "verification passed with observedGeneration behind generation"
    flux_status(kube_client, namespace, "apps", observedGeneration=generation)
    result = waiting.join()
    assert result.steps[0].message == f"Ready and applied at {X[:12]}"
    repo = custom.get_namespaced_custom_object("source.toolkit.fluxcd.io", "v1", namespace, "gitrepositories", "apps")
    assert repo["metadata"]["annotations"][FLUX_RECONCILE_ANNOTATION] == token  # --with-source


def test_flux_stalled_fails_fast(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    """Stalled=True for this spec fails on the event with Flux's message, once Flux has handled our request
    (flux2 reconciliationHandled). The status is what kustomize-controller writes on an AccessDenied-style stall:
    status.observedGeneration left behind, the conditions carrying the current generation."""
    kustomization(kube_client, namespace, "apps")
    custom = k8s.CustomObjectsApi(kube_client)
    env = env_for("flux", "apps", namespace, timeout=60)
    started = time.monotonic()
    waiting = Background(lambda: verify_environment(kube, env, X, {}))
    token = None
    deadline = time.monotonic() + 30
    while token is None and time.monotonic() < deadline and not waiting.done.is_set():
        ks = custom.get_namespaced_custom_object(*FLUX, namespace, "kustomizations", "apps")
        token = (ks["metadata"].get("annotations") or {}).get(FLUX_RECONCILE_ANNOTATION)
        time.sleep(0.05)
    assert token is not None, "the verifier never requested a reconcile"
    generation = ks["metadata"]["generation"]
    conditions = [
        {
            "type": kind,
            "status": status,
            "reason": "BuildFailed",
            "message": "kustomize build failed",
            "observedGeneration": generation,
            "lastTransitionTime": ts(),
        }
        for kind, status in (("Ready", "False"), ("Stalled", "True"))
    ]
    flux_status(
        kube_client,
        namespace,
        "apps",
        lastHandledReconcileAt=token,
        lastAttemptedRevision=f"main@sha1:{X}",
        conditions=conditions,
    )
    with pytest.raises(VerificationError, match=r"Stalled \(BuildFailed\): kustomize build failed"):
        waiting.join(timeout=55)
    assert time.monotonic() - started < 50  # on the event, before the 60 s timeout


def make_deployment(api: k8s.ApiClient, namespace: str, image: str, replicas: int = 2) -> None:
    labels = {"app": "web"}
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "apps",
        "v1",
        namespace,
        "deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": image}]}},
            },
        },
    )


def rollout(api: k8s.ApiClient, namespace: str, image: str, **status: Any) -> None:
    apps = k8s.AppsV1Api(api)
    apps.patch_namespaced_deployment(
        "web", namespace, {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}}
    )
    generation = apps.read_namespaced_deployment("web", namespace).metadata.generation
    body = {
        "observedGeneration": generation,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        **status,
    }
    apps.patch_namespaced_deployment_status("web", namespace, {"status": body})
    if body["updatedReplicas"] == body["replicas"] and "conditions" not in status:
        run_pods(api, namespace, "web")  # the new ReplicaSet's Ready pods, as the controllers would make them


def test_deployment_must_run_the_promoted_image(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    make_app(kube_client, namespace, "shop", argo_status(X))
    make_deployment(kube_client, namespace, "registry.local/web:1.0.0")
    rollout(kube_client, namespace, "registry.local/web:1.0.0")
    env = env_for(
        "argocd",
        "shop",
        namespace,
        deployments=[
            {"name": "web", "namespace": namespace, "container": "web", "expect_image": "registry.local/web:{version}"}
        ],
    )
    waiting = Background(lambda: verify_environment(kube, env, X, {"version": "1.1.0"}))
    time.sleep(1.0)
    assert not waiting.done.is_set(), "passed while the old image runs"
    rollout(kube_client, namespace, "registry.local/web:1.1.0", updatedReplicas=1, availableReplicas=2)
    time.sleep(0.5)
    assert not waiting.done.is_set(), "passed with 1 of 2 replicas updated"
    rollout(kube_client, namespace, "registry.local/web:1.1.0")
    result = waiting.join()
    assert result.steps[-1].message.startswith("Deployment web rolled out (2/2 available); Deployment web: 2 pods")


def test_pods_must_run_the_promoted_digest(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    """A rolled-out Deployment whose new ReplicaSet has a pod reporting another digest fails, naming the pod."""
    good = "registry.local/web@sha256:" + "a" * 64
    make_app(kube_client, namespace, "shop", argo_status(X))
    make_deployment(kube_client, namespace, good)
    apps = k8s.AppsV1Api(kube_client)
    generation = apps.read_namespaced_deployment("web", namespace).metadata.generation
    counts = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    apps.patch_namespaced_deployment_status("web", namespace, {"status": {"observedGeneration": generation, **counts}})
    other = "registry.local/web@sha256:" + "b" * 64
    run_pods(kube_client, namespace, "web", image_ids={"web": other})
    env = env_for(
        "argocd", "shop", namespace, deployments=[{"name": "web", "namespace": namespace, "expect_image": good}]
    )
    with pytest.raises(VerificationError, match=r"pod web-\w+-0 container web runs registry.local/web@sha256:b{64}"):
        verify_environment(kube, env, X, {})
    k8s.CoreV1Api(kube_client).delete_collection_namespaced_pod(namespace)  # the nodes pull the promoted bytes
    run_pods(kube_client, namespace, "web")
    result = verify_environment(kube, env, X, {})
    assert re.search(r"2 pods of ReplicaSet web-\w+ Ready, running sha256:a{12}\.\.\.$", result.steps[-1].message)
    env_off = env_for(
        "argocd",
        "shop",
        namespace,
        deployments=[{"name": "web", "namespace": namespace, "expect_image": good, "pods": False}],
    )
    k8s.CoreV1Api(kube_client).delete_collection_namespaced_pod(namespace)
    assert verify_environment(kube, env_off, X, {}).steps[-1].message == "Deployment web rolled out (2/2 available)"


def test_progress_deadline_exceeded_fails_fast(kube: KubeClient, kube_client: k8s.ApiClient, namespace: str) -> None:
    make_app(kube_client, namespace, "shop", argo_status(X))
    make_deployment(kube_client, namespace, "registry.local/web:1.0.0")
    rollout(
        kube_client,
        namespace,
        "registry.local/web:1.0.0",
        updatedReplicas=1,
        availableReplicas=1,
        readyReplicas=1,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "web-2" has timed out progressing.',
            }
        ],
    )
    env = env_for("argocd", "shop", namespace, deployments=[{"name": "web", "namespace": namespace}])
    with pytest.raises(VerificationError, match='exceeded its progress deadline: ReplicaSet "web-2" has timed out'):
        verify_environment(kube, env, X, {})


def bind_verifier_role(kube_client: k8s.ApiClient, namespace: str, user: str) -> None:
    apply_manifests(kube_client, RBAC_DIR / "verifier-role.yaml")
    k8s.RbacAuthorizationV1Api(kube_client).create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="verifier"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="gitops-promote-verifier"
            ),
            subjects=[k8s.RbacV1Subject(kind="User", name=user, api_group="rbac.authorization.k8s.io")],
        ),
    )


def test_verification_as_least_privilege_user(
    kube_api: LocalKubeAPI, kube_client: k8s.ApiClient, namespace: str, verifier_user: str
) -> None:
    make_app(kube_client, namespace, "shop", argo_status(X))
    make_deployment(kube_client, namespace, "registry.local/web:1.1.0")
    rollout(kube_client, namespace, "registry.local/web:1.1.0")
    env = env_for("argocd", "shop", namespace, deployments=[{"name": "web", "namespace": namespace}])
    config = kube_api.kubeconfig_for(verifier_user)
    verifier = KubeClient(load_api_client(str(config)))
    with pytest.raises(KubeError) as caught:
        verify_environment(verifier, env, X, {})
    message = str(caught.value)
    assert f"patch Application {namespace}/shop: forbidden (403)" in message
    assert 'Missing RBAC rule: apiGroups: ["argoproj.io"], resources: ["applications"], verbs: ["patch"]' in message
    bind_verifier_role(kube_client, namespace, verifier_user)
    deadline = time.monotonic() + 10
    while True:  # RBAC changes reach the authorizer's cache within moments
        try:
            result = verify_environment(verifier, env, X, {})
            break
        except KubeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert result.steps[0].message == f"Synced and Healthy at {X[:12]}"
    assert re.fullmatch(
        r"Deployment web rolled out \(2/2 available\); Deployment web: 2 pods of ReplicaSet web-\w+ Ready",
        result.steps[1].message,
    )


def test_api_clients_are_shared_reread_after_edits_and_pruned(
    kube_api: LocalKubeAPI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(kube_api.kubeconfig.read_text())
    first = load_api_client(str(config))
    assert load_api_client(str(config)) is first  # shared within the process
    config.write_text(config.read_text() + "\n")  # an edited kubeconfig is read again
    edited = load_api_client(str(config))
    assert edited is not first
    assert k8s.VersionApi(edited).get_code().major == "1"
    ttl = kube_module._CLIENT_TTL_SECONDS
    monkeypatch.setattr(kube_module, "_CLIENT_TTL_SECONDS", 0.0)  # every cached client's time is up
    renewed = load_api_client(str(config))
    assert renewed is not edited
    assert [api for _, api in kube_module._clients.values() if api in (first, edited)] == []  # pruned
    monkeypatch.setattr(kube_module, "_CLIENT_TTL_SECONDS", ttl)
    assert load_api_client(str(config)) is renewed


def test_kubeconfig_errors_name_the_file(tmp_path: Any) -> None:
    with pytest.raises(KubeError, match=r"cannot load Kubernetes credentials from .*nope.yaml"):
        load_api_client(str(tmp_path / "nope.yaml"))
