"""tasks/strategies/kustomize_image.py against real Git: the image tag staging's overlay runs, once verified
there, copied into production's overlay (one line changed, every other byte kept), and written back on rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.load import parse_pipeline
from rules.errors import PromoteError, RefusedError
from tasks import evidence
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import strategy_for
from tasks.strategies.base import ReleaseError
from tests.support.gitserver import commit_file, make_origin, run_git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deployments" / "examples" / "overlay.yaml"


def overlay(env: str, tag: str) -> str:
    return f"""\
# {env}: the shared base, this environment's replicas and the image it runs
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: app
    newName: registry.example/app
    newTag: "{tag}"   # set by promotions
  - name: sidecar
    newTag: 9.9.9
"""


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Connections]:
    files = {
        "overlays/staging/kustomization.yaml": overlay("staging", "1.0.0"),
        "overlays/production/kustomization.yaml": overlay("production", "1.0.0"),
    }
    origin, seed = make_origin(tmp_path, files)
    text = EXAMPLE.read_text().replace("https://github.com/example-org/app-gitops.git", str(origin))
    pipeline = parse_pipeline(text, source="overlay.yaml")
    repo = GitRepository(str(origin), tmp_path / "cache")
    repo.fetch()
    return origin, seed, Connections(pipeline, repo, log=lambda _m: None)


def ci_sets_staging(seed: Path, tag: str) -> str:
    return commit_file(seed, "overlays/staging/kustomization.yaml", overlay("staging", tag), f"ci: app {tag}")


def verified_in_staging(conn: Connections, tag: str) -> None:
    conn.repo.fetch()
    evidence.record(conn.repo, evidence.Record("verified", "app", "staging", tag, conn.repo.resolve("main")))


def test_each_overlay_says_what_it_runs(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    ci_sets_staging(seed, "1.1.0")
    conn.repo.fetch()
    staging, production = conn.pipeline.environments
    assert strategy_for(staging).current(conn, staging) == "1.1.0"
    assert strategy_for(production).current(conn, production) == "1.0.0"


def test_production_takes_only_what_staging_verified(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    ci_sets_staging(seed, "1.1.0")
    conn.repo.fetch()
    production = conn.pipeline.environment("production")
    with pytest.raises(ReleaseError, match=r"1\.1\.0"):
        strategy_for(production).candidate(conn, production, None)
    verified_in_staging(conn, "1.1.0")
    cand = strategy_for(production).candidate(conn, production, None)
    assert (cand.previous, cand.value, cand.label) == ("1.0.0", "1.1.0", "app:1.1.0")
    assert '-    newTag: "1.0.0"   # set by promotions' in cand.diff
    assert '+    newTag: "1.1.0"   # set by promotions' in cand.diff
    assert cand.diff.count("\n-") == 1  # one line, nothing else in the overlay


def test_the_write_changes_one_line_and_the_rollback_writes_it_back(
    world: tuple[Path, Path, Connections],
) -> None:
    origin, seed, conn = world
    ci_sets_staging(seed, "1.1.0")
    verified_in_staging(conn, "1.1.0")
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    cand = strategy.candidate(conn, production, None)
    applied = strategy.apply(conn, production, cand)
    written = run_git(origin, "show", f"{applied.commit}:overlays/production/kustomization.yaml")
    assert written == overlay("production", "1.1.0").rstrip("\n")  # comments, quoting and the sidecar kept
    assert run_git(origin, "rev-parse", "main") == applied.commit
    assert strategy.holds(conn, production, cand, applied.commit)
    assert strategy.values(conn, production, cand.value, applied.revision)  # what verification checks
    back, _ = strategy.roll_back(conn, production, cand, applied)
    restored = run_git(origin, "show", f"{back.commit}:overlays/production/kustomization.yaml")
    assert restored == overlay("production", "1.0.0").rstrip("\n")
    assert not strategy.holds(conn, production, cand, back.commit)


def test_an_overlay_without_the_image_is_named(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    commit_file(seed, "overlays/production/kustomization.yaml", "images: []\n", "someone removed the image")
    conn.repo.fetch()
    production = conn.pipeline.environment("production")
    with pytest.raises(PromoteError, match=r"overlays/production/kustomization\.yaml.*app") as raised:
        strategy_for(production).current(conn, production)
    assert isinstance(raised.value, RefusedError)  # a file to fix, not a failure to retry
