"""tasks/strategies/branch.py against real Git: production takes the newest staging commit verified there (not a
newer, unverified tip) as a ``--no-ff`` merge, and a rollback restores production's tree in one commit that names
what it rolled back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.load import parse_pipeline
from tasks import evidence
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import strategy_for
from tasks.strategies.base import NothingToPromoteError, ReleaseError
from tests.support.gitserver import commit_file, make_origin, run_git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deployments" / "examples" / "branch.yaml"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Connections]:
    origin, seed = make_origin(tmp_path, {"app/config.yaml": "replicas: 1\n"}, branches=("staging", "production"))
    text = EXAMPLE.read_text().replace("https://github.com/example-org/payments-gitops.git", str(origin))
    text = re.sub(r"  credentials:\n    secret_block: .*\n", "", text)  # a local origin needs no token
    pipeline = parse_pipeline(text, source="branch.yaml")
    repo = GitRepository(str(origin), tmp_path / "cache")
    repo.fetch()
    return origin, seed, Connections(pipeline, repo, log=lambda _m: None)


def verified_in_staging(conn: Connections, commit: str) -> None:
    conn.repo.fetch()
    evidence.record(conn.repo, evidence.Record("verified", "payments", "staging", commit, commit))


def test_production_merges_the_newest_verified_staging_commit_not_the_tip(
    world: tuple[Path, Path, Connections],
) -> None:
    origin, seed, conn = world
    verified = commit_file(seed, "app/config.yaml", "replicas: 2\n", "scale to 2", branch="staging")
    unverified = commit_file(seed, "app/config.yaml", "replicas: 3\n", "scale to 3", branch="staging")
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    conn.repo.fetch()
    with pytest.raises(ReleaseError):
        strategy.candidate(conn, production, None)  # nothing verified yet
    verified_in_staging(conn, verified)
    cand = strategy.candidate(conn, production, None)
    assert (cand.value, cand.label) == (verified, f"staging@{verified[:12]}")
    assert [subject for _, subject in cand.commits] == ["scale to 2"]
    with pytest.raises(ReleaseError, match="no record of a passed verification"):
        strategy.candidate(conn, production, unverified)
    applied = strategy.apply(conn, production, cand)
    parents = run_git(origin, "rev-list", "--parents", "-n", "1", applied.commit).split()[1:]
    assert parents[1] == verified  # a merge commit whose second parent is the verified commit
    assert run_git(origin, "log", "-1", "--format=%s", applied.commit) == "Promote staging to production"
    assert run_git(origin, "show", f"{applied.commit}:app/config.yaml") == "replicas: 2"
    assert strategy.holds(conn, production, cand, applied.commit)
    assert strategy.verified_key(cand, applied) == (applied.commit, applied.commit)  # the next one merges it


def test_a_promoted_commit_is_not_promoted_twice(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    verified = commit_file(seed, "app/config.yaml", "replicas: 2\n", "scale to 2", branch="staging")
    verified_in_staging(conn, verified)
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    cand = strategy.candidate(conn, production, None)
    applied = strategy.apply(conn, production, cand)
    evidence.record(conn.repo, evidence.Record("promoted", "payments", "production", verified, applied.commit))
    conn.repo.fetch()
    with pytest.raises(NothingToPromoteError, match="already promoted"):
        strategy.candidate(conn, production, None)


def test_a_rollback_restores_the_tree_before_the_merge_and_names_the_promotion(
    world: tuple[Path, Path, Connections],
) -> None:
    origin, seed, conn = world
    verified = commit_file(seed, "app/config.yaml", "replicas: 2\n", "scale to 2", branch="staging")
    verified_in_staging(conn, verified)
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    before = run_git(origin, "rev-parse", "production")
    cand = strategy.candidate(conn, production, None)
    applied = strategy.apply(conn, production, cand)
    back, values = strategy.roll_back(conn, production, cand, applied)
    assert run_git(origin, "show", f"{back.commit}:app/config.yaml") == "replicas: 1"
    assert run_git(origin, "rev-parse", f"{back.commit}^{{tree}}") == run_git(origin, "rev-parse", f"{before}^{{tree}}")
    assert verified in run_git(origin, "log", "-1", "--format=%B", back.commit)  # what a later merge re-applies
    assert values  # what the rollback's verification checks
