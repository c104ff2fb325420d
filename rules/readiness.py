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


def _cap(value: Any, limit: int = 80) -> str:
    """Status text is written by a controller (or anyone with write access to it): echo a bounded piece."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(revision: Any) -> str:
    if not revision:
        return "(none)"
    if not isinstance(revision, str):
        return _cap(revision)
    return revision[:12] if len(revision) == 40 else _cap(revision)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it; anything else (a number, garbage) is "not set"."""
    if not value or not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # A time without an offset compared with an aware one would raise: Kubernetes times are UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in listed if isinstance(c, dict)} if isinstance(listed, list) else {}


# --- Argo CD Application ------------------------------------------------------------------------------


def judge_application(
    app: dict[str, Any],
    revision: str,
    *,
    source_index: int | None = None,
    health_grace_seconds: float = 10.0,
    seen_progressing: bool = False,
    rollout_seen: bool = False,
    now: datetime | None = None,
) -> Judgement:
    """Argo CD runs ``revision`` (a commit id): synced to it by a finished operation and healthy.

    The "operation in progress" rules are those of ``argocd app wait`` (argo-cd cmd/argocd/commands/app.go,
    checkAppWaitConditions); tests/rules/test_readiness.py has one table row per rule. On top of them: the synced
    revision must be ours, and a failed operation or a Degraded health for our revision fails fast.
    """
    now = now or datetime.now(UTC)
    status = app.get("status") or {}
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") in ARGO_TERMINAL_CONDITIONS:
            return Judgement.failed(f"{cond['type']}: {_cap(cond.get('message', ''), 300)}".strip())

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
    # argo-cd pkg/apis/application/v1alpha1/types.go Operation.DryRun: a dry run applies nothing, so it is
    # neither our sync nor a reason to wait for a comparison after it.
    dry_run = bool(((op.get("operation") or {}).get("sync") or {}).get("dryRun"))
    if dry_run:
        op_revision = None
    where = f"sync {sync.get('status', 'Unknown')} at {_short(synced_revision)}, health {health}"

    # checkAppWaitConditions: .operation set ("it just got requested") is in progress; so is an operationState
    # without finishedAt ("not finished yet"), whatever its phase (gitops-engine pkg/sync/common/types.go
    # OperationPhase.Running, and Terminating, are the phases of an unfinished one).
    finished = parse_time(op.get("finishedAt"))
    if app.get("operation") is not None or (op and (finished is None or op.get("phase") in ("Running", "Terminating"))):
        return Judgement.waiting(f"sync operation in progress ({where})")
    # checkAppWaitConditions: a finished, non-dry-run operation is still in progress until the controller has
    # compared the app once after it (reconciledAt missing or before finishedAt), whatever revision it was for:
    # until then sync and health describe the state before that operation.
    if op and finished is not None and not dry_run:
        reconciled = parse_time(status.get("reconciledAt"))
        if reconciled is None or reconciled < finished:
            return Judgement.waiting(f"waiting for a comparison after the sync finished ({where})")
    # cmd/argocd/commands/app.go (app sync): after the wait, an operation that did not end Succeeded fails.
    if op_revision == revision and op.get("phase") in ("Failed", "Error"):
        return Judgement.failed(f"sync of {_short(revision)} {op['phase']}: {_cap(op.get('message', ''), 300)}".strip())
    if synced_revision != revision:
        stale = " (still the previous revision)" if sync.get("status") == "Synced" else ""
        return Judgement.waiting(f"want {_short(revision)}; {where}{stale}")
    # checkResourceStatus: sync status Synced and health Healthy.
    if sync.get("status") != "Synced":
        return Judgement.waiting(f"want Synced; {where}")
    if op_revision == revision and op.get("phase") != "Succeeded":
        return Judgement.waiting(f"sync operation for {_short(revision)} not finished ({where})")

    if health == "Degraded":
        # waitOnApplicationStatus fails on a transition to Degraded from a health other than Unknown/Degraded;
        # ours: at our revision, after such a health was seen there or after our own sync operation.
        if seen_progressing or op_revision == revision:
            return Judgement.failed(
                f"application is Degraded at {_short(revision)}: {_cap(health_message, 300)}".strip()
            )
        return Judgement.waiting(f"want Healthy; {where}")
    if health != "Healthy":
        return Judgement.waiting(f"want Healthy; {where}")
    # Ours: Healthy right after an operation can still describe the old pods, so it waits out the grace, unless
    # the rollout was seen (Progressing at our revision, then Healthy): the real controller writes Progressing at
    # our revision before Healthy whenever pods roll (tests/data/argocd/), and a Healthy after it ends that rollout.
    if finished is not None and op_revision == revision and not rollout_seen:
        settled = (now - finished).total_seconds()
        if settled < health_grace_seconds:
            return Judgement.waiting(
                f"Healthy, letting health settle ({settled:.0f}s of {health_grace_seconds:.0f}s after sync)",
                recheck_in=health_grace_seconds - settled,
            )
    return Judgement.ready(f"Synced and Healthy at {_short(revision)}")


