"""Freeze windows, the org freeze switch and the soak time (rules/windows.py), with a fixed clock.

Expected instants are worked out by hand in the comments (calendar of December 2026: the 4th is a Friday;
Europe/Berlin is UTC+1 in winter, UTC+2 in summer; in 2027 clocks go forward on Sunday 28 March at 02:00)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pipeline.load import PipelineError, parse_pipeline
from rules.windows import Window, WindowError, freeze_hold, parse_duration, soak_hold, window_hold

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND = Window("deny", "0 18 * * FRI", timedelta(hours=62), "Europe/Berlin", "weekend")  # Fri 18:00 -> Mon 08:00


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "held"),
    [
        (utc(2026, 12, 4, 16, 59), False),  # Fri 17:59 Berlin: a minute before it opens
        (utc(2026, 12, 4, 17, 0), True),  # Fri 18:00 Berlin: the start is inside [start, end)
        (utc(2026, 12, 6, 12, 0), True),  # Sunday
        (utc(2026, 12, 7, 6, 59), True),  # Mon 07:59 Berlin
        (utc(2026, 12, 7, 7, 0), False),  # Mon 08:00 Berlin = Fri 18:00 + 62 h: the end is outside
    ],
)
def test_a_deny_window_holds_from_its_start_up_to_not_including_its_end(now: datetime, held: bool) -> None:
    hold = window_hold([WEEKEND], now)
    assert (hold is not None) == held
    if hold is not None:
        assert hold.kind == "window"
        assert hold.until == datetime(2026, 12, 7, 8, 0, tzinfo=BERLIN)
        assert "deny window 'weekend'" in hold.reason and "2026-12-07 08:00 CET" in hold.reason


def test_a_window_keeps_local_time_across_daylight_saving() -> None:
    # Sun 28 March 2027 03:30 CEST = 01:30 UTC. A daily 03:00 local window of 1 h opened at 03:00 CEST
    # (01:00 UTC); had it been computed in UTC from a winter start (02:00 UTC), 01:30 UTC would be outside.
    daily = Window("deny", "0 3 * * *", timedelta(hours=1), "Europe/Berlin")
    hold = window_hold([daily], utc(2027, 3, 28, 1, 30))
    assert hold is not None and hold.until == datetime(2027, 3, 28, 4, 0, tzinfo=BERLIN)
    assert window_hold([daily], utc(2027, 3, 28, 2, 0)) is None  # 04:00 CEST: closed


def test_allow_windows_hold_outside_them_and_name_the_next_opening() -> None:
    office = Window("allow", "0 9 * * MON-FRI", timedelta(hours=8), "Europe/Berlin", "office hours")
    assert window_hold([office], utc(2026, 12, 3, 10, 0)) is None  # Thu 11:00 Berlin
    hold = window_hold([office], utc(2026, 12, 5, 10, 0))  # Saturday
    assert hold is not None
    assert hold.until == datetime(2026, 12, 7, 9, 0, tzinfo=BERLIN)  # Monday 09:00
    assert "outside every allow window" in hold.reason and "office hours" in hold.reason
    # An allow window and a deny window together: the deny wins where they overlap.
    assert window_hold([office, WEEKEND], utc(2026, 12, 4, 17, 30)) is not None  # Fri 18:30: office is closed anyway
    lunch = Window("deny", "0 12 * * *", timedelta(hours=1), "Europe/Berlin", "lunch")
    assert window_hold([office, lunch], utc(2026, 12, 3, 11, 15)) is not None  # Thu 12:15 Berlin


def test_chained_deny_windows_report_the_end_of_the_last() -> None:
    # Christmas freeze 20 Dec 00:00 for 7 days, then the weekend one: the hold ends when neither is open.
    christmas = Window("deny", "0 0 20 12 *", timedelta(days=7), "Europe/Berlin", "christmas")
    # 27 Dec 2026 is a Sunday: inside the weekend window that opened Fri 25 Dec 18:00 and ends Mon 28 08:00.
    hold = window_hold([christmas, WEEKEND], utc(2026, 12, 23, 12, 0))
    assert hold is not None and hold.until == datetime(2026, 12, 28, 8, 0, tzinfo=BERLIN)


def test_rrule_windows() -> None:
    # Every second Friday from 4 Dec 2026, 18:00 local, for 6 h.
    sprint = Window("deny", "DTSTART:20261204T180000\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=FR", timedelta(hours=6))
    assert window_hold([sprint], utc(2026, 12, 4, 19, 0)) is not None  # 4 Dec 19:00 UTC
    assert window_hold([sprint], utc(2026, 12, 11, 19, 0)) is None  # the Friday in between
    assert window_hold([sprint], utc(2026, 12, 18, 19, 0)) is not None
    # Without DTSTART the rule counts from 2022-01-03 00:00 local; BYHOUR says the time.
    friday = Window("deny", "FREQ=WEEKLY;BYDAY=FR;BYHOUR=18", timedelta(hours=62), "Europe/Berlin")
    assert window_hold([friday], utc(2026, 12, 6, 12, 0)) is not None
    with pytest.raises(WindowError, match="at most daily"):
        Window("deny", "FREQ=HOURLY", timedelta(minutes=5))


@pytest.mark.parametrize(
    ("schedule", "zone", "message"),
    [
        ("61 * * * *", "UTC", "neither a cron expression"),
        ("every friday", "UTC", "neither a cron expression"),
        ("FREQ=FORTNIGHTLY", "UTC", "does not parse"),
        ("0 18 * * FRI", "Mars/Olympus", "time zone 'Mars/Olympus' is unknown"),
    ],
)
def test_bad_schedules_are_named(schedule: str, zone: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        Window("deny", schedule, timedelta(hours=1), zone)


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration(30) == timedelta(seconds=30)
    assert parse_duration("2w") == timedelta(days=14)
    for bad in ("0s", "-1h", "2 fortnights", "400d"):
        with pytest.raises(WindowError):
            parse_duration(bad)


def test_soak() -> None:
    verified = utc(2026, 12, 3, 10, 0)
    assert soak_hold(verified, None, utc(2026, 12, 3, 10, 1), "staging") is None
    hold = soak_hold(verified, timedelta(hours=2), utc(2026, 12, 3, 11, 30), "staging")
    assert hold is not None and hold.until == utc(2026, 12, 3, 12, 0)
    assert "verified in staging" in hold.reason and "gate.min_soak is 2h" in hold.reason and "90m ago" in hold.reason
    assert soak_hold(verified, timedelta(hours=2), utc(2026, 12, 3, 12, 0), "staging") is None  # exactly soaked
    unmeasurable = soak_hold(None, timedelta(hours=2), verified, "staging")
    assert unmeasurable is not None and unmeasurable.until is None


@pytest.mark.parametrize(
    ("value", "frozen"),
    [
        (None, False),
        (False, False),
        ("off", False),
        ("", False),
        ({"on": False, "reason": "lifted"}, False),
        ({"on": True, "reason": "INC-42 outage", "by": "alice"}, True),
        ("release freeze until the audit", True),
        (True, True),
    ],
)
def test_the_org_freeze_switch(value: object, frozen: bool) -> None:
    hold = freeze_hold(value)
    assert (hold is not None) == frozen
    if isinstance(value, dict) and hold is not None:
        assert "by alice" in hold.reason and "INC-42 outage" in hold.reason


PIPELINE = """\
name: shop
repository: {{url: "https://git.example/shop.git"}}
environments:
  - name: staging
    tracks: {{kind: tag, application_file: apps/staging.yaml}}
{staging_gate}
  - name: production
    tracks: {{kind: tag, application_file: apps/production.yaml}}
    gate:
{production_gate}
"""


def test_the_pipeline_file_names_bad_gate_windows() -> None:
    gate = """\
      windows:
        - {deny: "0 18 * * FRI", duration: 5x}
        - {allow: "0 9 * * *", deny: "0 18 * * *", duration: 1h}
        - {deny: "0 18 * * FRI", duration: 1h, timezone: Nowhere/City}
      min_soak: soon
      when_held: later"""
    with pytest.raises(PipelineError) as error:
        parse_pipeline(PIPELINE.format(staging_gate="", production_gate=gate), "shop.yaml")
    text = str(error.value)
    assert "gate.windows[0]: '5x' is not a duration" in text
    assert "gate.windows[1]: a window has exactly one of allow: or deny:" in text
    assert "gate.windows[2]: time zone 'Nowhere/City' is unknown" in text
    assert "gate.min_soak: 'soon' is not a duration" in text
    assert "gate.when_held" in text


def test_windows_on_the_entry_environment_are_refused() -> None:
    staging = '    gate: {windows: [{deny: "0 18 * * FRI", duration: 1h}]}'
    with pytest.raises(PipelineError, match="new versions enter this one through promote-rc"):
        parse_pipeline(PIPELINE.format(staging_gate=staging, production_gate="      approval: false"), "shop.yaml")


def test_a_window_that_overlaps_itself_says_its_end_is_not_known() -> None:
    always = Window("deny", "* * * * *", timedelta(hours=1), name="always")
    hold = window_hold([always], utc(2026, 12, 3, 10, 0))
    assert hold is not None and "until at least" in hold.reason and "its windows overlap" in hold.reason
    weekend = window_hold([WEEKEND], utc(2026, 12, 6, 12, 0))
    assert weekend is not None and "at least" not in weekend.reason


@pytest.mark.parametrize(
    ("schedule", "duration", "message"),
    [
        ("* * * * *", timedelta(days=30), "opens more than 10000 times within one duration"),  # was 10 s per check
        (
            "FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11;BYMINUTE=0,30",
            timedelta(hours=1),
            "more than about twice a day",
        ),
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31", timedelta(hours=1), "February 31st"),  # was 7 s: searched to 9999
    ],
)
def test_runaway_schedules_are_refused_quickly(schedule: str, duration: timedelta, message: str) -> None:
    import time

    started = time.monotonic()
    with pytest.raises(WindowError, match=message):
        Window("deny", schedule, duration)
    assert time.monotonic() - started < 2


def test_an_rrule_starting_in_year_one_is_refused_at_validate() -> None:
    """Was 56 s for two such windows on every hold check: dateutil counts every day since DTSTART."""
    with pytest.raises(WindowError, match="more than ten years ago"):
        Window("deny", "DTSTART:00010101T000000\nRRULE:FREQ=DAILY;BYHOUR=3", timedelta(hours=1))
    recent = Window("deny", "DTSTART:20240101T000000\nRRULE:FREQ=DAILY;BYHOUR=3", timedelta(hours=1))
    assert recent.open_at(utc(2026, 12, 3, 3, 30)) is not None


@pytest.mark.parametrize(
    "schedule",
    [
        "DTSTART;TZID=:20260101T000000\nRRULE:FREQ=DAILY",
        "DTSTART;TZID=Nowhere/Else:20260101T000000\nRRULE:FREQ=DAILY",
        "RRULE:FREQ=DAILY;UNTIL=2026",
        "DTSTART:2026\nRRULE:FREQ=WEEKLY",
    ],
)
def test_odd_rrules_are_validation_errors_not_tracebacks(schedule: str) -> None:
    with contextlib.suppress(WindowError):  # refused with a message; a rule dateutil can read may pass
        Window("deny", schedule, timedelta(hours=1))


def test_a_check_costs_one_step_back_whatever_the_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was 15-33 s: twenty every-minute 6-day deny windows, each check walking every start in six days. Now each
    window looks one occurrence back (counted on the real cronsim)."""
    import cronsim

    import rules.windows as windows_module

    steps = {"n": 0}
    real = cronsim.CronSim

    class Counting(real):  # type: ignore[misc, valid-type]
        def __next__(self) -> datetime:
            steps["n"] += 1
            found: datetime = super().__next__()
            return found

    windows = [Window("deny", f"{m} * * * *", timedelta(days=6), name=f"w{m}") for m in range(20)]
    monkeypatch.setattr(windows_module, "CronSim", Counting)
    hold = window_hold(windows, utc(2026, 12, 3, 10, 0))
    assert hold is not None
    assert steps["n"] < 20 * 25, steps  # a few steps per window (and per link of the chain it follows)
