"""SIMULATOR. A whole local GitOps world for the demo, the tests and the benchmarks.

For each application: a bare Git origin laid out like a GitOps repository (Argo CD Applications per
environment, a Kustomize base and overlays), a tag ``v1.0.0`` that staging and production already run, the
Applications and Deployments in a real kube-apiserver, and a pipeline file pointing at all of it. The
:class:`~sandbox.agent.GitOpsAgent` plays Argo CD; :func:`~sandbox.healthapp.serve_health` plays the app.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from kubernetes import client

from sandbox.agent import GitOpsAgent, SimDeployment, SimEnvironment, create_objects
from sandbox.gitea import ADMIN as GITEA_ADMIN
from sandbox.healthapp import serve_health

Strategy = Literal["tag", "branch", "overlay", "image-policy", "helm", "chain"]
STRATEGIES: tuple[Strategy, ...] = ("tag", "branch", "overlay", "image-policy", "helm", "chain")
FORGE_TOKEN_ENV = "PROMOTE_SANDBOX_FORGE_TOKEN"  # noqa: S105 - the variable's name: apps on a forge read the token there
CHAIN: tuple[str, ...] = ("dev", "qa", "staging", "production")  # the "chain" strategy: tags through four
EXAMPLE_CHART = Path(__file__).resolve().parent.parent / "deployments" / "examples" / "helm" / "charts" / "shop"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sandbox Developer",
    "GIT_AUTHOR_EMAIL": "dev@sandbox.local",
    "GIT_COMMITTER_NAME": "Sandbox Developer",
    "GIT_COMMITTER_EMAIL": "dev@sandbox.local",
}


class ForgeHost(Protocol):
    """Where an app's repository lives when its pull requests go through a forge: sandbox/gitea.py's Gitea, or a
    test's stand-in for a forge without a local server (tests/support/githubcontract.py)."""

    provider: str  # write.provider
    username: str  # the user Git authenticates as, with the token

    @property
    def api_url(self) -> str: ...  # write.api_url

    def create_repository(self, name: str) -> str: ...  # an empty repository; its clone URL (http)

    def repository_path(self, name: str) -> Path: ...  # the bare repository on disk (the simulator reads it)

    def push_url(self, clone_url: str) -> str: ...  # with credentials, for a test's own pushes


def _application(app: str, env: str, revision: str) -> str:
    return f"""\
# Argo CD Application for {app} in {env}. gitops-promote changes only targetRevision below.
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {app}-{env}
  namespace: argocd
  labels:
    app.kubernetes.io/part-of: {app}
spec:
  project: default
  source:
    repoURL: https://git.sandbox.local/{app}.git
    path: overlays/{env}
    targetRevision: {revision}   # the release this environment runs
  destination:
    server: https://kubernetes.default.svc
    namespace: {app}-{env}
  syncPolicy:
    automated: {{prune: true, selfHeal: true}}
"""


