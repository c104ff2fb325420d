"""The sandbox on the real controllers: the demo's applications deployed by the real Argo CD or Flux (and rolled out
by the real controller-manager onto a KWOK node) instead of the simulator.

Per application, a bare Git origin served over loopback HTTP with basic auth (:mod:`sandbox.gitserve`), because the
controllers take http(s) URLs only, and what the controllers need to deploy it:

* ``tag`` (Argo CD): the environments' Applications are files in the repository (``apps/<env>/<app>.yaml``,
  ``targetRevision`` the release tag), applied by a root Application that follows ``main`` (app of apps); the
  manifests are in ``deploy/``. A developer's change is a commit on main that also sets the new image, as CI would.
* ``image-policy`` (Flux): a GitRepository and one Kustomization per environment (``apps/<env>``, with the setter
  markers the promotion writes); CI pushes new image tags to the sandbox registry.

The other strategies run on the simulator (:mod:`sandbox.world`), which can also be forced into states the real
controllers cannot be pushed into on demand.
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
from sandbox.world import Strategy, _changelog, git, publish_first_release

REAL_STRATEGIES: tuple[Strategy, ...] = ("tag", "image-policy")
IMAGE_REPOSITORY = "registry.sandbox.local"
ENVIRONMENTS = ("staging", "production")
FIRST_ROLLOUT_SECONDS = 300.0


def _deployment(app: str, image: str, replicas: int, setter: str = "") -> str:
    marker = f' # {{"$imagepolicy": "{setter}"}}' if setter else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
        - name: {app}
          image: {image}{marker}
"""


def _application(app: str, env: str, url: str) -> str:
    return f"""\
# Argo CD Application for {app} in {env}. gitops-promote changes only targetRevision below.
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {app}-{env}
  namespace: {ARGOCD_NAMESPACE}
spec:
  project: default
  source:
    repoURL: {url}
    path: deploy
    targetRevision: v1.0.0   # the release this environment runs
  destination:
    server: https://kubernetes.default.svc
    namespace: {app}-{env}
  syncPolicy:
    automated: {{prune: true, selfHeal: true}}
"""


@dataclass
class RealEnvironment:
    name: str  # <app>-<env>
    kind: str  # argocd | flux


