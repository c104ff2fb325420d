"""The readiness rules as pure functions (the same rules run against the real API server in test_verify)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rules.readiness import flux_manages, image_matches, judge_application, judge_deployment, judge_kustomization

X = "a" * 40
OLD = "b" * 40
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def app(revision: str = X, sync: str = "Synced", health: str = "Healthy", **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision},
        "health": {"status": health},
        "operationState": {
            "phase": "Succeeded",
            "finishedAt": ts(60),
            "syncResult": {"revision": revision},
        },
        "reconciledAt": ts(30),
    }
    status.update(extra)
    return {"metadata": {"name": "shop"}, "status": status}


def test_synced_healthy_at_our_revision_is_ready() -> None:
    assert judge_application(app(), X, now=NOW).state == "ready"


def test_stale_synced_at_previous_revision_is_not_ready() -> None:
    verdict = judge_application(app(revision=OLD), X, now=NOW)
    assert verdict.state == "waiting"
    assert "still the previous revision" in verdict.message


def test_operation_in_flight_waits() -> None:
    obj = app()
    obj["operation"] = {"sync": {"revision": X}}
    assert "sync operation in progress" in judge_application(obj, X, now=NOW).message


def test_reconciled_before_operation_finished_waits() -> None:
    obj = app(reconciledAt=ts(120))
    assert "comparison after the sync" in judge_application(obj, X, now=NOW).message


def test_health_grace_after_sync() -> None:
    obj = app()
    obj["status"]["operationState"]["finishedAt"] = ts(3)
    obj["status"]["reconciledAt"] = ts(1)
    verdict = judge_application(obj, X, now=NOW, health_grace_seconds=10)
    assert verdict.state == "waiting" and verdict.recheck_in == pytest.approx(7)
    assert judge_application(obj, X, now=NOW, health_grace_seconds=2).state == "ready"


@pytest.mark.parametrize("condition", ["ComparisonError", "InvalidSpecError"])
def test_terminal_conditions_fail_fast(condition: str) -> None:
    obj = app(revision=OLD, conditions=[{"type": condition, "message": "rpc error: bad path"}])
    verdict = judge_application(obj, X, now=NOW)
    assert verdict.state == "failed" and verdict.message == f"{condition}: rpc error: bad path"


def test_degraded_at_our_revision_fails_but_degraded_old_revision_waits() -> None:
    degraded = app(health="Degraded")
    degraded["status"]["health"]["message"] = "CrashLoopBackOff"
    verdict = judge_application(degraded, X, now=NOW)
    assert verdict.state == "failed" and "CrashLoopBackOff" in verdict.message
    assert judge_application(app(revision=OLD, health="Degraded"), X, now=NOW).state == "waiting"


def test_failed_sync_operation_fails() -> None:
    obj = app(sync="OutOfSync")
    obj["status"]["operationState"]["phase"] = "Failed"
    obj["status"]["operationState"]["message"] = "one or more objects failed to apply"
    assert judge_application(obj, X, now=NOW).state == "failed"


def test_multi_source_uses_the_source_index() -> None:
    obj = app()
    obj["status"]["sync"] = {"status": "Synced", "revisions": [OLD, X]}
    obj["status"]["operationState"]["syncResult"] = {"revisions": [OLD, X]}
    assert judge_application(obj, X, source_index=1, now=NOW).state == "ready"
    assert judge_application(obj, X, source_index=0, now=NOW).state == "waiting"


def ks(
    applied: str = f"main@sha1:{X}",
    ready: str = "True",
    reason: str = "ReconciliationSucceeded",
    generation: int = 2,
    observed: int = 2,
    **status: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "apps", "generation": generation},
        "status": {
            "observedGeneration": observed,
            "lastAppliedRevision": applied,
            "lastAttemptedRevision": applied,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": "m"}],
            **status,
        },
    }


@pytest.mark.parametrize("applied", [f"main@sha1:{X}", f"v1.2.3@sha1:{X}", f"sha1:{X}"])
def test_flux_ready_at_revision(applied: str) -> None:
    assert judge_kustomization(ks(applied=applied), X).state == "ready"


def test_flux_ready_but_generation_not_observed_is_not_ready() -> None:
    verdict = judge_kustomization(ks(generation=3, observed=2), X)
    assert verdict.state == "waiting" and "not observed the latest spec" in verdict.message


def test_flux_ready_at_previous_revision_is_not_ready() -> None:
    assert judge_kustomization(ks(applied=f"main@sha1:{OLD}"), X).state == "waiting"


def test_flux_reconcile_request_must_be_handled() -> None:
    assert judge_kustomization(ks(lastHandledReconcileAt="t1"), X, requested_at="t2").state == "waiting"
    assert judge_kustomization(ks(lastHandledReconcileAt="t2"), X, requested_at="t2").state == "ready"


def test_flux_stalled_and_terminal_reasons_fail() -> None:
    stalled = ks()
    stalled["status"]["conditions"].append(
        {"type": "Stalled", "status": "True", "reason": "BuildFailed", "message": "kustomize build failed"}
    )
    assert judge_kustomization(stalled, X).state == "failed"
    failing = ks(ready="False", reason="HealthCheckFailed")
    assert judge_kustomization(failing, X).state == "failed"
    # The same reason for an older attempt is not ours to fail on.
    assert judge_kustomization(ks(applied=f"main@sha1:{OLD}", ready="False", reason="HealthCheckFailed"), X).state == (
        "waiting"
    )


def test_flux_stalled_at_an_older_revision_waits_for_ours() -> None:
    """A rollback's revision is a change Flux acts on even while the failed revision left it Stalled."""
    stalled = ks(applied=f"main@sha1:{OLD}", ready="False", reason="BuildFailed")
    stalled["status"]["conditions"].append({"type": "Stalled", "status": "True", "reason": "BuildFailed"})
    verdict = judge_kustomization(stalled, X)
    assert verdict.state == "waiting" and "want" in verdict.message


