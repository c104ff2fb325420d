"""Resuming a paused run through the API (tasks/approval.py resume_run) against a real HTTP server on loopback
that answers the way a busy Prefect server does: 503 while its database is locked, then the answer."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from tasks.approval import ResumeError, resume_run
from tests.support.busyapi import serving

ACCEPT: dict[str, Any] = {"status": "ACCEPT", "state": {"name": "Running"}}


def test_a_busy_server_is_asked_again_and_the_answer_counts() -> None:
    """Was: the first test of a fresh CI run failed on one 503 from a Prefect server still busy starting."""
    seen: list[str] = []
    busy: dict[str, Any] = {"exception_message": "Service Unavailable"}
    with serving([(503, busy), (503, busy), (200, ACCEPT)], seen) as url:
        assert resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=60) == "Running"
    assert len(seen) == 3


@pytest.mark.parametrize("status", [500, 502, 409])
def test_other_errors_are_answers_not_retried(status: int) -> None:
    """Only 503 and 429 say the request was not acted on; anything else may have been, and is reported."""
    seen: list[str] = []
    with serving([(status, {"detail": "nope"})], seen) as url, pytest.raises(ResumeError, match=f"HTTP {status}"):
        resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=60)
    assert len(seen) == 1


def test_a_server_that_stays_busy_ends_within_the_deadline() -> None:
    seen: list[str] = []
    busy: dict[str, Any] = {"exception_message": "Service Unavailable"}
    with serving([(503, busy)], seen) as url, pytest.raises(ResumeError, match="HTTP 503"):
        resume_run(f"{url}/api", str(uuid4()), {"approve": True}, timeout=3)
    assert 1 < len(seen) <= 4
