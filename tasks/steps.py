"""Prefect tasks: thin wrappers that give each promotion step a name, retries and artifacts in the UI.

The work itself is in the plain modules next to this one; these wrappers only add orchestration concerns:
retry on transient failures (and only those), logging through the run logger, and artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task, exponential_backoff

from pipeline.model import Environment
from rules.errors import OutcomeError, PromoteError, TransientError, is_transient
from tasks import evidence
from tasks import markdown as md
from tasks.connections import Connections
from tasks.faults import crash_point
from tasks.gitrepo import TagResult
from tasks.health import CheckResult, results_table, run_check
from tasks.strategies import strategy_for
from tasks.strategies.base import Applied, Candidate, Entry, TagToCreate
from tasks.verification import VerificationResult, verify_environment


def is_transient_failure(exc: BaseException) -> bool:
    """Whether a step's failure is worth retrying: the outside system's module said so at its border."""
    return is_transient(exc)


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry network trouble, never a refusal or a bad input."""
    try:
        state.result(raise_on_failure=True)
    except Exception as exc:  # the state's own exception, classified below
        return is_transient_failure(exc)
    return False


_RETRYING: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}


def _log() -> Callable[[str], None]:
    return get_run_logger().info


def _fetch(conn: Connections) -> str:
    conn.repo.fetch()
    head = conn.repo.resolve(conn.pipeline.repository.branch)
    _log()(f"{conn.repo!r}: {conn.pipeline.repository.branch} is at {head[:12]}")
    return head


@task(name="fetch-repository", **_RETRYING)
def fetch_repository(conn: Connections) -> str:
    return _fetch(conn)


# The first step of promote-rc and promote-production fetches as part of its decision instead of in a task
# of its own: each task run costs the Prefect server about as much as the step itself, and a nightly runs
# many. Retrying the whole step is harmless: the decision only reads.


@task(name="decide-release-candidate", **_RETRYING)
def decide_entry(conn: Connections, env: Environment, bump: str | None) -> Entry:
    """Fetch, then decide what enters the pipeline at ``env``: the next release candidate on the pipeline's
    branch, or what the environment runs (an image policy: the registry's choice)."""
    _fetch(conn)
    entry = strategy_for(env).entry(conn, env, bump)
    at = f" at {entry.revision[:12]}" if entry.revision else ""
    _log()(f"[{env.name}] {entry.action} {entry.value}{at} ({entry.reason})")
    return entry


@task(name="tag-release", **_RETRYING)
def tag_release(conn: Connections, tag: TagToCreate) -> TagResult:
    return _tag(conn, tag)


@task(name="choose-candidate", **_RETRYING)
def choose_candidate(conn: Connections, env: Environment, requested: str | None, fetch: bool = False) -> Candidate:
    """What ``env`` would be promoted to (after fetching, if asked); refuses anything not verified upstream."""
    if fetch:
        _fetch(conn)
    candidate = strategy_for(env).candidate(conn, env, requested)
    _log()(f"[{env.name}] {candidate.previous} -> {candidate.label} ({env.tracks.kind})")
    return candidate


def _tag(conn: Connections, tag: TagToCreate) -> TagResult:
    result = conn.repo.create_tag(tag.name, tag.commit, tag.message)
    _log()(f"tag {tag.name} {'created and pushed' if result.created else 'already at'} {tag.commit[:12]}")
    return result


def _apply(conn: Connections, env: Environment, candidate: Candidate) -> Applied:
    applied = strategy_for(env).apply(conn, env, candidate)
    verb = f"committed {applied.commit[:12]}" if applied.changed else "already there, nothing to commit"
    _log()(f"[{env.name}] -> {candidate.label}: {verb}; expecting revision {applied.revision[:12]}")
    return applied


@task(name="promote-environment", **_RETRYING)
def tag_and_apply(
    conn: Connections,
    env: Environment,
    tag: TagToCreate | None,
    candidate: Candidate | None,
    tagged: Callable[[TagToCreate], None] = lambda _tag: None,
) -> Applied | None:
    """Push the release's tag (if it has one), then write the environment's change (if there is one): one
    step, as each task run costs the Prefect server about as much as a short step. Both are idempotent, so a
    retry of the whole step (or a re-run after a crash between them) pushes and writes nothing twice.
    ``tagged`` is told when this call created the tag (a re-run finds it there and says nothing)."""
    if tag is not None:
        if _tag(conn, tag).created:
            tagged(tag)
        crash_point("after-tag-push")
    return _apply(conn, env, candidate) if candidate is not None else None


@task(name="roll-back-environment", **_RETRYING)
def roll_back_promotion(
    conn: Connections, env: Environment, candidate: Candidate, applied: Applied
) -> tuple[Applied, dict[str, str]]:
    back, values = strategy_for(env).roll_back(conn, env, candidate, applied)
    _log()(f"[{env.name}] rolled back to {candidate.previous}: {back.commit[:12]}")
    return back, values


def _verify(conn: Connections, env: Environment, revision: str, values: dict[str, str]) -> VerificationResult:
    kube = conn.kube(env)
    kube.log = _log()
    return verify_environment(kube, env, revision, values)


