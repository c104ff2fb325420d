"""Read events back from a real Prefect server (``POST /api/events/filter``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect.events.worker import EventsWorker


def read_events(api_url: str, *, resource_prefix: str, event_prefix: str = "") -> list[dict[str, Any]]:
    """Every event (oldest first) whose resource id starts with ``resource_prefix``."""
    body: dict[str, Any] = {
        "filter": {
            "resource": {"id_prefix": [resource_prefix]},
            "occurred": {"since": (datetime.now(UTC) - timedelta(hours=2)).isoformat()},
            "order": "ASC",
        },
        "limit": 50,  # the most the API returns in one page
    }
    if event_prefix:
        body["filter"]["event"] = {"prefix": [event_prefix]}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    if response.status_code != 200:
        raise AssertionError(f"POST /events/filter answered {response.status_code}: {response.text[:500]}")
    return list(response.json()["events"])


def wait_for_events(
    api_url: str, *, resource_prefix: str, names: set[str], event_prefix: str = "", timeout: float = 180
) -> list[dict[str, Any]]:
    """The events of ``resource_prefix`` once every name in ``names`` is among them. Events reach the server
    asynchronously (a client-side worker, then the server's persister): waits for them, generously."""
    EventsWorker.drain_all(timeout=60)
    deadline = time.monotonic() + timeout
    while True:
        found = read_events(api_url, resource_prefix=resource_prefix, event_prefix=event_prefix)
        if names <= {event["event"] for event in found}:
            return found
        if time.monotonic() > deadline:
            seen = [event["event"] for event in found]
            raise AssertionError(f"events {sorted(names - set(seen))} did not arrive in {timeout:.0f}s; saw {seen}")
        time.sleep(0.5)
