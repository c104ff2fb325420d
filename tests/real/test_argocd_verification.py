"""Verification against the real Argo CD (application controller + repo server v3.6.1): a commit pushed to a
loopback Git server, compared and synced by the real controller, rolled out by the real controller-manager and
scheduler onto a KWOK node. Nothing in these tests writes a status. The verifier reads as the least-privileged
user (manifests/rbac/verifier-role.yaml, bound in the test's namespace and in argocd's)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from pipeline.model import Environment
from sandbox.cluster import ARGOCD_NAMESPACE
from tasks.kube import KubeClient, VerificationError
from tasks.verification import verify_environment
from tests.support.argosite import ApplicationRecorder, ArgoSite, served_argo_site
from tests.support.fluxsite import IMAGE, KUSTOMIZATION_FILE, deployment

pytestmark = [pytest.mark.kube, pytest.mark.real_controllers]

READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"  # sandbox/kwok/stages.yaml: hold a pod's readiness
NEVER_READY = "never-ready.sandbox.promote"  # sandbox/kwok/stages.yaml: a pod that never gets ready
VERIFY_TIMEOUT = 300.0  # far above every failure's expected time: a failure must come from Argo CD's report


def argo_env(
    application: str,
    namespace: str,
    *,
    sync: bool = False,
    image: str | None = None,
    refresh: str = "normal",
    source_index: int | None = None,
) -> Environment:
    deployments: list[dict[str, Any]] = [{"name": "web", "namespace": namespace, "container": "web"}]
    if image:
        deployments[0]["expect_image"] = image
    tracks: dict[str, Any] = {"kind": "tag", "application_file": "apps/web.yaml"}
    if source_index is not None:
        tracks["source_index"] = source_index
    gitops = {"kind": "argocd", "name": application, "namespace": ARGOCD_NAMESPACE, "sync": sync, "refresh": refresh}
    return Environment.model_validate(
        {
            "name": "staging",
            "tracks": tracks,
            "verify": {
                "gitops": gitops,
                "deployments": deployments,
                "timeout_seconds": VERIFY_TIMEOUT,
            },
        }
    )


@pytest.fixture
def site(real_admin: k8s.ApiClient, real_namespace: str, tmp_path: Path) -> Iterator[ArgoSite]:
    with served_argo_site(real_admin, real_namespace, tmp_path / "git") as served:
        yield served


@pytest.fixture
def kube(real_verifier: k8s.ApiClient) -> KubeClient:
    return KubeClient(real_verifier)


def start(site: ArgoSite, *, auto_sync: bool = True) -> tuple[str, str]:
    """Release 1.0.0 synced by Argo CD and rolled out: (the Application's name, the commit)."""
    first = site.create_origin(
        {"deploy/kustomization.yaml": KUSTOMIZATION_FILE, "deploy/deployment.yaml": deployment()}
    )
    name = site.create_application("deploy", auto_sync=True)
    site.wait_until_healthy(name, first)
    if not auto_sync:
        app = site.application(name)
        app["spec"].pop("syncPolicy", None)
        k8s.CustomObjectsApi(site.api).replace_namespaced_custom_object(
            "argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications", name, app
        )
    return name, first


def rolled_out(api: k8s.ApiClient, namespace: str, image: str, replicas: int = 2) -> bool:
    d: Any = k8s.AppsV1Api(api).read_namespaced_deployment("web", namespace)
    return bool(
        d.spec.template.spec.containers[0].image == image
        and (d.status.observed_generation or 0) >= d.metadata.generation
        and d.status.updated_replicas == replicas
        and d.status.available_replicas == replicas
    )


def test_auto_sync_passes_once_argo_cd_synced_our_commit_and_the_new_pods_are_ready(
    site: ArgoSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    name, first = start(site)
    image = f"{IMAGE}:1.0.1"
    new = site.push({"deploy/deployment.yaml": deployment(image=image, annotations={READY_DELAY: "3s"})}, "web 1.0.1")
    with ApplicationRecorder(real_admin) as recorder:
        began = time.monotonic()
        result = verify_environment(kube, argo_env(name, real_namespace, image=image), new, {})
        took = time.monotonic() - began
        time.sleep(1)  # the versions written around the pass reach the recorder too
    message = f"Synced and Healthy at {new[:12]}"
    recorder.save("auto-sync-rollout", name, revision=new, previous=first, expect="ready", message=message)
    # Not the old commit's Healthy: Argo CD synced ours, and the new pods (held 3 s by KWOK) are ready.
    status = site.application(name)["status"]
    assert status["sync"]["revision"] == new and status["health"]["status"] == "Healthy"
    assert rolled_out(real_admin, real_namespace, image)
    assert took >= 3.0, f"passed after {took:.1f}s, before the pods' 3 s readiness delay ran out"
    assert "Synced and Healthy" in result.summary()


def test_sync_true_with_auto_sync_off_starts_the_sync_itself(
    site: ArgoSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    name, first = start(site, auto_sync=False)
    image = f"{IMAGE}:1.0.2"
    new = site.push({"deploy/deployment.yaml": deployment(image=image)}, "web 1.0.2")
    with ApplicationRecorder(real_admin) as recorder:
        verify_environment(kube, argo_env(name, real_namespace, sync=True, image=image), new, {})
        time.sleep(1)
    message = f"Synced and Healthy at {new[:12]}"
    recorder.save("sync-started-by-us", name, revision=new, previous=first, expect="ready", message=message)
    status = site.application(name)["status"]
    assert status["operationState"]["syncResult"]["revision"] == new
    assert rolled_out(real_admin, real_namespace, image)


def test_a_release_that_never_gets_ready_fails_with_the_deployment_s_own_condition(
    site: ArgoSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    name, first = start(site)
    image = f"{IMAGE}:1.0.3"
    broken = deployment(image=image, labels={NEVER_READY: "true"})  # progressDeadlineSeconds: 10
    new = site.push({"deploy/deployment.yaml": broken}, "web 1.0.3 (broken)")
    with ApplicationRecorder(real_admin) as recorder:
        began = time.monotonic()
        with pytest.raises(VerificationError) as failure:
            verify_environment(kube, argo_env(name, real_namespace, image=image), new, {})
        took = time.monotonic() - began
        time.sleep(1)
    recorder.save("degraded", name, revision=new, previous=first, expect="failed", message="application is Degraded")
    message = str(failure.value)
    assert "Degraded" in message, message
    # The cause, from the Deployment itself (Argo CD 3.x keeps no per-resource health in its status).
    assert f"Deployment {real_namespace}/web: ProgressDeadlineExceeded" in message, message
    assert "has timed out progressing" in message, message
    assert took < VERIFY_TIMEOUT / 3, f"took {took:.0f}s: the failure must come from Argo CD's report"


def test_a_path_that_does_not_exist_fails_fast_and_names_it(
    site: ArgoSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    first = site.create_origin(
        {"deploy/kustomization.yaml": KUSTOMIZATION_FILE, "deploy/deployment.yaml": deployment()}
    )
    began = time.monotonic()
    with ApplicationRecorder(real_admin) as recorder:
        name = site.create_application("no/such/path")
        with pytest.raises(VerificationError) as failure:
            verify_environment(kube, argo_env(name, real_namespace), first, {})
        time.sleep(1)
    recorder.save("comparison-error", name, revision=first, previous="", expect="failed", message="ComparisonError")
    message = str(failure.value)
    assert "ComparisonError" in message and "no/such/path" in message, message
    assert time.monotonic() - began < VERIFY_TIMEOUT / 3


def test_a_multi_source_application_is_judged_by_its_own_source_s_revision(
    site: ArgoSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    """status.sync.revisions[] holds one revision per source: ours is source_index's, not the first's."""
    files = {
        "deploy/kustomization.yaml": KUSTOMIZATION_FILE,
        "deploy/deployment.yaml": deployment(),
        "extra/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\ndata: {a: b}\n",
    }
    first = site.create_origin(files)
    pinned = site.tag("config-1")  # the first source stays at this tag
    name = site.create_application("extra", revision="config-1", more=(("deploy", "main"),))
    site.wait_until_healthy(name, pinned)
    image = f"{IMAGE}:1.0.4"
    new = site.push({"deploy/deployment.yaml": deployment(image=image)}, "web 1.0.4")
    verify_environment(kube, argo_env(name, real_namespace, image=image, source_index=1), new, {})
    revisions = site.application(name)["status"]["sync"]["revisions"]
    assert revisions == [pinned, new] and first != new
    assert rolled_out(real_admin, real_namespace, image)


def test_a_hard_refresh_is_asked_for_and_argo_cd_takes_the_annotation_away(
    site: ArgoSite, kube: KubeClient, real_namespace: str
) -> None:
    name, _first = start(site)
    image = f"{IMAGE}:1.0.5"
    new = site.push({"deploy/deployment.yaml": deployment(image=image)}, "web 1.0.5")
    verify_environment(kube, argo_env(name, real_namespace, image=image, refresh="hard"), new, {})
    deadline = time.monotonic() + 60
    annotations: dict[str, str] = {"argocd.argoproj.io/refresh": "hard"}
    while time.monotonic() < deadline and "argocd.argoproj.io/refresh" in annotations:
        annotations = site.application(name)["metadata"].get("annotations") or {}
        time.sleep(0.3)
    assert "argocd.argoproj.io/refresh" not in annotations  # handled: the controller removes it