def verification_section(env: Environment, revision: str, result: VerificationResult, checks: list[CheckResult]) -> str:
    """What the controller and the rollout showed at each step, then the health checks' table: a section of the
    run's audit record (flows/records.py), not an artifact of its own, as each artifact is a write the Prefect
    server stores and announces with two events, and a nightly verifies every environment of every pipeline."""
    lines = [f"## {md.text(env.name)} runs {md.code(revision[:12])}", ""]
    lines += [f"- **{md.text(s.what)}**: {md.text(s.message, 600)} ({s.seconds:.1f}s)" for s in result.steps]
    lines += ["", f"API requests: {result.stats.requests} (watch events: {result.stats.events})"]
    if checks:
        lines += ["", "### Health checks", "", *md.table(results_table(checks))]
    return "\n".join(lines)


class HealthCheckError(OutcomeError, RuntimeError):
    """A health check of the environment failed after the change was verified in the cluster. ``section``: the
    verification's section for the audit record, the failed checks' rows in it."""

    def __init__(self, message: str, section: str = "") -> None:
        super().__init__(message)
        self.section = section

    def __reduce__(self) -> tuple[type[HealthCheckError], tuple[str, str]]:
        return type(self), (str(self), self.section)


def _health_checks(env: Environment, values: dict[str, str]) -> list[CheckResult]:
    log = _log()
    results = [run_check(check, values, log=log) for check in env.health_checks]
    for result in results:
        log(result.summary())
    return results


@task(name="verify-environment", **_RETRYING)
def verify(conn: Connections, env: Environment, revision: str, values: dict[str, str]) -> Verified:
    """The controller runs ``revision`` and it rolled out (used after a rollback: no health checks)."""
    result = _verify(conn, env, revision, values)
    return Verified(result, [], (), verification_section(env, revision, result, []))


class EvidenceNotRecordedError(PromoteError, RuntimeError):
    """The environment was verified and its evidence could not be written to Git: nothing is rolled back (what
    runs is right); a re-run finds the environment verified and records it. ``section``: as HealthCheckError's,
    set by the step that verified."""

    section = ""


class TransientEvidenceError(EvidenceNotRecordedError, TransientError):
    """The same, for a failure worth retrying (the Git remote unreachable): the step is tried again."""


class Verified(NamedTuple):
    verification: VerificationResult
    checks: list[CheckResult]
    recorded: tuple[evidence.Record, ...]
    section: str  # for the run's audit record


# What to record once the environment is verified and checked, built from both (they go into its details).
EvidenceFor = Callable[[VerificationResult, list[CheckResult]], Sequence[evidence.Record]]


@task(name="verify-environment", **_RETRYING)
def verify_and_check(
    conn: Connections, env: Environment, revision: str, values: dict[str, str], evidence_for: EvidenceFor | None = None
) -> Verified:
    """The controller runs ``revision``, it rolled out, the health checks pass, then the evidence
    ``evidence_for`` builds is written to Git: one step, as each task run costs the Prefect server about as
    much as a short step (a nightly runs many). A failed health check is not retried by Prefect (it probes and
    backs off itself until its timeout); a transient Kubernetes or Git error retries the step, and verifying
    again and writing a record again are harmless (a record already there is not added twice). A record that
    cannot be written raises :class:`EvidenceNotRecordedError`, never a verification failure: the caller must
    not roll back a verified environment for it. Verification and checks make one section of the run's audit
    record, failed checks included (on the error when one is raised)."""
    verification = _verify(conn, env, revision, values)
    checks = _health_checks(env, values)
    section = verification_section(env, revision, verification, checks)
    failed = [r for r in checks if not r.passed]
    if failed:
        summary = "; ".join(r.summary() for r in failed)
        raise HealthCheckError(f"[{env.name}] health checks failed: {summary}", section)
    try:
        records = tuple(evidence_for(verification, checks)) if evidence_for is not None else ()
        for rec in records:
            _write_record(conn, rec)
    except EvidenceNotRecordedError as lost:
        lost.section = section
        raise
    except Exception as exc:  # building the records failed: the environment was verified all the same
        unbuilt = _not_recorded(env.name, "records", exc)
        unbuilt.section = section
        raise unbuilt from exc
    return Verified(verification, checks, records, section)


def _not_recorded(environment: str, what: str, exc: Exception) -> EvidenceNotRecordedError:
    kind = TransientEvidenceError if is_transient(exc) else EvidenceNotRecordedError
    return kind(
        f"[{environment}] verified, but its {what} could not be written to Git ({exc}); nothing was rolled "
        "back: run the promotion again to record it"
    )


def _write_record(conn: Connections, rec: evidence.Record) -> None:
    try:
        evidence.record(conn.repo, rec)
    except Exception as exc:
        raise _not_recorded(rec.environment, f"'{rec.kind}' record", exc) from exc
    _log()(_recorded(rec))


def _recorded(rec: evidence.Record) -> str:
    return f"recorded '{rec.kind}' for {rec.tag} ({rec.environment}) in refs/notes/{evidence.NOTES_REF}"


@task(name="record-evidence", **_RETRYING)
def record_evidence(conn: Connections, rec: evidence.Record) -> None:
    evidence.record(conn.repo, rec)
    _log()(_recorded(rec))


def run_url(flow_run_id: str | None) -> str | None:
    ui = os.environ.get("PREFECT_UI_URL")
    if not ui or not flow_run_id:
        return None
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}"
