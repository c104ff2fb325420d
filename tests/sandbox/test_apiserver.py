"""The local kube-apiserver behaves like a cluster where it matters to verification: objects, /status, RBAC.

Nothing here runs a controller; these tests pin down the facts the other kube tests build on (which
resources have a /status subresource, what bumps metadata.generation, what the verifier role allows).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client import ApiException
from kubernetes.config import new_client_from_config

from sandbox.apiserver import (
    RBAC_DIR,
    KubeBinariesUnavailableError,
    LocalKubeAPI,
    LocalKubeAPIError,
    apply_manifests,
    delete_namespace,
)

pytestmark = pytest.mark.kube

ARGO = ("argoproj.io", "v1alpha1", "applications")
KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
GITREPO = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
VERIFIER_ROLE = RBAC_DIR / "verifier-role.yaml"


def status_of(call: Callable[[], object]) -> int:
    """The HTTP status an API call ends with (200 when it raises nothing)."""
    try:
        call()
    except ApiException as exc:
        assert exc.status is not None
        return exc.status
    return 200


def application(name: str, revision: str = "v1.0.0") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/app.git", "path": "deploy", "targetRevision": revision},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "app"},
        },
    }


def kustomization(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name},
        "spec": {
            "interval": "10m",
            "path": "./deploy",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": name},
        },
    }


def gitrepository(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"interval": "1m", "url": "https://git.example/app.git", "ref": {"branch": "main"}},
    }


def deployment(name: str, image: str = "registry.example/app:1.0.0") -> k8s.V1Deployment:
    labels = {"app": name}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1DeploymentSpec(
            replicas=2,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image=image)]),
            ),
        ),
    )


def create(api_client: k8s.ApiClient, namespace: str, kind: tuple[str, str, str], body: dict[str, Any]) -> Any:
    group, version, plural = kind
    return k8s.CustomObjectsApi(api_client).create_namespaced_custom_object(group, version, namespace, plural, body)


def wait_until_allowed(api_client: k8s.ApiClient, verb: str, group: str, resource: str, namespace: str | None) -> None:
    """RBAC reaches the authorizer through an informer: wait (briefly) until a new binding is in effect."""
    review = k8s.V1SelfSubjectAccessReview(
        spec=k8s.V1SelfSubjectAccessReviewSpec(
            resource_attributes=k8s.V1ResourceAttributes(verb=verb, group=group, resource=resource, namespace=namespace)
        )
    )
    authz = k8s.AuthorizationV1Api(api_client)
    deadline = time.monotonic() + 120
    while not authz.create_self_subject_access_review(review).status.allowed:
        assert time.monotonic() < deadline, f"{verb} {resource} still denied 120 s after the binding was created"
        time.sleep(0.05)


def test_server_answers_with_token_auth_and_rejects_unknown_tokens(kube_api: LocalKubeAPI, kube_client: k8s.ApiClient):
    assert kube_api.ready_seconds is not None
    assert kube_api.started_at is not None
    version = k8s.VersionApi(kube_client).get_code()
    assert (version.major, version.minor) == ("1", "37")
    names = {ns.metadata.name for ns in k8s.CoreV1Api(kube_client).list_namespace().items}
    assert "kube-system" in names

    stranger = new_client_from_config(config_file=str(kube_api.kubeconfig_for("stranger", secrets.token_urlsafe())))
    assert status_of(lambda: k8s.CoreV1Api(stranger).list_namespace()) == 401
    assert kube_api.kubeconfig.stat().st_mode & 0o077 == 0  # it holds the admin token: owner-only


def test_namespaces_and_deployments_are_stored_and_status_is_written_through_status(
    kube_client: k8s.ApiClient, namespace: str
):
    apps = k8s.AppsV1Api(kube_client)
    created = apps.create_namespaced_deployment(namespace, deployment("web"))
    assert created.metadata.generation == 1
    assert created.status.observed_generation is None  # no controller: nobody observes it

    # What a Deployment controller would write, through /status: the generation does not move.
    # The server validates it as it would a controller's (availableReplicas <= readyReplicas <= replicas).
    counts = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}
    status = {"status": {"observedGeneration": 1, **counts}}
    after_status = apps.patch_namespaced_deployment_status("web", namespace, status)
    assert after_status.metadata.generation == 1
    assert after_status.status.updated_replicas == 2

    # A new image is a spec change: the generation moves and the status is now stale.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "registry.example/app:1.1.0"}]}}}}
    after_spec = apps.patch_namespaced_deployment("web", namespace, patch)
    assert after_spec.metadata.generation == 2
    assert after_spec.status.observed_generation == 1


def test_argocd_application_has_no_status_subresource(kube_client: k8s.ApiClient, namespace: str):
    custom = k8s.CustomObjectsApi(kube_client)
    body = {**application("shop"), "status": {"sync": {"status": "Synced", "revision": "abc"}}}
    created = create(kube_client, namespace, ARGO, body)
    assert created["status"]["sync"]["status"] == "Synced"  # the status is part of the object itself

    patch = {"status": {"health": {"status": "Healthy"}}}
    assert (
        status_of(lambda: custom.patch_namespaced_custom_object_status(*ARGO[:2], namespace, ARGO[2], "shop", patch))
        == 404
    )

    # As for Argo CD's controller: status goes in with an ordinary patch, and the generation counts it.
    patched = custom.patch_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2], "shop", patch)
    assert patched["status"] == {"sync": {"status": "Synced", "revision": "abc"}, "health": {"status": "Healthy"}}
    assert patched["metadata"]["generation"] == created["metadata"]["generation"] + 1
    annotated = custom.patch_namespaced_custom_object(
        *ARGO[:2], namespace, ARGO[2], "shop", {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}
    )
    assert annotated["metadata"]["generation"] == patched["metadata"]["generation"]  # metadata alone does not count


@pytest.mark.parametrize("kind", [KUSTOMIZATION, GITREPO], ids=["kustomization", "gitrepository"])
def test_flux_objects_have_a_status_subresource(kube_client: k8s.ApiClient, namespace: str, kind: tuple[str, str, str]):
    group, version, plural = kind
    custom = k8s.CustomObjectsApi(kube_client)
    body = (kustomization if kind == KUSTOMIZATION else gitrepository)("apps")
    created = create(kube_client, namespace, kind, {**body, "status": {"observedGeneration": 7}})
    assert created["metadata"]["generation"] == 1
    assert created["status"] == {"observedGeneration": -1}  # the upstream default; a status in the body is dropped

    # Fields both kinds have, each condition complete: the upstream schemas require type, status, reason,
    # message and lastTransitionTime, and drop fields they do not define.
    condition = {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "ok"}
    ready = {
        "observedGeneration": 1,
        "lastHandledReconcileAt": "2026-12-06T10:00:00Z",
        "conditions": [{**condition, "lastTransitionTime": "2026-12-06T10:00:00Z"}],
    }
    after_status = custom.patch_namespaced_custom_object_status(
        group, version, namespace, plural, "apps", {"status": ready}
    )
    assert after_status["status"] == ready
    assert after_status["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as incomplete:  # Flux's own schema is in force: what a controller never writes
        custom.patch_namespaced_custom_object_status(
            group, version, namespace, plural, "apps", {"status": {"conditions": [condition]}}
        )
    assert incomplete.value.status == 422

    ignored = custom.patch_namespaced_custom_object(
        group, version, namespace, plural, "apps", {"status": {"observedGeneration": 9}}
    )
    assert ignored["status"] == ready  # the main endpoint leaves status alone

    after_spec = custom.patch_namespaced_custom_object(
        group, version, namespace, plural, "apps", {"spec": {"interval": "5m"}}
    )
    assert after_spec["metadata"]["generation"] == 2
    assert after_spec["status"]["observedGeneration"] == 1


def test_token_user_without_a_binding_is_forbidden(verifier_client: k8s.ApiClient, namespace: str):
    custom = k8s.CustomObjectsApi(verifier_client)
    assert status_of(lambda: custom.list_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2])) == 403
    assert status_of(lambda: custom.list_cluster_custom_object(*ARGO)) == 403
    assert status_of(lambda: k8s.AppsV1Api(verifier_client).list_namespaced_deployment(namespace)) == 403


def test_verifier_role_bound_in_a_namespace_reads_watches_and_annotates_but_changes_nothing_else(
    kube_client: k8s.ApiClient, verifier_client: k8s.ApiClient, verifier_user: str, namespace: str
):
    apply_manifests(kube_client, VERIFIER_ROLE)
    create(kube_client, namespace, ARGO, application("shop"))
    create(kube_client, namespace, KUSTOMIZATION, kustomization("shop"))
    create(kube_client, namespace, GITREPO, gitrepository("shop"))
    k8s.AppsV1Api(kube_client).create_namespaced_deployment(namespace, deployment("shop"))

    custom = k8s.CustomObjectsApi(verifier_client)
    assert status_of(lambda: custom.list_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2])) == 403

    k8s.RbacAuthorizationV1Api(kube_client).create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="gitops-promote-verifier"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="gitops-promote-verifier"
            ),
            subjects=[k8s.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=verifier_user)],
        ),
    )
    wait_until_allowed(verifier_client, "list", "argoproj.io", "applications", namespace)

    # Read: the GitOps objects and the Deployments they roll out.
    apps = custom.list_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2])
    assert [item["metadata"]["name"] for item in apps["items"]] == ["shop"]
    assert custom.get_namespaced_custom_object(*KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], "shop")["spec"]["path"]
    assert custom.list_namespaced_custom_object(*GITREPO[:2], namespace, GITREPO[2])["items"]
    assert k8s.AppsV1Api(verifier_client).read_namespaced_deployment("shop", namespace).metadata.name == "shop"

    # Ask for a refresh / reconcile (annotations), then see our own change arrive on a watch.
    refresh = {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}}
    custom.patch_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2], "shop", refresh)
    token = str(time.time_ns())
    reconcile = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}}
    requested = custom.patch_namespaced_custom_object(
        *KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], "shop", reconcile
    )
    assert requested["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == token
    seen = None
    for event in watch.Watch().stream(
        custom.list_namespaced_custom_object,
        *ARGO[:2],
        namespace,
        ARGO[2],
        resource_version=apps["metadata"]["resourceVersion"],
        timeout_seconds=5,
    ):
        assert event is not None and event["type"] != "BOOKMARK"
        seen = event
        break
    assert seen is not None and seen["type"] == "MODIFIED"
    assert seen["object"]["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "normal"
    deployments = k8s.AppsV1Api(verifier_client).list_namespaced_deployment(namespace)
    rollout = {"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}}
    k8s.AppsV1Api(kube_client).patch_namespaced_deployment_status("shop", namespace, rollout)
    for deployment_event in watch.Watch().stream(
        k8s.AppsV1Api(verifier_client).list_namespaced_deployment,
        namespace,
        resource_version=deployments.metadata.resource_version,
        timeout_seconds=5,
    ):
        assert deployment_event is not None and deployment_event["type"] == "MODIFIED"
        assert deployment_event["object"].status.ready_replicas == 2
        break
    else:
        pytest.fail("the verifier's watch on Deployments saw nothing")

    # Nothing else: no create, delete, status writes, Deployments changes, secrets, or other namespaces.
    apps_api = k8s.AppsV1Api(verifier_client)
    denied = {
        "create application": lambda: create(verifier_client, namespace, ARGO, application("other")),
        "delete application": lambda: custom.delete_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2], "shop"),
        "create kustomization": lambda: create(verifier_client, namespace, KUSTOMIZATION, kustomization("other")),
        "delete kustomization": lambda: custom.delete_namespaced_custom_object(
            *KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], "shop"
        ),
        "patch kustomization status": lambda: custom.patch_namespaced_custom_object_status(
            *KUSTOMIZATION[:2], namespace, KUSTOMIZATION[2], "shop", {"status": {"observedGeneration": 1}}
        ),
        "create deployment": lambda: apps_api.create_namespaced_deployment(namespace, deployment("other")),
        "patch deployment": lambda: apps_api.patch_namespaced_deployment("shop", namespace, refresh),
        "delete deployment": lambda: apps_api.delete_namespaced_deployment("shop", namespace),
        "read secrets": lambda: k8s.CoreV1Api(verifier_client).list_namespaced_secret(namespace),
        "list applications cluster-wide": lambda: custom.list_cluster_custom_object(*ARGO),
        "list applications in default": lambda: custom.list_namespaced_custom_object(*ARGO[:2], "default", ARGO[2]),
    }
    assert {what: status_of(call) for what, call in denied.items()} == dict.fromkeys(denied, 403)


def test_verifier_role_bound_cluster_wide_reads_every_namespace(
    kube_client: k8s.ApiClient, verifier_client: k8s.ApiClient, verifier_user: str, namespace: str
):
    apply_manifests(kube_client, VERIFIER_ROLE)
    create(kube_client, namespace, ARGO, application("shop"))
    rbac = k8s.RbacAuthorizationV1Api(kube_client)
    binding = f"gitops-promote-verifier-{namespace}"
    rbac.create_cluster_role_binding(
        k8s.V1ClusterRoleBinding(
            metadata=k8s.V1ObjectMeta(name=binding),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="gitops-promote-verifier"
            ),
            subjects=[k8s.RbacV1Subject(api_group="rbac.authorization.k8s.io", kind="User", name=verifier_user)],
        )
    )
    try:
        wait_until_allowed(verifier_client, "list", "argoproj.io", "applications", None)
        custom = k8s.CustomObjectsApi(verifier_client)
        names = {
            (i["metadata"]["namespace"], i["metadata"]["name"])
            for i in custom.list_cluster_custom_object(*ARGO)["items"]
        }
        assert (namespace, "shop") in names
        assert status_of(lambda: custom.list_cluster_custom_object(*KUSTOMIZATION)) == 200
        assert status_of(lambda: k8s.AppsV1Api(verifier_client).list_deployment_for_all_namespaces()) == 200
        assert status_of(lambda: custom.delete_namespaced_custom_object(*ARGO[:2], namespace, ARGO[2], "shop")) == 403
    finally:
        rbac.delete_cluster_role_binding(binding)


def test_delete_namespace_removes_the_namespace_and_everything_in_it(kube_client: k8s.ApiClient):
    name = f"t-delete-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    held = {
        **application("held"),
        "metadata": {"name": "held", "finalizers": ["resources-finalizer.argocd.argoproj.io"]},
    }
    create(kube_client, name, ARGO, held)
    create(kube_client, name, KUSTOMIZATION, kustomization("apps"))
    k8s.AppsV1Api(kube_client).create_namespaced_deployment(name, deployment("web"))

    delete_namespace(kube_client, name)

    assert status_of(lambda: core.read_namespace(name)) == 404  # not stuck in Terminating
    custom = k8s.CustomObjectsApi(kube_client)
    left = [
        *(i["metadata"]["namespace"] for i in custom.list_cluster_custom_object(*ARGO)["items"]),
        *(i["metadata"]["namespace"] for i in custom.list_cluster_custom_object(*KUSTOMIZATION)["items"]),
        *(d.metadata.namespace for d in k8s.AppsV1Api(kube_client).list_deployment_for_all_namespaces().items),
    ]
    assert name not in left


def test_missing_binaries_without_go_fail_with_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (bin_dir / "bash").symlink_to(bash)
    monkeypatch.setenv("PATH", str(bin_dir))  # bash, and no Go
    monkeypatch.setenv("PROMOTE_KUBE_BIN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("PROMOTE_KUBE_BIN_DIR", raising=False)

    with pytest.raises(KubeBinariesUnavailableError, match=r"Install Go 1\.25\+"):
        LocalKubeAPI.ensure_binaries()


def test_a_server_not_ready_in_time_fails_with_its_log_and_leaves_nothing_running(
    kube_api: LocalKubeAPI, tmp_path: Path
):
    workdir = tmp_path / "impatient"
    impatient = LocalKubeAPI(workdir=workdir, startup_timeout=0.2)  # kube_api: the binaries exist
    with pytest.raises(LocalKubeAPIError, match=r"not ready within 0s") as failure:
        impatient.start()
    assert re.search(r"last lines of .*kube-apiserver\.log:\n[IWE]\d{4} ", str(failure.value))  # klog lines
    running = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(workdir).encode() in cmdline.read_bytes():
                running.append(cmdline.parent.name)
    assert running == []
