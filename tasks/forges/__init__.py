"""The forges a promotion opens pull requests on: one client module per provider behind :func:`forge_for`, the
only switch on ``write.provider`` in the product. tasks/forges/base.py holds the interface they share."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.model import Environment, GitHubApp, Pipeline, SecretRef
from tasks.credentials import read_secret
from tasks.forges.base import Forge, ForgeError

if TYPE_CHECKING:
    from tasks.forges.githubapp import InstallationTokens

__all__ = ["forge_for", "forge_location", "github_app_tokens", "token_hint"]


def forge_location(repository_url: str, api_url: str | None, provider: str = "gitea") -> tuple[str, str]:
    """(the API root, owner/name) of the repository at ``repository_url``; the API root is ``api_url`` when
    given, else derived from the host: Gitea's ``scheme://host[:port]/api/v1``, GitHub's ``https://api.github.com``
    (Enterprise Server: ``https://host/api/v3``), GitLab's ``scheme://host/api/v4`` (its projects may sit in
    subgroups: ``group/subgroup/name``)."""
    parts = urlsplit(repository_url)
    # GitLab projects may sit in subgroups: group/subgroup/name.
    owner = r"[^/]+(?:/[^/]+)*?" if provider == "gitlab" else r"[^/]+"
    match = re.match(rf"^/+(?P<owner>{owner})/(?P<name>[^/]+?)(?:\.git)?/*$", parts.path)
    if parts.scheme not in ("http", "https") or not parts.hostname or match is None:
        raise ForgeError(
            "the forge repository is read from repository.url, which must be http(s)://host/owner/name for pull "
            "requests"
        )
    if api_url is None and provider == "github":
        from tasks.forges.github import api_root

        api_url = api_root(repository_url)
    if api_url is None and provider == "gitlab":
        from tasks.forges.gitlab import api_root as gitlab_root

        api_url = gitlab_root(repository_url)
    root = api_url or f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/api/v1"
    return root.rstrip("/"), f"{match['owner']}/{match['name']}"


def _reference(ref: SecretRef) -> str:
    return f"environment variable {ref.env}" if ref.env else f"Prefect Secret block {ref.secret_block!r}"


def github_app_tokens(app: GitHubApp, repository_url: str) -> InstallationTokens:
    """The process's installation-token holder for ``app`` on the repository at ``repository_url``."""
    from tasks.forges.githubapp import installation_tokens

    api_url, repository = forge_location(repository_url, app.api_url, "github")
    key = app.private_key
    return installation_tokens(
        api_url,
        repository,
        app.app_id,
        app.installation_id,
        lambda: read_secret(key.env, key.secret_block, "GitHub App private key"),
        hint=f"{_reference(key)} (repository.credentials.github_app.private_key)",
    )


def token_hint(pipeline: Pipeline, env: Environment) -> str:
    """Where the forge token comes from, for messages: the reference, never the value."""
    ref = env.write.token
    if ref is not None:
        return _reference(ref)
    credentials = pipeline.repository.credentials
    assert credentials is not None  # the model requires one of the two for pull requests
    if credentials.github_app is not None:
        return f"the installation token of GitHub App {credentials.github_app.app_id} (repository.credentials)"
    if credentials.token_env is not None:
        return f"environment variable {credentials.token_env} (repository.credentials)"
    return f"Prefect Secret block {credentials.secret_block!r} (repository.credentials)"


def forge_for(pipeline: Pipeline, env: Environment, *, timeout: float = 30.0) -> Forge:
    """The client of the forge ``env``'s pull requests go to, with its token."""
    write = env.write
    if write.provider is None:
        raise ForgeError(f"environment {env.name} opens no pull requests (write.mode is {write.mode})")
    ref = write.token
    credentials = pipeline.repository.credentials
    token: str | Callable[[], str]
    if ref is not None:
        token = read_secret(ref.env, ref.secret_block, "forge token").strip()
    elif credentials is not None and credentials.github_app is not None:
        token = github_app_tokens(credentials.github_app, pipeline.repository.url)  # the model checked: GitHub
    else:
        assert credentials is not None  # the model requires one of the two for pull requests
        token = read_secret(credentials.token_env, credentials.secret_block, "token").strip()
    api_url, repository = forge_location(pipeline.repository.url, write.api_url, write.provider)
    hint = token_hint(pipeline, env)
    if write.provider == "gitea":
        from tasks.forges.gitea import GiteaForge

        return GiteaForge(api_url, repository, token, token_hint=hint, timeout=timeout)
    if write.provider == "github":
        from tasks.forges.github import GitHubForge

        return GitHubForge(api_url, repository, token, token_hint=hint, timeout=timeout)
    if write.provider == "gitlab":
        from tasks.forges.gitlab import GitLabForge

        return GitLabForge(api_url, repository, token, token_hint=hint, timeout=timeout)
    raise ForgeError(f"unknown forge {write.provider!r}")  # pragma: no cover - the model allows only these
