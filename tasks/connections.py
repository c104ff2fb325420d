"""Open what a pipeline talks to: its Git repository (cached clone) and each environment's cluster."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.load import load_pipeline
from pipeline.model import Environment, GitCredentials, ImageRegistry, Pipeline
from tasks.credentials import git_auth, resolve_token
from tasks.gitrepo import DEFAULT_NETWORK_TIMEOUT, Author, GitError, GitRepository
from tasks.kube import KubeClient, load_api_client

if TYPE_CHECKING:
    from tasks.registry import RegistryClient


def cache_dir() -> Path:
    """Where cached clones live; PROMOTE_CACHE_DIR overrides (tests and the sandbox use their own)."""
    configured = os.environ.get("PROMOTE_CACHE_DIR")
    base = Path(configured) if configured else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "gitops-promote"
    return base.expanduser() / "git"


def git_network_timeout() -> float:
    """Each Git network command's deadline in seconds; PROMOTE_GIT_TIMEOUT_SECONDS overrides (large
    repositories on slow links)."""
    configured = os.environ.get("PROMOTE_GIT_TIMEOUT_SECONDS")
    if not configured:
        return DEFAULT_NETWORK_TIMEOUT
    try:
        seconds = float(configured)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise GitError(f"PROMOTE_GIT_TIMEOUT_SECONDS={configured[:20]!r} is not a positive number of seconds")
    return seconds


def open_repository(pipeline: Pipeline) -> GitRepository:
    repo_cfg = pipeline.repository
    return GitRepository(
        repo_cfg.url,
        cache_dir(),
        auth=git_auth(repo_cfg.credentials),
        author=Author(repo_cfg.author.name, repo_cfg.author.email),
        network_timeout=git_network_timeout(),
    )


class Connections:
    """A pipeline with its open repository and cluster clients, handed to every step.

    Deliberately not a dataclass: Prefect walks dataclass and pydantic task parameters (looking for
    futures) several times per task run, and walking the whole pipeline showed up in every profile of a
    nightly."""

    __slots__ = ("_kube", "log", "pipeline", "repo")

    def __init__(self, pipeline: Pipeline, repo: GitRepository, log: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.repo = repo
        self.log = log
        self._kube: dict[str, KubeClient] = {}

    def registry(self, registry: ImageRegistry) -> RegistryClient:
        """A Distribution API client for ``registry`` (image-policy environments), with its referenced secret."""
        return registry_client(registry, log=self.log)

    def kube(self, env: Environment) -> KubeClient:
        if env.name not in self._kube:
            cluster = env.verify.cluster
            self._kube[env.name] = KubeClient(load_api_client(cluster.kubeconfig, cluster.context), log=self.log)
        return self._kube[env.name]


def connect(pipeline_file: str, log: Callable[[str], None]) -> Connections:
    pipeline = load_pipeline(pipeline_file)
    return Connections(pipeline=pipeline, repo=open_repository(pipeline), log=log)


def registry_client(registry: ImageRegistry, log: Callable[[str], None] | None = None) -> RegistryClient:
    """A Distribution API client for the registry, authenticated with the pipeline's referenced secret."""
    from tasks.registry import RegistryClient  # late: only image-policy pipelines talk to a registry

    credentials = registry.credentials
    if credentials is None:
        return RegistryClient(registry.url, log=log, token_hosts=registry.token_hosts)
    return RegistryClient(
        registry.url,
        username=credentials.username,
        password=resolve_token(credentials),
        log=log,
        token_hosts=registry.token_hosts,
        credentials_hint=f"registry.credentials ({_source(credentials)})",
    )


def _source(credentials: GitCredentials) -> str:
    """Where a referenced token comes from, for messages (the reference, never the value)."""
    if credentials.token_env is not None:
        return f"username and the token in environment variable {credentials.token_env}"
    return f"username and the token in Prefect Secret block {credentials.secret_block!r}"
