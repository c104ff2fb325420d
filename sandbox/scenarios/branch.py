"""Branches (Flux): staging follows the ``staging`` branch, production ``main``; promotion merges staging into
main with ``--no-ff``."""

from __future__ import annotations

from typing import ClassVar

from sandbox.scenarios.base import Controller, Scenario, Watched
from sandbox.scenarios.layouts import base_deployment, branch_overlay, changelog, images, real_base

OVERLAY = "deploy/kustomization.yaml"


class Branch(Scenario):
    name: ClassVar[str] = "branch"
    what: ClassVar[str] = "branches: staging is merged into main with --no-ff (Flux)"
    controller: ClassVar[Controller] = "flux"
    release_file: ClassVar[str] = OVERLAY
    release_place: ClassVar[str] = "the staging branch"

    def branch(self, env: str) -> str:
        return "staging" if env == "staging" else "main"

    def files(self, app: str) -> dict[str, str]:
        return {
            "base/deployment.yaml": base_deployment(app),
            OVERLAY: branch_overlay(app),
            "src/CHANGELOG.md": changelog(app),
        }

    def real_files(self, app: str, url: str) -> dict[str, str]:
        return real_base(app) | {
            OVERLAY: images(app, "../base", "this branch's image"),
            "src/CHANGELOG.md": changelog(app),
        }

    def watched(self, app: str, env: str) -> Watched:
        return Watched(overlay_file=OVERLAY)

    def tracks(self, app: str, env: str, registry_url: str) -> str:
        merge = "\n      merge_from: staging" if env == "production" else ""
        return f"""
      kind: branch
      branch: {self.branch(env)}{merge}"""

    def expected_health(self, real: bool) -> str | None:
        return None  # a merge names no version

    def flux_source(self, app: str, env: str) -> str:
        return f"{app}-{env}"  # each environment follows its own branch

    def flux_path(self, env: str) -> str:
        return "./deploy"