def deployment(image: str = "app:v1.2.3", spec_replicas: int = 3, **status: Any) -> dict[str, Any]:
    base = {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    base.update(status)
    return {
        "metadata": {"name": "app", "generation": 2},
        "spec": {"replicas": spec_replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": base,
    }


def test_rollout_complete() -> None:
    assert judge_deployment(deployment(), expected_image="v1.2.3").state == "ready"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"observedGeneration": 1}, "not observed yet"),
        ({"updatedReplicas": 1}, "1 of 3 new replicas updated"),
        ({"replicas": 4}, "1 old replicas pending termination"),
        ({"availableReplicas": 2}, "2 of 3 updated replicas available"),
    ],
)
def test_rollout_in_progress(status: dict[str, Any], message: str) -> None:
    verdict = judge_deployment(deployment(**status))
    assert verdict.state == "waiting" and message in verdict.message


def test_progress_deadline_exceeded_fails() -> None:
    obj = deployment(
        updatedReplicas=1,
        conditions=[
            {
                "type": "Progressing",
                "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet app-1 has timed out progressing.",
            }
        ],
    )
    assert judge_deployment(obj).state == "failed"


def test_wrong_image_waits_and_unknown_container_fails() -> None:
    assert judge_deployment(deployment(image="app:v1.2.2"), expected_image="v1.2.3").state == "waiting"
    assert judge_deployment(deployment(), expected_image="v1.2.3", container="sidecar").state == "failed"


def test_wrong_image_fails_once_it_is_final_and_the_message_is_bounded() -> None:
    """After the GitOps controller applied our revision, another image is what Git says: a failure, not a wait."""
    verdict = judge_deployment(deployment(image="app:v1.2.2"), expected_image="v1.2.3", image_is_final=True)
    assert verdict.state == "failed"
    assert "runs app:v1.2.2, want v1.2.3" in verdict.message
    assert (
        judge_deployment(deployment(image="app:v1.2.3"), expected_image="v1.2.3", image_is_final=True).state == "ready"
    )
    huge = judge_deployment(deployment(image="app:" + "x" * 10_000), expected_image="v1", image_is_final=True)
    assert len(huge.message) < 600


def test_flux_manages_reads_the_inventory_ids() -> None:
    """kustomize-controller api/v1 inventory.go: entries[].id is <namespace>_<name>_<group>_<kind>."""
    ks = {"status": {"inventory": {"entries": [{"id": "shop_web_apps_Deployment", "v": "v1"}]}}}
    assert flux_manages(ks, namespace="shop", name="web", group="apps", kind="Deployment")
    assert not flux_manages(ks, namespace="shop", name="api", group="apps", kind="Deployment")
    assert not flux_manages(ks, namespace="other", name="web", group="apps", kind="Deployment")
    for broken in ({}, {"status": {"inventory": {"entries": "x"}}}, {"status": {"inventory": {"entries": [3, None]}}}):
        assert not flux_manages(broken, namespace="shop", name="web", group="apps", kind="Deployment")


@pytest.mark.parametrize(
    ("image", "expected", "ok"),
    [
        ("registry:5000/org/app:v1.2.3", "v1.2.3", True),
        ("registry:5000/org/app:v1.2.3", "registry:5000/org/app:v1.2.3", True),
        ("registry:5000/org/app:v1.2.3", "registry:5000/other:v1.2.3", False),
        ("app@sha256:" + "c" * 64, "sha256:" + "c" * 64, True),
        ("app:v1.2.30", "v1.2.3", False),
        ("registry:5000/app", "5000/app", False),
    ],
)
def test_image_matches(image: str, expected: str, ok: bool) -> None:
    assert image_matches(image, expected) is ok
