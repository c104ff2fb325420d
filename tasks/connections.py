"""Open what a pipeline talks to: its Git repository (cached clone) and each environment's cluster."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.load import load_pipeline
from pipeline.model import Environment, GitCredentials, ImageRegistry, Pipeline, Repository
from rules.signatures import EvidencePolicy, SigningKeyError, Trust, load_private_key
from tasks.credentials import git_auth, resolve_secret, resolve_token
from tasks.gitrepo import DEFAULT_NETWORK_TIMEOUT, Author, GitAuth, GitError, GitRepository, display_url
from tasks.httpbounds import is_loopback
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


def repository_auth(repository: Repository) -> GitAuth | None:
    """Git's credentials for the pipeline's repository: a referenced token, or a GitHub App's installation token
    (asked for when Git first needs it, replaced before it expires)."""
    credentials = repository.credentials
    if credentials is not None and credentials.github_app is not None:
        from tasks.forges import github_app_tokens  # late: only GitHub App pipelines mint tokens

        return GitAuth(username="x-access-token", source=github_app_tokens(credentials.github_app, repository.url))
    return git_auth(credentials)


def open_repository(pipeline: Pipeline, *, signing: bool = False) -> GitRepository:
    """The pipeline's repository, reading evidence by its trusted keys. ``signing``: also load the key that signs
    new records (what promotions need; reading commands do not hold it)."""
    repo_cfg = pipeline.repository
    parts = urlsplit(repo_cfg.url)
    if repo_cfg.credentials is not None and parts.scheme.lower() == "http" and not is_loopback(parts.hostname):
        # Basic auth over plain http gives the token to anyone on the path (as the registry client refuses too).
        raise GitError(
            f"repository.url {display_url(repo_cfg.url)} is plain http to a host other than loopback, and "
            "repository.credentials would send the token in clear text: use https://"
        )
    return GitRepository(
        repo_cfg.url,
        cache_dir(),
        auth=repository_auth(repo_cfg),
        author=Author(repo_cfg.author.name, repo_cfg.author.email),
        network_timeout=git_network_timeout(),
        evidence_policy=evidence_policy(pipeline, signing=signing),
    )


def evidence_policy(pipeline: Pipeline, *, signing: bool) -> EvidencePolicy:
    """The trusted keys of ``pipeline.evidence``, and with ``signing`` its signing key, loaded now: a promotion
    that could not sign its records must fail before it changes anything."""
    config = pipeline.evidence
    trust = Trust.from_lines(config.trusted_keys)
    if not signing or config.signing_key is None:
        return EvidencePolicy(trust=trust)
    where = (
        f"environment variable {config.signing_key.env}"
        if config.signing_key.env
        else f"Prefect Secret block {config.signing_key.secret_block!r}"
    )
    try:
        signer = load_private_key(resolve_secret(config.signing_key, "evidence signing key"))
    except SigningKeyError as exc:
        raise SigningKeyError(f"evidence.signing_key ({where}): {exc}") from None
    if trust.required and not trust.counts_key(signer.public_key()):
        raise SigningKeyError(
            f"evidence.signing_key ({where}) is not one of evidence.trusted_keys: records it signs would not count; "
            "add its public key (ssh-keygen -y -f KEY) to trusted_keys"
        )
    return EvidencePolicy(trust=trust, signer=signer)


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
    return Connections(pipeline=pipeline, repo=open_repository(pipeline, signing=True), log=log)


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
