"""A nested flow run as the nightly starts one: without Prefect's per-run heartbeat second, its result not
persisted, and asked for again if the Prefect API refused to create it."""

from __future__ import annotations

import functools
import random
import threading
import time
from typing import Any

from prefect import Flow, get_run_logger
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import PrefectHTTPStatusError

from flows.heartbeat import runs_without_the_wait
from tasks import prefectapi

# How often a subflow whose run the Prefect API refused to create is asked for again (see run_subflow).
CREATE_ATTEMPTS = 3


_progress = threading.local()  # per pipeline thread: whether the subflow being called got to Running


def _mark_running(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    _progress.started = True


@functools.cache
def _watched(subflow: Flow[..., Any]) -> Flow[..., Any]:
    """``subflow`` with a hook noting that it started, and its result not persisted: a nested run cannot be
    suspended (it pauses), so nothing needs its result stored, and each stored result is a file and an artifact
    on the server per pipeline; a retried nightly runs a pipeline again instead, which repeats nothing (every
    step finds its work done in Git). Built once per flow: ``with_options`` rebuilds the flow's parameter
    schema, a visible cost when done for every call."""
    return subflow.with_options(on_running=[*subflow.on_running_hooks, _mark_running], persist_result=False)


def run_subflow(subflow: Flow[..., Any], **parameters: Any) -> Any:
    """Call ``subflow`` as a nested run; if the Prefect API refused to *create* the run, ask again.

    Why: on the default SQLite-backed server, creating a run (its tracking task run, then the flow run) is a
    read-then-write transaction that SQLite rejects while any other write is in progress ("database is
    locked" -> HTTP 503). With many pipelines writing task states at once, the client's own retries (after
    2, 4, 8, 16, 32 s) now and then all land on a lock, and the pipeline failed without having run. Only a
    run that never started is asked for again: nothing of it ran, so nothing can happen twice. (A sync
    subflow runs its hooks in the calling thread, so a thread-local flag tells whether it started.)
    """
    watched = _watched(subflow)
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        _progress.started = False
        try:
            with runs_without_the_wait():  # a nested run needs no second at its end (flows/heartbeat.py)
                result = watched(**parameters)
            return result
        except Exception as exc:
            if _progress.started or not prefectapi.unavailable(exc) or attempt == CREATE_ATTEMPTS:
                raise
            status = exc.response.status_code if isinstance(exc, PrefectHTTPStatusError) else type(exc).__name__
            get_run_logger().warning(
                f"{subflow.name}: the Prefect API could not create the run ({status}); "
                f"asking again ({attempt + 1} of {CREATE_ATTEMPTS})"
            )
            time.sleep(random.uniform(1, 3))  # noqa: S311  # jitter: do not come back in step with the others
    raise AssertionError("unreachable")
