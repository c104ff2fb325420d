"""A tag pipeline (staging -> production) on a real bare origin, with evidence written by tasks/evidence.py
as the flows write it: the repository the board tests (tasks/board.py, ``promote status``) read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.load import load_pipeline
from pipeline.model import Pipeline
from tasks import evidence
from tasks.gitrepo import GitRepository
from tests.support.gitserver import commit_file, make_origin, run_git

PIPELINE = """\
name: {name}
repository:
  url: {url}
environments:
  - name: staging
    tracks: {{kind: tag, application_file: apps/staging.yaml}}
  - name: production
    tracks: {{kind: tag, application_file: apps/production.yaml}}
"""

APPLICATION = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop-{env}
spec:
  source:
    repoURL: https://git.example.invalid/shop.git
    path: manifests
    targetRevision: {version}
"""


@dataclass
class BoardRepo:
    """The origin, a clone to push from (``seed``) and the pipeline file that points at the origin."""

    origin: Path
    seed: Path
    pipeline_file: Path
    cache: Path

    @property
    def pipeline(self) -> Pipeline:
        return load_pipeline(self.pipeline_file)

    def repo(self) -> GitRepository:
        """A fresh clone of the origin, fetched (as ``promote status`` reads it)."""
        repo = GitRepository(str(self.origin), self.cache)
        repo.fetch()
        return repo

    def point(self, env: str, version: str) -> str:
        """Someone (or a flow) points ``env`` at ``version`` on main; the new head."""
        text = APPLICATION.format(env=env, version=version)
        return commit_file(self.seed, f"apps/{env}.yaml", text, f"{env}: {version}")

    def tag(self, name: str, commit: str) -> None:
        run_git(self.seed, "tag", "-a", name, commit, "-m", name)
        run_git(self.seed, "push", "--quiet", "origin", name)

    def record(self, kind: evidence.RecordKind, env: str, tag: str, commit: str, at: str, **extra: Any) -> None:
        name = extra.pop("pipeline", self.pipeline.name)
        rec = evidence.Record(kind=kind, pipeline=name, environment=env, tag=tag, commit=commit, at=at, **extra)
        evidence.record(self.repo(), rec)


def make_board_repo(root: Path, name: str = "shop") -> BoardRepo:
    """Both environments at v1.0.0 (a tag on the first commit), nothing recorded yet."""
    files = {f"apps/{env}.yaml": APPLICATION.format(env=env, version="v1.0.0") for env in ("staging", "production")}
    root.mkdir(parents=True, exist_ok=True)
    origin, seed = make_origin(root, files)
    pipeline_file = root / f"{name}.yaml"
    pipeline_file.write_text(PIPELINE.format(name=name, url=origin))
    board = BoardRepo(origin, seed, pipeline_file, root / "cache")
    board.tag("v1.0.0", run_git(seed, "rev-parse", "HEAD"))
    return board


@dataclass(frozen=True)
class Story:
    """What :func:`release_story` did: the rc's commit and the runs, for the tests to expect."""

    rc_commit: str
    first_commit: str


def release_story(board: BoardRepo, approver: str = "alice", reason: str = "dashboards green") -> Story:
    """v1.0.1-rc1 cut and verified in staging (run-rc), approved by alice, promoted to production (run-prod),
    each step recorded as the flows record it."""
    first = run_git(board.seed, "rev-parse", "v1.0.0^{commit}")
    rc_commit = commit_file(board.seed, "src/app.txt", "faster checkout\n", "feature: faster checkout")
    board.tag("v1.0.1-rc1", rc_commit)
    board.point("staging", "v1.0.1-rc1")
    board.record("verified", "staging", "v1.0.1-rc1", rc_commit, "2026-05-01T10:00:00+00:00", run="run-rc")
    approved_at = "2026-05-01T11:00:00+00:00"
    board.record("approved", "production", "v1.0.1-rc1", rc_commit, approved_at, by=approver, reason=reason)
    board.tag("v1.0.1", rc_commit)
    board.point("production", "v1.0.1")
    details = {"rc": "v1.0.1-rc1", "from": "v1.0.0", "revision": rc_commit}
    board.record(
        "promoted", "production", "v1.0.1", rc_commit, "2026-05-01T11:05:00+00:00", run="run-prod", details=details
    )
    return Story(rc_commit=rc_commit, first_commit=first)
