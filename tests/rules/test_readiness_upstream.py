"""The readiness rules as upstream judges them: one table row per upstream rule, the comment naming the upstream
file and function the row is ported from (Flux: flux2 cmd/flux, fluxcd/pkg runtime/conditions, kstatus in
sigs.k8s.io/cli-utils pkg/kstatus/status; Argo CD: argo-cd cmd/argocd/commands/app.go). Rows marked "ours" are
the rules this tool adds on top (the revision must be ours; terminal states fail fast)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rules.readiness import judge_application, judge_kustomization

X = "a" * 40
OLD = "b" * 40
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
TOKEN = "2026-11-26T11:59:00.000000+00:00"


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


# --- Flux Kustomization ---------------------------------------------------------------------------------------


def kustomization(*conditions: dict[str, Any], generation: int = 2, observed: Any = 2, **status: Any) -> dict[str, Any]:
    """A Kustomization Flux has fully reconciled at X: generation observed, Ready=True for this generation."""
    conds = list(conditions) or [ready_condition()]
    body: dict[str, Any] = {
        "metadata": {"name": "apps", "generation": generation},
        "status": {
            "lastAppliedRevision": f"main@sha1:{X}",
            "lastAttemptedRevision": f"main@sha1:{X}",
            "lastHandledReconcileAt": TOKEN,
            "conditions": conds,
            **status,
        },
    }
    if observed is not None:
        body["status"]["observedGeneration"] = observed
    return body


def ready_condition(status: str = "True", reason: str = "ReconciliationSucceeded", **extra: Any) -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": f"Applied revision: main@sha1:{X}", **extra}


def cond(kind: str, status: str, reason: str, message: str = "m", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message, **extra}


FLUX_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    # kstatus pkg/kstatus/status/status.go checkReadyCondition: Ready=True is Current.
    ("ready", kustomization(), "ready", "Ready and applied"),
    # flux2 cmd/flux/readiness.go isObjectReady: the Ready condition's own observedGeneration must be the object's
    # generation; Ready=True for generation 1 while generation is 2 is not ready (status.observedGeneration is 2).
    (
        "ready-condition-generation-behind",
        kustomization(ready_condition(observedGeneration=1)),
        "waiting",
        "Ready condition is for generation 1, not 2",
    ),
    # flux2 isObjectReady: a Ready condition at the object's generation is ready.
    ("ready-condition-generation-current", kustomization(ready_condition(observedGeneration=2)), "ready", "Ready"),
    # flux2 isObjectReady (condition observedGeneration 0: status.observedGeneration decides) and kstatus
    # pkg/kstatus/status/generic.go checkGeneration (observedGeneration != generation is InProgress).
    ("status-generation-behind", kustomization(observed=1), "waiting", "not observed the latest spec"),
    # kstatus generic.go checkGeneration compares with !=, not <.
    ("status-generation-ahead", kustomization(observed=3), "waiting", "not observed the latest spec"),
    # flux2 isObjectReady: observedGeneration < 1 is "object not reconciled yet".
    ("never-reconciled", kustomization(observed=0, generation=0), "waiting", "not observed the latest spec"),
    ("no-observed-generation", kustomization(observed=None), "waiting", "not observed the latest spec"),
    # flux2 isObjectReady: no Ready condition is not ready.
    (
        "no-ready-condition",
        kustomization(cond("Healthy", "True", "Succeeded")),
        "waiting",
        "no Ready condition",
    ),
    # kstatus generic.go checkGenericProperties: Reconciling=True is InProgress, even beside Ready=True
    # (fluxcd/pkg runtime/conditions/check/fail.go check_FAIL0003: Ready=True may stay while reconciling).
    (
        "reconciling-beside-ready",
        kustomization(ready_condition(), cond("Reconciling", "True", "Progressing", "Reconciliation in progress")),
        "waiting",
        "Flux is reconciling (Progressing",
    ),
    # kstatus generic.go checkGenericProperties: Stalled=True is Failed, with the condition's message.
    (
        "stalled",
        kustomization(
            ready_condition("False", "BuildFailed"),
            cond("Stalled", "True", "BuildFailed", "kustomize build failed: accumulating resources"),
        ),
        "failed",
        "Stalled (BuildFailed): kustomize build failed: accumulating resources",
    ),
    # fluxcd/pkg runtime/conditions/getter.go IsStalled: Stalled counts only while Reconciling is not True.
    (
        "stalled-while-reconciling",
        kustomization(
            ready_condition("Unknown", "Progressing"),
            cond("Stalled", "True", "BuildFailed"),
            cond("Reconciling", "True", "Progressing"),
        ),
        "waiting",
        "Flux is reconciling",
    ),
    # kstatus generic.go: checkGeneration runs before the Stalled check, so Stalled for an old spec is InProgress.
    (
        "stalled-for-an-old-generation",
        kustomization(ready_condition("False", "BuildFailed"), cond("Stalled", "True", "BuildFailed"), observed=1),
        "waiting",
        "not observed the latest spec",
    ),
    # kstatus generic.go Stalled=True is Failed once its generation is observed: kustomize-controller
    # (internal/controller/kustomization_controller.go, the AccessDenied stall) leaves status.observedGeneration
    # behind, and the condition's own observedGeneration (fluxcd/pkg runtime/conditions/setter.go Set) says it is
    # for this spec.
    (
        "stalled-own-generation-current",
        kustomization(
            ready_condition("False", "AccessDenied", observedGeneration=2),
            cond("Stalled", "True", "AccessDenied", "cross-namespace references are not allowed", observedGeneration=2),
            observed=1,
        ),
        "failed",
        "Stalled (AccessDenied): cross-namespace references are not allowed",
    ),
    (
        "stalled-own-generation-behind",
        kustomization(
            ready_condition("False", "AccessDenied", observedGeneration=1),
            cond("Stalled", "True", "AccessDenied", observedGeneration=1),
        ),
        "waiting",
        "Ready condition is for generation 1",
    ),
    # ours on top of kstatus: a terminal Ready=False fails only for this spec and our revision.
    (
        "ready-false-terminal-for-an-old-generation",
        kustomization(ready_condition("False", "HealthCheckFailed", observedGeneration=1), observed=1),
        "waiting",
        "not observed the latest spec",
    ),
    (
        "ready-false-terminal-own-generation-current",
        kustomization(ready_condition("False", "HealthCheckFailed", observedGeneration=2), observed=1),
        "failed",
        "Ready=False (HealthCheckFailed)",
    ),
    # ours, on kustomize-controller internal/controller/kustomization_controller.go finalizeStatus: Reconciling
    # gets reason ProgressingWithRetry exactly when an attempt ended with Ready=False; a terminal reason for our
    # revision and this spec beside it fails fast (real Flux never writes Stalled for a failed health check or
    # build: tests/data/flux/ has the recorded statuses).
    (
        "ready-false-terminal-beside-progressing-with-retry",
        kustomization(
            ready_condition("False", "HealthCheckFailed", observedGeneration=2),
            cond("Reconciling", "True", "ProgressingWithRetry", "Detecting drift for revision", observedGeneration=2),
            observed=-1,
        ),
        "failed",
        "Ready=False (HealthCheckFailed)",
    ),
    (
        "build-failed-beside-progressing-with-retry",
        kustomization(
            ready_condition("False", "BuildFailed", observedGeneration=2),
            cond("Reconciling", "True", "ProgressingWithRetry", observedGeneration=2),
        ),
        "failed",
        "Ready=False (BuildFailed)",
    ),
    # kstatus generic.go: Reconciling=True with reason Progressing is an attempt in flight: Ready=False from the
    # attempt before may still be replaced by this one.
    (
        "ready-false-terminal-beside-progressing",
        kustomization(
            ready_condition("False", "HealthCheckFailed", observedGeneration=2),
            cond("Reconciling", "True", "Progressing", observedGeneration=2),
        ),
        "waiting",
        "Flux is reconciling (Progressing",
    ),
    # ours: ProgressingWithRetry beside a reason Flux may fix by retrying (the artifact is not there yet) waits.
    (
        "ready-false-retrying-beside-progressing-with-retry",
        kustomization(
            ready_condition("False", "ArtifactFailed", observedGeneration=2),
            cond("Reconciling", "True", "ProgressingWithRetry", observedGeneration=2),
        ),
        "waiting",
        "Flux is reconciling (ProgressingWithRetry",
    ),
    # ours: the failed attempt was for another revision (ours not tried yet): wait.
    (
        "ready-false-terminal-for-the-previous-revision-beside-retry",
        kustomization(
            ready_condition("False", "HealthCheckFailed", observedGeneration=2),
            cond("Reconciling", "True", "ProgressingWithRetry", observedGeneration=2),
            lastAttemptedRevision=f"main@sha1:{OLD}",
            lastAppliedRevision=f"main@sha1:{OLD}",
        ),
        "waiting",
        "Flux is reconciling (ProgressingWithRetry",
    ),
    # kstatus status.go checkReadyCondition: Ready=Unknown is InProgress.
    (
        "ready-unknown",
        kustomization(ready_condition("Unknown", "Progressing")),
        "waiting",
        "want Ready=True",
    ),
    # kstatus checkReadyCondition: Ready=False is InProgress ("no way to determine if ... doomed").
    (
        "ready-false-retrying",
        kustomization(ready_condition("False", "ArtifactFailed")),
        "waiting",
        "want Ready=True",
    ),
    # ours: Ready=False with a reason Flux will not fix by retrying, for our revision, fails fast.
    (
        "ready-false-terminal-reason",
        kustomization(ready_condition("False", "HealthCheckFailed")),
        "failed",
        "Ready=False (HealthCheckFailed)",
    ),
    # kstatus generic.go checkGenericProperties: a deletionTimestamp is Terminating, an error to `flux reconcile`.
    (
        "being-deleted",
        {**kustomization(), "metadata": {"name": "apps", "generation": 2, "deletionTimestamp": ts(5)}},
        "failed",
        "being deleted",
    ),
    # flux2 cmd/flux/reconcile.go reconciliationHandled: nothing counts before Flux echoes our request token,
    # not even a Stalled condition (it may be from before the request).
    (
        "request-not-handled",
        kustomization(
            ready_condition("False", "BuildFailed"), cond("Stalled", "True", "BuildFailed"), lastHandledReconcileAt="t0"
        ),
        "waiting",
        "not handled yet",
    ),
    # ours: Ready=True for the previous revision is not a pass.
    (
        "ready-at-previous-revision",
        kustomization(lastAppliedRevision=f"main@sha1:{OLD}", lastAttemptedRevision=f"main@sha1:{OLD}"),
        "waiting",
        "want aaaaaaaaaaaa",
    ),
]


@pytest.mark.parametrize(("ks", "state", "message"), [r[1:] for r in FLUX_RULES], ids=[r[0] for r in FLUX_RULES])
def test_flux_rule(ks: dict[str, Any], state: str, message: str) -> None:
    """Each row is one upstream (or our) rule for a Flux Kustomization; see the comment above each row."""
    verdict = judge_kustomization(copy.deepcopy(ks), X, requested_at=TOKEN)
    assert (verdict.state, message in verdict.message) == (state, True), verdict.message


@pytest.mark.parametrize(
    "status",
    [
        {"observedGeneration": "2"},
        {"observedGeneration": True},
        {"conditions": "Ready"},
        {"conditions": ["Ready", None, 3]},
        {"conditions": [ready_condition(observedGeneration="2")]},
        {"lastAttemptedRevision": 7, "lastAppliedRevision": ["x"]},
    ],
)
def test_flux_malformed_status_is_a_verdict_not_a_crash(status: dict[str, Any]) -> None:
    """A status the controller did not write (hand-edited, another tool's) gives a verdict, never a TypeError."""
    ks = kustomization()
    ks["status"].update(status)
    assert judge_kustomization(ks, X, requested_at=TOKEN).state in ("waiting", "ready")


def test_flux_condition_message_is_capped() -> None:
    """A Stalled message is controller output of any length: the verdict echoes a bounded piece."""
    ks = kustomization(ready_condition("False", "BuildFailed"), cond("Stalled", "True", "BuildFailed", "x" * 50_000))
    verdict = judge_kustomization(ks, X, requested_at=TOKEN)
    assert verdict.state == "failed" and len(verdict.message) < 500


# --- Argo CD Application --------------------------------------------------------------------------------------


def application(
    revision: str = X,
    sync: str = "Synced",
    health: str = "Healthy",
    *,
    op: dict[str, Any] | None = None,
    reconciled_ago: float | None = 30,
    **extra: Any,
) -> dict[str, Any]:
    """Argo CD synced to ``revision`` by an operation that finished 60 s ago and compared since (30 s ago)."""
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision},
        "health": {"status": health},
        "operationState": {"phase": "Succeeded", "finishedAt": ts(60), "syncResult": {"revision": revision}}
        if op is None
        else op,
    }
    if reconciled_ago is not None:
        status["reconciledAt"] = ts(reconciled_ago)
    if not status["operationState"]:
        del status["operationState"]
    body: dict[str, Any] = {"metadata": {"name": "shop"}, "status": status}
    body.update(extra)
    return body


