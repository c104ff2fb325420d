"""``branch``: the environment tracks a branch; promotion merges the commit verified upstream into it.

``git merge <verified upstream commit> --no-ff -m "Promote staging to production"``: the environment is
verified at the merge commit. A conflict or a diverged target fails with nothing pushed. Rollback restores
the tree the environment ran before, in one commit that names the promoted source, so a later promotion
that contains it brings those changes back (which a plain merge would not: Git sees them merged already).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.model import Environment, TrackBranch
from tasks import evidence
from tasks.gitrepo import GitRepository
from tasks.strategies.base import (
    Applied,
    Candidate,
    Entry,
    NothingToPromoteError,
    ReleaseError,
    RollbackPlan,
    Strategy,
    require_upstream,
    verification_values,
)

if TYPE_CHECKING:
    from tasks.connections import Connections

ROLLED_BACK_SOURCE = "Rolled-Back-Source: "


def _tracks(env: Environment) -> TrackBranch:
    assert isinstance(env.tracks, TrackBranch)
    return env.tracks


def rollbacks_to_undo(repo: GitRepository, branch: str, commit: str) -> tuple[str, ...]:
    """This tool's rollbacks on ``branch`` of promotions that ``commit`` contains, not re-applied since: merging
    ``commit`` must bring their changes back."""
    entries = repo.log(None, branch, merges=False, limit=500)
    reapplied = {
        line.split()[-1].rstrip(".")
        for e in entries
        for line in e.message.splitlines()
        if line.startswith("This reverts commit ")
    }
    undo: list[str] = []
    for entry in entries:
        if evidence.PROMOTE_TRAILER not in entry.message or entry.sha in reapplied:
            continue
        sources = [
            line.removeprefix(ROLLED_BACK_SOURCE).strip()
            for line in entry.message.splitlines()
            if line.startswith(ROLLED_BACK_SOURCE)
        ]
        if any(repo.is_ancestor(source, commit) for source in sources):
            undo.append(entry.sha)
    return tuple(undo)


def newest_verified_commit(repo: GitRepository, pipeline: str, upstream: Environment, branch: str) -> str:
    """The newest commit of ``branch`` verified in ``upstream``: the branch may have moved on since."""
    verified = evidence.standing_verifications(repo, pipeline, upstream.name)
    for entry in repo.log(None, branch, limit=500):
        if entry.sha in verified:
            return entry.sha
    raise ReleaseError(
        f"no commit of {branch} has passed verification in {upstream.name} yet; promote it there first "
        f"(promote-rc verifies the entry environment at its branch head)"
    )


class BranchStrategy(Strategy):
    kind = "branch"
    needs_merge_commit = True

    def current(self, conn: Connections, env: Environment) -> str | None:
        return conn.repo.resolve(_tracks(env).branch)

    def entry(self, conn: Connections, env: Environment, bump: str | None) -> Entry:
        head = conn.repo.resolve(_tracks(env).branch)
        return Entry("create", head, "promote-rc verifies what it runs now", revision=head, previous=head)

    def candidate(self, conn: Connections, env: Environment, requested: str | None) -> Candidate:
        repo, pipeline = conn.repo, conn.pipeline
        tracks = _tracks(env)
        upstream = require_upstream(pipeline, env)
        source = tracks.merge_from
        assert source is not None  # the pipeline model requires merge_from below the entry
        if requested:
            commit = repo.resolve(requested)
            if evidence.find_record(repo, "verified", pipeline.name, upstream.name, commit) is None:
                raise ReleaseError(
                    f"{source} at {commit[:12]} has no record of a passed verification in {upstream.name}; "
                    f"promote it there first"
                )
        else:
            commit = newest_verified_commit(repo, pipeline.name, upstream, source)
        target_head = repo.resolve(tracks.branch)
        undo = rollbacks_to_undo(repo, tracks.branch, commit)
        previous = target_head
        if repo.is_ancestor(commit, target_head) and not undo:
            if evidence.find_record(repo, "promoted", pipeline.name, env.name, commit) is not None:
                raise NothingToPromoteError(f"{source}@{commit[:12]} is already promoted to {env.name}")
            merge = repo.merge_of(tracks.branch, commit)  # merged by a run that crashed before recording it
            previous = repo.parent(merge) if merge else target_head
        return Candidate(
            environment=env.name,
            kind=self.kind,
            value=commit,
            previous=previous,
            record_tag=commit,
            anchor=commit,
            release_commit=commit,
            label=f"{source}@{commit[:12]}",
            commits=tuple((e.sha, e.subject) for e in evidence.changes_since(repo, target_head, commit)),
            undo=undo,
        )

    def apply(self, conn: Connections, env: Environment, candidate: Candidate) -> Applied:
        tracks = _tracks(env)
        assert tracks.merge_from is not None
        name = conn.pipeline.name
        message = tracks.merge_commit_message(environment=env.name, pipeline=name)
        merged = conn.repo.merge_no_ff(
            tracks.merge_from,
            tracks.branch,
            f"{message}\n\n{evidence.PROMOTE_TRAILER}\n",
            commit=candidate.value,
            own_marker=evidence.PROMOTE_TRAILER,
            undo=candidate.undo,
        )
        return Applied(commit=merged.commit, changed=merged.changed, revision=merged.commit)

    def values(self, conn: Connections, env: Environment, value: str, revision: str) -> dict[str, str]:
        return verification_values(value, revision)

    def roll_back(
        self, conn: Connections, env: Environment, candidate: Candidate, applied: Applied
    ) -> tuple[Applied, dict[str, str]]:
        previous = candidate.previous
        if previous is None:
            raise ReleaseError(f"{env.name} tracked nothing before {candidate.label}: nothing to roll back to")
        # Back to the tree the environment ran before, in one commit; it names the promoted source commit so a
        # later promotion that contains it re-applies these changes (see rollbacks_to_undo).
        message = (
            f"Roll back {env.name}: revert promotion of {candidate.label}\n\n"
            f"{ROLLED_BACK_SOURCE}{candidate.value}\n{evidence.PROMOTE_TRAILER}\n"
        )
        restored = conn.repo.restore_tree(_tracks(env).branch, previous, message)
        back = Applied(restored.commit, restored.changed, restored.commit)
        return back, verification_values(previous, restored.commit)

    def rollback_plan(self, conn: Connections, env: Environment, to_version: str | None) -> RollbackPlan:
        """Revert the last recorded promotion's merge (a branch has no earlier "version" to name)."""
        if to_version is not None:
            raise ReleaseError(f"{env.name} tracks a branch: rollback reverts its last promotion (omit to_version)")
        promoted = _promotions(conn, env)
        if not promoted:
            raise ReleaseError(f"no promotion of {env.name} is recorded: nothing to revert")
        merge = str(promoted[0].details.get("revision") or "")
        before = str(promoted[0].details.get("from") or "")
        source = promoted[0].tag  # the promoted source commit: its rollback names it, so a later merge re-applies
        anchor = conn.repo.resolve(conn.pipeline.repository.branch)
        candidate = Candidate(env.name, self.kind, source, before, source, anchor, None, source)
        return RollbackPlan(source, f"the tree before {merge[:12]}", candidate, Applied(merge, True, merge))

    def holds(self, conn: Connections, env: Environment, candidate: Candidate, commit: str) -> bool:
        return conn.repo.is_ancestor(candidate.value, commit)

    def merge_problem(self, conn: Connections, env: Environment, candidate: Candidate, tip: str) -> str | None:
        if self.holds(conn, env, candidate, tip):
            return None
        # Squash and rebase merges copy the changes without the verified commit: the next promotion could no
        # longer tell what was promoted, and would see the copies as commits the upstream branch does not have.
        return (
            f"{candidate.label} is not in its history: a branch environment's pull request must be merged with a "
            "merge commit, not squashed or rebased; allow merge commits in the repository and promote again"
        )

    def verified_key(self, candidate: Candidate, applied: Applied) -> tuple[str, str]:
        # The next environment merges from this one's branch: what it verified is the merge commit.
        return applied.revision, applied.revision

    def runs(self, conn: Connections, env: Environment, value: str) -> bool:
        return conn.repo.is_ancestor(value, conn.repo.resolve(_tracks(env).branch))


def _promotions(conn: Connections, env: Environment) -> list[evidence.Record]:
    """The recorded promotions of ``env``, newest first."""
    return sorted(
        (
            r
            for r in evidence.all_records(conn.repo)
            if (r.kind, r.pipeline, r.environment) == ("promoted", conn.pipeline.name, env.name)
        ),
        key=lambda r: r.at,
        reverse=True,
    )
