"""Flow-run heartbeats without Prefect's per-run second.

Prefect's engine (prefect/flow_engine.py, ``_send_heartbeats``) beats from a thread that sleeps in whole
1 s steps and joins it, with ``timeout=2``, when the run ends: every sync flow run, top-level or nested,
waits for that thread's next tick, about 0.9 s on average. Heartbeats matter to one thing: an automation
that marks a run Crashed when its ``prefect.flow-run.heartbeat`` events stop (a process that died). Our
environment lock does not rely on them (it holds a lease the holder renews).

So where we start runs ourselves (the nightly's nested runs, ``promote flow`` and the sandbox demo),
:func:`runs_without_the_wait` turns Prefect's heartbeat off and the hooks :func:`beats` puts on every flow of
ours beat instead: the same event, the same resources, as often, from a thread that stops the moment the
run ends. Runs started by a worker keep Prefect's own heartbeat (it is on before any code of ours runs) and
the hooks leave them alone. ``PROMOTE_PREFECT_HEARTBEATS=1`` keeps Prefect's heartbeat everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from prefect import Flow

P = ParamSpec("P")
R = TypeVar("R")

# The interval Prefect's setting had before runs_without_the_wait turned Prefect's own beat off.
_interval: contextvars.ContextVar[int | None] = contextvars.ContextVar("promote_heartbeat_seconds", default=None)
_beating: dict[str, threading.Event] = {}
_lock = threading.Lock()


def prefect_heartbeats_kept() -> bool:
    return os.environ.get("PROMOTE_PREFECT_HEARTBEATS", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def runs_without_the_wait() -> Iterator[None]:
    """Flow runs started inside this block beat through the hooks of :func:`beats`, not Prefect's thread."""
    from prefect.settings import get_current_settings

    configured = get_current_settings().flows.heartbeat_frequency
    if prefect_heartbeats_kept() or configured is None:  # kept on purpose, or heartbeats are off altogether
        yield
        return
    token = _interval.set(configured)
    try:
        with _without_heartbeat():
            yield
    finally:
        _interval.reset(token)


# Prefect's temporary_settings copies the whole settings model on every entry (a dump and a validation):
# entered for every nested run of a nightly, that was most of the client CPU Prefect cost a pipeline. The
# heartbeat-off copy of a settings object is made once and kept beside the object it came from.
_derived: dict[int, tuple[Any, Any]] = {}
_DERIVED_MAX = 16


@contextlib.contextmanager
def _without_heartbeat() -> Iterator[None]:
    import prefect.context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    context = prefect.context.get_settings_context()
    with _lock:
        found = _derived.get(id(context.settings))
        # The original is kept in the entry, so its id cannot be reused by another object while cached.
        if found is None or found[0] is not context.settings:
            if len(_derived) >= _DERIVED_MAX:
                _derived.clear()
            quiet = context.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
            found = _derived[id(context.settings)] = (context.settings, quiet)
    with prefect.context.SettingsContext(profile=context.profile, settings=found[1]):
        yield


def _heartbeat_start(flow: Any, flow_run: Any, state: Any) -> None:
    """on_running: beat for this run if Prefect does not (see the module docstring)."""
    from prefect.settings import get_current_settings

    seconds = _interval.get()
    if seconds is None or get_current_settings().flows.heartbeat_frequency is not None:
        return
    run_id = str(flow_run.id)
    with _lock:
        if run_id in _beating:  # a retry or a resume of a run that already beats
            return
        stop = _beating[run_id] = threading.Event()
    resource, related = _event_template(flow, flow_run)
    context = contextvars.copy_context()  # the thread must talk to the same API as the run
    thread = threading.Thread(
        target=context.run,
        args=(_beat, stop, max(seconds, 30), resource, related),
        name=f"promote-heartbeat-{run_id[:8]}",
        daemon=True,
    )
    thread.start()


def _heartbeat_stop(flow: Any, flow_run: Any, state: Any) -> None:
    """on_completion / on_failure / on_crashed / on_cancellation: stop beating, without waiting."""
    with _lock:
        stop = _beating.pop(str(flow_run.id), None)
    if stop is not None:
        stop.set()


def _event_template(flow: Any, flow_run: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
    """What Prefect's engine puts on a heartbeat (``_build_heartbeat_event_template``), so automations that
    match its events match ours."""
    import prefect
    from prefect.events.related import tags_as_related_resources

    resource = {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.name": flow_run.name or "",
        "prefect.version": prefect.__version__,
    }
    related: list[dict[str, str]] = []
    if flow_run.flow_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow.name or "",
            }
        )
    if flow_run.deployment_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.deployment.{flow_run.deployment_id}",
                "prefect.resource.role": "deployment",
            }
        )
    related += [dict(tag) for tag in tags_as_related_resources(set(flow_run.tags or []))]
    return resource, related


def _beat(stop: threading.Event, seconds: int, resource: dict[str, str], related: list[dict[str, str]]) -> None:
    from prefect.events import emit_event

    while not stop.is_set():
        with contextlib.suppress(Exception):  # a missed beat is not worth failing a promotion for
            emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related)
        stop.wait(seconds)  # returns at once when the run ends: nothing joins this thread


def beats(flow: Flow[P, R]) -> Flow[P, R]:
    """Decorate a flow (above ``@flow``) so its runs beat this module's way where Prefect's beat is off."""
    flow.on_running(_heartbeat_start)
    for end in (flow.on_completion, flow.on_failure, flow.on_crashed, flow.on_cancellation):
        end(_heartbeat_stop)
    return flow


class _QuietHooks(logging.Filter):
    """Prefect logs two INFO lines for every hook it runs; for these two, on every run, that is noise in the
    run's log (an error in them is still logged)."""

    _NAMES = ("'_heartbeat_start'", "'_heartbeat_stop'")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith(("Running hook ", "Hook ")) and any(name in message for name in self._NAMES))


logging.getLogger("prefect.flow_runs").addFilter(_QuietHooks())
