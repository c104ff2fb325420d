"""Is the environment running revision X? Pure judgements over Kubernetes objects (dicts), no I/O.

The rules follow the upstream controllers: Argo CD's Application status, Flux's
Kustomization conditions and ``kubectl rollout status`` for Deployments. The classic bug they guard
against is a status that says "Synced" or "Ready" for the *previous* revision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

State = Literal["ready", "waiting", "failed"]

# Flux Ready=False reasons that will not fix themselves for this revision (fluxcd/pkg/apis/meta and
# kustomize-controller): build or validation errors, failed health checks, failed apply/prune.
FLUX_TERMINAL_REASONS = frozenset(
    {"BuildFailed", "ValidationFailed", "HealthCheckFailed", "ReconciliationFailed", "PruneFailed"}
)
ARGO_TERMINAL_CONDITIONS = frozenset({"ComparisonError", "InvalidSpecError"})


@dataclass(frozen=True)
class Judgement:
    state: State
    message: str
    recheck_in: float | None = None  # re-judge after this many seconds even without a new event

    @classmethod
    def ready(cls, message: str) -> Judgement:
        return cls("ready", message)

    @classmethod
    def waiting(cls, message: str, recheck_in: float | None = None) -> Judgement:
        return cls("waiting", message, recheck_in)

    @classmethod
    def failed(cls, message: str) -> Judgement:
        return cls("failed", message)


def _short(revision: str | None) -> str:
    if not revision:
        return "(none)"
    return revision[:12] if len(revision) == 40 else revision


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


# --- Argo CD Application ------------------------------------------------------------------------------


def judge_application(
    app: dict[str, Any],
    revision: str,
    *,
    source_index: int | None = None,
    health_grace_seconds: float = 10.0,
    seen_progressing: bool = False,
    now: datetime | None = None,
) -> Judgement:
    """Argo CD runs ``revision`` (a commit id): synced to it by a finished operation and healthy."""
    now = now or datetime.now(UTC)
    status = app.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") in ARGO_TERMINAL_CONDITIONS:
            return Judgement.failed(f"{cond['type']}: {cond.get('message', '')}".strip())

    sync = status.get("sync") or {}
    if source_index is not None:
        revisions = sync.get("revisions") or []
        synced_revision = revisions[source_index] if source_index < len(revisions) else None
    else:
        synced_revision = sync.get("revision")
    health = (status.get("health") or {}).get("status") or "Unknown"
    health_message = (status.get("health") or {}).get("message") or ""
    op = status.get("operationState") or {}
    op_result = op.get("syncResult") or {}
    op_revision = (
        (op_result.get("revisions") or [None] * (source_index + 1))[source_index]
        if source_index is not None and len(op_result.get("revisions") or []) > source_index
        else op_result.get("revision")
    )
    where = f"sync {sync.get('status', 'Unknown')} at {_short(synced_revision)}, health {health}"

    if app.get("operation") is not None or op.get("phase") in ("Running", "Terminating"):
        return Judgement.waiting(f"sync operation in progress ({where})")
    if op_revision == revision and op.get("phase") in ("Failed", "Error"):
        return Judgement.failed(f"sync of {_short(revision)} {op['phase']}: {op.get('message', '')}".strip())
    if synced_revision != revision:
        stale = " (still the previous revision)" if sync.get("status") == "Synced" else ""
        return Judgement.waiting(f"want {_short(revision)}; {where}{stale}")
    if sync.get("status") != "Synced":
        return Judgement.waiting(f"want Synced; {where}")

    finished = parse_time(op.get("finishedAt"))
    if op_revision == revision:
        if op.get("phase") != "Succeeded" or finished is None:
            return Judgement.waiting(f"sync operation for {_short(revision)} not finished ({where})")
        reconciled = parse_time(status.get("reconciledAt"))
        if reconciled is None or reconciled < finished:
            return Judgement.waiting(f"waiting for a comparison after the sync finished ({where})")

    if health == "Degraded":
        # Degraded at our revision after it started rolling out: the rollout failed.
        if seen_progressing or op_revision == revision:
            return Judgement.failed(f"application is Degraded at {_short(revision)}: {health_message}".strip())
        return Judgement.waiting(f"want Healthy; {where}")
    if health != "Healthy":
        return Judgement.waiting(f"want Healthy; {where}")
    if finished is not None and op_revision == revision:
        settled = (now - finished).total_seconds()
        if settled < health_grace_seconds:
            # Health right after an operation can still describe the old pods.
            return Judgement.waiting(
                f"Healthy, letting health settle ({settled:.0f}s of {health_grace_seconds:.0f}s after sync)",
                recheck_in=health_grace_seconds - settled,
            )
    return Judgement.ready(f"Synced and Healthy at {_short(revision)}")


# --- Flux Kustomization -------------------------------------------------------------------------------


def flux_revision_matches(applied: str | None, revision: str) -> bool:
    """``main@sha1:<sha>``, ``v1.2.3@sha1:<sha>``, ``sha1:<sha>`` or a bare sha name the commit."""
    if not applied:
        return False
    return applied == revision or applied.endswith((f"sha1:{revision}", f"@{revision}"))


def judge_kustomization(ks: dict[str, Any], revision: str, *, requested_at: str | None = None) -> Judgement:
    status = ks.get("status") or {}
    generation = (ks.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    conditions = _conditions(ks)
    ready = conditions.get("Ready") or {}
    stalled = conditions.get("Stalled") or {}
    applied = status.get("lastAppliedRevision")
    attempted = status.get("lastAttemptedRevision")
    where = (
        f"Ready={ready.get('status', 'Unknown')} ({ready.get('reason', '-')}), applied {_short(applied)}, "
        f"generation {observed}/{generation}"
    )

    # Stalled means Flux will not retry the revision it attempted; a newer revision (a rollback's) is a change
    # it does act on, so a Kustomization stalled at an older revision is still waiting for ours.
    if stalled.get("status") == "True" and (attempted is None or flux_revision_matches(attempted, revision)):
        return Judgement.failed(f"Kustomization is Stalled ({stalled.get('reason')}): {stalled.get('message', '')}")
    if requested_at is not None and status.get("lastHandledReconcileAt") != requested_at:
        return Judgement.waiting(f"reconcile request {requested_at} not handled yet ({where})")
    if observed is None or generation is None or observed < generation:
        return Judgement.waiting(f"Flux has not observed the latest spec ({where})")
    if (
        ready.get("status") == "False"
        and ready.get("reason") in FLUX_TERMINAL_REASONS
        and flux_revision_matches(attempted, revision)
    ):
        return Judgement.failed(f"Ready=False ({ready['reason']}) at {_short(revision)}: {ready.get('message', '')}")
    if not flux_revision_matches(applied, revision):
        return Judgement.waiting(f"want {_short(revision)}; {where}")
    if ready.get("status") != "True":
        return Judgement.waiting(f"want Ready=True; {where}")
    return Judgement.ready(f"Ready and applied at {_short(revision)}")


# --- Deployment rollout (as kubectl rollout status) ---------------------------------------------------


def image_matches(image: str, expected: str) -> bool:
    """``expected`` is a full reference (``repo:tag``, ``repo@sha256:...``), or just a tag or a digest."""
    if image == expected:
        return True
    if expected.startswith("sha256:") or "@" in expected:
        return image.endswith("@" + expected.split("@")[-1])
    if ":" in expected.rsplit("/", 1)[-1]:
        return False  # a full repo:tag reference that is not equal
    return image.rsplit("/", 1)[-1].partition("@")[0].rpartition(":")[2] == expected and ":" in image.rsplit("/")[-1]


def judge_deployment(
    deployment: dict[str, Any], *, expected_image: str | None = None, container: str | None = None
) -> Judgement:
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    if expected_image is not None:
        containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
        chosen = [c for c in containers if container is None or c.get("name") == container]
        if not chosen:
            names = ", ".join(c.get("name", "?") for c in containers)
            return Judgement.failed(f"Deployment {name} has no container {container!r} (it has: {names})")
        images = [c.get("image", "") for c in chosen]
        if not any(image_matches(image, expected_image) for image in images):
            return Judgement.waiting(f"Deployment {name} runs {', '.join(images)}, want {expected_image}")
    generation = meta.get("generation") or 0
    observed = status.get("observedGeneration") or 0
    if observed < generation:
        return Judgement.waiting(f"Deployment {name}: rollout of generation {generation} not observed yet")
    progressing = _conditions(deployment).get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Judgement.failed(f"Deployment {name} exceeded its progress deadline: {progressing.get('message', '')}")
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    current = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < replicas:
        return Judgement.waiting(f"Deployment {name}: {updated} of {replicas} new replicas updated")
    if current > updated:
        return Judgement.waiting(f"Deployment {name}: {current - updated} old replicas pending termination")
    if available < updated:
        return Judgement.waiting(f"Deployment {name}: {available} of {updated} updated replicas available")
    return Judgement.ready(f"Deployment {name} rolled out ({available}/{replicas} available)")