def _files(app: str) -> dict[str, str]:
    return {
        f"apps/staging/{app}.yaml": _application(app, "staging", "v1.0.0"),
        f"apps/production/{app}.yaml": _application(app, "production", "v1.0.0"),
        "base/deployment.yaml": f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: {app}
        image: registry.sandbox.local/{app}:latest
""",
        "overlays/staging/kustomization.yaml": f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../base
images:
- name: {app}
  newTag: 1.0.0   # staging's image
patches:
- patch: |-
    - op: replace
      path: /spec/replicas
      value: 2
  target:
    kind: Deployment
""",
        "overlays/production/kustomization.yaml": f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../../base
images:
- name: {app}
  newTag: 1.0.0  # Promote by updating tag
patches:
- patch: |-
    - op: replace
      path: /spec/replicas
      value: 5
  target:
    kind: Deployment
""",
        "src/CHANGELOG.md": _changelog(app),
    }


def _helm_files(app: str) -> dict[str, str]:
    """The example chart (deployments/examples/helm), and per environment a values file that CI and
    gitops-promote write (image.tag and a version label; the rest, anchors included, stays)."""
    files = {f"charts/{app}/{p.relative_to(EXAMPLE_CHART)}": p.read_text() for p in EXAMPLE_CHART.rglob("*.yaml")}
    for env in ("staging", "production"):
        files[f"envs/{env}/values.yaml"] = f"""\
# {app} in {env}. gitops-promote writes image.tag and the version label below; everything else is yours.
replicaCount: {2 if env == "staging" else 5}
image:
  repository: registry.sandbox.local/{app}
  tag: "1.0.0"   # promoted from the environment before
podLabels:
  app.kubernetes.io/version: "1.0.0"
defaults: &limits {{cpu: 500m, memory: 256Mi}}
resources:
  limits: *limits
"""
    return files | {"src/CHANGELOG.md": _changelog(app)}


def _changelog(app: str) -> str:
    return f"# {app}\n\n- 1.0.0: first release\n"


def _branch_overlay(app: str) -> str:
    return f"""\
# {app}: each environment's branch carries this overlay; staging is merged into main to promote.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- ../base
images:
- name: {app}
  newName: registry.sandbox.local/{app}
  newTag: 1.0.0
"""


def _policy_deployment(app: str, env: str) -> str:
    return f"""\
# {app} in {env}: the image below is written by gitops-promote's image policy (Flux setter marker).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
  namespace: {app}-{env}
spec:
  replicas: {2 if env == "staging" else 5}
  template:
    spec:
      containers:
        - name: {app}
          image: registry.sandbox.local/{app}:1.0.0 # {{"$imagepolicy": "flux-system:{app}-{env}"}}
"""


def publish_first_release(work: Path, files: dict[str, str]) -> None:
    """Commit ``files`` in the clone ``work`` as the GitOps layout, tag it v1.0.0 and push both to its origin."""
    for rel, text in files.items():
        path = work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "Initial GitOps layout")
    git(work, "tag", "-a", "v1.0.0", "-m", "first release")
    git(work, "push", "--quiet", "origin", "main", "v1.0.0")


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class SandboxApp:
    name: str
    origin: Path
    workdir: Path
    pipeline_file: Path
    envs: list[SimEnvironment] = field(default_factory=list)
    strategy: Strategy = "tag"

    def commit_change(self, line: str, *, branch: str | None = None) -> str:
        """A developer pushes a change (what the next promotion carries): to main, or for a branch pipeline
        to the staging branch."""
        branch = branch or ("staging" if self.strategy == "branch" else "main")
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        changelog = self.workdir / "src" / "CHANGELOG.md"
        changelog.write_text(changelog.read_text() + f"- {line}\n")
        git(self.workdir, "commit", "--quiet", "-am", line)
        git(self.workdir, "push", "--quiet", "origin", f"HEAD:{branch}")
        return git(self.workdir, "rev-parse", "HEAD")

    def release_image(self, tag: str, *, branch: str | None = None) -> str:
        """CI built ``tag`` and set it where the first environment takes it from: the staging overlay (overlay
        pipelines), the staging branch's overlay (branch pipelines) or staging's Helm values (helm)."""
        branch = branch or ("staging" if self.strategy == "branch" else "main")
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        if self.strategy == "helm":
            path = self.workdir / "envs" / "staging" / "values.yaml"
            text = path.read_text()
            for key in ("  tag: ", "  app.kubernetes.io/version: "):
                old = next(line for line in text.splitlines() if line.startswith(key))
                text = text.replace(old, f'{key}"{tag}"' + ("   # set by CI" if "tag" in key else ""))
            path.write_text(text)
        else:
            overlay = "deploy" if self.strategy == "branch" else "overlays/staging"
            path = self.workdir / overlay / "kustomization.yaml"
            text = path.read_text()
            old = next(line for line in text.splitlines() if "newTag:" in line)
            path.write_text(text.replace(old, f"{old.split('newTag:')[0]}newTag: {tag}   # set by CI"))
        git(self.workdir, "commit", "--quiet", "-am", f"ci: {self.name} image {tag}")
        git(self.workdir, "push", "--quiet", "origin", f"HEAD:{branch}")
        return git(self.workdir, "rev-parse", "HEAD")

    def env(self, name: str) -> SimEnvironment:
        return next(e for e in self.envs if e.name.endswith(f"-{name}"))


@dataclass
class SandboxWorld:
    root: Path
    api: client.ApiClient
    kubeconfig: Path
    apps: list[SandboxApp] = field(default_factory=list)
    agent: GitOpsAgent | None = None
    registry_url: str = ""  # for image-policy apps: a registry holding sandbox/<app> tags
    health_url: str = ""
    _deployments: dict[str, tuple[str, str]] = field(default_factory=dict)

    def create_app(
        self,
        name: str,
        *,
        strategy: Strategy = "tag",
        approval: bool = True,
        approval_timeout: float = 600,
        delay_seconds: float = 0.2,
        verify_timeout: float = 120,
        health_checks: bool = True,
        forge: ForgeHost | None = None,
        pull_requests: tuple[str, ...] = ("production",),
    ) -> SandboxApp:
        """An application promoted by ``strategy``: release tags (Argo CD), a staging -> main branch merge
        (Flux), Kustomize overlays on main (Argo CD), or an image policy over ``registry_url`` (Flux)."""
        if strategy == "image-policy" and not self.registry_url:
            raise ValueError("an image-policy app needs the world's registry_url (a registry with its tags)")
        base = self.root / name
        base.mkdir(parents=True)
        work = base / "work"
        if forge is None:
            origin = base / "origin.git"
            git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
            url = str(origin)
            git(base, "clone", "--quiet", str(origin), str(work))
        else:
            # On the forge: the tool clones and pushes over HTTP with its token; the simulated controllers read
            # the forge's own bare repository on disk, as they read a local origin.
            url = forge.create_repository(name)
            origin = forge.repository_path(name)
            git(base, "init", "--quiet", "--initial-branch=main", str(work))
            git(work, "remote", "add", "origin", forge.push_url(url))
        git(work, "checkout", "--quiet", "-B", "main")
        names = CHAIN if strategy == "chain" else ("staging", "production")
        files = _files(name) if strategy in ("tag", "overlay") else {}
        if strategy == "chain":
            files = {f"apps/{env}/{name}.yaml": _application(name, env, "v1.0.0") for env in CHAIN}
            files |= {"src/CHANGELOG.md": _changelog(name)}
        if strategy == "helm":
            files = _helm_files(name)
        if strategy == "branch":
            files = {
                "base/deployment.yaml": _files(name)["base/deployment.yaml"],
                "deploy/kustomization.yaml": _branch_overlay(name),
                "src/CHANGELOG.md": _changelog(name),
            }
        if strategy == "image-policy":
            files = {
                f"apps/{env}/deployment.yaml": _policy_deployment(name, env) for env in ("staging", "production")
            } | {"src/CHANGELOG.md": _changelog(name)}
        publish_first_release(work, files)
        if strategy == "branch":
            git(work, "push", "--quiet", "origin", "main:staging")

        envs = [self._sim_env(name, env, strategy, origin, delay_seconds) for env in names]
        create_objects(self.api, envs, initial_image=f"registry.sandbox.local/{name}:1.0.0")
        pipeline = base / f"{name}.yaml"
        pipeline.write_text(
            self._pipeline(
                name,
                url,
                strategy,
                approval,
                approval_timeout,
                verify_timeout,
                health_checks,
                names,
                pull_requests=pull_requests if forge is not None else (),
                forge=forge,
            )
        )
        app = SandboxApp(name=name, origin=origin, workdir=work, pipeline_file=pipeline, envs=envs, strategy=strategy)
        self.apps.append(app)
        for env in names:
            self._deployments[f"{name}/{env}"] = (f"{name}-{env}", name)
        if self.agent is not None:
            self.agent.envs.extend(envs)
        return app

    @staticmethod
    def _sim_env(name: str, env: str, strategy: Strategy, origin: Path, delay_seconds: float) -> SimEnvironment:
        deployment = SimDeployment(
            namespace=f"{name}-{env}",
            name=name,
            container=name,
            image_repository=f"registry.sandbox.local/{name}",
            replicas=5 if env == "production" else 2,
            overlay_file={"overlay": f"overlays/{env}/kustomization.yaml", "branch": "deploy/kustomization.yaml"}.get(
                strategy
            ),
            overlay_image=name,
            manifest_file=f"apps/{env}/deployment.yaml" if strategy == "image-policy" else None,
            values_file=f"envs/{env}/values.yaml" if strategy == "helm" else None,
        )
        return SimEnvironment(
            kind="flux" if strategy in ("branch", "image-policy") else "argocd",
            name=f"{name}-{env}",
            namespace="flux-system" if strategy in ("branch", "image-policy") else "argocd",
            branch="staging" if strategy == "branch" and env == "staging" else "main",
            application_file=f"apps/{env}/{name}.yaml" if strategy in ("tag", "chain") else None,
            deployments=[deployment],
            delay_seconds=delay_seconds,
            origin=origin,
        )

    def _pipeline(
        self,
        name: str,
        origin: Path | str,
        strategy: Strategy,
        approval: bool,
        approval_timeout: float,
        verify_timeout: float,
        checks: bool,
        names: tuple[str, ...] = ("staging", "production"),
        *,
        pull_requests: tuple[str, ...] = (),
        forge: ForgeHost | None = None,
    ) -> str:
        return self.pipeline_text(
            name,
            origin,
            strategy,
            kubeconfig=self.kubeconfig,
            health_url=self.health_url,
            registry_url=self.registry_url,
            approval=approval,
            approval_timeout=approval_timeout,
            verify_timeout=verify_timeout,
            checks=checks,
            names=names,
            pull_requests=pull_requests,
            forge=forge,
        )

    @staticmethod
    def pipeline_text(
        name: str,
        origin: Path | str,
        strategy: Strategy,
        *,
        kubeconfig: Path,
        health_url: str,
        registry_url: str,
        approval: bool = True,
        approval_timeout: float = 600,
        verify_timeout: float = 120,
        checks: bool = True,
        names: tuple[str, ...] = ("staging", "production"),
        pull_requests: tuple[str, ...] = (),
        forge: ForgeHost | None = None,
        container: str | None = None,
        real: bool = False,
    ) -> str:
        """A sandbox app's pipeline file. ``real``: deployed by the real controllers, whose images come from Git,
        so a release candidate's version (1.0.1-rc1) names no image: tag pipelines check the rollout and the pods,
        not the image, and their health checks ask for an answer only. ``container``: the container verified
        (default: ``name``)."""

        def tracks(env: str) -> str:
            if strategy == "helm":
                return f"""
      kind: yaml-path
      edits:
        - name: image
          file: envs/{env}/values.yaml
          path: image.tag
        - name: version-label
          file: envs/{env}/values.yaml
          path: podLabels."app.kubernetes.io/version\""""
            if strategy in ("tag", "chain"):
                return f"""
      kind: tag
      application_file: apps/{env}/{name}.yaml"""
            if strategy == "overlay":
                return f"""
      kind: kustomize-image
      file: overlays/{env}/kustomization.yaml
      image: {name}"""
            if strategy == "branch":
                merge = "\n      merge_from: staging" if env == "production" else ""
                return f"""
      kind: branch
      branch: {"staging" if env == "staging" else "main"}{merge}"""
            choose = "semver: 1.x.x" if env == "production" else "semver: '>=1.0.0-0 <2.0.0'  # release candidates too"
            return f"""
      kind: image-policy
      path: apps/{env}
      policy: flux-system:{name}-{env}
      registry:
        url: {registry_url}
        repository: sandbox/{name}
        image: registry.sandbox.local/{name}
      choose:
        {choose}"""

        def env_block(env: str) -> str:
            # Tags: the health endpoint serves the image tag, 1.2.3 for release v1.2.3; images: the tag itself.
            expected = {"tag": "{version}", "chain": "{version}", "branch": None}.get(strategy, "{tag}")
            if real and strategy in ("tag", "chain"):
                expected = None
            match = f'\n        expect_json: {{path: version, equals: "{expected}"}}' if expected else ""
            health = (
                f"""
    health_checks:
      - name: {env} serves the promoted version
        url: {health_url}/{name}/{env}/version{match}
        consecutive_successes: 2
        interval_seconds: 0.2
        timeout_seconds: 30"""
                if checks and health_url
                else ""
            )
            gate = (
                f"""
    gate:
      approval: true
      timeout_seconds: {approval_timeout}"""
                if approval and env == "production"
                else ""
            )
            if strategy in ("branch", "image-policy"):
                gitops = f"""
        kind: flux
        name: {name}-{env}
        namespace: flux-system"""
            else:
                gitops = f"""
        kind: argocd
        name: {name}-{env}
        namespace: argocd"""
            provider = forge.provider if forge is not None else "gitea"
            api = f"\n      api_url: {forge.api_url}" if forge is not None and forge.provider != "gitea" else ""
            write = (
                f"""
    write:
      mode: pull-request
      provider: {provider}{api}"""
                if env in pull_requests
                else ""
            )
            image = "registry.sandbox.local/" + name + ":{version}" if strategy in ("tag", "chain") else None
            if real:
                image = None
            expect = f'\n          expect_image: "{image}"' if image else ""
            return f"""
  - name: {env}
    tracks:{tracks(env)}
    verify:
      cluster:
        kubeconfig: {kubeconfig}
      gitops:{gitops}
      deployments:
        - name: {name}
          namespace: {name}-{env}
          container: {container or name}{expect}
      timeout_seconds: {verify_timeout}
      health_grace_seconds: 0.5{health}{gate}{write}"""

        credentials = (
            f"""
  credentials:
    token_env: {FORGE_TOKEN_ENV}
    username: {forge.username if forge is not None else GITEA_ADMIN}"""
            if pull_requests
            else ""
        )
        where = "the real controllers" if real else "the local API server"
        return f"""\
# Sandbox pipeline (generated): {name} promoted by {strategy}, verified against {where}.
name: {name}
repository:
  url: {origin}
  branch: main{credentials}
versioning:
  tag_prefix: v
  bump: patch
environments:{"".join(env_block(env) for env in names)}
"""

    @contextlib.contextmanager
    def running(self) -> Iterator[SandboxWorld]:
        """Start the simulated controllers and the health endpoint for the duration of the block."""
        with serve_health(self.api, self._deployments) as url:
            self.health_url = url
            agent = GitOpsAgent(self.api, self.root, [])
            self.agent = agent
            agent.start()
            try:
                yield self
            finally:
                agent.stop()
                self.agent = None
