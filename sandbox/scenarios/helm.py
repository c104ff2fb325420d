"""Helm values (Argo CD): the example chart rendered per environment with its own values file; CI sets staging's
``image.tag``, promotion copies the verified values to production."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sandbox.scenarios.base import Controller, Scenario, Watched
from sandbox.scenarios.layouts import helm_layout

CONTAINER = "web"  # the example chart's (deployments/examples/helm)


class Helm(Scenario):
    name: ClassVar[str] = "helm"
    what: ClassVar[str] = (
        "Helm values: CI sets staging's image.tag, promotion copies the verified values to production (Argo CD)"
    )
    controller: ClassVar[Controller] = "argocd"
    needs_helm: ClassVar[bool] = True
    real_container: ClassVar[str | None] = CONTAINER
    release_file: ClassVar[str] = "envs/staging/values.yaml"
    release_place: ClassVar[str] = "staging's Helm values"

    def files(self, app: str) -> dict[str, str]:
        return helm_layout(app)

    def real_files(self, app: str, url: str) -> dict[str, str]:
        return helm_layout(app)

    def set_image(self, work: Path, tag: str) -> None:
        path = work / self.release_file
        text = path.read_text()
        for key in ("  tag: ", "  app.kubernetes.io/version: "):
            old = next(line for line in text.splitlines() if line.startswith(key))
            text = text.replace(old, f'{key}"{tag}"' + ("   # set by CI" if "tag" in key else ""))
        path.write_text(text)

    def watched(self, app: str, env: str) -> Watched:
        return Watched(values_file=f"envs/{env}/values.yaml")

    def tracks(self, app: str, env: str, registry_url: str) -> str:
        return f"""
      kind: yaml-path
      edits:
        - name: image
          file: envs/{env}/values.yaml
          path: image.tag
        - name: version-label
          file: envs/{env}/values.yaml
          path: podLabels."app.kubernetes.io/version\""""

    def argo_sources(self, app: str, envs: tuple[str, ...]) -> dict[str, tuple[dict[str, Any], str]]:
        # The chart with each environment's values (release name: the app, as the chart's Deployment).
        return {
            f"{app}-{env}": (
                {
                    "path": f"charts/{app}",
                    "helm": {"releaseName": app, "valueFiles": [f"../../envs/{env}/values.yaml"]},
                },
                f"{app}-{env}",
            )
            for env in envs
        }
