"""Symlinks committed in the GitOps repository, against real Git, for every strategy kind that writes files
(tag, kustomize-image, yaml-path through the shared edit-and-push; image-policy through setter markers).

Guards issue 14 (High 2): a committed symlink (the file itself or a parent directory) made a promotion
rewrite a file outside the repository, or another file of it, and then report "no change". Every symlink on
the way is now refused, naming the link, at plan time and at write time: nothing outside is touched and
nothing is pushed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.load import parse_pipeline
from rules.errors import RefusedError
from tasks.connections import Connections
from tasks.gitrepo import GitRepository
from tasks.strategies import files, strategy_for
from tasks.strategies.tag import application_edit
from tests.support.gitserver import make_origin, run_git

APPLICATION = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: shop-production
spec:
  source:
    repoURL: https://git.example.org/platform/app.git
    targetRevision: v1.0.0
"""

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../base]
images:
  - name: app
    newTag: 1.0.0
"""

VALUES = """\
image:
  repository: ghcr.io/example-org/shop
  tag: "1.0.0"
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  template:
    spec:
      containers:
        - name: shop
          image: ghcr.io/example-org/shop:1.0.0 # {"$imagepolicy": "flux-system:shop"}
"""

TRACKS = {
    "tag": "{kind: tag, application_file: envs/production/app.yaml}",
    "kustomize-image": "{kind: kustomize-image, file: envs/production/app.yaml, image: app}",
    "yaml-path": "{kind: yaml-path, edits: [{file: envs/production/app.yaml, path: image.tag}]}",
    "image-policy": (
        "{kind: image-policy, path: envs/production, policy: 'flux-system:shop', registry: "
        "{url: 'https://ghcr.io', repository: example-org/shop}, choose: {semver: 1.x.x}}"
    ),
}
TEXTS = {"tag": APPLICATION, "kustomize-image": KUSTOMIZATION, "yaml-path": VALUES, "image-policy": DEPLOYMENT}
NEW_VALUE = {"tag": "v1.0.1", "kustomize-image": "1.0.1", "yaml-path": "1.0.1", "image-policy": "1.0.1"}


@dataclass
class World:
    origin: Path
    seed: Path
    conn: Connections
    kind: str
    write: Callable[[], object]
    plan: Callable[[], object]


def _world(tmp_path: Path, kind: str) -> World:
    text = TEXTS[kind]
    origin, seed = make_origin(tmp_path, {"envs/production/app.yaml": text, "envs/shared/app.yaml": text})
    pipeline = parse_pipeline(
        f"name: shop\nrepository:\n  url: {str(origin)!r}\nenvironments:\n"
        f"  - name: production\n    tracks: {TRACKS[kind]}\n",
        source="pipeline.yaml",
    )
    repo = GitRepository(str(origin), tmp_path / "cache")
    conn = Connections(pipeline, repo, log=lambda _m: None)
    env = pipeline.environment("production")
    value = NEW_VALUE[kind]
    if kind == "tag":
        edit = application_edit(env)
        msg: Callable[[list[str]], str] = lambda old: f"promote {old} -> {value}"  # noqa: E731
        return World(
            origin,
            seed,
            conn,
            kind,
            write=lambda: files.point(repo, "main", [(edit, value)], msg),
            plan=lambda: files.plan(repo, "main", [(edit, value)]),
        )
    strategy = strategy_for(env)
    return World(
        origin,
        seed,
        conn,
        kind,
        write=lambda: strategy.write(conn, env, value),  # type: ignore[attr-defined]
        plan=lambda: strategy.planned_diff(conn, env, value),  # type: ignore[attr-defined]
    )


def _commit_link(seed: Path, rel: str, target: str | Path) -> None:
    run_git(seed, "pull", "--quiet", "origin", "main")
    path = seed / rel
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)
    run_git(seed, "add", "-A")
    run_git(seed, "commit", "--quiet", "-m", f"{rel} is a link now")
    run_git(seed, "push", "--quiet", "origin", "main")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


KINDS = sorted(TRACKS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["file", "parent directory"])
def test_a_symlink_out_of_the_repository_is_refused_and_the_outside_is_untouched(
    tmp_path: Path, kind: str, where: str
) -> None:
    world = _world(tmp_path, kind)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.yaml").write_text(TEXTS[kind])
    if where == "file":
        link = "envs/production/app.yaml"
        _commit_link(world.seed, link, outside / "app.yaml")
    else:
        link = "envs/production"
        _commit_link(world.seed, link, outside)
    refs = run_git(world.origin, "for-each-ref")
    before = _snapshot(outside)
    world.conn.repo.fetch()
    _refuses(world, link, plan=not (kind == "image-policy" and where == "file"))
    assert _snapshot(outside) == before
    assert run_git(world.origin, "for-each-ref") == refs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["file", "parent directory"])
def test_a_symlink_inside_the_repository_is_refused_too(tmp_path: Path, kind: str, where: str) -> None:
    """Following a link that stays inside the tree would edit another file than the one the pipeline names
    (and Git would see no change in the named one): refused like any other."""
    world = _world(tmp_path, kind)
    if where == "file":
        link = "envs/production/app.yaml"
        _commit_link(world.seed, link, "../shared/app.yaml")
    else:
        link = "envs/production"
        _commit_link(world.seed, link, "shared")
    refs = run_git(world.origin, "for-each-ref")
    world.conn.repo.fetch()
    _refuses(world, link, plan=not (kind == "image-policy" and where == "file"))
    assert run_git(world.origin, "for-each-ref") == refs
    assert run_git(world.origin, "show", "main:envs/shared/app.yaml") == TEXTS[kind].rstrip("\n")


def test_a_link_into_git_s_own_data_is_refused(tmp_path: Path) -> None:
    """A link into ``.git`` (``app.yaml -> ../../.git/config``) resolves inside the work tree; writing through
    it would edit the cache's Git config. Refused as a symlink."""
    world = _world(tmp_path, "kustomize-image")
    _commit_link(world.seed, "envs/production/app.yaml", "../../.git/config")
    world.conn.repo.fetch()
    with pytest.raises(RefusedError, match=r"envs/production/app\.yaml is a symlink in the repository"):
        world.write()
    config = (world.conn.repo.path / ".git" / "config").read_text()
    assert "1.0.1" not in config and "images" not in config


def _refuses(world: World, link: str, *, plan: bool) -> None:
    file = "envs/production" if world.kind == "image-policy" else "envs/production/app.yaml"
    if link == file:
        expected = rf"{re.escape(file)} is a symlink in the repository"
    elif world.kind == "image-policy":  # a symlinked file under the update path is skipped, and said so
        expected = rf"symlinked file\(s\) skipped, e\.g\. {re.escape(link)}"
    else:
        expected = rf"{re.escape(file)} is reached through the symlink {re.escape(link)} in the repository"
    with pytest.raises(RefusedError, match=expected):
        world.write()
    if plan:
        with pytest.raises(RefusedError, match=r"symlink"):
            world.plan()
    # The checkout is left as Git has it: the link is still a link, nothing was written through it.
    assert (world.conn.repo.path / link).is_symlink()
