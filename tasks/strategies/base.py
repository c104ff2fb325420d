"""What every strategy answers, and the values that travel between a strategy and the flows.

A strategy is one way of tracking a version (``tracks.kind``). It decides from Git (and, for image
policies, the registry) before anything is written, so the same repository state always leads to the same
decision and every flow is safe to re-run:

* :meth:`Strategy.current`: what the environment runs now;
* :meth:`Strategy.entry`: what promote-rc does where new versions enter the pipeline;
* :meth:`Strategy.candidate`: the version to promote an environment to from the one before it, refusing
  anything not verified there;
* :meth:`Strategy.apply` / :meth:`Strategy.roll_back`: the Git write, and its undo;
* :meth:`Strategy.values`: what verification and health checks expect (``{version}``, ``{tag}``, ...);
* :meth:`Strategy.rollback_plan`: the rollback flow's target;
* :meth:`Strategy.runs`: whether an environment already runs a value;
* :meth:`Strategy.verified_key`: what the next environment of a chain looks up as verified here.

The plan (``promote plan``) is built from ``entry`` and ``candidate`` alone (:mod:`tasks.plan`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pipeline.model import Environment, Pipeline
from rules.errors import NothingToDoError, RefusedError
from tasks import evidence

if TYPE_CHECKING:
    from tasks.connections import Connections
    from tasks.gitrepo import GitRepository


class NothingToPromoteError(NothingToDoError):
    """A clear no-op: e.g. no registry tag matches the policy, or the value is already promoted."""


class ReleaseError(RefusedError, RuntimeError):
    """A promotion that must not happen (no evidence, unknown version); nothing was changed."""


@dataclass(frozen=True)
class TagToCreate:
    """A release tag a promotion creates before it writes (tags are never moved)."""

    name: str
    commit: str
    message: str


@dataclass(frozen=True)
class Candidate:
    """One environment's next version, with what is needed to write, verify, approve and record it."""

    environment: str
    kind: str
    value: str  # what is written: a tag, an image tag or digest, a source commit to merge, or values' key
    previous: str | None  # what the environment tracks now (the rollback target)
    record_tag: str  # the key of the upstream "verified" record and of this environment's approval
    anchor: str  # the commit the evidence notes hang on
    release_commit: str | None  # tag: the rc's commit; branch: the verified source commit; others: None
    label: str  # for people: "v1.2.3 (rc v1.2.3-rc2)", "staging@0a1b2c3d4e5f", "app:1.2.3"
    diff: str = ""  # the planned file change ("" for a merge)
    commits: tuple[tuple[str, str], ...] = ()  # (sha, subject) that the promotion brings, when Git knows
    undo: tuple[str, ...] = ()  # branch: rollback commits whose changes this merge brings back
    tag: TagToCreate | None = None  # a release tag to create first (the stable tag at the rc's commit)
    carried: tuple[tuple[str, str], ...] = ()  # yaml-path: the (path, value) pairs the promotion writes

    @property
    def changes_anything(self) -> bool:
        return self.previous != self.value


@dataclass(frozen=True)
class Applied:
    """A promotion's write: the branch head it left and the revision the GitOps controller must report."""

    commit: str
    changed: bool
    revision: str


@dataclass(frozen=True)
class Entry:
    """What promote-rc does in the entry environment, decided before anything changes.

    ``action``: ``create`` (something new to verify), ``reuse`` (verify again what was cut before, e.g. a
    re-run), ``skip`` (nothing new), ``not-applicable`` (a one-environment pipeline: promote-production
    promotes it). ``tag`` is the rc to create, ``write`` the value to write first (None: verify what runs),
    ``revision`` the revision to verify when known before the write."""

    action: Literal["create", "reuse", "skip", "not-applicable"]
    value: str
    reason: str
    revision: str | None = None
    tag: TagToCreate | None = None
    write: Candidate | None = None
    diff: str = ""
    previous: str | None = None


@dataclass(frozen=True)
class RollbackPlan:
    """The rollback flow's decision: go from ``current`` back to ``target`` through :meth:`Strategy.roll_back`
    of ``candidate`` (whose ``previous`` is the target). ``record_commit``: where the rolled-back record
    hangs (None: on the rollback's own commit)."""

    current: str
    target: str
    candidate: Candidate
    applied: Applied
    diff: str = ""
    record_commit: str | None = None


