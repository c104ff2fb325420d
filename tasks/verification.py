"""Verify that an environment runs exactly revision X: ask Argo CD / Flux to look now, wait for their status to
say so at X, then wait for each Deployment's rollout of the promoted image and for the pods of its new ReplicaSet
to run it."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.model import ArgoApplicationRef, DeploymentRef, Environment, FluxKustomizationRef
from rules.readiness import Judgement, flux_manages, judge_application, judge_deployment, judge_kustomization
from tasks.health import render
from tasks.kube import (
    APPLICATION,
    DEPLOYMENT,
    GIT_REPOSITORY,
    KUSTOMIZATION,
    POD,
    REPLICASET,
    KubeClient,
    KubeError,
    ObjectRef,
    RequestStats,
    VerificationError,
)
from tasks.pods import POD_TEMPLATE_HASH, judge_pods, new_replicaset
from tasks.strategies import strategy_for

ARGO_REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
FLUX_RECONCILE_ANNOTATION = "reconcile.fluxcd.io/requestedAt"


@dataclass
class StepResult:
    what: str
    message: str
    seconds: float


@dataclass
class VerificationResult:
    environment: str
    revision: str
    steps: list[StepResult] = field(default_factory=list)
    stats: RequestStats = field(default_factory=RequestStats)

    def summary(self) -> str:
        return "; ".join(f"{s.what}: {s.message} ({s.seconds:.1f}s)" for s in self.steps)


def request_argocd_refresh(kube: KubeClient, ref: ObjectRef, mode: str = "normal") -> dict[str, Any]:
    """Argo CD compares the app with Git right away instead of at its next poll (3 min by default). Returns the
    Application as the API server answered the patch."""
    return kube.annotate(ref, {ARGO_REFRESH_ANNOTATION: mode})


TRACKING_ID_ANNOTATION = "argocd.argoproj.io/tracking-id"


def argocd_parent(app: dict[str, Any], controller_namespace: str) -> ObjectRef | None:
    """The Application that manages ``app`` (an app of apps), from the tracking id Argo CD writes on what it
    applies: ``<app>:<group>/<kind>:<namespace>/<name>``, where ``<app>`` is ``<namespace>_<name>`` for an
    Application outside the controller's namespace (argo-cd util/argo/resource_tracking.go). None if there is
    none: the Application was not applied by another."""
    tracking = ((app.get("metadata") or {}).get("annotations") or {}).get(TRACKING_ID_ANNOTATION)
    if not isinstance(tracking, str) or tracking.count(":") < 2:
        return None
    owner, kind, _where = tracking.split(":", 2)
    if kind != "argoproj.io/Application" or not owner:
        return None
    namespace, _, name = owner.rpartition("_")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        return None
    if namespace and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        return None
    return ObjectRef(APPLICATION, namespace or controller_namespace, name)


def request_argocd_sync(kube: KubeClient, ref: ObjectRef, revision: str) -> None:
    """Start a sync operation at ``revision`` (for Applications without auto-sync)."""
    body = {"operation": {"initiatedBy": {"username": "gitops-promote"}, "sync": {"revision": revision}}}
    kube.patch(ref, body)


def deployment_causes(kube: KubeClient, env: Environment, limit: int = 3) -> list[str]:
    """What the verified Deployments say is wrong with them (a Progressing or Available condition that is False,
    with its reason and message), for a failure message; what cannot be read is left out."""
    causes: list[str] = []
    for deployment in env.verify.deployments[:limit]:
        ref = ObjectRef(DEPLOYMENT, deployment.namespace, deployment.name)
        try:
            obj = kube.get(ref)
        except KubeError:
            continue
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") in ("Progressing", "Available") and condition.get("status") == "False":
                reason, text = str(condition.get("reason") or ""), str(condition.get("message") or "")
                causes.append(f"Deployment {ref.namespace}/{ref.name}: {reason}: {text[:300]}".rstrip(": "))
                break
    return causes


def request_flux_reconcile(kube: KubeClient, ks_ref: ObjectRef, *, with_source: bool = True) -> str:
    """Annotate the Kustomization (and its GitRepository) with a fresh token; Flux echoes the token in
    ``status.lastHandledReconcileAt`` once it has handled the request."""
    token = datetime.now(UTC).isoformat(timespec="microseconds")
    if with_source:
        ks = kube.get(ks_ref)
        source = (ks.get("spec") or {}).get("sourceRef") or {}
        if source.get("kind") == "GitRepository" and source.get("name"):
            src_ref = ObjectRef(GIT_REPOSITORY, source.get("namespace") or ks_ref.namespace, source["name"])
            kube.annotate(src_ref, {FLUX_RECONCILE_ANNOTATION: token})
    kube.annotate(ks_ref, {FLUX_RECONCILE_ANNOTATION: token})
    return token


def _wait_argocd(
    kube: KubeClient, gitops: ArgoApplicationRef, revision: str, env: Environment, stats: RequestStats, timeout: float
) -> str:
    ref = ObjectRef(APPLICATION, gitops.namespace, gitops.name)
    source_index = getattr(env.tracks, "source_index", None)
    answered = request_argocd_refresh(kube, ref, gitops.refresh)
    stats.patches += 1
    # An Application applied by another (an app of apps: the tag strategy's Application file) changes only when
    # its parent has compared Git again: ask the parent too, or the change waits for its next poll (3 min by
    # default: the app-of-apps test fails by its 120 s timeout without this, and passes in about 12 s with it).
    parent = argocd_parent(answered, gitops.namespace)
    if parent is not None:
        try:
            request_argocd_refresh(kube, parent, gitops.refresh)
            stats.patches += 1
        except KubeError as exc:  # the verifier may not patch the parent: its own poll brings the change
            kube.log(f"[{env.name}] could not ask {parent} to refresh ({exc}); waiting for its own poll")
    if gitops.sync:
        request_argocd_sync(kube, ref, revision)
        stats.patches += 1
    seen_progressing = False
    rollout_seen = False

    def judge(app: dict[str, Any]) -> Any:
        nonlocal seen_progressing, rollout_seen
        verdict = judge_application(
            app,
            revision,
            source_index=source_index,
            health_grace_seconds=env.verify.health_grace_seconds,
            seen_progressing=seen_progressing,
            rollout_seen=rollout_seen,
        )
        sync = (app.get("status") or {}).get("sync") or {}
        revisions = sync.get("revisions") or []
        if source_index is None:
            synced = sync.get("revision")
        else:
            synced = revisions[source_index] if source_index < len(revisions) else None
        # As waitOnApplicationStatus (argo-cd cmd/argocd/commands/app.go): Degraded after any health other than
        # Unknown or Degraded is a failed rollout; ours counts only healths seen at our revision.
        health = ((app.get("status") or {}).get("health") or {}).get("status")
        if synced == revision and health not in (None, "Unknown", "Degraded"):
            seen_progressing = True
        if synced == revision and health == "Progressing":
            rollout_seen = True  # judged after this version: a Healthy that follows ends the rollout
        return verdict

    _, verdict = kube.wait_for(ref, judge, timeout=timeout, what=f"[{env.name}] {ref}", stats=stats)
    return verdict.message


def _wait_flux(
    kube: KubeClient, gitops: FluxKustomizationRef, revision: str, env: Environment, stats: RequestStats, timeout: float
) -> tuple[str, dict[str, Any]]:
    ref = ObjectRef(KUSTOMIZATION, gitops.namespace, gitops.name)
    token = request_flux_reconcile(kube, ref)
    stats.patches += 2
    ks, verdict = kube.wait_for(
        ref,
        lambda ks: judge_kustomization(ks, revision, requested_at=token),
        timeout=timeout,
        what=f"[{env.name}] {ref}",
        stats=stats,
    )
    return verdict.message, ks


# How long a Deployment that Flux applied at our revision may still show another image before that counts as
# what Git says: a watch or list can be served a moment behind the write Flux made before it said Ready.
FINAL_IMAGE_GRACE_SECONDS = 5.0


def _final_image_judge(
    judge: Callable[[dict[str, Any]], Judgement], final: Callable[[dict[str, Any]], Judgement], since: float
) -> Callable[[dict[str, Any]], Judgement]:
    """``final`` once the grace after ``since`` is over; until then ``judge``, re-judged when the grace ends."""

    def decide(deployment: dict[str, Any]) -> Judgement:
        left = FINAL_IMAGE_GRACE_SECONDS - (time.monotonic() - since)
        if left <= 0:
            return final(deployment)
        verdict = judge(deployment)
        if verdict.state == "waiting" and final(deployment).state == "failed":
            return Judgement.waiting(verdict.message, recheck_in=left)
        return verdict

    return decide


def expected_image_for(deployment: DeploymentRef, env: Environment, values: dict[str, str]) -> str | None:
    if deployment.expect_image is not None:
        return render(deployment.expect_image, values)
    if strategy_for(env).expects_image():
        return values.get("image_ref") or values.get("tag")
    return None


def _selector(labels: Any) -> str:
    if not isinstance(labels, dict):
        return ""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def judge_deployment_pods(
    kube: KubeClient,
    deployment: dict[str, Any],
    *,
    expected_image: str | None,
    container: str | None,
    stats: RequestStats,
) -> Judgement:
    """List the Deployment's ReplicaSets and its new ReplicaSet's pods, and judge them (:func:`judge_pods`)."""
    meta = deployment.get("metadata") or {}
    namespace = str(meta.get("namespace", ""))
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels")
    replicasets = kube.list_objects(REPLICASET, namespace, label_selector=_selector(match), stats=stats)
    pods: list[dict[str, Any]] = []
    rs = new_replicaset(deployment, replicasets)
    if rs is not None:
        rs_labels = ((rs.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if isinstance(rs_labels, dict) and POD_TEMPLATE_HASH in rs_labels:
            pods = kube.list_objects(POD, namespace, label_selector=_selector(rs_labels), stats=stats)
    return judge_pods(deployment, replicasets, pods, expected_image=expected_image, container=container)


def verify_environment(
    kube: KubeClient,
    env: Environment,
    revision: str,
    values: dict[str, str],
) -> VerificationResult:
    """Raise :class:`VerificationError` unless ``env`` runs ``revision`` within its timeout.

    ``values`` fills the templates: ``version`` (1.2.3), ``tag`` (v1.2.3 or the image tag) and ``image_ref``
    (the tag or digest an overlay was set to).
    """
    result = VerificationResult(environment=env.name, revision=revision)
    deadline = time.monotonic() + env.verify.timeout_seconds

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise VerificationError(f"[{env.name}] verification timed out after {env.verify.timeout_seconds:.0f}s")
        return left

    gitops = env.verify.gitops
    flux_applied: dict[str, Any] | None = None  # the Kustomization as Flux reported our revision applied
    applied_at = 0.0
    if gitops is not None:
        started = time.monotonic()
        if isinstance(gitops, ArgoApplicationRef):
            try:
                message = _wait_argocd(kube, gitops, revision, env, result.stats, remaining())
            except VerificationError as failure:
                # Argo CD 3.x keeps no per-resource health in its status: "Degraded" names only the resource. The
                # cause is on the Deployments we verify (ProgressDeadlineExceeded, ...): say it.
                causes = deployment_causes(kube, env)
                if not causes:
                    raise
                raise VerificationError(f"{failure}; {'; '.join(causes)}") from None
        else:
            message, flux_applied = _wait_flux(kube, gitops, revision, env, result.stats, remaining())
        applied_at = time.monotonic()
        result.steps.append(
            StepResult(f"{gitops.kind} {gitops.namespace}/{gitops.name}", message, applied_at - started)
        )
    for deployment in env.verify.deployments:
        started = time.monotonic()
        ref = ObjectRef(DEPLOYMENT, deployment.namespace, deployment.name)
        expected = expected_image_for(deployment, env, values)
        judge: Callable[[dict[str, Any]], Judgement] = functools.partial(
            judge_deployment, expected_image=expected, container=deployment.container
        )
        if flux_applied is not None and expected is not None:
            # Flux applied this Deployment at our revision before it said Ready (it is in the inventory): another
            # image is what Git says, and no later event will change it. Fail on it instead of timing out.
            managed = flux_manages(
                flux_applied, namespace=deployment.namespace, name=deployment.name, group="apps", kind="Deployment"
            )
            if managed:
                final = functools.partial(
                    judge_deployment, expected_image=expected, container=deployment.container, image_is_final=True
                )
                judge = _final_image_judge(judge, final, applied_at)
        rolled_out, verdict = kube.wait_for(
            ref,
            judge,
            timeout=remaining(),
            what=f"[{env.name}] {ref}",
            stats=result.stats,
        )
        message = verdict.message
        if deployment.pods:
            pods = kube.poll(
                functools.partial(
                    judge_deployment_pods,
                    kube,
                    rolled_out,
                    expected_image=expected,
                    container=deployment.container,
                    stats=result.stats,
                ),
                timeout=remaining(),
                what=f"[{env.name}] pods of {ref}",
            )
            message = f"{message}; {pods.message}"
        result.steps.append(StepResult(str(ref), message, time.monotonic() - started))
    return result