def op_state(
    phase: str = "Succeeded", finished_ago: float | None = 60, revision: str = X, **extra: Any
) -> dict[str, Any]:
    state: dict[str, Any] = {"phase": phase, "syncResult": {"revision": revision}, **extra}
    if finished_ago is not None:
        state["finishedAt"] = ts(finished_ago)
    return state


ARGO_RULES: list[tuple[str, dict[str, Any], str, str]] = [
    # cmd/argocd/commands/app.go checkResourceStatus: Synced and Healthy, no operation: ready.
    ("synced-healthy", application(), "ready", "Synced and Healthy"),
    ("no-operation-ever", application(op={}), "ready", "Synced and Healthy"),
    # checkAppWaitConditions: .operation set ("it just got requested") is in progress, even if all else is done.
    (
        "operation-requested",
        application(operation={"sync": {"revision": X}}),
        "waiting",
        "sync operation in progress",
    ),
    # checkAppWaitConditions: an operationState without finishedAt is not finished, whatever its phase.
    ("running", application(op=op_state("Running", None)), "waiting", "sync operation in progress"),
    ("terminating", application(op=op_state("Terminating", None)), "waiting", "sync operation in progress"),
    ("succeeded-without-finished-at", application(op=op_state("Succeeded", None)), "waiting", "in progress"),
    ("no-phase-yet", application(op={"operation": {"sync": {"revision": X}}}), "waiting", "in progress"),
    # gitops-engine pkg/sync/common/types.go OperationPhase.Running: Running is unfinished even with a stale
    # finishedAt from a previous attempt (a retry).
    ("running-retry", application(op=op_state("Running", 120, retryCount=1)), "waiting", "in progress"),
    # checkAppWaitConditions: finished, but reconciledAt before finishedAt: the controller has not compared the
    # app since; in progress whatever revision that operation was for: here an operation for the OLD revision
    # finished after the last comparison, so "Synced at X" predates it.
    (
        "reconciled-before-finish-other-revision",
        application(op=op_state(finished_ago=10, revision=OLD), reconciled_ago=20),
        "waiting",
        "comparison after the sync",
    ),
    (
        "reconciled-before-finish-our-revision",
        application(op=op_state(finished_ago=10), reconciled_ago=20),
        "waiting",
        "comparison after the sync",
    ),
    # checkAppWaitConditions: ReconciledAt == nil counts as not reconciled since.
    (
        "never-reconciled-after-operation",
        application(op=op_state(revision=OLD), reconciled_ago=None),
        "waiting",
        "comparison after the sync",
    ),
    # checkAppWaitConditions uses metav1.Time.Before: reconciledAt equal to finishedAt is not before it.
    ("reconciled-at-finish", application(op=op_state(finished_ago=60), reconciled_ago=60), "ready", "Synced"),
    # checkAppWaitConditions: a dry-run operation (types.go Operation.DryRun) needs no comparison after it.
    (
        "dry-run-operation",
        application(
            op=op_state(finished_ago=10, revision=OLD, operation={"sync": {"dryRun": True}}), reconciled_ago=20
        ),
        "ready",
        "Synced and Healthy",
    ),
    # checkResourceStatus: default `app wait` watches sync, health and operation: OutOfSync is not ready.
    ("out-of-sync", application(sync="OutOfSync"), "waiting", "want Synced"),
    # checkResourceStatus: only Healthy passes the health watch (Suspended and Degraded need their own flags).
    ("progressing", application(health="Progressing"), "waiting", "want Healthy"),
    ("suspended", application(health="Suspended"), "waiting", "want Healthy"),
    ("missing", application(health="Missing"), "waiting", "want Healthy"),
    # cmd/argocd/commands/app.go (NewApplicationSyncCommand): after the wait, a phase other than Succeeded fails.
    (
        "our-operation-failed",
        application(sync="OutOfSync", op=op_state("Failed", message="one or more objects failed to apply")),
        "failed",
        "Failed: one or more objects failed to apply",
    ),
    ("our-operation-error", application(sync="OutOfSync", op=op_state("Error")), "failed", "Error"),
    # ours: a failed operation for another revision is not our failure.
    ("other-operation-failed", application(revision=OLD, op=op_state("Failed", revision=OLD)), "waiting", "want"),
    # ours: Synced at the previous revision is not a pass.
    (
        "synced-at-previous-revision",
        application(revision=OLD),
        "waiting",
        "still the previous revision",
    ),
    # waitOnApplicationStatus fails on a transition to Degraded; ours: at our revision after our own sync.
    ("degraded-after-our-sync", application(health="Degraded"), "failed", "Degraded at aaaaaaaaaaaa"),
]


