"""A test's Git origin as a GitOps controller sees it: a bare repository under ``root``, served over loopback HTTP
with basic auth (tests/support/gitserver.py), and a seed clone through which "another person" pushes. The Flux
and Argo CD sites (fluxsite.py, argosite.py) add their controllers' objects on top."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kubernetes import client as k8s

from tests.support.gitserver import make_origin, run_git


@dataclass
class ServedOrigin:
    api: k8s.ApiClient
    namespace: str
    root: Path  # holds <name>.git, served at url_base
    url_base: str
    username: str
    token: str
    name: str = "site"
    seed: Path = field(init=False)
    origin: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"{self.url_base}/{self.name}.git"

    def create_origin(self, files: dict[str, str], branches: tuple[str, ...] = ()) -> str:
        """The bare origin with ``files`` on main (and ``branches`` at the same commit); returns main's commit."""
        work = self.root / f"{self.name}-work"
        work.mkdir(parents=True)
        origin, seed = make_origin(work, files, branches)
        self.origin = self.root / f"{self.name}.git"
        origin.rename(self.origin)
        run_git(seed, "remote", "set-url", "origin", str(self.origin))
        self.seed = seed
        return self.head()

    def head(self, ref: str = "main") -> str:
        return run_git(self.origin, "rev-parse", ref)

    def push(self, files: dict[str, str], message: str, branch: str = "main") -> str:
        """Another person pushes a change to ``branch``; returns the new commit."""
        run_git(self.seed, "fetch", "--quiet", "origin")
        run_git(self.seed, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        for rel, text in files.items():
            path = self.seed / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        run_git(self.seed, "add", "-A")
        run_git(self.seed, "commit", "--quiet", "-m", message)
        run_git(self.seed, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
        return run_git(self.seed, "rev-parse", "HEAD")

    def tag(self, name: str) -> str:
        """An annotated tag at main's head, pushed; returns its commit."""
        run_git(self.seed, "tag", "-a", name, "-m", name)
        run_git(self.seed, "push", "--quiet", "origin", name)
        return run_git(self.seed, "rev-parse", f"{name}^{{commit}}")
