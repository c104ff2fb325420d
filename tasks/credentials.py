"""Secrets by reference: a pipeline names an environment variable or a Prefect Secret block, never a value."""

from __future__ import annotations

import os
from typing import cast

from pipeline.model import GitCredentials, SecretRef
from rules.errors import RefusedError
from tasks.gitrepo import GitAuth


class CredentialsError(RefusedError, RuntimeError):
    """A referenced secret is missing; the message names the reference, never a value."""


def resolve_token(credentials: GitCredentials) -> str:
    """The token an environment variable or a Secret block holds (a GitHub App's installation tokens come from
    tasks/connections.py's ``repository_auth`` and tasks/forges' ``forge_for``)."""
    if credentials.github_app is not None:
        raise CredentialsError("a GitHub App installation gives Git and pull-request tokens only")
    return read_secret(credentials.token_env, credentials.secret_block, "token")


def resolve_secret(ref: SecretRef, what: str) -> str:
    return read_secret(ref.env, ref.secret_block, what)


def read_secret(env: str | None, secret_block: str | None, what: str) -> str:
    """The value of an environment variable or of a Prefect Secret block (exactly one is given)."""
    if env is not None:
        token = os.environ.get(env, "")
        if not token:
            raise CredentialsError(
                f"environment variable {env} is not set or empty; export the {what} there "
                f"(the pipeline file names the variable, it never holds the {what})"
            )
        return token
    assert secret_block is not None  # guaranteed by the model
    if not _prefect_server_reachable():
        # Without a configured server, Prefect would start a temporary one over its local database for this one
        # lookup (seconds of start, in a command documented as reading Git alone): say where the token can come
        # from instead.
        raise CredentialsError(
            f"Prefect Secret block {secret_block!r} is kept by a Prefect server, and none is configured here: set "
            f"PREFECT_API_URL (and PREFECT_API_KEY) to the server that holds it, or give the {what} in an "
            "environment variable instead (token_env / env in the pipeline file)"
        )
    from prefect.blocks.system import Secret  # imported late: plain CLI commands stay fast

    try:
        block = cast("Secret[str]", Secret.load(secret_block))  # sync call outside an event loop
    except ValueError:
        raise CredentialsError(
            f"Prefect Secret block {secret_block!r} does not exist; create it in the UI "
            f"(Blocks -> Secret) or with Secret(value=...).save({secret_block!r})"
        ) from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"Prefect Secret block {secret_block!r} holds no string {what}")
    return value


def _prefect_server_reachable() -> bool:
    """A Prefect API is configured (environment or profile), or this runs inside a flow run, which has one."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return True
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def git_auth(credentials: GitCredentials | None) -> GitAuth | None:
    """Git's credentials from a referenced token (a GitHub App's: tasks/connections.py's ``repository_auth``)."""
    if credentials is None:
        return None
    # A trailing newline (a token saved from `echo`) is not part of it; any other control character is refused.
    return GitAuth(username=credentials.username, token=resolve_token(credentials).strip())