@pytest.mark.parametrize(("obj", "state", "message"), [r[1:] for r in ARGO_RULES], ids=[r[0] for r in ARGO_RULES])
def test_argocd_rule(obj: dict[str, Any], state: str, message: str) -> None:
    """Each row is one rule of `argocd app wait` (or ours); see the comment above each row."""
    verdict = judge_application(copy.deepcopy(obj), X, now=NOW, health_grace_seconds=0)
    assert (verdict.state, message in verdict.message) == (state, True), verdict.message


def test_argocd_degraded_after_another_health_fails_without_an_operation() -> None:
    """waitOnApplicationStatus: a transition to Degraded from any health but Unknown/Degraded is an error; here
    at our revision with no operation of ours (auto-sync by another actor), after Healthy was seen there."""
    obj = application(health="Degraded", op=op_state(revision=OLD))
    assert judge_application(obj, X, now=NOW, seen_progressing=False).state == "waiting"
    assert judge_application(obj, X, now=NOW, seen_progressing=True).state == "failed"


@pytest.mark.parametrize(
    "status",
    [
        {"reconciledAt": 12345},
        {"reconciledAt": "2026-11-26T11:59:59"},  # no offset: UTC, not a naive/aware TypeError
        {"conditions": ["ComparisonError", None]},
        {"operationState": {"phase": "Succeeded", "finishedAt": "not a time", "syncResult": {"revision": X}}},
    ],
)
def test_argocd_malformed_status_is_a_verdict_not_a_crash(status: dict[str, Any]) -> None:
    """A status field of the wrong shape gives a verdict, never an exception out of the wait."""
    obj = application()
    obj["status"].update(status)
    assert judge_application(obj, X, now=NOW).state in ("waiting", "ready")
