"""Release decisions over the repository: which rc to cut or reuse, which rc may go to production, evidence.

These decide from Git alone (tags, notes, commit trailers), which is what makes every flow safe to re-run:
the same repository state always leads to the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.model import Environment, Pipeline
from tasks import evidence
from tasks.errors import RefusedError
from tasks.gitrepo import GitRepository, LogEntry, TagResult
from tasks.targets import PROMOTE_TRAILER
from tasks.versions import Bump, ReleaseVersion, TagScheme, latest_stable, next_rc


class ReleaseError(RefusedError, RuntimeError):
    """A promotion that must not happen (no evidence, unknown rc); nothing was changed."""


@dataclass(frozen=True)
class RcDecision:
    action: Literal["create", "reuse", "skip"]
    tag: str | None
    commit: str
    reason: str


def rc_environment(pipeline: Pipeline) -> Environment:
    """The environment new versions enter by: the first that tracks tags (release candidates) or, in a
    pipeline without tags, the first environment (its branch head, overlay value or policy choice)."""
    for env in pipeline.environments:
        if env.tracks.kind == "tag":
            return env
    return pipeline.environments[0]


def production_environment(pipeline: Pipeline) -> Environment:
    return pipeline.environments[-1]


def upstream_of(pipeline: Pipeline, env: Environment) -> Environment:
    index = pipeline.names.index(env.name)
    if index == 0:
        raise ReleaseError(f"environment {env.name!r} is the first of pipeline {pipeline.name!r}; nothing is upstream")
    return pipeline.environments[index - 1]


def changes_since(repo: GitRepository, since: str | None, until: str) -> list[LogEntry]:
    """Commits in ``since..until`` that are not this tool's own write-backs (they carry its trailer)."""
    return [entry for entry in repo.log(since, until) if PROMOTE_TRAILER not in entry.message]


def decide_rc(repo: GitRepository, pipeline: Pipeline, bump: Bump | None = None) -> RcDecision:
    """Cut the next rc at the branch head, or reuse the newest rc when nothing but our own write-backs
    happened since it (a re-run, or a nightly with nothing new), or skip when it is already released."""
    scheme = pipeline.versioning.scheme
    head = repo.resolve(pipeline.repository.branch)
    versions = scheme.versions(repo.tags())
    rcs = [v for v in versions if v.is_rc]
    newest = max(rcs, key=ReleaseVersion.sort_key) if rcs else None
    stable = latest_stable(versions)
    if newest is not None:
        newest_tag = scheme.tag(newest)
        newest_commit = repo.resolve(newest_tag)
        if repo.is_ancestor(newest_commit, head) and not changes_since(repo, newest_commit, head):
            released = stable is not None and stable >= newest.stable()
            if released:
                return RcDecision("skip", None, head, f"no changes since {newest_tag}, already released")
            return RcDecision("reuse", newest_tag, newest_commit, f"no changes since {newest_tag}")
    candidate = next_rc(versions, bump or pipeline.versioning.bump, scheme.parse(pipeline.versioning.initial_version))
    return RcDecision("create", scheme.tag(candidate), head, f"{len(versions)} release tags known")


def create_rc_tag(repo: GitRepository, decision: RcDecision, pipeline: Pipeline) -> TagResult:
    assert decision.tag is not None
    return repo.create_tag(decision.tag, decision.commit, f"{pipeline.name} release candidate {decision.tag}")


def record(repo: GitRepository, rec: evidence.Record) -> None:
    repo.update_note(rec.commit, evidence.NOTES_REF, lambda old: evidence.add_record(old, rec))


def records_for(repo: GitRepository, commit: str) -> list[evidence.Record]:
    return evidence.parse_records(repo.read_note(commit, evidence.NOTES_REF))


def all_records(repo: GitRepository) -> list[evidence.Record]:
    return [record for note in repo.all_notes(evidence.NOTES_REF).values() for record in evidence.parse_records(note)]


def find_record(
    repo: GitRepository, kind: evidence.RecordKind, pipeline: str, environment: str, tag: str
) -> evidence.Record | None:
    """A record on any commit: image values are verified at write-back commits nobody knows in advance.
    Newest first when the same fact was recorded more than once."""
    found: list[evidence.Record] = []
    for note in repo.all_notes(evidence.NOTES_REF).values():
        record = evidence.find(evidence.parse_records(note), kind, pipeline, environment, tag)
        if record is not None:
            found.append(record)
    return max(found, key=lambda r: r.at) if found else None


def verified_rc(repo: GitRepository, pipeline: Pipeline, upstream: Environment, rc_tag: str | None) -> tuple[str, str]:
    """(rc tag, commit) to promote: the given rc, or the newest rc with a passed verification upstream.

    Refuses an rc without that evidence: nothing reaches production that was not verified first.
    """
    scheme = pipeline.versioning.scheme
    if rc_tag is not None:
        version = scheme.parse(rc_tag)
        if not version.is_rc:
            raise ReleaseError(
                f"{rc_tag} is not a release candidate (expected a tag like {scheme.tag(version.with_rc(1))})"
            )
        tag = scheme.tag(version)
        if tag not in repo.tags():
            raise ReleaseError(f"release candidate {tag} does not exist in the repository")
        commit = repo.resolve(tag)
        if evidence.find(records_for(repo, commit), "verified", pipeline.name, upstream.name, tag) is None:
            raise ReleaseError(
                f"{tag} has no record of a passed verification in {upstream.name} "
                f"(git notes --ref={evidence.NOTES_REF} show {commit[:12]}); run promote-rc for it first"
            )
        return tag, commit
    candidates = sorted((v for v in scheme.versions(repo.tags()) if v.is_rc), key=ReleaseVersion.sort_key, reverse=True)
    for version in candidates:
        tag = scheme.tag(version)
        commit = repo.resolve(tag)
        if evidence.find(records_for(repo, commit), "verified", pipeline.name, upstream.name, tag) is not None:
            return tag, commit
    raise ReleaseError(
        f"no release candidate of {pipeline.name} has passed verification in {upstream.name} yet; run promote-rc"
    )


def stable_tag_for(scheme: TagScheme, rc_tag: str) -> str:
    return scheme.tag(scheme.parse(rc_tag).stable())
