"""Verification against the real Flux controllers: a commit pushed to a loopback Git server, fetched by the real
source-controller, applied by the real kustomize-controller, rolled out by the real controller-manager and
scheduler onto a KWOK node. Nothing in these tests writes a status.

Each test records what the controllers wrote (tests/support/fluxsite.py StatusRecorder) and checks the moment
verification answered against it: not on the previous revision's Ready, not before the rollout completed, and
within seconds of Flux reporting a failure. With PROMOTE_RECORD_FLUX_FIXTURES=1 the recordings are written to
tests/data/flux/, which tests/rules/test_readiness_recorded.py replays through the readiness rules.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from pipeline.model import Environment
from rules.readiness import flux_revision_matches
from tasks.kube import KubeClient, VerificationError
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
    rolled, pods = result.steps[-1].message.split("; ")
    assert rolled == "Deployment web rolled out (2/2 available)"
    assert re.fullmatch(r"Deployment web: 2 pods of ReplicaSet web-\w+ Ready", pods), pods  # the real ReplicaSet's
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


DIGEST = "sha256:" + "d" * 64
OTHER_DIGEST = "sha256:" + "e" * 64


def new_pods(api: k8s.ApiClient, namespace: str, image: str, count: int = 2) -> list[Any]:
    """The pods the real ReplicaSet controller made for ``image``, once there are ``count`` of them."""
    core = k8s.CoreV1Api(api)
    deadline = time.monotonic() + 120
    while True:
        listed: Any = core.list_namespaced_pod(namespace, label_selector="app=web")
        pods = [p for p in listed.items if p.spec.containers[0].image == image and not p.metadata.deletion_timestamp]
        if len(pods) >= count:
            return sorted(pods, key=lambda p: p.metadata.name)
        assert time.monotonic() < deadline, f"the ReplicaSet controller made {len(pods)} of {count} pods of {image}"
        time.sleep(0.2)


def test_pods_running_the_promoted_digest_pass_on_kwok_s_image_ids(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    start(site, wait=False)
    image = f"{IMAGE}:1.0.1@{DIGEST}"
    new = site.push({"deploy/deployment.yaml": deployment(image=image)}, "web 1.0.1 by digest")
    env = flux_env(real_namespace, deployments=web_deployment_check(real_namespace, image))
    result = verify_environment(kube, env, new, {})
    assert result.steps[-1].message.endswith(f"Ready, running {DIGEST[:19]}..."), result.steps[-1].message
    ids = {p.status.container_statuses[0].image_id for p in new_pods(real_admin, real_namespace, image)}
    assert ids == {f"{IMAGE}@{DIGEST}"}  # as KWOK's pod-ready stage wrote them (sandbox/kwok/stages.yaml)


def test_one_pod_on_another_digest_fails_and_names_the_pod(
    site: FluxSite, kube: KubeClient, real_admin: k8s.ApiClient, real_namespace: str
) -> None:
    """The Deployment rolled out and names the digest, yet one node runs other content (a mirror that rewrote
    it): verification reads the new ReplicaSet's pods and fails on that one, not on the Deployment's word."""
    start(site, wait=False)
    image = f"{IMAGE}:1.0.1@{DIGEST}"
    held = deployment(image=image, labels={"hold.sandbox.promote": "true"})
    new = site.push({"deploy/deployment.yaml": held}, "web 1.0.1 by digest")
    env = flux_env(real_namespace, deployments=web_deployment_check(real_namespace, image))
    with ThreadPoolExecutor(1) as pool:
        verifying = pool.submit(verify_environment, kube, env, new, {})
        core = k8s.CoreV1Api(real_admin)
        # The rolling update (maxSurge 1, maxUnavailable 0) makes one new pod, then the next once that one is
        # available: the first runs other content, each is let go (KWOK readies it, writing its imageID) in turn.
        odd = new_pods(real_admin, real_namespace, image, count=1)[0].metadata.name
        core.patch_namespaced_pod(
            odd, real_namespace, {"metadata": {"annotations": {"image-id.sandbox.promote": f"{IMAGE}@{OTHER_DIGEST}"}}}
        )
        assert not verifying.done(), "verification passed while the new pods were held Pending"
        for count in (1, 2):
            for pod in new_pods(real_admin, real_namespace, image, count=count):
                if (pod.metadata.labels or {}).get("hold.sandbox.promote"):
                    release = {"metadata": {"labels": {"hold.sandbox.promote": None}}}
                    core.patch_namespaced_pod(pod.metadata.name, real_namespace, release)
        with pytest.raises(VerificationError) as caught:
            verifying.result(timeout=VERIFY_TIMEOUT)
    message = str(caught.value)
    assert f"pod {odd} container web runs {IMAGE}@{OTHER_DIGEST}, want {DIGEST}" in message, message
    live = site.deployment()  # the Deployment's own status says all is well: only the pods tell
    assert (live.status.updated_replicas, live.status.available_replicas) == (2, 2)


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
    assert allowed("list", "apps", "replicasets") and allowed("list", "", "pods")
    assert not allowed("get", "", "pods/log") and not allowed("create", "", "pods/exec")
    assert not allowed("get", "", "secrets")
    assert not allowed("patch", "apps", "deployments")
    assert not allowed("update", "kustomize.toolkit.fluxcd.io", "kustomizations/status")
