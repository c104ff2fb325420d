"""What a sandbox scenario tells the simulator, the real controllers, the pipeline file and the demo. Each
scenario (one per file beside this one) answers these for its strategy; the code that uses them asks, and never
switches on a scenario's name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from sandbox.cluster import ARGOCD_NAMESPACE, FLUX_NAMESPACE

if TYPE_CHECKING:
    from sandbox.world import SandboxApp

Controller = Literal["argocd", "flux"]
NAMESPACES: dict[Controller, str] = {"argocd": ARGOCD_NAMESPACE, "flux": FLUX_NAMESPACE}
ENVIRONMENTS: tuple[str, ...] = ("staging", "production")


class Watched(NamedTuple):
    """Where, at a revision, the simulated controller reads what one environment runs (all None: the version of
    the tag the environment tracks)."""

    application_file: str | None = None  # an Argo CD Application in Git, its targetRevision
    overlay_file: str | None = None  # a Kustomize overlay's images[]
    manifest_file: str | None = None  # a plain Deployment's image (setter markers write it)
    values_file: str | None = None  # Helm values' image.repository and image.tag


class Scenario:
    """The sandbox's side of one strategy. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    what: ClassVar[str]  # one line for the demo's banner and --help
    controller: ClassVar[Controller]
    environments: ClassVar[tuple[str, ...]] = ENVIRONMENTS
    needs_registry: ClassVar[bool] = False  # its versions are image tags in the world's registry
    needs_helm: ClassVar[bool] = False  # Argo CD's repo server renders a chart with the helm CLI
    on_real_controllers: ClassVar[bool] = True  # the demo can deploy it with the real Argo CD or Flux
    real_container: ClassVar[str | None] = None  # the container verified on the real controllers (default: app)
    # Where CI sets the first environment's image (release_image), and what the demo calls that place.
    release_file: ClassVar[str] = "overlays/staging/kustomization.yaml"
    release_place: ClassVar[str] = "overlays/staging"

    # --- Git ---------------------------------------------------------------------------------------------------
    def branch(self, env: str) -> str:
        """The branch ``env`` deploys from."""
        return "main"

    def files(self, app: str) -> dict[str, str]:
        """The first release's layout for the simulator."""
        raise NotImplementedError

    def real_files(self, app: str, url: str) -> dict[str, str]:
        """The first release's layout for the real controllers (``url``: the origin as they fetch it)."""
        raise NotImplementedError

    def real_change_files(self, app: str) -> dict[str, str]:
        """What a developer's change also writes on the real controllers (where the release names no image of its
        own): nothing by default."""
        return {}

    def set_image(self, work: Path, tag: str) -> None:
        """CI built ``tag``: write it where the first environment takes it from (``release_file``'s newTag)."""
        path = work / self.release_file
        text = path.read_text()
        old = next(line for line in text.splitlines() if "newTag:" in line)
        path.write_text(text.replace(old, f"{old.split('newTag:')[0]}newTag: {tag}   # set by CI"))

    # --- the simulator -----------------------------------------------------------------------------------------
    def watched(self, app: str, env: str) -> Watched:
        return Watched()

    # --- the pipeline file -------------------------------------------------------------------------------------
    def tracks(self, app: str, env: str, registry_url: str) -> str:
        """The environment's ``tracks:`` block (indented as the generated pipeline file nests it)."""
        raise NotImplementedError

    def expected_health(self, real: bool) -> str | None:
        """What the health endpoint's ``version`` must equal (a template), or None to ask for an answer only."""
        return "{tag}"

    def expected_image(self, app: str, real: bool) -> str | None:
        """The image the verified container must run (a template), or None to check the rollout only."""
        return None

    # --- the demo ----------------------------------------------------------------------------------------------
    def start_promotion(self, app: SandboxApp, registry_url: str) -> str:
        """What starts a promotion (a commit, a CI image bump, a pushed image); the demo prints the answer."""
        sha = app.release_image("1.0.1")
        return f"CI set image 1.0.1 in {self.release_place} ({sha[:12]}); production runs 1.0.0"

    # --- the real controllers ----------------------------------------------------------------------------------
    def argo_sources(self, app: str, envs: tuple[str, ...]) -> dict[str, tuple[dict[str, Any], str]]:
        """Argo CD scenarios: per Application created in the cluster, its source (beside repoURL and
        targetRevision main) and destination namespace."""
        raise NotImplementedError

    def flux_source(self, app: str, env: str) -> str:
        """Flux scenarios: the GitRepository ``env``'s Kustomization reads."""
        return app

    def flux_path(self, env: str) -> str:
        """Flux scenarios: the path in Git ``env``'s Kustomization applies."""
        return f"./apps/{env}"