def verification_values(value: str, revision: str) -> dict[str, str]:
    """Template values for checks and expected images of a promotion without release tags."""
    version = value[1:] if value[:1] in ("v", "V") and value[1:2].isdigit() else None
    return {"tag": value, "version": version or value, "commit": revision}


def require_upstream(pipeline: Pipeline, env: Environment) -> Environment:
    upstream = pipeline.upstream_of(env)
    if upstream is None:
        raise ReleaseError(
            f"environment {env.name!r} is where versions enter pipeline {pipeline.name!r} (promote-rc), or before "
            f"it; nothing upstream promotes it: run promote-rc"
        )
    return upstream


def require_verified(repo: GitRepository, pipeline: Pipeline, upstream: Environment, value: str) -> evidence.Record:
    """The standing ``verified`` record of ``value`` in ``upstream``, or a refusal naming what to run."""
    found = evidence.find_record(repo, "verified", pipeline.name, upstream.name, value)
    if found is None or value not in evidence.standing_verifications(repo, pipeline.name, upstream.name):
        raise ReleaseError(f"{value} has no record of a passed verification in {upstream.name}; promote it there first")
    return found


class Strategy(ABC):
    """One tracking kind. Stateless: every method takes the connections and the environment."""

    kind: str
    # Whether a pull request of this kind must be merged with a merge commit (what a forge's auto-merge is asked
    # for): the verified upstream commit must become part of the branch's history.
    needs_merge_commit: bool = False

    @abstractmethod
    def current(self, conn: Connections, env: Environment) -> str | None:
        """What ``env`` runs now, read from the pipeline's branch."""

    @abstractmethod
    def entry(self, conn: Connections, env: Environment, bump: str | None) -> Entry:
        """promote-rc's decision for the entry environment."""

    @abstractmethod
    def candidate(self, conn: Connections, env: Environment, requested: str | None) -> Candidate:
        """The version ``env`` would be promoted to from the environment before it; ``requested`` pins it.
        Raises :class:`NothingToPromoteError` for a clear no-op and :class:`ReleaseError` for a refusal."""

    @abstractmethod
    def apply(self, conn: Connections, env: Environment, candidate: Candidate) -> Applied:
        """Write ``candidate``; idempotent (a re-run finds it in place and commits nothing)."""

    @abstractmethod
    def values(self, conn: Connections, env: Environment, value: str, revision: str) -> dict[str, str]:
        """Template values for verification and health checks once ``env`` runs ``value`` at ``revision``."""

    @abstractmethod
    def roll_back(
        self, conn: Connections, env: Environment, candidate: Candidate, applied: Applied
    ) -> tuple[Applied, dict[str, str]]:
        """Return ``env`` to ``candidate.previous``; gives the write and the values to verify it with."""

    @abstractmethod
    def rollback_plan(self, conn: Connections, env: Environment, to_version: str | None) -> RollbackPlan:
        """The rollback flow's target: ``to_version`` or what ``env`` ran before its last promotion."""

    @abstractmethod
    def holds(self, conn: Connections, env: Environment, candidate: Candidate, commit: str) -> bool:
        """Whether ``commit`` (of the environment's branch) carries ``candidate``'s write: after a pull request
        merged, whatever the forge made of it (a merge, a squash, a rebase)."""

    def merge_problem(self, conn: Connections, env: Environment, candidate: Candidate, tip: str) -> str | None:
        """Why the branch at ``tip`` does not carry ``candidate``'s write after its pull request merged, or None."""
        if self.holds(conn, env, candidate, tip):
            return None
        return f"it no longer holds {candidate.label} (changed again since the merge): promote again"

    def merged(
        self, conn: Connections, env: Environment, candidate: Candidate, proposed: Applied | None, tip: str
    ) -> Applied:
        """The write once its pull request merged, ``tip`` being the base's commit that holds it: what the
        GitOps controller syncs, so the revision to verify (a tag's Application names its own revision)."""
        return Applied(commit=tip, changed=True, revision=tip)

    def verified_key(self, candidate: Candidate, applied: Applied) -> tuple[str, str]:
        """(key, commit) of the ``verified`` record a promotion leaves for the environment after it: the value
        it now runs, on the commit the evidence hangs on."""
        return candidate.value, candidate.anchor

    def runs(self, conn: Connections, env: Environment, value: str) -> bool:
        """Whether ``env`` already runs ``value`` (then a nightly has nothing to promote there)."""
        return self.current(conn, env) == value

    def expects_image(self) -> bool:
        """Whether the Deployments must run the promoted value as their image tag (by default)."""
        return False
