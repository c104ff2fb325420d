"""Verification against the real Flux controllers: a commit pushed to a loopback Git server, fetched by the real
source-controller, applied by the real kustomize-controller, rolled out by the real controller-manager and
scheduler onto a KWOK node. Nothing in these tests writes a status.

Each test records what the controllers wrote (tests/support/fluxsite.py StatusRecorder) and checks the moment
verification answered against it: not on the previous revision's Ready, not before the rollout completed, and
within seconds of Flux reporting a failure. With PROMOTE_RECORD_FLUX_FIXTURES=1 the recordings are written to
tests/data/flux/, which tests/tasks/test_readiness_recorded.py replays through the readiness rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from pipeline.model import Environment
from tasks.kube import KubeClient, VerificationError
from tasks.readiness import flux_revision_matches
from tasks.verification import verify_environment
from tests.support.fluxsite import IMAGE, KUSTOMIZATION_FILE, FluxSite, StatusRecorder, deployment, served_site

pytestmark = [pytest.mark.kube, pytest.mark.real_controllers]

READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"  # sandbox/kwok/stages.yaml: hold a pod's readiness
VERIFY_TIMEOUT = 300.0  # far above every failure's expected time: a failure must come from Flux's report


def flux_env(namespace: str, name: str = "web", *, deployments: list[dict[str, Any]] | None = None) -> Environment:
    return Environment.model_validate(
        {
            "name": "staging",
            "tracks": {"kind": "tag", "application_file": "apps/web.yaml"},
            "verify": {
                "gitops": {"kind": "flux", "name": name, "namespace": namespace},
                "deployments": deployments or [],
                "timeout_seconds": VERIFY_TIMEOUT,
                "health_grace_seconds": 0,
            },
        }
    )


def web_deployment_check(namespace: str, image: str) -> list[dict[str, Any]]:
    return [{"name": "web", "namespace": namespace, "container": "web", "expect_image": image}]


@pytest.fixture
def site(real_admin: k8s.ApiClient, real_namespace: str, tmp_path: Path) -> Iterator[FluxSite]:
    with served_site(real_admin, real_namespace, tmp_path / "git") as served:
        yield served


@pytest.fixture
def kube(real_verifier: k8s.ApiClient) -> KubeClient:
    """Verification as the least-privileged verifier (manifests/rbac/verifier-role.yaml, bound in the namespace)."""
    return KubeClient(real_verifier)


def start(site: FluxSite, *, wait: bool = True, **spec: Any) -> str:
    """Release 1.0.0 applied by Flux and rolled out; returns its commit."""
    first = site.create_origin(
        {"deploy/kustomization.yaml": KUSTOMIZATION_FILE, "deploy/deployment.yaml": deployment()}
    )
    site.create_source()
    site.create_kustomization("web", "./deploy", wait=wait, **spec)
    site.wait_until_applied("web", first)
    return first


def ready_at(commit: str) -> Any:
    def check(ks: dict[str, Any]) -> bool:
        status = ks.get("status") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return ready.get("status") == "True" and flux_revision_matches(status.get("lastAppliedRevision"), commit)

    return check


def failed_at(commit: str, reason: str) -> Any:
    def check(ks: dict[str, Any]) -> bool:
        status = ks.get("status") or {}
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        return ready.get("reason") == reason and flux_revision_matches(status.get("lastAttemptedRevision"), commit)

    return check


def rolled_out(image: str, replicas: int = 2) -> Any:
    def check(d: dict[str, Any]) -> bool:
        status = d.get("status") or {}
        images = [c.get("image") for c in d["spec"]["template"]["spec"]["containers"]]
        return (
            images == [image]
            and status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas") == replicas
            and status.get("replicas") == replicas
            and status.get("availableReplicas") == replicas
        )

    return check


# --- passes exactly when the release runs ------------------------------------------------------------------


def test_wait_true_passes_once_flux_applied_our_commit_and_the_new_pods_are_ready(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    first = start(site, wait=True)
    image = f"{IMAGE}:1.0.1"
    new = site.push({"deploy/deployment.yaml": deployment(image=image, annotations={READY_DELAY: "3s"})}, "web 1.0.1")
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        result = verify_environment(kube, flux_env(real_namespace), new, {})
        passed = time.monotonic()
    live = site.deployment()  # read right after the pass: the 3 s readiness delay leaves no room for a race
    assert "Ready and applied at" in result.steps[0].message
    # The previous revision's Ready=True was there while we waited (the watch's first version), and did not pass.
    assert recorder.first("Kustomization", "web", ready_at(first)) is not None
    assert recorder.first("Kustomization", "web", ready_at(new)) is not None
    # wait: true: Flux says Ready only after the rollout (its health check), and we pass only after Flux.
    assert passed - began >= 3.0, "passed before the new pods' 3 s readiness delay was over"
    assert live.spec.template.spec.containers[0].image == image
    assert (live.status.updated_replicas, live.status.available_replicas) == (2, 2)
    recorder.save("wait-true-rollout", "web", revision=new, previous=first, expect="ready", message="Ready and applied")


def test_wait_false_deployment_check_holds_until_the_real_rollout_completes(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    first = start(site, wait=False)
    image = f"{IMAGE}:1.0.1"
    new = site.push({"deploy/deployment.yaml": deployment(image=image, annotations={READY_DELAY: "4s"})}, "web 1.0.1")
    env = flux_env(real_namespace, deployments=web_deployment_check(real_namespace, image))
    with StatusRecorder(real_admin, real_namespace) as recorder:
        result = verify_environment(kube, env, new, {})
        live = site.deployment()
    flux_ready = recorder.first("Kustomization", "web", ready_at(new))
    rollout = recorder.first("Deployment", "web", rolled_out(image))
    assert flux_ready is not None and rollout is not None
    # wait: false: Flux said Ready as soon as it applied, seconds before the pods were ready; we waited for them.
    assert rollout - flux_ready > 2.0
    assert result.steps[-1].message == "Deployment web rolled out (2/2 available)"
    assert result.steps[-1].seconds > 2.0, result.summary()
    assert (live.status.updated_replicas, live.status.available_replicas) == (2, 2)
    recorder.save(
        "wait-false-applied", "web", revision=new, previous=first, expect="ready", message="Ready and applied"
    )


def test_health_checks_hold_flux_ready_until_the_listed_deployment_rolled_out(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    health = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": real_namespace}]
    first = start(site, wait=False, healthChecks=health)
    image = f"{IMAGE}:1.0.1"
    new = site.push({"deploy/deployment.yaml": deployment(image=image, annotations={READY_DELAY: "3s"})}, "web 1.0.1")
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        verify_environment(kube, flux_env(real_namespace), new, {})
        passed = time.monotonic()
        live = site.deployment()
    assert passed - began >= 3.0, "passed before the new pods' 3 s readiness delay was over"
    assert (live.status.updated_replicas, live.status.available_replicas) == (2, 2)
    assert recorder.first("Deployment", "web", rolled_out(image)) is not None
    recorder.save("health-checks", "web", revision=new, previous=first, expect="ready", message="Ready and applied")


# --- fails within seconds of Flux reporting the failure ----------------------------------------------------


def assert_failed_soon_after(recorder: StatusRecorder, reported: float | None, failed: float, began: float) -> None:
    """Verification failed within a few seconds of the controllers' report, long before its own timeout."""
    assert reported is not None, f"the controllers never reported the failure: {recorder.events[-3:]}"
    lag = failed - reported
    assert lag < 10.0, f"verification failed {lag:.1f}s after Flux reported the failure"
    assert failed - began < VERIFY_TIMEOUT / 2


