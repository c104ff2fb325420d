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
from typing import Protocol

from kubernetes import client

from sandbox.agent import GitOpsAgent, SimDeployment, SimEnvironment, create_objects
from sandbox.gitea import ADMIN as GITEA_ADMIN
from sandbox.healthapp import serve_health
from sandbox.scenarios import Scenario, scenario
from sandbox.scenarios.base import NAMESPACES
from sandbox.scenarios.layouts import IMAGE_REPOSITORY

Strategy = str  # a scenario's name: one of STRATEGIES (sandbox/scenarios/__init__.py)
FORGE_TOKEN_ENV = "PROMOTE_SANDBOX_FORGE_TOKEN"  # noqa: S105 - the variable's name: apps on a forge read the token there

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


def push_environment_branches(work: Path, chosen: Scenario) -> None:
    """Environments that deploy from a branch other than main start on the first release too."""
    for branch in dict.fromkeys(chosen.branch(env) for env in chosen.environments):
        if branch != "main":
            git(work, "push", "--quiet", "origin", f"main:{branch}")


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

    @property
    def scenario(self) -> Scenario:
        return scenario(self.strategy)

    def commit_change(self, line: str, *, branch: str | None = None) -> str:
        """A developer pushes a change (what the next promotion carries): to main, or for a branch pipeline
        to the staging branch."""
        branch = branch or self.scenario.branch(self.scenario.environments[0])
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        changelog = self.workdir / "src" / "CHANGELOG.md"
        changelog.write_text(changelog.read_text() + f"- {line}\n")
        git(self.workdir, "commit", "--quiet", "-am", line)
        git(self.workdir, "push", "--quiet", "origin", f"HEAD:{branch}")
        return git(self.workdir, "rev-parse", "HEAD")

    def release_image(self, tag: str, *, branch: str | None = None) -> str:
        """CI built ``tag`` and set it where the first environment takes it from (the scenario's
        ``release_file``: the staging overlay, the staging branch's overlay or staging's Helm values)."""
        branch = branch or self.scenario.branch(self.scenario.environments[0])
        git(self.workdir, "fetch", "--quiet", "origin")
        git(self.workdir, "checkout", "--quiet", "-B", branch, f"origin/{branch}")
        self.scenario.set_image(self.workdir, tag)
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
        chosen = scenario(strategy)
        if chosen.needs_registry and not self.registry_url:
            raise ValueError(f"the {strategy} scenario needs the world's registry_url (a registry with its tags)")
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
        names = chosen.environments
        publish_first_release(work, chosen.files(name))
        push_environment_branches(work, chosen)

        envs = [self._sim_env(name, env, chosen, origin, delay_seconds) for env in names]
        create_objects(self.api, envs, initial_image=f"{IMAGE_REPOSITORY}/{name}:1.0.0")
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
    def _sim_env(name: str, env: str, chosen: Scenario, origin: Path, delay_seconds: float) -> SimEnvironment:
        watched = chosen.watched(name, env)
        deployment = SimDeployment(
            namespace=f"{name}-{env}",
            name=name,
            container=name,
            image_repository=f"{IMAGE_REPOSITORY}/{name}",
            replicas=5 if env == "production" else 2,
            overlay_file=watched.overlay_file,
            overlay_image=name,
            manifest_file=watched.manifest_file,
            values_file=watched.values_file,
        )
        return SimEnvironment(
            kind=chosen.controller,
            name=f"{name}-{env}",
            namespace=NAMESPACES[chosen.controller],
            branch=chosen.branch(env),
            application_file=watched.application_file,
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

        chosen = scenario(strategy)

        def env_block(env: str) -> str:
            expected = chosen.expected_health(real)
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
            gitops = f"""
        kind: {chosen.controller}
        name: {name}-{env}
        namespace: {NAMESPACES[chosen.controller]}"""
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
            image = chosen.expected_image(name, real)
            expect = f'\n          expect_image: "{image}"' if image else ""
            return f"""
  - name: {env}
    tracks:{chosen.tracks(name, env, registry_url)}
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