# --- Flux Kustomization -------------------------------------------------------------------------------


def flux_revision_matches(applied: Any, revision: str) -> bool:
    """``main@sha1:<sha>``, ``v1.2.3@sha1:<sha>``, ``sha1:<sha>`` or a bare sha name the commit."""
    if not applied or not isinstance(applied, str):
        return False
    return applied == revision or applied.endswith((f"sha1:{revision}", f"@{revision}"))


def _generation(value: Any) -> int | None:
    # A generation is an integer; a bool or a string from a broken status is "not observed", never a crash.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def judge_kustomization(ks: dict[str, Any], revision: str, *, requested_at: str | None = None) -> Judgement:
    """Flux has applied ``revision`` and calls the Kustomization ready, by the rules ``flux reconcile`` applies.

    Each step names the upstream rule it ports; tests/rules/test_readiness_upstream.py has one table row per rule.
    On top of them (ours): a Stalled or terminal Ready=False for our revision fails fast, also beside the
    Reconciling=True (ProgressingWithRetry) that real Flux writes with it, and the applied revision must be ours.
    """
    meta = ks.get("metadata") or {}
    status = ks.get("status") or {}
    generation = _generation(meta.get("generation"))
    observed = _generation(status.get("observedGeneration"))
    conditions = _conditions(ks)
    ready = conditions.get("Ready") or {}
    stalled = conditions.get("Stalled") or {}
    reconciling = conditions.get("Reconciling") or {}
    applied = status.get("lastAppliedRevision")
    attempted = status.get("lastAttemptedRevision")
    where = (
        f"Ready={_cap(ready.get('status', 'Unknown'))} ({_cap(ready.get('reason', '-'))}), "
        f"applied {_short(applied)}, generation {observed}/{generation}"
    )

    def for_this_generation(condition: dict[str, Any]) -> bool:
        # flux2 cmd/flux/readiness.go isObjectReady: a condition's own observedGeneration (fluxcd/pkg
        # runtime/conditions/setter.go Set writes it) says which spec it describes; 0 means none was written,
        # and status.observedGeneration decides.
        own = _generation(condition.get("observedGeneration")) or 0
        return generation is not None and (own == generation if own else observed == generation)

    # kstatus checkGenericProperties (cli-utils pkg/kstatus/status/generic.go): a deletionTimestamp is
    # Terminating, which `flux reconcile` reports as an error.
    if meta.get("deletionTimestamp"):
        return Judgement.failed(f"Kustomization is being deleted (deletionTimestamp {_cap(meta['deletionTimestamp'])})")
    # flux2 cmd/flux/reconcile.go reconciliationHandled: nothing counts until Flux echoes our request token.
    if requested_at is not None and status.get("lastHandledReconcileAt") != requested_at:
        return Judgement.waiting(f"reconcile request {requested_at} not handled yet ({where})")
    # Ours: a Ready=False reason Flux will not fix by retrying, for our revision and this spec, fails fast
    # (kstatus would call it InProgress until the timeout). Flux writes it beside Reconciling=True with reason
    # ProgressingWithRetry: kustomize-controller internal/controller/kustomization_controller.go finalizeStatus
    # gives Reconciling that reason exactly when an attempt has *ended* with Ready=False, after spending the
    # Kustomization's own spec.timeout on it (health checks included); the retry is a new attempt at the same
    # revision on the next interval, not progress on this one.
    terminal = (
        ready.get("status") == "False"
        and ready.get("reason") in FLUX_TERMINAL_REASONS
        and for_this_generation(ready)
        and flux_revision_matches(attempted, revision)
    )
    # kstatus checkGenericProperties: Reconciling=True is InProgress, even beside Ready=True (fluxcd/pkg
    # runtime/conditions/check/fail.go check_FAIL0003: Ready=True may stay while reconciling), and
    # fluxcd/pkg runtime/conditions/getter.go IsStalled: Stalled counts only while Reconciling is not True.
    if reconciling.get("status") == "True" and not (terminal and reconciling.get("reason") == "ProgressingWithRetry"):
        return Judgement.waiting(f"Flux is reconciling ({_cap(reconciling.get('reason', '-'))}; {where})")
    # kstatus checkGenericProperties: Stalled=True is Failed, with the condition's message; kstatus looks at it
    # only once the generation is observed, and kustomize-controller leaves status.observedGeneration behind on
    # some stalls, so the Stalled condition's own generation counts too. Ours: Stalled for an older attempted
    # revision waits, since a new revision (a rollback's) is a change Flux acts on.
    if (
        stalled.get("status") == "True"
        and for_this_generation(stalled)
        and (attempted is None or flux_revision_matches(attempted, revision))
    ):
        return Judgement.failed(
            f"Kustomization is Stalled ({_cap(stalled.get('reason'))}): {_cap(stalled.get('message', ''), 300)}"
        )
    if terminal:
        return Judgement.failed(
            f"Ready=False ({ready['reason']}) at {_short(revision)}: {_cap(ready.get('message', ''), 300)}"
        )
    # flux2 isObjectReady ("object not reconciled yet": observedGeneration < 1) and kstatus generic.go
    # checkGeneration (observedGeneration != generation is InProgress).
    if observed is None or observed < 1 or generation is None or observed != generation:
        return Judgement.waiting(f"Flux has not observed the latest spec ({where})")
    # flux2 isObjectReady: no Ready condition is not ready; a Ready condition for another generation is not
    # ready either, whatever status.observedGeneration says.
    if not ready:
        return Judgement.waiting(f"Flux has set no Ready condition yet ({where})")
    if not for_this_generation(ready):
        return Judgement.waiting(
            f"Ready condition is for generation {ready.get('observedGeneration')}, not {generation} ({where})"
        )
    if not flux_revision_matches(applied, revision):
        return Judgement.waiting(f"want {_short(revision)}; {where}")
    # kstatus checkReadyCondition (status.go): Ready=True is Current; False and Unknown are InProgress.
    if ready.get("status") != "True":
        return Judgement.waiting(f"want Ready=True; {where}")
    return Judgement.ready(f"Ready and applied at {_short(revision)}")


