"""``tag``: an Argo CD Application file in the repository points at a release tag (``targetRevision``).

promote-rc cuts the next release candidate (``v1.2.3-rc1``, then ``-rc2``...) at the branch head, or reuses
the newest one when nothing but this tool's own write-backs happened since. Each environment after the
entry gets the rc verified in the one before it; the last gets the stable tag (``v1.2.3``) created at *the
same commit*. Rollback points back at an earlier stable tag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from pipeline.model import Environment, Pipeline, TrackTag
from rules.versions import Bump, ReleaseVersion, latest_stable, next_rc
from tasks import evidence, manifests
from tasks.gitrepo import CommitResult, GitRepository
from tasks.strategies import files
from tasks.strategies.base import (
    Applied,
    Candidate,
    Entry,
    ReleaseError,
    RollbackPlan,
    Strategy,
    TagToCreate,
    require_upstream,
)

if TYPE_CHECKING:
    from tasks.connections import Connections


def _tracks(env: Environment) -> TrackTag:
    assert isinstance(env.tracks, TrackTag)
    return env.tracks


def application_edit(env: Environment) -> files.TextEdit:
    tracks = _tracks(env)
    file = tracks.application_file
    return files.TextEdit(
        file,
        read=lambda text: manifests.get_application_revision(text, source_index=tracks.source_index, source=file),
        write=lambda text, value: manifests.set_application_revision(
            text, value, source_index=tracks.source_index, source=file
        ),
    )


def release_values(pipeline: Pipeline, tag: str, commit: str) -> dict[str, str]:
    """Template values for checks and expected images: version (1.2.3-rc1), tag (v1.2.3-rc1), commit."""
    version = pipeline.versioning.scheme.parse(tag)
    return {"version": version.format(rc_label=pipeline.versioning.rc_label), "tag": tag, "commit": commit}


RcAction = Literal["create", "reuse", "skip"]


def decide_rc(
    repo: GitRepository, pipeline: Pipeline, bump: Bump | None = None
) -> tuple[RcAction, str | None, str, str]:
    """(action, rc tag, commit, reason): cut the next rc at the branch head, or reuse the newest rc when
    nothing but our own write-backs happened since it (a re-run, or a nightly with nothing new), or skip
    when it is already released."""
    scheme = pipeline.versioning.scheme
    head = repo.resolve(pipeline.repository.branch)
    versions = scheme.versions(repo.tags())
    rcs = [v for v in versions if v.is_rc]
    newest = max(rcs, key=ReleaseVersion.sort_key) if rcs else None
    stable = latest_stable(versions)
    if newest is not None:
        newest_tag = scheme.tag(newest)
        newest_commit = repo.resolve(newest_tag)
        if repo.is_ancestor(newest_commit, head) and not evidence.changes_since(repo, newest_commit, head):
            if stable is not None and stable >= newest.stable():
                return "skip", None, head, f"no changes since {newest_tag}, already released"
            return "reuse", newest_tag, newest_commit, f"no changes since {newest_tag}"
    candidate = next_rc(versions, bump or pipeline.versioning.bump, scheme.parse(pipeline.versioning.initial_version))
    return "create", scheme.tag(candidate), head, f"{len(versions)} release tags known"


def verified_rc(repo: GitRepository, pipeline: Pipeline, upstream: Environment, rc_tag: str | None) -> tuple[str, str]:
    """(rc tag, commit) to promote: the given rc, or the newest rc with a passed verification upstream.
    Refuses an rc without that evidence: nothing reaches an environment that was not verified before it."""
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
        if evidence.find(evidence.records_for(repo, commit), "verified", pipeline.name, upstream.name, tag) is None:
            raise ReleaseError(
                f"{tag} has no record of a passed verification in {upstream.name} "
                f"(git notes --ref={evidence.NOTES_REF} show {commit[:12]}); promote it there first"
            )
        return tag, commit
    candidates = sorted((v for v in scheme.versions(repo.tags()) if v.is_rc), key=ReleaseVersion.sort_key, reverse=True)
    for version in candidates:
        tag = scheme.tag(version)
        commit = repo.resolve(tag)
        if evidence.find(evidence.records_for(repo, commit), "verified", pipeline.name, upstream.name, tag) is not None:
            return tag, commit
    raise ReleaseError(
        f"no release candidate of {pipeline.name} has passed verification in {upstream.name} yet; "
        f"promote one there first"
    )


class TagStrategy(Strategy):
    kind = "tag"

    def current(self, conn: Connections, env: Environment) -> str | None:
        return files.read(conn.repo, conn.pipeline.repository.branch, application_edit(env))

    def entry(self, conn: Connections, env: Environment, bump: str | None) -> Entry:
        repo, pipeline = conn.repo, conn.pipeline
        if bump not in (None, "major", "minor", "patch"):
            raise ReleaseError(f"bump must be major, minor or patch, not {bump[:20]!r}")
        action, tag, commit, reason = decide_rc(repo, pipeline, cast(Bump | None, bump))
        if tag is None:
            return Entry("skip", "", reason, revision=commit)
        reason = f"release candidate at {commit[:12]} ({reason})"
        (old,), diff = files.plan(repo, pipeline.repository.branch, [(application_edit(env), tag)])
        write = Candidate(env.name, self.kind, tag, old, tag, commit, commit, tag, diff=diff)
        rc = TagToCreate(tag, commit, f"{pipeline.name} release candidate {tag}")
        return Entry(action, tag, reason, revision=commit, tag=rc, write=write, diff=diff, previous=old)

    def candidate(self, conn: Connections, env: Environment, requested: str | None) -> Candidate:
        repo, pipeline = conn.repo, conn.pipeline
        upstream = require_upstream(pipeline, env)
        rc_tag, commit = verified_rc(repo, pipeline, upstream, requested)
        last = env is pipeline.last
        value = pipeline.versioning.scheme.tag(pipeline.versioning.scheme.parse(rc_tag).stable()) if last else rc_tag
        edit = application_edit(env)
        branch = pipeline.repository.branch
        (old,), diff = files.plan(repo, branch, [(edit, value)])
        since = repo.resolve(old) if old and old in repo.tags() else None
        previous = files.value_before_write(
            repo, pipeline.name, env.name, branch, [edit.file], value, old, lambda ref: files.read(repo, ref, edit)
        )
        return Candidate(
            environment=env.name,
            kind=self.kind,
            value=value,
            previous=previous,
            record_tag=rc_tag,
            anchor=commit,
            release_commit=commit,
            label=f"{value} (rc {rc_tag})" if last else value,
            diff=diff,
            commits=tuple((e.sha, e.subject) for e in evidence.changes_since(repo, since, commit)),
            tag=TagToCreate(value, commit, f"{pipeline.name} {value} (from {rc_tag})") if last else None,
        )

    def apply(self, conn: Connections, env: Environment, candidate: Candidate) -> Applied:
        written = self._point(conn, env, candidate.value)
        revision = candidate.release_commit or conn.repo.resolve(candidate.value)
        return Applied(written.commit, written.changed, revision)

    def holds(self, conn: Connections, env: Environment, candidate: Candidate, commit: str) -> bool:
        return files.read(conn.repo, commit, application_edit(env)) == candidate.value

    def merged(
        self, conn: Connections, env: Environment, candidate: Candidate, proposed: Applied | None, tip: str
    ) -> Applied:
        revision = candidate.release_commit or conn.repo.resolve(candidate.value)
        return Applied(commit=tip, changed=True, revision=revision)

    def _point(self, conn: Connections, env: Environment, value: str) -> CommitResult:
        pipeline = conn.pipeline
        return files.point(
            conn.repo,
            pipeline.repository.branch,
            [(application_edit(env), value)],
            lambda old: files.commit_message(pipeline.name, env.name, old[0] if old else None, value),
        )

    def values(self, conn: Connections, env: Environment, value: str, revision: str) -> dict[str, str]:
        return release_values(conn.pipeline, value, revision)

    def roll_back(
        self, conn: Connections, env: Environment, candidate: Candidate, applied: Applied
    ) -> tuple[Applied, dict[str, str]]:
        previous = candidate.previous
        if previous is None:
            raise ReleaseError(f"{env.name} tracked nothing before {candidate.label}: nothing to roll back to")
        written = self._point(conn, env, previous)
        commit = conn.repo.resolve(previous)
        return Applied(written.commit, written.changed, commit), self.values(conn, env, previous, commit)

    def rollback_plan(self, conn: Connections, env: Environment, to_version: str | None) -> RollbackPlan:
        """An earlier stable tag: ``to_version``, or the newest stable release before what ``env`` runs."""
        repo, pipeline = conn.repo, conn.pipeline
        scheme = pipeline.versioning.scheme
        current = self.current(conn, env) or ""
        if to_version is None:
            current_version = scheme.parse(current)
            older = [v for v in scheme.versions(repo.tags()) if not v.is_rc and v < current_version]
            if not older:
                raise ReleaseError(f"{env.name} runs {current}; there is no earlier stable release to go back to")
            target = scheme.tag(max(older, key=ReleaseVersion.sort_key))
        else:
            target = scheme.tag(scheme.parse(to_version))
            if target not in repo.tags():
                raise ReleaseError(f"{target} is not a tag of the repository; nothing to roll back to")
        _, diff = files.plan(repo, pipeline.repository.branch, [(application_edit(env), target)])
        candidate = Candidate(env.name, self.kind, current, target, current, "", None, current)
        return RollbackPlan(
            current, target, candidate, Applied("", True, ""), diff=diff, record_commit=repo.resolve(current)
        )
