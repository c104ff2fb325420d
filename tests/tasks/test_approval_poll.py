"""How often a paused run asks whether it was answered (``PROMOTE_APPROVAL_POLL_SECONDS``): fractions of a
second for the demo, bounded both ways, the default for anything unreadable."""

from __future__ import annotations

import pytest

from tasks.approval import approval_poll_seconds


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, 5.0),  # unset: the default
        ("0.2", 0.2),  # the sandbox demo's
        ("1", 1.0),
        (" 30 ", 30.0),
        ("0", 0.2),  # never a busy loop against the API
        ("-4", 0.2),
        ("3600", 60.0),
        ("nan", 5.0),
        ("inf", 5.0),
        ("5s", 5.0),
        ("", 5.0),
        ("9" * 400, 60.0),  # read from its first characters only
    ],
)
def test_poll_seconds(raw: str | None, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    if raw is None:
        monkeypatch.delenv("PROMOTE_APPROVAL_POLL_SECONDS", raising=False)
    else:
        monkeypatch.setenv("PROMOTE_APPROVAL_POLL_SECONDS", raw)
    assert approval_poll_seconds() == expected
