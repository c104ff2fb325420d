"""Runs suspended until a pull request merges: finding them, and resuming them when it did (or was closed).

A promotion through a pull request (flows/pullrequest.py) suspends with a pause key naming the repository and
the pull request (:func:`pause_key_prefix`), and pins which pull request and environment it waits for in a flow
run input. Two things resume it, and neither is trusted as the outcome (the resumed run asks the forge):

* ``promote receive``, on the forge's webhook for a merged or closed pull request (:func:`resume_for`);
* the sweeper (:func:`sweep`), for when no webhook reaches us: a bounded number of forge reads per round.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tasks import prefectruns

log = logging.getLogger("promote.merges")

PIN_PREFIX = "promote-pull-request-"
KEY_PREFIX = "merge-"


def pause_key_prefix(repository: str, number: int) -> str:
    """The start of the pause key of a run waiting for pull request ``number`` of ``repository`` (normalized:
    tasks/repourls.py). Prefect keys are [a-z0-9-], at most 100 characters."""
    digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{digest}-{int(number)}-"


@dataclass(frozen=True)
class Waiting:
    run_id: UUID
    pause_key: str
    parameters: dict[str, Any]
    deadline: datetime | None


def waiting_runs(client: Any, limit: int = 200) -> list[Waiting]:
    """Suspended runs waiting for a pull request (oldest first), at most ``limit``."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        sort=FlowRunSort.START_TIME_ASC,
        limit=limit,
    )
    found = []
    for run in runs:
        details = run.state.state_details if run.state is not None else None
        key = getattr(details, "pause_key", None) or ""
        if run.state is not None and run.state.name == "Suspended" and key.startswith(KEY_PREFIX):
            found.append(Waiting(run.id, key, dict(run.parameters or {}), getattr(details, "pause_timeout", None)))
    return found


def resume_for(repositories: Iterable[str], number: int, *, client: Any = None) -> list[str]:
    """Resume every run waiting for pull request ``number`` of any of ``repositories`` (normalized names: a
    webhook names the repository by several URLs). Returns the ids of the runs resumed."""
    from prefect import get_client

    prefixes = tuple(pause_key_prefix(name, number) for name in repositories)
    resumed: list[str] = []
    with contextual(client, get_client) as api:
        for waiting in waiting_runs(api):
            if waiting.pause_key.startswith(prefixes) and _resume(api, waiting.run_id):
                resumed.append(str(waiting.run_id))
    return resumed


def _resume(client: Any, run_id: UUID) -> bool:
    result = client.resume_flow_run(run_id)
    status = getattr(result, "status", None)
    accepted = str(getattr(status, "value", status)).upper() == "ACCEPT"
    if not accepted:
        log.warning(f"flow run {run_id} was not resumed: {getattr(result, 'details', '')}")
    return accepted


class contextual:  # noqa: N801 - used as a with-statement helper, named like one
    """``client`` as is when given (the caller owns it), else a new sync Prefect client for the block."""

    def __init__(self, client: Any, factory: Callable[..., Any]) -> None:
        self._given, self._factory = client, factory
        self._made: Any = None

    def __enter__(self) -> Any:
        if self._given is not None:
            return self._given
        self._made = self._factory(sync_client=True)
        return self._made.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._made is not None:
            self._made.__exit__(*exc)


@dataclass
class SweepResult:
    looked_at: int = 0
    resumed: int = 0
    expired: int = 0
    problems: int = 0


def pinned(client: Any, run_id: UUID) -> dict[str, Any] | None:
    """The pull request a waiting run pinned (number, environment), from its flow run inputs."""
    inputs = client.filter_flow_run_input(flow_run_id=run_id, key_prefix=PIN_PREFIX, limit=5, exclude_keys=set())
    for item in inputs:
        try:
            value = json.loads(item.value)
        except ValueError:
            continue
        if (
            isinstance(value, dict)
            and isinstance(value.get("number"), int)
            and isinstance(value.get("environment"), str)
        ):
            return value
    return None


def sweep(
    state_of: Callable[[str, str, int], str],
    *,
    limit: int = 50,
    now: datetime | None = None,
    client: Any = None,
    say: Callable[[str], None] = log.info,
) -> SweepResult:
    """One round of the fallback poll: for at most ``limit`` waiting runs, ask the forge (``state_of(pipeline_file,
    environment, number)`` -> open / merged / closed) and resume those whose pull request was decided; end as
    Failed those whose merge window closed. A run whose forge cannot be asked is left for the next round."""
    from prefect import get_client

    moment = now or datetime.now(UTC)
    result = SweepResult()
    with contextual(client, get_client) as api:
        for waiting in waiting_runs(api, limit=limit):
            result.looked_at += 1
            if waiting.deadline is not None and waiting.deadline <= moment:
                prefectruns.fail_run(
                    api,
                    waiting.run_id,
                    "the pull request was not merged within write.merge_timeout: nothing was verified; "
                    "merge it and promote again, or close it",
                )
                result.expired += 1
                continue
            pin = pinned(api, waiting.run_id)
            pipeline_file = waiting.parameters.get("pipeline_file")
            if pin is None or not isinstance(pipeline_file, str):
                continue
            try:
                state = state_of(pipeline_file, pin["environment"], pin["number"])
            except Exception as exc:  # one pipeline's forge being down must not stop the round
                result.problems += 1
                say(f"flow run {waiting.run_id}: could not read pull request #{pin['number']}: {exc}")
                continue
            if state != "open" and _resume(api, waiting.run_id):
                result.resumed += 1
                say(f"flow run {waiting.run_id}: pull request #{pin['number']} is {state}: resumed")
    return result
