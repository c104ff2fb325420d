"""Secrets by reference: a pipeline names an environment variable or a Prefect Secret block, never a value."""

from __future__ import annotations

import os
from typing import cast

from pipeline.model import GitCredentials
from tasks.errors import RefusedError
from tasks.gitrepo import GitAuth


class CredentialsError(RefusedError, RuntimeError):
    """A referenced secret is missing; the message names the reference, never a value."""


def resolve_token(credentials: GitCredentials) -> str:
    if credentials.token_env is not None:
        token = os.environ.get(credentials.token_env, "")
        if not token:
            raise CredentialsError(
                f"environment variable {credentials.token_env} is not set or empty; export the token there "
                "(the pipeline file names the variable, it never holds the token)"
            )
        return token
    assert credentials.secret_block is not None  # guaranteed by the model
    from prefect.blocks.system import Secret  # imported late: plain CLI commands stay fast

    try:
        block = cast("Secret[str]", Secret.load(credentials.secret_block))  # sync call outside an event loop
    except ValueError:
        raise CredentialsError(
            f"Prefect Secret block {credentials.secret_block!r} does not exist; create it in the UI "
            f"(Blocks -> Secret) or with Secret(value=...).save({credentials.secret_block!r})"
        ) from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"Prefect Secret block {credentials.secret_block!r} holds no string token")
    return value


def git_auth(credentials: GitCredentials | None) -> GitAuth | None:
    if credentials is None:
        return None
    # A trailing newline (a token saved from `echo`) is not part of it; any other control character is refused.
    return GitAuth(username=credentials.username, token=resolve_token(credentials).strip())
