"""Kustomize overlays on main (Argo CD): CI sets staging's image, promotion copies it to production's overlay."""

from __future__ import annotations

from typing import Any, ClassVar

from sandbox.scenarios.base import Controller, Scenario, Watched
from sandbox.scenarios.layouts import changelog, images, kustomize_layout, real_base


class Overlay(Scenario):
    name: ClassVar[str] = "overlay"
    what: ClassVar[str] = "Kustomize overlays: CI sets staging's image, promotion copies it to production (Argo CD)"
    controller: ClassVar[Controller] = "argocd"

    def files(self, app: str) -> dict[str, str]:
        return kustomize_layout(app)

    def real_files(self, app: str, url: str) -> dict[str, str]:
        overlays = {
            f"overlays/{env}/kustomization.yaml": images(app, "../../base", f"{env}'s image")
            for env in self.environments
        }
        return real_base(app) | overlays | {"src/CHANGELOG.md": changelog(app)}

    def watched(self, app: str, env: str) -> Watched:
        return Watched(overlay_file=f"overlays/{env}/kustomization.yaml")

    def tracks(self, app: str, env: str, registry_url: str) -> str:
        return f"""
      kind: kustomize-image
      file: overlays/{env}/kustomization.yaml
      image: {app}"""

    def argo_sources(self, app: str, envs: tuple[str, ...]) -> dict[str, tuple[dict[str, Any], str]]:
        return {f"{app}-{env}": ({"path": f"overlays/{env}"}, f"{app}-{env}") for env in envs}
