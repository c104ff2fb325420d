"""The sandbox on the real controllers: the demo's applications deployed by the real Argo CD or Flux (and rolled out
by the real controller-manager onto a KWOK node) instead of the simulator.

Per application, a bare Git origin served over loopback HTTP with basic auth (:mod:`sandbox.gitserve`), because the
controllers take http(s) URLs only, and what the controllers need to deploy it, per scenario (each one's file in
:mod:`sandbox.scenarios` says what it lays out and which objects it needs):

* ``tag`` and ``chain`` (Argo CD): the environments' Applications are files in the repository
  (``apps/<env>/<app>.yaml``, ``targetRevision`` the release tag), applied by a root Application that follows
  ``main`` (app of apps); the manifests are in ``deploy/``. A developer's change is a commit on main that also sets
  the new image, as CI would.
* ``overlay`` (Argo CD): one Application per environment on ``overlays/<env>`` at ``main``; CI sets staging's image.
* ``helm`` (Argo CD): one Application per environment rendering ``charts/<app>`` with ``envs/<env>/values.yaml``
  (the real ``helm``, built by ``hack/build-helm``, on the repo server's PATH).
* ``branch`` (Flux): a GitRepository per environment (staging follows the ``staging`` branch, production ``main``)
  and a Kustomization on ``deploy/``.
* ``image-policy`` (Flux): a GitRepository and one Kustomization per environment (``apps/<env>``, with the setter
  markers the promotion writes); CI pushes new image tags to the sandbox registry.

The simulator (:mod:`sandbox.world`) stays for ``--write pull-request`` and for states the real controllers cannot
be forced into on demand.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.apiserver import apply_manifests
from sandbox.cluster import ARGOCD_NAMESPACE, FLUX_NAMESPACE
from sandbox.gitserve import serve_git_over_http
from sandbox.healthapp import serve_health
from sandbox.scenarios import Scenario, scenario
from sandbox.world import SandboxApp, SandboxWorld, Strategy, git, publish_first_release, push_environment_branches

FIRST_ROLLOUT_SECONDS = 300.0


@dataclass
class RealEnvironment:
    name: str  # <app>-<env>
    kind: str  # argocd | flux


@dataclass
class RealSandboxApp(SandboxApp):
    """A sandbox app the real controllers deploy: as :class:`~sandbox.world.SandboxApp`, with the image in Git."""

    def commit_change(self, line: str, *, branch: str | None = None) -> str:
        """A developer's change on main; for tag pipelines with the image CI built for it (1.0.1), since here the
        image comes from what the release tag points at."""
        also = self.scenario.real_change_files(self.name)
        if not also:
            return super().commit_change(line, branch=branch)
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", "main", "origin/main")
        changelog = self.workdir / "src" / "CHANGELOG.md"
        changelog.write_text(changelog.read_text() + f"- {line}\n")
        for rel, text in also.items():
            (self.workdir / rel).write_text(text)
        git(self.workdir, "commit", "--quiet", "-am", f"{line} (image 1.0.1)")
        git(self.workdir, "push", "--quiet", "origin", "HEAD:main")
        return git(self.workdir, "rev-parse", "HEAD")


@dataclass
class RealWorld:
    """The demo's applications on a started :class:`~sandbox.cluster.RealCluster` (``api``: its admin client)."""

    root: Path
    api: client.ApiClient
    kubeconfig: Path
    registry_url: str = ""
    apps: list[RealSandboxApp] = field(default_factory=list)
    health_url: str = ""
    git_url: str = ""
    _username: str = "sandbox"
    _token: str = field(default_factory=lambda: secrets.token_hex(16))
    _deployments: dict[str, tuple[str, str]] = field(default_factory=dict)
    _applications: list[str] = field(default_factory=list)  # created here: deleted first on the way out

    @contextlib.contextmanager
    def running(self) -> Iterator[RealWorld]:
        """Serve the origins to the controllers and the health endpoint for the duration of the block."""
        served = self.root / "git"
        served.mkdir(parents=True, exist_ok=True)
        with (
            serve_git_over_http(served, self._username, self._token) as git_url,
            serve_health(self.api, self._deployments) as health_url,
        ):
            self.git_url, self.health_url = git_url.rstrip("/"), health_url
            try:
                yield self
            finally:
                self._delete_applications()

    def create_app(self, name: str, *, strategy: Strategy = "tag", **_ignored: Any) -> RealSandboxApp:
        chosen = scenario(strategy)
        if chosen.needs_registry and not self.registry_url:
            raise ValueError(f"the {strategy} scenario needs the world's registry_url (a registry with its tags)")
        envs = chosen.environments
        base = self.root / "work" / name
        base.mkdir(parents=True)
        origin = self.root / "git" / f"{name}.git"
        url = f"{self.git_url}/{name}.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        work = base / "work"
        git(base, "clone", "--quiet", str(origin), str(work))
        git(work, "checkout", "--quiet", "-B", "main")
        publish_first_release(work, chosen.real_files(name, url))
        push_environment_branches(work, chosen)
        core = client.CoreV1Api(self.api)
        for env in envs:
            with contextlib.suppress(ApiException):  # 409: there from an earlier app of the same name
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"{name}-{env}")))
            self._deployments[f"{name}/{env}"] = (f"{name}-{env}", name)
        objects = {"argocd": self._argo_objects, "flux": self._flux_objects}[chosen.controller]
        objects(name, url, chosen, envs)
        pipeline = base / f"{name}.yaml"
        pipeline.write_text(
            SandboxWorld.pipeline_text(
                name,
                str(origin),
                strategy,
                kubeconfig=self.kubeconfig,
                health_url=self.health_url,
                registry_url=self.registry_url,
                verify_timeout=240,
                names=envs,
                container=chosen.real_container,
                real=True,
            )
        )
        kind = chosen.controller
        app = RealSandboxApp(
            name=name,
            origin=origin,
            workdir=work,
            pipeline_file=pipeline,
            envs=[RealEnvironment(f"{name}-{env}", kind) for env in envs],  # type: ignore[misc]  # only .name is read
            strategy=strategy,
        )
        self.apps.append(app)
        return app

    def _argo_objects(self, name: str, url: str, chosen: Scenario, envs: tuple[str, ...]) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"repo-{name}", "labels": {"argocd.argoproj.io/secret-type": "repository"}},
            "stringData": {"url": url, "username": self._username, "password": self._token, "type": "git"},
        }
        sync = {"automated": {"prune": True, "selfHeal": True}}
        sources = chosen.argo_sources(name, envs)
        applications = [
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": app_name},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": url, "targetRevision": "main", **source},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                    "syncPolicy": sync,
                },
            }
            for app_name, (source, namespace) in sources.items()
        ]
        apply_manifests(self.api, [secret, *applications], namespace=ARGOCD_NAMESPACE)
        self._applications += list(sources)

    def _flux_objects(self, name: str, url: str, chosen: Scenario, envs: tuple[str, ...]) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-auth"},
            "stringData": {"username": self._username, "password": self._token},
        }
        branches = {env: chosen.branch(env) for env in envs}
        source_of = {env: chosen.flux_source(name, env) for env in envs}
        sources = {
            source_of[env]: {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": source_of[env]},
                "spec": {
                    "url": url,
                    "interval": "1m",
                    "timeout": "30s",
                    "ref": {"branch": branches[env]},
                    "secretRef": {"name": f"{name}-auth"},
                },
            }
            for env in envs
        }
        kustomizations = [
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": f"{name}-{env}"},
                "spec": {
                    "interval": "5m",
                    "path": chosen.flux_path(env),
                    "prune": True,
                    "wait": True,
                    "timeout": "2m",
                    "targetNamespace": f"{name}-{env}",
                    "sourceRef": {"kind": "GitRepository", "name": source_of[env]},
                },
            }
            for env in envs
        ]
        apply_manifests(self.api, [secret, *sources.values(), *kustomizations], namespace=FLUX_NAMESPACE)

    def _delete_applications(self) -> None:
        """Root Applications first: Argo CD would otherwise re-create the children while they are deleted."""
        custom = client.CustomObjectsApi(self.api)
        for name in self._applications:
            with contextlib.suppress(ApiException):
                custom.delete_namespaced_custom_object(
                    "argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications", name
                )

    def wait_for_first_rollout(
        self, say: Callable[[str], None], overall_seconds: float = FIRST_ROLLOUT_SECONDS
    ) -> None:
        """Until every environment's Deployment runs 1.0.0 on Ready pods, as the controllers put it there."""
        apps_api = client.AppsV1Api(self.api)
        deadline = time.monotonic() + overall_seconds
        waiting = [(app.name, env.name) for app in self.apps for env in app.envs]
        while waiting:
            name, namespace = waiting[0]
            try:
                live: Any = apps_api.read_namespaced_deployment(name, namespace)
                wanted = live.spec.replicas or 0
                done = (live.status.available_replicas or 0) >= wanted and (live.status.updated_replicas or 0) >= wanted
            except ApiException:
                done = False
            if done:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the real controllers did not roll out {name} 1.0.0 in namespace {namespace} within "
                    f"{overall_seconds:.0f}s (rerun with --keep to look at the cluster)"
                )
            time.sleep(0.3)
        kinds = {env.kind for app in self.apps for env in app.envs}
        controllers = " and ".join(sorted({"argocd": "Argo CD", "flux": "Flux"}[k] for k in kinds))
        say(f"      every environment runs 1.0.0, put there by the real {controllers}")
