"""When an environment may be promoted: freeze windows, the org-wide freeze switch and the soak time.

Pure logic: the clock is a parameter, so every rule is testable without waiting. A *hold* is the answer
"not now", with the reason a person reads and, where it is known, when it ends.

Schedules are a cron expression (five fields, as Prefect's CronSchedule and Kubernetes CronJobs write them;
evaluated by cronsim in the window's time zone, so a window at 18:00 stays at 18:00 local across daylight
saving) or an iCalendar RRULE (RFC 5545, evaluated by dateutil). An RRULE repeats at most daily (hourly
windows are a cron expression's job); without DTSTART it starts at 2022-01-03 00:00 local, a Monday and a
3rd of January, so write BYDAY / BYMONTHDAY / BYHOUR rather than rely on what the start implies.

Each occurrence opens a window lasting ``duration``: [start, start + duration). ``deny`` windows hold a
promotion while any of them is open; if a gate lists ``allow`` windows, a promotion also needs one open.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from dateutil import rrule

from rules.errors import RefusedError

__all__ = [
    "FREEZE_VARIABLE",
    "HeldError",
    "Hold",
    "Window",
    "WindowError",
    "first_hold",
    "freeze_hold",
    "parse_duration",
    "soak_hold",
    "window_hold",
]

FREEZE_VARIABLE = "promote_freeze"  # the Prefect Variable that freezes every gated promotion
_RRULE_ANCHOR = datetime(2022, 1, 3)  # a Monday: where a rule without DTSTART starts counting
_MAX_LOOKAHEAD = timedelta(days=400)  # a window that opens less than once a year is a mistake, not a plan
_MAX_OPEN_STARTS = 10_000  # occurrences inside one window's duration: more is a schedule that never closes
_MAX_RRULE_AGE = timedelta(days=10 * 366)  # dateutil counts every occurrence from DTSTART: keep it recent
_MAX_RRULE_STEPS = 20_000  # occurrences an RRULE is expanded to (DTSTART to about two years ahead), at most
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}


class HeldError(RefusedError, RuntimeError):
    """The promotion did not happen: a freeze, a window or the soak time holds it; the message says which."""


class WindowError(ValueError):
    """A schedule, duration or time zone that cannot be used; the message names it and what is allowed."""


def parse_duration(text: str | float) -> timedelta:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"3d"``, ``"1w"`` as a timedelta (numbers are seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise WindowError(f"{str(text)[:40]!r} is not a duration: write e.g. 90s, 30m, 2h, 3d or 1w")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise WindowError("a duration must be more than zero")
    if seconds > 366 * 86400:
        raise WindowError("a duration must be at most a year (366d)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Hold:
    kind: Literal["window", "freeze", "soak"]
    reason: str  # for people: names the window / switch / soak and when it ends
    until: datetime | None  # when it ends, if known (an org freeze lasts until someone lifts it)


@dataclass(frozen=True)
class Window:
    """One ``gate.windows`` entry, checked: ``schedule`` parses and ``timezone`` exists."""

    kind: Literal["allow", "deny"]
    schedule: str
    duration: timedelta
    timezone: str = "UTC"
    name: str = ""

    def __post_init__(self) -> None:
        zone = _zone(self.timezone)
        if self.duration <= timedelta(0):
            raise WindowError("a window's duration must be more than zero")
        # Evaluate once now, so a bad or runaway schedule is a validation error, not a stall at promotion time.
        now = datetime.now(zone)
        first_two = list(islice(self._starts_after(now), 2))
        if len(first_two) == 2 and self.duration / max(first_two[1] - first_two[0], timedelta(seconds=1)) > (
            _MAX_OPEN_STARTS
        ):
            raise WindowError(
                f"{self.label} opens more than {_MAX_OPEN_STARTS} times within one duration: shorten the "
                "duration or make the schedule less frequent"
            )
        self.open_at(now)

    @property
    def label(self) -> str:
        what = f"{self.kind} window {self.name!r}" if self.name else f"{self.kind} window"
        return f"{what} ({self.schedule[:60]} for {_human(self.duration)}, {self.timezone})"

    def open_at(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence [start, end) that contains ``now``, the latest-starting one if several overlap (all
        last ``duration``, so the latest start at or before ``now`` is the one). One step back in the schedule,
        whatever the duration: a check costs the same for a window every minute as for one a year."""
        local = now.astimezone(_zone(self.timezone))
        start = self._latest_start(local)
        if start is None or start + self.duration <= local:
            return None
        return (start, start + self.duration)

    def next_start(self, now: datetime) -> datetime | None:
        """The first occurrence starting after ``now`` (within about a year), or None."""
        local = now.astimezone(_zone(self.timezone))
        start = next(self._starts_after(local), None)
        return start if start is not None and start - local <= _MAX_LOOKAHEAD else None

    def _latest_start(self, at: datetime) -> datetime | None:
        """The latest occurrence starting at or before ``at`` (in the window's zone)."""
        text = self.schedule.strip()
        if _is_rrule(text):
            return self._rrule.latest(at)
        return next(self._cron(at + timedelta(microseconds=1), reverse=True), None)  # reverse: strictly before

    def _starts_after(self, after: datetime) -> Iterator[datetime]:
        """Occurrences strictly after ``after`` (timezone-aware, in the window's zone), in order."""
        text = self.schedule.strip()
        if _is_rrule(text):
            yield from self._rrule.after(after)
            return
        yield from self._cron(after)

    def _cron(self, at: datetime, *, reverse: bool = False) -> Iterator[datetime]:
        text = self.schedule.strip()
        try:
            return iter(CronSim(text, at, reverse=reverse))
        except CronSimError as exc:
            raise WindowError(f"schedule {text[:60]!r} is neither a cron expression ({exc}) nor an RRULE") from None

    @functools.cached_property
    def _rrule(self) -> _Occurrences:
        return _Occurrences.of(self.schedule.strip(), _zone(self.timezone))