def flux_manages(ks: dict[str, Any], *, namespace: str, name: str, group: str, kind: str) -> bool:
    """The Kustomization's inventory lists the object: Flux applied it (server-side) before it said Ready.

    kustomize-controller api/v1 inventory.go: each ``status.inventory.entries[].id`` is fluxcd/pkg ssa
    ``ObjMetadata`` ``<namespace>_<name>_<group>_<kind>`` (cli-utils object.ObjMetadata.String).
    """
    entries = ((ks.get("status") or {}).get("inventory") or {}).get("entries") or []
    wanted = f"{namespace}_{name}_{group}_{kind}"
    return isinstance(entries, list) and any(isinstance(e, dict) and e.get("id") == wanted for e in entries)


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
    deployment: dict[str, Any],
    *,
    expected_image: str | None = None,
    container: str | None = None,
    image_is_final: bool = False,
) -> Judgement:
    """As ``kubectl rollout status``, of the promoted image. ``image_is_final``: the GitOps controller has applied
    our revision to this Deployment, so a different image is what Git says there and fails instead of waiting."""
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
            running = ", ".join(_cap(image, 200) for image in images[:3])
            if image_is_final:
                return Judgement.failed(
                    f"Deployment {name} runs {running}, want {_cap(expected_image, 200)}: the revision the GitOps "
                    "controller applied sets that image (check what the promotion wrote, or verify.deployments)"
                )
            return Judgement.waiting(f"Deployment {name} runs {running}, want {_cap(expected_image, 200)}")
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
