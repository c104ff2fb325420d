"""tasks/strategies/yaml_path.py against real Git: the example chart's per-environment Helm values promoted
from staging to production, rendered afterwards with the real ``helm template``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.load import parse_pipeline
from pipeline.model import Pipeline
from rules.yamledit import ManifestError
from tasks import evidence
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import strategy_for
from tasks.strategies.base import ReleaseError
from tasks.strategies.files import TargetError
from tests.support.gitserver import commit_file, make_origin, run_git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deployments" / "examples"


def _tree() -> dict[str, str]:
    """The example repository of deployments/examples/helm, as a GitOps repository would hold it."""
    base = EXAMPLE / "helm"
    return {str(p.relative_to(base)): p.read_text() for p in base.rglob("*.yaml")}


def _pipeline(origin: Path, production_path: str = "image.tag") -> Pipeline:
    text = (EXAMPLE / "helm-values.yaml").read_text()
    text = text.replace("https://git.example.org/platform/gitops.git", str(origin))
    head, _, production = text.partition("  - name: production")
    production = production.replace("path: image.tag", f"path: {production_path}", 1)
    pipeline = parse_pipeline(head + "  - name: production" + production, source="helm-values.yaml")
    return pipeline


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, Connections]:
    origin, seed = make_origin(tmp_path, _tree())
    pipeline = _pipeline(origin)
    repo = GitRepository(str(origin), tmp_path / "cache")
    repo.fetch()
    return origin, seed, Connections(pipeline, repo, log=lambda _m: None)


def _ci_sets_staging(seed: Path, tag: str, label: str | None = None) -> str:
    path = seed / "envs/staging/values.yaml"
    run_git(seed, "pull", "--quiet", "origin", "main")
    text = path.read_text().replace('tag: "1.0.0"', f'tag: "{tag}"')
    text = text.replace('version: "1.0.0"', f'version: "{label or tag}"')
    return commit_file(seed, "envs/staging/values.yaml", text, f"ci: shop {tag}")


def _verify_staging(conn: Connections, key: str) -> None:
    conn.repo.fetch()
    head = conn.repo.resolve("main")
    evidence.record(conn.repo, evidence.Record("verified", "shop", "staging", key, head))


@pytest.fixture(scope="module")
def helm() -> str:
    """The helm CLI, built once by hack/build-helm (hack/test builds it before pytest starts)."""
    try:
        built = subprocess.run(
            [str(ROOT / "hack" / "build-helm")], capture_output=True, text=True, check=True, timeout=1800
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"helm is needed to render charts: run hack/build-helm (it builds helm with Go): {exc}")
    return built.stdout.strip().splitlines()[-1]


def _render(helm: str, checkout: Path, env: str) -> dict[str, object]:
    out = subprocess.run(
        [helm, "template", f"shop-{env}", "charts/shop", "-f", f"envs/{env}/values.yaml"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "HELM_CACHE_HOME": str(checkout / ".helm")},
    )
    docs = [d for d in YAML(typ="safe").load_all(out.stdout) if d]
    return next(d for d in docs if d["kind"] == "Deployment")


def test_production_takes_only_what_staging_verified(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    _ci_sets_staging(seed, "1.0.1")
    conn.repo.fetch()
    with pytest.raises(ReleaseError, match=r"1\.0\.1 has no record of a passed verification in staging"):
        strategy.candidate(conn, production, None)
    _verify_staging(conn, "1.0.1")
    cand = strategy.candidate(conn, production, None)
    assert (cand.value, cand.previous, cand.record_tag) == ("1.0.1", "1.0.0", "1.0.1")
    assert '-  tag: "1.0.0"   # promoted from the environment before' in cand.diff
    assert '+  tag: "1.0.1"   # promoted from the environment before' in cand.diff
    assert '+  app.kubernetes.io/version: "1.0.1"' in cand.diff


def test_promotion_writes_every_edit_in_one_commit_byte_exact_and_helm_renders_it(
    world: tuple[Path, Path, Connections], helm: str, tmp_path: Path
) -> None:
    origin, seed, conn = world
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    before = (EXAMPLE / "helm/envs/production/values.yaml").read_text()
    _ci_sets_staging(seed, "1.0.1")
    _verify_staging(conn, "1.0.1")
    applied = strategy.apply(conn, production, strategy.candidate(conn, production, None))
    assert applied.changed and applied.revision == applied.commit
    changed = run_git(origin, "show", "--name-only", "--format=%s%n%b", applied.commit).splitlines()
    assert changed[0] == "promote(shop): production 1.0.0 -> 1.0.1"
    assert evidence.PROMOTE_TRAILER in changed and changed[-1] == "envs/production/values.yaml"
    after = run_git(origin, "show", f"{applied.commit}:envs/production/values.yaml") + "\n"
    assert after == before.replace('"1.0.0"', '"1.0.1"')  # comments, anchor, alias, flow mapping: as they were
    again = strategy.apply(conn, production, strategy.candidate(conn, production, None))
    assert not again.changed and again.commit == applied.commit  # a re-run commits nothing

    checkout = tmp_path / "checkout"
    run_git(tmp_path, "clone", "--quiet", str(origin), str(checkout))
    deployment = _render(helm, checkout, "production")
    pod = deployment["spec"]["template"]  # type: ignore[index]
    assert pod["spec"]["containers"][0]["image"] == "registry.example.org/shop/web:1.0.1"
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "1.0.1"
    assert deployment["spec"]["replicas"] == 5  # type: ignore[index]


def test_rollback_writes_the_previous_values_back(world: tuple[Path, Path, Connections]) -> None:
    origin, seed, conn = world
    production = conn.pipeline.environment("production")
    strategy = strategy_for(production)
    _ci_sets_staging(seed, "1.0.1")
    _verify_staging(conn, "1.0.1")
    cand = strategy.candidate(conn, production, None)
    applied = strategy.apply(conn, production, cand)
    back, values = strategy.roll_back(conn, production, cand, applied)
    assert back.changed and values["tag"] == "1.0.0" and values["version-label"] == "1.0.0"
    text = run_git(origin, "show", f"{back.commit}:envs/production/values.yaml") + "\n"
    assert text == (EXAMPLE / "helm/envs/production/values.yaml").read_text()


def test_different_values_are_keyed_by_name(world: tuple[Path, Path, Connections]) -> None:
    _, seed, conn = world
    production = conn.pipeline.environment("production")
    _ci_sets_staging(seed, "1.0.2", label="1.0.2-beta")
    _verify_staging(conn, "image=1.0.2,version-label=1.0.2-beta")
    cand = strategy_for(production).candidate(conn, production, None)
    assert cand.value == "image=1.0.2,version-label=1.0.2-beta"
    values = strategy_for(production).values(conn, production, cand.value, "abc")
    assert (values["tag"], values["version-label"]) == ("1.0.2", "1.0.2-beta")


def test_a_missing_path_names_file_and_path_and_pushes_nothing(
    world: tuple[Path, Path, Connections], tmp_path: Path
) -> None:
    origin, seed, conn = world
    broken = Connections(_pipeline(origin, production_path="image.tagg"), conn.repo, conn.log)
    production = broken.pipeline.environment("production")
    _ci_sets_staging(seed, "1.0.1")
    _verify_staging(broken, "1.0.1")
    refs = run_git(origin, "for-each-ref")
    with pytest.raises(ManifestError, match=r"envs/production/values\.yaml: path image\.tagg: image has no key"):
        strategy_for(production).candidate(broken, production, None)
    with pytest.raises(ManifestError, match=r"path image\.tagg"):
        strategy_for(production).write(broken, production, "1.0.1")  # type: ignore[attr-defined]
    assert run_git(origin, "for-each-ref") == refs


def test_a_symlink_out_of_the_repository_is_refused(world: tuple[Path, Path, Connections], tmp_path: Path) -> None:
    _, seed, conn = world
    outside = tmp_path / "outside.yaml"
    outside.write_text((EXAMPLE / "helm/envs/production/values.yaml").read_text())
    run_git(seed, "pull", "--quiet", "origin", "main")
    (seed / "envs/production/values.yaml").unlink()
    (seed / "envs/production/values.yaml").symlink_to(outside)
    run_git(seed, "commit", "--quiet", "-am", "production values elsewhere")
    run_git(seed, "push", "--quiet", "origin", "main")
    production = conn.pipeline.environment("production")
    before = outside.read_text()
    with pytest.raises(
        TargetError, match=r"envs/production/values\.yaml is a symlink in the repository; promotions never write"
    ):
        strategy_for(production).write(conn, production, "1.0.1")  # type: ignore[attr-defined]
    assert outside.read_text() == before