def test_pods_that_never_get_ready_fail_on_flux_health_check_failed(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    first = start(site, wait=True, timeout="40s")
    broken = deployment(image=f"{IMAGE}:1.0.1", labels={"never-ready.sandbox.promote": "true"})
    new = site.push({"deploy/deployment.yaml": broken}, "web 1.0.1 (its pods never get ready)")
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        with pytest.raises(VerificationError) as caught:
            verify_environment(kube, flux_env(real_namespace), new, {})
        failed = time.monotonic()
    message = str(caught.value)
    assert "Ready=False (HealthCheckFailed)" in message, message
    reported = recorder.first("Kustomization", "web", failed_at(new, "HealthCheckFailed"))
    assert_failed_soon_after(recorder, reported, failed, began)
    # The real controller-manager's verdict on the Deployment is what Flux's health check read.
    deadline = recorder.first(
        "Deployment",
        "web",
        lambda d: any(
            c.get("reason") == "ProgressDeadlineExceeded" for c in (d.get("status") or {}).get("conditions") or []
        ),
    )
    # (arrival times on two watch streams: a second of slack for the order in which they were delivered)
    assert deadline is not None and reported is not None and deadline <= reported + 1.0
    recorder.save(
        "health-check-failed", "web", revision=new, previous=first, expect="failed", message="HealthCheckFailed"
    )


def test_a_kustomization_that_does_not_build_fails_on_build_failed(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    first = start(site, wait=True)
    bad = KUSTOMIZATION_FILE + "  - service.yaml\n"  # a resource that is not in the repository
    new = site.push({"deploy/kustomization.yaml": bad}, "web: add a service (forgot the file)")
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        with pytest.raises(VerificationError) as caught:
            verify_environment(kube, flux_env(real_namespace), new, {})
        failed = time.monotonic()
    assert "Ready=False (BuildFailed)" in str(caught.value), str(caught.value)
    reported = recorder.first("Kustomization", "web", failed_at(new, "BuildFailed"))
    assert_failed_soon_after(recorder, reported, failed, began)
    recorder.save("build-failed", "web", revision=new, previous=first, expect="failed", message="BuildFailed")


def test_wait_false_pods_that_never_get_ready_fail_on_the_real_progress_deadline(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    start(site, wait=False)
    image = f"{IMAGE}:1.0.1"
    broken = deployment(image=image, labels={"never-ready.sandbox.promote": "true"})
    new = site.push({"deploy/deployment.yaml": broken}, "web 1.0.1 (its pods never get ready)")
    env = flux_env(real_namespace, deployments=web_deployment_check(real_namespace, image))
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        with pytest.raises(VerificationError) as caught:
            verify_environment(kube, env, new, {})
        failed = time.monotonic()
    assert "exceeded its progress deadline" in str(caught.value), str(caught.value)
    reported = recorder.first(
        "Deployment",
        "web",
        lambda d: any(
            c.get("reason") == "ProgressDeadlineExceeded" for c in (d.get("status") or {}).get("conditions") or []
        ),
    )
    assert_failed_soon_after(recorder, reported, failed, began)


def test_an_image_that_differs_from_the_promoted_one_fails_once_flux_applied_it(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    start(site, wait=False)
    # The promotion meant 1.0.1, but the commit Flux applies sets 1.0.2: no later event will change that.
    new = site.push({"deploy/deployment.yaml": deployment(image=f"{IMAGE}:1.0.2")}, "web 1.0.2")
    env = flux_env(real_namespace, deployments=web_deployment_check(real_namespace, f"{IMAGE}:1.0.1"))
    with StatusRecorder(real_admin, real_namespace) as recorder:
        began = time.monotonic()
        with pytest.raises(VerificationError) as caught:
            verify_environment(kube, env, new, {})
        failed = time.monotonic()
    message = str(caught.value)
    assert f"runs {IMAGE}:1.0.2, want {IMAGE}:1.0.1" in message, message
    reported = recorder.first("Kustomization", "web", ready_at(new))
    assert_failed_soon_after(recorder, reported, failed, began)


def test_the_verifier_role_is_enough_and_needed(
    site: FluxSite, real_verifier: k8s.ApiClient, real_namespace: str
) -> None:
    """Least privilege: the verifier's RoleBinding (manifests/rbac/verifier-role.yaml) lets it read and annotate the
    Flux objects and read Deployments, and nothing it does not need: no Secrets, no writes to Deployments."""
    start(site, wait=True)
    review = k8s.AuthorizationV1Api(real_verifier)

    def allowed(verb: str, group: str, resource: str) -> bool:
        body = k8s.V1SelfSubjectAccessReview(
            spec=k8s.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s.V1ResourceAttributes(
                    namespace=real_namespace, verb=verb, group=group, resource=resource
                )
            )
        )
        answer: Any = review.create_self_subject_access_review(body)
        return bool(answer.status.allowed)

    assert allowed("patch", "kustomize.toolkit.fluxcd.io", "kustomizations")
    assert allowed("watch", "apps", "deployments")
    assert not allowed("get", "", "secrets")
    assert not allowed("patch", "apps", "deployments")
    assert not allowed("update", "kustomize.toolkit.fluxcd.io", "kustomizations/status")
