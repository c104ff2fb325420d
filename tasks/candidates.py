"""What promoting an environment means for each way of tracking a version, decided from Git (and, for image
policies, the registry) before anything is written.

* ``tag``: the newest rc verified upstream becomes a stable tag at the same commit.
* ``branch``: the upstream branch's commit that was verified upstream is merged (``--no-ff``).
* ``kustomize-image``: the image tag or digest the upstream overlay runs, once verified there, is copied.
* ``image-policy``: the registry tag the environment's policy chooses; with an upstream environment, only
  once that tag was verified there.

Every strategy keeps the same invariant: nothing reaches a downstream environment that was not verified
upstream, and the evidence of that lives in Git (``refs/notes/promote``), keyed by ``record_tag``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.model import Environment, Pipeline, TrackBranch, TrackImagePolicy, TrackKustomizeImage
from tasks import targets
from tasks.errors import NothingToDoError
from tasks.evidence import Record
from tasks.gitrepo import GitError, GitRepository
from tasks.imagepolicy import select_tag
from tasks.release import (
    ReleaseError,
    all_records,
    changes_since,
    find_record,
    stable_tag_for,
    upstream_of,
    verified_rc,
)


@dataclass(frozen=True)
class Candidate:
    """One environment's next version, with what is needed to write, verify, approve and record it."""

    environment: str
    kind: str
    value: str  # what is written: a stable tag, an image tag or digest, or the source commit to merge
    previous: str | None  # what the environment tracks now (the rollback target)
    record_tag: str  # the key of the upstream "verified" record and of this environment's approval
    anchor: str  # the commit the evidence notes hang on
    release_commit: str | None  # tag: the rc's commit; branch: the verified source commit; images: None
    label: str  # for people: "v1.2.3 (rc v1.2.3-rc2)", "staging@0a1b2c3d4e5f", "app:1.2.3"
    diff: str = ""  # the planned file change ("" for a merge)
    commits: tuple[tuple[str, str], ...] = ()  # (sha, subject) that the promotion brings, when Git knows
    undo: tuple[str, ...] = ()  # branch: rollback commits whose changes this merge brings back

    @property
    def changes_anything(self) -> bool:
        return self.previous != self.value


class NothingToPromoteError(NothingToDoError):
    """A clear no-op: e.g. no registry tag matches the policy."""


def current_value(repo: GitRepository, pipeline: Pipeline, env: Environment) -> str | None:
    """What ``env`` tracks now: a tag or image value from its file, or its branch's head commit."""
    tracks = env.tracks
    if isinstance(tracks, TrackBranch):
        return repo.resolve(tracks.branch)
    if isinstance(tracks, TrackImagePolicy):
        return targets.read_policy_tag(repo, pipeline.repository.branch, env)
    file = targets.tracked_file(env)
    assert file is not None
    return targets.read_current(env, repo.read_file(pipeline.repository.branch, file))


def value_before_write(
    repo: GitRepository, pipeline: Pipeline, env: Environment, value: str, running: str | None
) -> str | None:
    """What ``env`` ran before this tool wrote ``value`` there: ``running`` itself unless it already is
    ``value`` (a re-run after a crash after the write-back), then the value at the parent of that write, so
    the re-run can still roll back and records the true "from"."""
    if running != value:
        return running
    tracks = env.tracks
    path = tracks.path if isinstance(tracks, TrackImagePolicy) else targets.tracked_file(env)
    if path is None:
        return running
    touched = repo.log(None, pipeline.repository.branch, limit=1, paths=[path])
    if not touched or targets.PROMOTE_TRAILER not in touched[0].message:
        return running
    try:
        parent = repo.parent(touched[0].sha)
        if isinstance(tracks, TrackImagePolicy):
            prior = targets.read_policy_tag(repo, parent, env)
        else:
            prior = targets.read_current(env, repo.read_file(parent, path))
    except (GitError, targets.TargetError, ValueError):
        return running  # the file did not exist before: nothing better to go back to
    # That write may have been a rollback *to* value (away from a failed prior): then prior is no target.
    rolled_back_to_value = any(
        (rec.kind, rec.pipeline, rec.environment, rec.tag) == ("rolled-back", pipeline.name, env.name, prior)
        and rec.details.get("to") == value
        for rec in all_records(repo)
    )
    return running if rolled_back_to_value else prior


