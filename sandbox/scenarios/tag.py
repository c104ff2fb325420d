"""Release tags (Argo CD): an rc tag to staging, the stable tag to production; each environment's Application in
Git names the tag it runs (``targetRevision``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from sandbox.scenarios.base import NAMESPACES, Controller, Scenario, Watched
from sandbox.scenarios.layouts import IMAGE_REPOSITORY, changelog, child_application, deployment, kustomize_layout

if TYPE_CHECKING:
    from sandbox.world import SandboxApp


class Tag(Scenario):
    name: ClassVar[str] = "tag"
    what: ClassVar[str] = "release tags: rc -> staging, stable tag -> production (Argo CD)"
    controller: ClassVar[Controller] = "argocd"

    def files(self, app: str) -> dict[str, str]:
        return kustomize_layout(app)

    def real_files(self, app: str, url: str) -> dict[str, str]:
        files = {
            f"apps/{env}/{app}.yaml": child_application(app, env, url, NAMESPACES["argocd"])
            for env in self.environments
        }
        files["deploy/kustomization.yaml"] = "resources:\n- deployment.yaml\n"
        files["deploy/deployment.yaml"] = deployment(app, f"{IMAGE_REPOSITORY}/{app}:1.0.0")
        return files | {"src/CHANGELOG.md": changelog(app)}

    def real_change_files(self, app: str) -> dict[str, str]:
        # The real controllers take the image from what the release tag points at: CI's 1.0.1 rides on the commit.
        return {"deploy/deployment.yaml": deployment(app, f"{IMAGE_REPOSITORY}/{app}:1.0.1")}

    def watched(self, app: str, env: str) -> Watched:
        return Watched(application_file=f"apps/{env}/{app}.yaml")

    def tracks(self, app: str, env: str, registry_url: str) -> str:
        return f"""
      kind: tag
      application_file: apps/{env}/{app}.yaml"""

    def expected_health(self, real: bool) -> str | None:
        # The health endpoint serves the image tag: 1.2.3 for release v1.2.3. On the real controllers the rc's
        # version (1.0.1-rc1) names no image, so only an answer is asked for.
        return None if real else "{version}"

    def expected_image(self, app: str, real: bool) -> str | None:
        return None if real else f"{IMAGE_REPOSITORY}/{app}:" + "{version}"

    def start_promotion(self, app: SandboxApp, registry_url: str) -> str:
        sha = app.commit_change("feature: faster checkout")
        return f"a developer pushed {sha[:12]} to main (every environment runs v1.0.0)"

    def argo_sources(self, app: str, envs: tuple[str, ...]) -> dict[str, tuple[dict[str, Any], str]]:
        # App of apps: the children are files in Git (their targetRevision), applied by one root Application.
        return {f"{app}-apps": ({"path": "apps", "directory": {"recurse": True}}, NAMESPACES["argocd"])}
