"""An image policy (Flux): registry tags chosen by a semver range, written through setter markers into plain
Deployments; CI pushes new tags to the world's registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from sandbox.scenarios.base import NAMESPACES, Controller, Scenario, Watched
from sandbox.scenarios.layouts import IMAGE_REPOSITORY, changelog, deployment, policy_deployment

if TYPE_CHECKING:
    from sandbox.world import SandboxApp


class ImagePolicy(Scenario):
    name: ClassVar[str] = "image-policy"
    what: ClassVar[str] = "image policy: registry tags chosen by semver range, written through setter markers (Flux)"
    controller: ClassVar[Controller] = "flux"
    needs_registry: ClassVar[bool] = True

    def files(self, app: str) -> dict[str, str]:
        manifests = {f"apps/{env}/deployment.yaml": policy_deployment(app, env) for env in self.environments}
        return manifests | {"src/CHANGELOG.md": changelog(app)}

    def real_files(self, app: str, url: str) -> dict[str, str]:
        manifests = {
            f"apps/{env}/deployment.yaml": deployment(
                app, f"{IMAGE_REPOSITORY}/{app}:1.0.0", setter=f"{NAMESPACES['flux']}:{app}-{env}"
            )
            for env in self.environments
        }
        return manifests | {"src/CHANGELOG.md": changelog(app)}

    def watched(self, app: str, env: str) -> Watched:
        return Watched(manifest_file=f"apps/{env}/deployment.yaml")

    def tracks(self, app: str, env: str, registry_url: str) -> str:
        choose = "semver: 1.x.x" if env == "production" else "semver: '>=1.0.0-0 <2.0.0'  # release candidates too"
        return f"""
      kind: image-policy
      path: apps/{env}
      policy: flux-system:{app}-{env}
      registry:
        url: {registry_url}
        repository: sandbox/{app}
        image: {IMAGE_REPOSITORY}/{app}
      choose:
        {choose}"""

    def start_promotion(self, app: SandboxApp, registry_url: str) -> str:
        from sandbox.registry import push_image

        push_image(registry_url, f"sandbox/{app.name}", ["1.0.1"])
        return f"CI pushed image sandbox/{app.name}:1.0.1 to the registry at {registry_url}"
