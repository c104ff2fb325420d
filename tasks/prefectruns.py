"""Flow runs as this tool reads and changes them through Prefect's own client, from inside a flow or a sweep: read
one, fail one with our message, find the runs whose approval window closed, pause or suspend the current run for
a person's input, keep a value in the run across its suspension. The REST side for the command line, the one
config and auth header and the terminal-state set, is tasks/prefectapi.py.

Reading is kept apart from changing: :func:`can_still_finish` decides from what it reads and changes nothing, so
a liveness check (the environment lock's) never fails another run; only :func:`fail_expired_approvals` and
:func:`fail_own_run` end runs, and say so."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput, create_flow_run_input, read_flow_run_input
from prefect.runtime import flow_run
from prefect.states import Failed

from tasks import prefectapi

T = TypeVar("T", bound=RunInput)
SWEEP_LIMIT = 200  # suspended runs read per sweep; more wait for the next one
READ_BATCH = 200  # the API answers at most 200 flow runs a request

__all__ = [
    "FlowPauseTimeout",
    "can_still_finish",
    "can_suspend_this_run",
    "fail_expired_suspensions",
    "fail_own_run",
    "fail_run",
    "pin_input",
    "pinned_input",
    "read_run",
    "read_runs",
    "suspend",
    "suspendable",
    "used_pause_keys",
    "wait_for_input",
    "window_closed",
]


def read_run(run_id: UUID) -> FlowRun | None:
    """The flow run, or None when this server does not know it (another server's, deleted)."""
    with get_client(sync_client=True) as client:
        try:
            return client.read_flow_run(run_id)
        except Exception:  # an unknown run answers 404; any other failure reads as "not known" too
            return None


def read_runs(client: Any, ids: list[UUID]) -> list[FlowRun]:
    """The flow runs with these ids that the server knows, read in batches through ``client``; raises
    :class:`~tasks.prefectapi.PrefectUnavailableError` when the API could not answer (ask again later)."""
    found: list[FlowRun] = []
    try:
        for at in range(0, len(ids), READ_BATCH):
            batch = ids[at : at + READ_BATCH]
            found += client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=len(batch)
            )
    except Exception as exc:
        if not prefectapi.unavailable(exc):
            raise
        raise prefectapi.PrefectUnavailableError(
            f"the Prefect API could not answer a read of {len(ids)} flow runs ({type(exc).__name__})"
        ) from exc
    return found


def fail_run(client: Any, run_id: UUID, message: str) -> None:
    """End ``run_id`` as Failed with ``message``, whatever state it is in (a suspended run has no process that
    could end it)."""
    client.set_flow_run_state(run_id, Failed(message=message), force=True)


def window_closed(run: FlowRun, now: datetime) -> datetime | None:
    """When ``run``'s suspension window closed, if it is suspended past it (Prefect refuses a late resume). Only
    suspended runs: a paused (local) run's own process fails it when its timeout passes."""
    state = run.state
    deadline = state.state_details.pause_timeout if state is not None else None
    if state is None or state.type != StateType.PAUSED or state.name != "Suspended" or deadline is None:
        return None
    return deadline if deadline <= now else None


def can_still_finish(run: FlowRun | None, now: datetime | None = None) -> bool:
    """Whether ``run`` may still finish what it started: known, not ended, and not suspended past its window
    (the sweeps end such runs). Reads only."""
    if run is None:
        return False
    if run.state is not None and run.state.type.value in prefectapi.TERMINAL:
        return False
    return window_closed(run, now or datetime.now(UTC)) is None


def fail_expired_suspensions(
    flow_names: Sequence[str],
    message: Callable[[datetime], str],
    *,
    now: datetime | None = None,
    skip_keys: tuple[str, ...] = (),
) -> list[str]:
    """End as Failed every run of ``flow_names`` suspended past its window, but those whose pause key starts with
    one of ``skip_keys`` (another sweep's); ``message(when the window closed)`` says why. The ids it ended."""
    moment = now or datetime.now(UTC)
    ended: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(flow_names))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
            limit=SWEEP_LIMIT,
        )
        for run in runs:
            closed = window_closed(run, moment)
            key = (run.state.state_details.pause_key if run.state is not None else None) or ""
            if closed is None or (skip_keys and key.startswith(skip_keys)):
                continue
            fail_run(client, run.id, message(closed))
            ended.append(str(run.id))
    return ended


def fail_own_run(message: str) -> None:
    """End this (paused) flow run as Failed with ``message`` before the engine reports the exception.

    Why: once the pause window has closed, Prefect's orchestration refuses any transition out of Paused and
    fails the run with its own "The flow was failed and never resumed." The engine's report of our exception
    would lose to that (or win, when the server's expiry service got there first): a race. Forcing the state
    first makes the run say why it ended, every time."""
    if not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            fail_run(client, UUID(flow_run.id), message)
    except Exception as exc:  # the exception raised next still ends the run; only the message may be Prefect's
        logging.getLogger(__name__).warning(f"could not record why the run ended: {exc}")


def suspendable(run: Any) -> bool:
    """Whether this flow run can be suspended: Prefect's server refuses to suspend a run that is not a
    deployment's own, and any nested run ("Cannot suspend subflows."), e.g. promote-production inside a
    scheduled nightly. (prefect.runtime's deployment.id would say yes there: nested runs inherit it.)"""
    return run is not None and run.deployment_id is not None and run.parent_task_run_id is None


def can_suspend_this_run() -> bool:
    """Whether the flow run this code runs in can be suspended (see :func:`suspendable`)."""
    context = FlowRunContext.get()
    return suspendable(context.flow_run if context is not None else None)


def wait_for_input(form: type[T], *, timeout: int, key: str, poll_seconds: float) -> T | None:
    """Wait for a person's input to this run: suspended (a deployment's run: the worker is freed and the flow
    re-runs from the top once resumed, arriving here again and receiving the stored input) or paused (a local or
    nested run: the process waits). Raises :class:`FlowPauseTimeout` when nobody answered in time."""
    if can_suspend_this_run():
        return suspend_flow_run(wait_for_input=form, timeout=timeout, key=key)
    # Prefect types the interval as int and sleeps it: a fraction of a second works (the demo's 0.2 s).
    return pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=cast(int, poll_seconds), key=key)


def suspend(*, timeout: int, key: str) -> None:
    """Suspend this (deployment's) run until something resumes it; it re-runs from the top then."""
    suspend_flow_run(timeout=timeout, key=key)


def used_pause_keys() -> set[str]:
    """The pause keys this flow run has used: Prefect lets a key pause a run once."""
    if not flow_run.id:
        return set()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run.id))
    return set(run.empirical_policy.pause_keys or ())


def pin_input(key: str, value: Any) -> None:
    """Keep ``value`` in this flow run under ``key`` (the first value stays): a suspended run re-runs from the top
    and reads it back."""
    if read_flow_run_input(key) is None:
        create_flow_run_input(key, value)


def pinned_input(key: str) -> Any:
    """What this flow run kept under ``key``, if anything (None outside a flow run)."""
    if not flow_run.id:
        return None
    return read_flow_run_input(key)