def _planned_diff(repo: GitRepository, pipeline: Pipeline, env: Environment, value: str) -> str:
    if isinstance(env.tracks, TrackImagePolicy):
        return targets.plan_image_policy(repo, pipeline.repository.branch, env, value)
    file = targets.tracked_file(env)
    if file is None:
        return ""
    return targets.plan_change(env, repo.read_file(pipeline.repository.branch, file), value).diff


def candidate_for(
    repo: GitRepository,
    pipeline: Pipeline,
    env: Environment,
    requested: str | None = None,
    *,
    registry_tags: Callable[[], list[str]] | None = None,
) -> Candidate:
    """The version ``env`` would be promoted to, refusing one without upstream evidence.

    ``requested`` pins it (an rc tag, an image value, a source commit); ``registry_tags`` lists the registry
    for image-policy environments, whose policy then chooses among the tags verified upstream (if any).
    Raises :class:`NothingToPromoteError` for a clear no-op and
    :class:`ReleaseError` for a promotion that must not happen.
    """
    tracks = env.tracks
    name = pipeline.name
    branch = pipeline.repository.branch
    if tracks.kind == "tag":
        upstream = upstream_of(pipeline, env)
        rc_tag, commit = verified_rc(repo, pipeline, upstream, requested)
        stable = stable_tag_for(pipeline.versioning.scheme, rc_tag)
        change = targets.plan_change(env, repo.read_file(branch, targets.tracked_file(env) or ""), stable)
        since = repo.resolve(change.old) if change.old and change.old in repo.tags() else None
        return Candidate(
            environment=env.name,
            kind=tracks.kind,
            value=stable,
            previous=value_before_write(repo, pipeline, env, stable, change.old),
            record_tag=rc_tag,
            anchor=commit,
            release_commit=commit,
            label=f"{stable} (rc {rc_tag})",
            diff=change.diff,
            commits=tuple((e.sha, e.subject) for e in changes_since(repo, since, commit)),
        )

    if isinstance(tracks, TrackBranch):
        upstream = upstream_of(pipeline, env)
        source = tracks.merge_from
        assert source is not None  # the pipeline model requires merge_from below the first environment
        if requested:
            commit = repo.resolve(requested)
            if find_record(repo, "verified", name, upstream.name, commit) is None:
                raise ReleaseError(
                    f"{source} at {commit[:12]} has no record of a passed verification in {upstream.name}; "
                    f"run promote-rc (it verifies {upstream.name} at its branch head) first"
                )
        else:
            commit = _newest_verified_commit(repo, name, upstream, source)
        target_head = repo.resolve(tracks.branch)
        undo = _rollbacks_to_undo(repo, tracks.branch, commit)
        previous = target_head
        if repo.is_ancestor(commit, target_head) and not undo:
            if find_record(repo, "promoted", name, env.name, commit) is not None:
                raise NothingToPromoteError(f"{source}@{commit[:12]} is already promoted to {env.name}")
            merge = repo.merge_of(tracks.branch, commit)  # merged by a run that crashed before recording it
            previous = repo.parent(merge) if merge else target_head
        return Candidate(
            environment=env.name,
            kind=tracks.kind,
            value=commit,
            previous=previous,
            record_tag=commit,
            anchor=commit,
            release_commit=commit,
            label=f"{source}@{commit[:12]}",
            commits=tuple((e.sha, e.subject) for e in changes_since(repo, target_head, commit)),
            undo=undo,
        )

    running = current_value(repo, pipeline, env)
    above = upstream_of(pipeline, env) if env is not pipeline.environments[0] else None
    if isinstance(tracks, TrackKustomizeImage):
        if above is None:
            raise ReleaseError(f"{env.name!r} is the first environment: nothing upstream to copy its image from")
        value = requested or current_value(repo, pipeline, above)
        if value is None:
            raise ReleaseError(f"{above.name} tracks no image value to copy")
    else:
        assert isinstance(tracks, TrackImagePolicy)
        if requested is not None:
            if select_tag([requested], tracks.filter_tags, tracks.choose) != requested:
                raise ReleaseError(
                    f"{requested} is outside the image policy of {env.name} ({_policy_text(tracks)}); "
                    "promote a tag the policy allows, or change the policy"
                )
            if registry_tags is not None and requested not in registry_tags():
                raise ReleaseError(f"{tracks.registry.repository} has no tag {requested} in {tracks.registry.url}")
            value = requested
        else:
            if registry_tags is None:
                raise ReleaseError(f"{env.name}: no registry access to choose a tag with")
            tags = registry_tags()
            where = ""
            if above is not None:
                # Choose among what passed upstream: production's policy must never pick a tag staging did
                # not run (e.g. a stable 1.4.0 while staging verified 1.4.0-rc.1 and 1.3.9).
                verified = standing_verifications(repo, name, above.name)
                tags = [t for t in tags if t in verified]
                where = f" among the {len(tags)} verified in {above.name}"
            chosen = select_tag(tags, tracks.filter_tags, tracks.choose)
            if chosen is None:
                raise NothingToPromoteError(
                    f"no tag of {tracks.registry.repository} matches the policy of {env.name}{where}; "
                    "nothing to promote"
                )
            value = chosen
    anchor = repo.resolve(branch)
    if above is not None:
        found = find_record(repo, "verified", name, above.name, value)
        if found is None or value not in standing_verifications(repo, name, above.name):
            raise ReleaseError(
                f"{value} has no record of a passed verification in {above.name}; promote it there first (promote-rc)"
            )
        anchor = found.commit
    return Candidate(
        environment=env.name,
        kind=tracks.kind,
        value=value,
        previous=value_before_write(repo, pipeline, env, value, running),
        record_tag=value,
        anchor=anchor,
        release_commit=None,
        label=f"{image_name(env)}:{value}" if not value.startswith("sha256:") else f"{image_name(env)}@{value}",
        diff=_planned_diff(repo, pipeline, env, value),
    )