@dataclass
class RealSandboxApp:
    name: str
    origin: Path
    workdir: Path
    pipeline_file: Path
    strategy: Strategy
    envs: list[RealEnvironment] = field(default_factory=list)

    def commit_change(self, line: str) -> str:
        """A developer's change on main, with the image CI built for it (1.0.1)."""
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", "main", "origin/main")
        changelog = self.workdir / "src" / "CHANGELOG.md"
        changelog.write_text(changelog.read_text() + f"- {line}\n")
        manifest = self.workdir / "deploy" / "deployment.yaml"
        manifest.write_text(_deployment(self.name, f"{IMAGE_REPOSITORY}/{self.name}:1.0.1", 2))
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
                self._delete_roots()

    def create_app(self, name: str, *, strategy: Strategy = "tag", **_ignored: Any) -> RealSandboxApp:
        if strategy not in REAL_STRATEGIES:
            raise ValueError(
                f"strategy {strategy!r} runs on the simulated controllers only so far (real: "
                f"{', '.join(REAL_STRATEGIES)}); use --controllers simulated"
            )
        if strategy == "image-policy" and not self.registry_url:
            raise ValueError("an image-policy app needs the world's registry_url (a registry with its tags)")
        base = self.root / "work" / name
        base.mkdir(parents=True)
        origin = self.root / "git" / f"{name}.git"
        url = f"{self.git_url}/{name}.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        work = base / "work"
        git(base, "clone", "--quiet", str(origin), str(work))
        git(work, "checkout", "--quiet", "-B", "main")
        if strategy == "tag":
            files = {f"apps/{env}/{name}.yaml": _application(name, env, url) for env in ENVIRONMENTS}
            files["deploy/kustomization.yaml"] = "resources:\n  - deployment.yaml\n"
            files["deploy/deployment.yaml"] = _deployment(name, f"{IMAGE_REPOSITORY}/{name}:1.0.0", 2)
        else:
            files = {
                f"apps/{env}/deployment.yaml": _deployment(
                    name, f"{IMAGE_REPOSITORY}/{name}:1.0.0", 2, setter=f"{FLUX_NAMESPACE}:{name}-{env}"
                )
                for env in ENVIRONMENTS
            }
        files["src/CHANGELOG.md"] = _changelog(name)
        publish_first_release(work, files)
        core = client.CoreV1Api(self.api)
        for env in ENVIRONMENTS:
            with contextlib.suppress(ApiException):  # 409: there from an earlier app of the same name
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=f"{name}-{env}")))
            self._deployments[f"{name}/{env}"] = (f"{name}-{env}", name)
        kind = "argocd" if strategy == "tag" else "flux"
        if kind == "argocd":
            self._argo_objects(name, url)
        else:
            self._flux_objects(name, url)
        pipeline = base / f"{name}.yaml"
        pipeline.write_text(self._pipeline(name, str(origin), strategy))
        app = RealSandboxApp(
            name=name,
            origin=origin,
            workdir=work,
            pipeline_file=pipeline,
            strategy=strategy,
            envs=[RealEnvironment(f"{name}-{env}", kind) for env in ENVIRONMENTS],
        )
        self.apps.append(app)
        return app

    def _argo_objects(self, name: str, url: str) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"repo-{name}", "labels": {"argocd.argoproj.io/secret-type": "repository"}},
            "stringData": {"url": url, "username": self._username, "password": self._token, "type": "git"},
        }
        root = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": f"{name}-apps"},
            "spec": {
                "project": "default",
                "source": {"repoURL": url, "targetRevision": "main", "path": "apps", "directory": {"recurse": True}},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": ARGOCD_NAMESPACE},
                "syncPolicy": {"automated": {}},
            },
        }
        apply_manifests(self.api, [secret, root], namespace=ARGOCD_NAMESPACE)

    def _flux_objects(self, name: str, url: str) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-auth"},
            "stringData": {"username": self._username, "password": self._token},
        }
        source = {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": name},
            "spec": {
                "url": url,
                "interval": "1m",
                "timeout": "30s",
                "ref": {"branch": "main"},
                "secretRef": {"name": f"{name}-auth"},
            },
        }
        kustomizations = [
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": f"{name}-{env}"},
                "spec": {
                    "interval": "5m",
                    "path": f"./apps/{env}",
                    "prune": True,
                    "wait": True,
                    "timeout": "2m",
                    "targetNamespace": f"{name}-{env}",
                    "sourceRef": {"kind": "GitRepository", "name": name},
                },
            }
            for env in ENVIRONMENTS
        ]
        apply_manifests(self.api, [secret, source, *kustomizations], namespace=FLUX_NAMESPACE)

    def _delete_roots(self) -> None:
        """Root Applications first: Argo CD would otherwise re-create the children while they are deleted."""
        custom = client.CustomObjectsApi(self.api)
        for app in self.apps:
            if app.strategy == "tag":
                with contextlib.suppress(ApiException):
                    custom.delete_namespaced_custom_object(
                        "argoproj.io", "v1alpha1", ARGOCD_NAMESPACE, "applications", f"{app.name}-apps"
                    )

    def wait_for_first_rollout(
        self, say: Callable[[str], None], overall_seconds: float = FIRST_ROLLOUT_SECONDS
    ) -> None:
        """Until every environment's Deployment runs 1.0.0 on Ready pods, as the controllers put it there."""
        apps_api = client.AppsV1Api(self.api)
        deadline = time.monotonic() + overall_seconds
        waiting = [(app.name, env) for app in self.apps for env in ENVIRONMENTS]
        while waiting:
            name, env = waiting[0]
            try:
                live: Any = apps_api.read_namespaced_deployment(name, f"{name}-{env}")
                done = (live.status.available_replicas or 0) >= (live.spec.replicas or 0) and (
                    live.status.updated_replicas or 0
                ) >= (live.spec.replicas or 0)
            except ApiException:
                done = False
            if done:
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the real controllers did not roll out {name} 1.0.0 in {name}-{env} within "
                    f"{overall_seconds:.0f}s (their logs: {self.root}/../ or rerun with --keep)"
                )
            time.sleep(0.3)
        say(f"      every environment runs 1.0.0, put there by the real {self._controllers()}")

    def _controllers(self) -> str:
        kinds = {env.kind for app in self.apps for env in app.envs}
        return " and ".join(sorted({"argocd": "Argo CD", "flux": "Flux"}[k] for k in kinds))

    def _pipeline(self, name: str, origin: str, strategy: Strategy) -> str:
        blocks = []
        for env in ENVIRONMENTS:
            if strategy == "tag":
                tracks = f"""
      kind: tag
      application_file: apps/{env}/{name}.yaml"""
                gitops = f"""
        kind: argocd
        name: {name}-{env}
        namespace: {ARGOCD_NAMESPACE}"""
                # An rc's {version} (1.0.1-rc1) is not the image tag CI built (1.0.1): the health check asks for
                # an answer, verification already proved the commit and the pods.
                match = ""
            else:
                choose = "semver: 1.x.x" if env == "production" else "semver: '>=1.0.0-0 <2.0.0'"
                tracks = f"""
      kind: image-policy
      path: apps/{env}
      policy: {FLUX_NAMESPACE}:{name}-{env}
      registry:
        url: {self.registry_url}
        repository: sandbox/{name}
        image: {IMAGE_REPOSITORY}/{name}
      choose:
        {choose}"""
                gitops = f"""
        kind: flux
        name: {name}-{env}
        namespace: {FLUX_NAMESPACE}"""
                match = '\n        expect_json: {path: version, equals: "{tag}"}'
            gate = (
                """
    gate:
      approval: true
      timeout_seconds: 600"""
                if env == "production"
                else ""
            )
            blocks.append(f"""
  - name: {env}
    tracks:{tracks}
    verify:
      cluster:
        kubeconfig: {self.kubeconfig}
      gitops:{gitops}
      deployments:
        - name: {name}
          namespace: {name}-{env}
          container: {name}
      timeout_seconds: 240
    health_checks:
      - name: {env} answers
        url: {self.health_url}/{name}/{env}/version{match}
        consecutive_successes: 2
        interval_seconds: 0.2
        timeout_seconds: 30{gate}""")
        return f"""\
# Sandbox pipeline (generated): {name} promoted by {strategy}, verified against the real controllers.
name: {name}
repository:
  url: {origin}
  branch: main
versioning:
  tag_prefix: v
  bump: patch
environments:{"".join(blocks)}
"""
