"""What the strategies that copy a value from the environment before them share (``kustomize-image``,
``image-policy``, ``yaml-path``): the value is its own evidence key, verified upstream before it is copied,
written as a file edit, rolled back by writing the previous value, and the Deployments must run it."""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING

from pipeline.model import Environment
from tasks import evidence
from tasks.gitrepo import CommitResult
from tasks.strategies import files
from tasks.strategies.base import (
    Applied,
    Candidate,
    Entry,
    ReleaseError,
    RollbackPlan,
    Strategy,
    require_verified,
    verification_values,
)

if TYPE_CHECKING:
    from tasks.connections import Connections


class CopiedValueStrategy(Strategy):
    @abstractmethod
    def image_name(self, env: Environment) -> str: ...

    @abstractmethod
    def paths(self, env: Environment) -> list[str]:
        """The files (or directory) the value is written in, for "who wrote here last"."""

    @abstractmethod
    def read_at(self, conn: Connections, env: Environment, ref: str) -> str | None: ...

    @abstractmethod
    def planned_diff(self, conn: Connections, env: Environment, value: str) -> str: ...

    @abstractmethod
    def write(self, conn: Connections, env: Environment, value: str) -> CommitResult: ...

    def choose(self, conn: Connections, env: Environment, upstream: Environment | None, requested: str | None) -> str:
        """The value to promote: ``requested``, or what the environment before it runs."""
        if upstream is None:
            raise ReleaseError(f"{env.name!r} is the first environment: nothing upstream to copy its image from")
        value = requested or self.current(conn, upstream)
        if value is None:
            raise ReleaseError(f"{upstream.name} tracks no image value to copy")
        return value

    def current(self, conn: Connections, env: Environment) -> str | None:
        return self.read_at(conn, env, conn.pipeline.repository.branch)

    def entry(self, conn: Connections, env: Environment, bump: str | None) -> Entry:
        value = self.current(conn, env) or ""
        head = conn.repo.resolve(conn.pipeline.repository.branch)
        return Entry("create", value, "promote-rc verifies what it runs now", revision=head, previous=value)

    def label(self, env: Environment, value: str) -> str:
        name = self.image_name(env)
        return f"{name}@{value}" if value.startswith("sha256:") else f"{name}:{value}"

    def candidate(self, conn: Connections, env: Environment, requested: str | None) -> Candidate:
        repo, pipeline = conn.repo, conn.pipeline
        upstream = pipeline.upstream_of(env)
        running = self.current(conn, env)
        value = self.choose(conn, env, upstream, requested)
        anchor = (
            require_verified(repo, pipeline, upstream, value).commit
            if upstream
            else repo.resolve(pipeline.repository.branch)
        )
        previous = files.value_before_write(
            repo,
            pipeline.name,
            env.name,
            pipeline.repository.branch,
            self.paths(env),
            value,
            running,
            lambda ref: self.read_at(conn, env, ref),
        )
        return Candidate(
            environment=env.name,
            kind=self.kind,
            value=value,
            previous=previous,
            record_tag=value,
            anchor=anchor,
            release_commit=None,
            label=self.label(env, value),
            diff=self.planned_diff(conn, env, value),
        )

    def apply(self, conn: Connections, env: Environment, candidate: Candidate) -> Applied:
        written = self.write(conn, env, candidate.value)
        return Applied(written.commit, written.changed, written.commit)

    def values(self, conn: Connections, env: Environment, value: str, revision: str) -> dict[str, str]:
        return verification_values(value, revision)

    def holds(self, conn: Connections, env: Environment, candidate: Candidate, commit: str) -> bool:
        return self.read_at(conn, env, commit) == candidate.value

    def expects_image(self) -> bool:
        return True

    def roll_back(
        self, conn: Connections, env: Environment, candidate: Candidate, applied: Applied
    ) -> tuple[Applied, dict[str, str]]:
        previous = candidate.previous
        if previous is None:
            raise ReleaseError(f"{env.name} tracked nothing before {candidate.label}: nothing to roll back to")
        written = self.write(conn, env, previous)
        back = Applied(written.commit, written.changed, written.commit)
        return back, self.values(conn, env, previous, written.commit)

    def rollback_plan(self, conn: Connections, env: Environment, to_version: str | None) -> RollbackPlan:
        """Write an earlier value back: ``to_version`` (one the environment ran, or verified upstream), or
        what the environment ran before its last recorded promotion."""
        repo, pipeline = conn.repo, conn.pipeline
        current = self.current(conn, env) or ""
        promoted = sorted(
            (
                r
                for r in evidence.all_records(repo)
                if (r.kind, r.pipeline, r.environment) == ("promoted", pipeline.name, env.name)
            ),
            key=lambda r: r.at,
            reverse=True,
        )
        ran = {str(v) for r in promoted for v in (r.tag, r.details.get("from")) if v}
        if to_version is None:
            earlier = [str(r.details.get("from") or "") for r in promoted if r.tag == current]
            target = next((v for v in earlier if v and v != current), "")
            if not target:
                raise ReleaseError(
                    f"{env.name} runs {current}; no recorded promotion says what it ran before: give to_version"
                )
        else:
            target = to_version
            upstream = pipeline.upstream_of(env)
            verified = evidence.standing_verifications(repo, pipeline.name, upstream.name) if upstream else set()
            if target not in ran | verified:
                known = ", ".join(sorted(ran)) or "none recorded"
                raise ReleaseError(
                    f"{target} never ran in {env.name} and was not verified upstream; values it ran: {known}"
                )
        anchor = repo.resolve(pipeline.repository.branch)
        candidate = Candidate(env.name, self.kind, current, target, current, anchor, None, current)
        return RollbackPlan(current, target, candidate, Applied("", True, ""))
