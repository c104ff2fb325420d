"""receiver: ``promote receive`` as a long-running deployment next to the worker, for teams that run everything
through Prefect (docs/triggers.md). The run serves until it is cancelled."""

from __future__ import annotations

from prefect import flow

from webhooks.receiver import run_forever


@flow(name="receiver", validate_parameters=True)
def receiver(
    pipelines_dir: str = "deployments",
    host: str = "0.0.0.0",  # noqa: S104 - it receives webhooks from the registry and forges; requests are authenticated
    port: int = 8765,
    debounce_seconds: float = 10.0,
    secret_env: str = "PROMOTE_WEBHOOK_SECRET",  # noqa: S107 - the name of a variable, not a secret
    registry_token_env: str = "PROMOTE_REGISTRY_WEBHOOK_TOKEN",  # noqa: S107 - a variable name
) -> None:
    """Receive registry and forge push webhooks and emit promote.source.pushed events.

    Args:
        pipelines_dir: the pipeline files (routes pushes to pipelines by registry repository or Git branch)
        host: address to listen on
        port: port to listen on
        debounce_seconds: pushes to one pipeline within this many seconds of each other give one event
        secret_env: environment variable (on the worker) with the forges' webhook secret
        registry_token_env: environment variable (on the worker) with the registry's bearer token
    """
    run_forever(
        pipelines_dir,
        host=host,
        port=port,
        debounce=debounce_seconds,
        secret_env=secret_env,
        registry_token_env=registry_token_env,
    )