ROLLED_BACK_SOURCE = "Rolled-Back-Source: "


def _rollbacks_to_undo(repo: GitRepository, branch: str, commit: str) -> tuple[str, ...]:
    """This tool's rollbacks on ``branch`` of promotions that ``commit`` contains, not re-applied since: merging
    ``commit`` must bring their changes back, which a plain merge would not (git sees them merged already)."""
    entries = repo.log(None, branch, merges=False, limit=500)
    reapplied = {
        line.split()[-1].rstrip(".")
        for e in entries
        for line in e.message.splitlines()
        if line.startswith("This reverts commit ")
    }
    undo: list[str] = []
    for entry in entries:
        if targets.PROMOTE_TRAILER not in entry.message or entry.sha in reapplied:
            continue
        sources = [
            line.removeprefix(ROLLED_BACK_SOURCE).strip()
            for line in entry.message.splitlines()
            if line.startswith(ROLLED_BACK_SOURCE)
        ]
        if any(repo.is_ancestor(source, commit) for source in sources):
            undo.append(entry.sha)
    return tuple(undo)


def standing_verifications(repo: GitRepository, pipeline: str, environment: str) -> set[str]:
    """Values verified in ``environment`` and not rolled back there since (the newest record decides)."""
    latest: dict[str, Record] = {}
    for record in all_records(repo):
        if (record.pipeline, record.environment) != (pipeline, environment):
            continue
        if record.kind not in ("verified", "rolled-back"):
            continue
        if record.tag not in latest or record.at >= latest[record.tag].at:
            latest[record.tag] = record
    return {tag for tag, record in latest.items() if record.kind == "verified"}


def _newest_verified_commit(repo: GitRepository, pipeline: str, upstream: Environment, branch: str) -> str:
    """The newest commit of ``branch`` verified in ``upstream``: the branch may have moved on since."""
    verified = standing_verifications(repo, pipeline, upstream.name)
    for entry in repo.log(None, branch, limit=500):
        if entry.sha in verified:
            return entry.sha
    raise ReleaseError(
        f"no commit of {branch} has passed verification in {upstream.name} yet; run promote-rc (it verifies "
        f"{upstream.name} at its branch head) first"
    )


