"""The tag strategy against real Git when the repository spells its release tags without the configured prefix
(``1.3.0-rc1`` with ``tag_prefix: v``), or both ways: rules.versions names each version by a tag that exists."""

from __future__ import annotations

from pathlib import Path

from pipeline.load import parse_pipeline
from pipeline.model import Pipeline
from tasks.gitrepo import GitRepository
from tasks.strategies.tag import decide_rc
from tests.support.gitserver import make_origin, run_git

ROOT = Path(__file__).resolve().parents[2]
APP = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop
spec:
  source:
    repoURL: https://git.example/app.git
    targetRevision: main
"""


def _world(tmp_path: Path, tags: list[str]) -> tuple[Path, GitRepository]:
    origin, seed = make_origin(tmp_path, {"apps/staging/shop.yaml": APP, "apps/production/shop.yaml": APP})
    for tag in tags:
        run_git(seed, "tag", tag)
    run_git(seed, "push", "--quiet", "origin", "--tags")
    repo = GitRepository(str(origin), tmp_path / "cache")
    repo.fetch()
    return seed, repo


def _pipeline(origin: str) -> Pipeline:
    text = (ROOT / "deployments" / "examples" / "tags.yaml").read_text()
    return parse_pipeline(text.replace("https://github.com/example-org/gitops.git", origin), source="tags.yaml")


def test_bare_tags_with_a_v_prefix_scheme_are_reused_not_a_crash(tmp_path: Path) -> None:
    """An rc tagged ``1.3.0-rc1`` (no prefix) at the head is reused by that name; before, the strategy asked Git
    for ``v1.3.0-rc1``, which does not exist, and the run ended in a Git error."""
    seed, repo = _world(tmp_path, ["1.2.0", "1.3.0-rc1"])
    action, tag, commit, reason = decide_rc(repo, _pipeline(str(tmp_path / "origin.git")))
    assert (action, tag) == ("reuse", "1.3.0-rc1"), reason
    assert commit == run_git(seed, "rev-parse", "HEAD")


def test_both_spellings_name_the_scheme_tag(tmp_path: Path) -> None:
    """``v1.3.0-rc1`` and ``1.3.0-rc1`` on the same commit are one candidate, named by the scheme's spelling."""
    _seed, repo = _world(tmp_path, ["1.3.0-rc1", "v1.3.0-rc1", "1.2.0"])
    action, tag, _commit, _reason = decide_rc(repo, _pipeline(str(tmp_path / "origin.git")))
    assert (action, tag) == ("reuse", "v1.3.0-rc1")
