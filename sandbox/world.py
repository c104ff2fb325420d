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

from kubernetes import client

from sandbox.agent import GitOpsAgent, SimDeployment, SimEnvironment, create_objects
from sandbox.healthapp import serve_health

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sandbox Developer",
    "GIT_AUTHOR_EMAIL": "dev@sandbox.local",
    "GIT_COMMITTER_NAME": "Sandbox Developer",
    "GIT_COMMITTER_EMAIL": "dev@sandbox.local",
}


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
        "src/CHANGELOG.md": f"# {app}\n\n- 1.0.0: first release\n",
    }


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

    def commit_change(self, line: str) -> str:
        """A developer pushes a change to main (what the next rc will carry)."""
        git(self.workdir, "pull", "--quiet", "--rebase", "origin", "main")
        changelog = self.workdir / "src" / "CHANGELOG.md"
        changelog.write_text(changelog.read_text() + f"- {line}\n")
        git(self.workdir, "commit", "--quiet", "-am", line)
        git(self.workdir, "push", "--quiet", "origin", "HEAD:main")
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
    health_url: str = ""
    _deployments: dict[str, tuple[str, str]] = field(default_factory=dict)

    def create_app(
        self,
        name: str,
        *,
        approval: bool = True,
        approval_timeout: float = 600,
        delay_seconds: float = 0.2,
        verify_timeout: float = 120,
        health_checks: bool = True,
    ) -> SandboxApp:
        base = self.root / name
        base.mkdir(parents=True)
        origin = base / "origin.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        work = base / "work"
        git(base, "clone", "--quiet", str(origin), str(work))
        git(work, "checkout", "--quiet", "-B", "main")
        for rel, text in _files(name).items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "--quiet", "-m", "Initial GitOps layout")
        git(work, "tag", "-a", "v1.0.0", "-m", "first release")
        git(work, "push", "--quiet", "origin", "main", "v1.0.0")

        envs = [
            SimEnvironment(
                kind="argocd",
                name=f"{name}-{env}",
                namespace="argocd",
                application_file=f"apps/{env}/{name}.yaml",
                deployments=[
                    SimDeployment(
                        namespace=f"{name}-{env}",
                        name=name,
                        container=name,
                        image_repository=f"registry.sandbox.local/{name}",
                        replicas=2 if env == "staging" else 5,
                    )
                ],
                delay_seconds=delay_seconds,
                origin=origin,
            )
            for env in ("staging", "production")
        ]
        create_objects(self.api, envs, initial_image=f"registry.sandbox.local/{name}:1.0.0")
        pipeline = base / f"{name}.yaml"
        pipeline.write_text(self._pipeline(name, origin, approval, approval_timeout, verify_timeout, health_checks))
        app = SandboxApp(name=name, origin=origin, workdir=work, pipeline_file=pipeline, envs=envs)
        self.apps.append(app)
        for env in ("staging", "production"):
            self._deployments[f"{name}/{env}"] = (f"{name}-{env}", name)
        if self.agent is not None:
            self.agent.envs.extend(envs)
        return app

    def _pipeline(
        self, name: str, origin: Path, approval: bool, approval_timeout: float, verify_timeout: float, checks: bool
    ) -> str:
        def env_block(env: str) -> str:
            health = (
                f"""
    health_checks:
      - name: {env} serves the promoted version
        url: {self.health_url}/{name}/{env}/version
        expect_json: {{path: version, equals: "{{version}}"}}
        consecutive_successes: 2
        interval_seconds: 0.2
        timeout_seconds: 30"""
                if checks and self.health_url
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
            return f"""
  - name: {env}
    tracks:
      kind: tag
      application_file: apps/{env}/{name}.yaml
    verify:
      cluster:
        kubeconfig: {self.kubeconfig}
      gitops:
        kind: argocd
        name: {name}-{env}
        namespace: argocd
      deployments:
        - name: {name}
          namespace: {name}-{env}
          container: {name}
          expect_image: "registry.sandbox.local/{name}:{{version}}"
      timeout_seconds: {verify_timeout}
      health_grace_seconds: 0.5{health}{gate}"""

        return f"""\
# Sandbox pipeline (generated): {name} promoted by release tags, verified against the local API server.
name: {name}
repository:
  url: {origin}
  branch: main
versioning:
  tag_prefix: v
  bump: patch
environments:{env_block("staging")}{env_block("production")}
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