def window_hold(windows: Sequence[Window], now: datetime) -> Hold | None:
    """A hold if a deny window is open, or allow windows exist and none is open; None if the gate is open."""
    for window in windows:
        if window.kind == "deny" and (opened := window.open_at(now)) is not None:
            until, known = _deny_ends(windows, opened[1])
            ends = f"until {_when(until)}" if known else f"until at least {_when(until)} (its windows overlap)"
            return Hold("window", f"{window.label} is open {ends}", until)
    allows = [w for w in windows if w.kind == "allow"]
    if allows and not any(w.open_at(now) is not None for w in allows):
        starts = [(s, w) for w in allows if (s := w.next_start(now)) is not None]
        if not starts:
            return Hold("window", "no allow window opens within a year: check gate.windows", None)
        start, window = min(starts, key=lambda item: item[0])
        return Hold("window", f"outside every allow window; the next is {window.label}, at {_when(start)}", start)
    return None


def _deny_ends(windows: Sequence[Window], end: datetime) -> tuple[datetime, bool]:
    """Where a deny window ends another may already be open (a chain of freezes): follow it, a few links.
    False with the time reached if the chain goes on (windows that overlap themselves, e.g. every minute)."""
    for _ in range(20):
        later = [o[1] for w in windows if w.kind == "deny" and (o := w.open_at(end)) is not None and o[1] > end]
        if not later:
            return end, True
        end = max(later)
    return end, False


def soak_hold(verified_at: datetime | None, min_soak: timedelta | None, now: datetime, upstream: str) -> Hold | None:
    """A hold while the candidate has been verified in ``upstream`` for less than ``min_soak``."""
    if min_soak is None:
        return None
    if verified_at is None:
        return Hold("soak", f"no verification in {upstream} with a time to measure gate.min_soak from", None)
    ready = verified_at + min_soak
    if now >= ready:
        return None
    return Hold(
        "soak",
        f"verified in {upstream} at {_when(verified_at)}, {_human(now - verified_at)} ago; gate.min_soak is "
        f"{_human(min_soak)}: ready at {_when(ready)}",
        ready,
    )


