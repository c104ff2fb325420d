"""tasks/strategies/image_policy.py against real Git and a real registry (Debian's docker-registry): the tag the
policy chooses among the registry's tags (for an environment after the first, only among those verified upstream)
written through the Flux setter markers with Flux's commit message, and a requested tag outside the policy or not
in the registry refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.load import parse_pipeline
from sandbox.registry import LocalRegistry, push_image
from tasks import evidence
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import strategy_for
from tasks.strategies.base import NothingToPromoteError, ReleaseError
from tests.support.gitserver import make_origin, run_git
from tests.support.registry import run_registry

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  template:
    spec:
      containers:
        - name: frontend
          image: {host}/org/frontend:1.0.0 # {{"$imagepolicy": "flux-system:frontend-policy"}}
"""

PIPELINE = """\
name: frontend
repository:
  url: {origin}
environments:
  - name: staging
    tracks:
      kind: image-policy
      path: apps/staging
      policy: flux-system:frontend-policy
      registry: {{url: "{registry}", repository: org/frontend}}
      choose: {{semver: 1.x.x}}
    verify:
      gitops: {{kind: flux, name: apps, namespace: flux-system}}
  - name: production
    tracks:
      kind: image-policy
      path: apps/production
      policy: flux-system:frontend-policy
      registry: {{url: "{registry}", repository: org/frontend}}
      choose: {{semver: 1.x.x}}
    verify:
      gitops: {{kind: flux, name: apps, namespace: flux-system}}
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as served:
        push_image(served.url, "org/frontend", ["1.0.0", "1.1.0", "1.2.0", "2.0.0", "1.3.0-rc.1"])
        yield served


@pytest.fixture
def world(tmp_path: Path, registry: LocalRegistry) -> tuple[Path, Connections, str]:
    host = registry.url.split("://", 1)[1]
    files = {f"apps/{env}/frontend.yaml": DEPLOYMENT.format(host=host) for env in ("staging", "production")}
    origin, _ = make_origin(tmp_path, files)
    pipeline = parse_pipeline(PIPELINE.format(origin=origin, registry=registry.url), source="frontend.yaml")
    repo = GitRepository(str(origin), tmp_path / "cache")
    repo.fetch()
    return origin, Connections(pipeline, repo, log=lambda _m: None), host


def test_the_first_environment_gets_the_policy_s_choice_through_its_markers(
    world: tuple[Path, Connections, str],
) -> None:
    origin, conn, host = world
    staging = conn.pipeline.environment("staging")
    strategy = strategy_for(staging)
    assert strategy.current(conn, staging) == "1.0.0"
    cand = strategy.candidate(conn, staging, None)
    assert (cand.previous, cand.value) == ("1.0.0", "1.2.0")  # semver 1.x.x: not 2.0.0, not the prerelease
    applied = strategy.apply(conn, staging, cand)
    written = run_git(origin, "show", f"{applied.commit}:apps/staging/frontend.yaml")
    assert f'image: {host}/org/frontend:1.2.0 # {{"$imagepolicy": "flux-system:frontend-policy"}}' in written
    assert run_git(origin, "show", f"{applied.commit}:apps/production/frontend.yaml").count("1.0.0") == 1
    assert strategy.holds(conn, staging, cand, applied.commit)


def test_production_chooses_only_among_the_tags_staging_verified(world: tuple[Path, Connections, str]) -> None:
    _, conn, _ = world
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    with pytest.raises(NothingToPromoteError, match="verified in staging"):
        strategy.candidate(conn, production, None)
    head = conn.repo.resolve("main")
    evidence.record(conn.repo, evidence.Record("verified", "frontend", "staging", "1.1.0", head))
    conn.repo.fetch()
    assert strategy.candidate(conn, production, None).value == "1.1.0"  # not 1.2.0: staging never verified it


def test_a_requested_tag_outside_the_policy_or_the_registry_is_refused(world: tuple[Path, Connections, str]) -> None:
    _, conn, _ = world
    staging = conn.pipeline.environment("staging")
    strategy = strategy_for(staging)
    with pytest.raises(ReleaseError, match=r"2\.0\.0 is outside the image policy of staging \(semver 1\.x\.x\)"):
        strategy.candidate(conn, staging, "2.0.0")
    with pytest.raises(ReleaseError, match=r"org/frontend has no tag 1\.9\.9"):
        strategy.candidate(conn, staging, "1.9.9")
    assert strategy.candidate(conn, staging, "1.1.0").value == "1.1.0"