def _policy_text(tracks: TrackImagePolicy) -> str:
    choose = tracks.choose
    rule = f"semver {choose.semver}" if choose.semver else f"alphabetical {choose.alphabetical}"
    rule = rule if choose.semver or choose.alphabetical else f"numerical {choose.numerical}"
    return rule if tracks.filter_tags.pattern == ".*" else f"{rule}, tags matching {tracks.filter_tags.pattern}"


def image_name(env: Environment) -> str:
    tracks = env.tracks
    if isinstance(tracks, TrackKustomizeImage):
        return tracks.image
    if isinstance(tracks, TrackImagePolicy):
        return tracks.registry.repository
    return env.name


def verification_values(candidate_value: str, revision: str) -> dict[str, str]:
    """Template values for checks and expected images of a non-tag promotion."""
    version = candidate_value[1:] if candidate_value[:1] in ("v", "V") and candidate_value[1:2].isdigit() else None
    return {"tag": candidate_value, "version": version or candidate_value, "commit": revision}


@dataclass(frozen=True)
class Applied:
    """A promotion's write: the branch head it left and the revision the GitOps controller must report."""

    commit: str
    changed: bool
    revision: str


def apply_candidate(repo: GitRepository, pipeline: Pipeline, env: Environment, candidate: Candidate) -> Applied:
    """Write ``candidate`` where ``env`` tracks its version (the stable tag must exist already for tags).
    Idempotent: a re-run finds the value in place and commits nothing."""
    tracks = env.tracks
    branch = pipeline.repository.branch
    if isinstance(tracks, TrackBranch):
        merged = targets.merge_branches(repo, env, pipeline.name, commit=candidate.value, undo=candidate.undo)
        return Applied(commit=merged.commit, changed=merged.changed, revision=merged.commit)
    if isinstance(tracks, TrackImagePolicy):
        written = targets.point_image_policy(repo, branch, pipeline.name, env, candidate.value)
    else:
        written = targets.point_environment(repo, branch, pipeline.name, env, candidate.value)
    revision = candidate.release_commit if tracks.kind == "tag" and candidate.release_commit else written.commit
    return Applied(commit=written.commit, changed=written.changed, revision=revision)


def roll_back_candidate(
    repo: GitRepository, pipeline: Pipeline, env: Environment, candidate: Candidate, applied: Applied
) -> tuple[Applied, dict[str, str]]:
    """Return ``env`` to ``candidate.previous``: the old value written back, or the merge reverted.
    Gives the write and the values to verify it with."""
    tracks = env.tracks
    previous = candidate.previous
    if previous is None:
        raise ReleaseError(f"{env.name} tracked nothing before {candidate.label}: nothing to roll back to")
    branch = pipeline.repository.branch
    if isinstance(tracks, TrackBranch):
        # Back to the tree production ran before, in one commit; it names the promoted source commit so a
        # later promotion that contains it re-applies these changes (see _rollbacks_to_undo).
        message = (
            f"Roll back {env.name}: revert promotion of {candidate.label}\n\n"
            f"{ROLLED_BACK_SOURCE}{candidate.value}\n{targets.PROMOTE_TRAILER}\n"
        )
        restored = repo.restore_tree(tracks.branch, previous, message)
        return Applied(restored.commit, restored.changed, restored.commit), verification_values(
            previous, restored.commit
        )
    if isinstance(tracks, TrackImagePolicy):
        written = targets.point_image_policy(repo, branch, pipeline.name, env, previous)
    else:
        written = targets.point_environment(repo, branch, pipeline.name, env, previous)
    if tracks.kind == "tag":
        commit = repo.resolve(previous)
        scheme = pipeline.versioning.scheme
        version = scheme.parse(previous).format(rc_label=pipeline.versioning.rc_label)
        return Applied(written.commit, written.changed, commit), {"version": version, "tag": previous, "commit": commit}
    return Applied(written.commit, written.changed, written.commit), verification_values(previous, written.commit)