def freeze_hold(value: Any) -> Hold | None:
    """The org-wide switch, the value of the Prefect Variable :data:`FREEZE_VARIABLE`: missing, null, false,
    "off" or "" mean no freeze; an object ``{"on": true, "reason": ..., "by": ...}`` or any other value freezes."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "off", "false")):
        return None
    if isinstance(value, dict):
        if not value.get("on", True):
            return None
        reason = str(value.get("reason") or "no reason given")[:200]
        by = f" by {str(value['by'])[:80]}" if value.get("by") else ""
        since = f" since {str(value['at'])[:40]}" if value.get("at") else ""
        return Hold("freeze", f"the org-wide freeze ({FREEZE_VARIABLE}) is on{by}{since}: {reason}", None)
    return Hold("freeze", f"the org-wide freeze ({FREEZE_VARIABLE}) is on: {str(value)[:200]}", None)


def first_hold(*holds: Hold | None) -> Hold | None:
    return next((h for h in holds if h is not None), None)


# --- helpers ----------------------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            f"time zone {name[:60]!r} is unknown: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def _is_rrule(text: str) -> bool:
    head = text.upper()
    return head.startswith(("FREQ=", "RRULE:", "DTSTART"))


class _Occurrences:
    """An RRULE's starts from its DTSTART to about two years ahead, expanded once (at most
    :data:`_MAX_RRULE_STEPS`), then searched by bisection: dateutil can only count from the start."""

    def __init__(self, starts: list[datetime], horizon: datetime, text: str, zone: Any) -> None:
        self.starts, self.horizon, self.text, self.zone = starts, horizon, text, zone

    @classmethod
    def of(cls, text: str, zone: Any) -> _Occurrences:
        rule = _parse_rrule(text)
        horizon = datetime.now(zone).replace(tzinfo=None) + 2 * _MAX_LOOKAHEAD
        starts: list[datetime] = []
        for start in rule:
            if start > horizon:
                break
            if len(starts) >= _MAX_RRULE_STEPS:
                raise WindowError(
                    f"RRULE {text[:60]!r} has more than {_MAX_RRULE_STEPS} occurrences from its DTSTART to two "
                    "years from now: move DTSTART forward or make it repeat less often"
                )
            starts.append(start.replace(tzinfo=zone))
        return cls(starts, horizon.replace(tzinfo=zone), text, zone)

    def _fresh(self, at: datetime) -> _Occurrences:
        # A process that runs for years passes the horizon: expand again from then on.
        return self if at + _MAX_LOOKAHEAD < self.horizon else _Occurrences.of(self.text, self.zone)

    def latest(self, at: datetime) -> datetime | None:
        current = self._fresh(at)
        index = bisect.bisect_right(current.starts, at)
        return current.starts[index - 1] if index else None

    def after(self, after: datetime) -> Iterator[datetime]:
        current = self._fresh(after)
        yield from current.starts[bisect.bisect_right(current.starts, after) :]


def _parse_rrule(text: str) -> rrule.rrule:
    """The rule, read in local wall time (its DTSTART too), so a daily 18:00 stays 18:00 across daylight saving,
    as with cron. Refused: more than daily, a DTSTART more than ten years back, rule sets, days no month has."""
    if re.search(r"FREQ=(SECONDLY|MINUTELY|HOURLY)", text, re.IGNORECASE):
        # dateutil counts every occurrence from the start: hourly rules get slow, and cron says it better.
        raise WindowError("an RRULE window repeats at most daily: write an hourly window as cron (e.g. 0 * * * *)")
    try:
        rule = rrule.rrulestr(text, dtstart=_RRULE_ANCHOR, ignoretz=True, cache=False)
    except Exception as exc:  # dateutil raises several kinds (ValueError, KeyError, ...) on odd input
        raise WindowError(f"RRULE {text[:60]!r} does not parse: {str(exc)[:80] or type(exc).__name__}") from None
    if not isinstance(rule, rrule.rrule):
        raise WindowError("give one RRULE per window (no RRULE sets)")
    begins: datetime = getattr(rule, "_dtstart", None) or _RRULE_ANCHOR
    if begins.tzinfo is not None:
        begins = begins.replace(tzinfo=None)
    if begins < datetime.now() - _MAX_RRULE_AGE:
        raise WindowError(
            f"RRULE {text[:60]!r} starts (DTSTART) more than ten years ago: every check would count each "
            "occurrence since then. Move DTSTART to a recent date on the same weekday and time"
        )
    _check_rrule_pace(rule, text)
    return rule


def _check_rrule_pace(rule: rrule.rrule, text: str) -> None:
    """dateutil counts every occurrence from the rule's start, and searches up to the year 9999 for a rule that
    never matches (February 31st): refuse both kinds before they cost seconds on every check. Bounded by an
    UNTIL five years on, so the check itself is cheap."""
    months = getattr(rule, "_bymonth", None) or range(1, 13)
    days = getattr(rule, "_bymonthday", None) or ()
    longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    if days and not any(0 < day <= longest.get(month, 31) for month in months for day in days):
        # dateutil would search every year up to 9999 for it (seconds per check): refuse it outright.
        raise WindowError(f"RRULE {text[:60]!r} names days no month it names has (e.g. February 31st)")
    begins: datetime = getattr(rule, "_dtstart", None) or _RRULE_ANCHOR  # DTSTART, or the anchor without one
    bounded = rule.replace(until=begins + timedelta(days=5 * 366), count=None)
    first = list(islice(bounded, 200))
    if not first:
        raise WindowError(f"RRULE {text[:60]!r} never occurs within five years of its start")
    if len(first) == 200 and first[-1] - first[0] < timedelta(days=100):
        raise WindowError(f"RRULE {text[:60]!r} repeats more than about twice a day: write a frequent window as cron")


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()
