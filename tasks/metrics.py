"""Delivery metrics (the four DORA keys) computed from promotion evidence alone: no Prefect database.

Pure functions over :class:`tasks.evidence.Record` lists and a map of commit times, so every number can be
checked by hand. docs/metrics.md defines each one exactly as computed here; keep the two in step.

The production environment of a pipeline is the last one of its chain. What counts there:

* a **deployment** (production promotion) is a ``promoted`` record (it came up and was verified) or a
  ``failed`` record (it changed production and did not come up);
* a deployment **failed** if it has a ``failed`` record, or it was ``promoted`` and a ``rolled-back`` record
  of the same version followed (someone ran the rollback flow);
* everything is attributed to the window its deployment is in: ``since <= at < until``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks.evidence import EvidenceError, Record

DAY = timedelta(days=1)
_UNITS = {"h": timedelta(hours=1), "d": DAY, "w": timedelta(weeks=1)}
_DURATION = re.compile(r"([0-9]{1,6})([hdw])")
LONGEST_WINDOW = timedelta(days=3660)  # ten years: beyond it a typo is likelier than a question
# Same-second records: a failure is recorded before the rollback that answers it (flows/promotion.py).
_ORDER = {"failed": 0, "promoted": 1, "rolled-back": 2}


@dataclass(frozen=True)
class Window:
    """``since <= t < until``: a record exactly at ``since`` is in, one exactly at ``until`` is not."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("window bounds must carry a time zone")
        if self.since >= self.until:
            raise ValueError("the window's start must be before its end")

    def __contains__(self, moment: datetime) -> bool:
        return self.since <= moment < self.until

    @property
    def days(self) -> float:
        return (self.until - self.since) / DAY


def parse_since(text: str, now: datetime) -> datetime:
    """The start of a window ending ``now``: ``12h``, ``30d``, ``2w`` back from ``now``, or an ISO date or time
    (``2024-05-01``, ``2024-05-01T12:00:00+02:00``; no offset means UTC). Raises ValueError naming the flag."""
    expected = "expected a duration such as 12h, 30d or 2w, or an ISO date such as 2024-05-01"
    cleaned = text.strip()
    if match := _DURATION.fullmatch(cleaned):
        span = int(match.group(1)) * _UNITS[match.group(2)]
        if span > LONGEST_WINDOW or span <= timedelta(0):
            raise ValueError(f"--since: {cleaned!r} is outside 1h..{LONGEST_WINDOW.days}d")
        return now - span
    try:
        since = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"--since: {expected}; got {cleaned[:40]!r}") from None
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    if since >= now:
        raise ValueError(f"--since: {cleaned[:40]!r} is not in the past")
    if now - since > LONGEST_WINDOW:
        raise ValueError(f"--since: {cleaned[:40]!r} is more than {LONGEST_WINDOW.days} days ago")
    return since


def nearest_rank(values: Sequence[timedelta], percent: int) -> timedelta | None:
    """The nearest-rank percentile: the smallest value with at least ``percent``% of the values at or below
    it, i.e. the ``ceil(percent / 100 * n)``-th smallest (1-based). None for no values."""
    if not values:
        return None
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in 1..100, not {percent}")
    rank = -(-percent * len(values) // 100)  # integer ceiling: no float rounding at exact ranks
    return sorted(values)[rank - 1]


@dataclass(frozen=True)
class DeliveryMetrics:
    """The facts of one pipeline (or of several pooled) in one window; the four keys are properties."""

    name: str
    window: Window
    promotions: int = 0  # successful production promotions (promoted records)
    deployments: int = 0  # promotions plus failed promotions: every change of production
    failures: int = 0  # deployments that failed or were rolled back
    lead_times: tuple[timedelta, ...] = ()
    lead_time_unknown: int = 0  # promotions whose commit the repository does not have
    restore_times: tuple[timedelta, ...] = ()
    unrestored: int = 0  # failures with no restore before the window's end
    pipelines: tuple[str, ...] = ()

    @property
    def deployment_frequency(self) -> float:
        """Successful production promotions per day of the window."""
        return self.promotions / self.window.days

    @property
    def no_production_promotion(self) -> bool:
        return self.deployments == 0

    @property
    def change_failure_rate(self) -> float | None:
        """failures / deployments; None when nothing was deployed (not 0: no evidence either way)."""
        return None if self.deployments == 0 else self.failures / self.deployments

    @property
    def lead_time_median(self) -> timedelta | None:
        return nearest_rank(self.lead_times, 50)

    @property
    def lead_time_p90(self) -> timedelta | None:
        return nearest_rank(self.lead_times, 90)

    @property
    def time_to_restore_median(self) -> timedelta | None:
        return nearest_rank(self.restore_times, 50)

    @property
    def time_to_restore_p90(self) -> timedelta | None:
        return nearest_rank(self.restore_times, 90)

    def as_json(self) -> dict[str, Any]:
        def seconds(value: timedelta | None) -> float | None:
            return None if value is None else value.total_seconds()

        return {
            "name": self.name,
            "since": self.window.since.isoformat(),
            "until": self.window.until.isoformat(),
            "deployment_frequency": {
                "promotions": self.promotions,
                "per_day": self.deployment_frequency,
            },
            "lead_time_for_changes": {
                "count": len(self.lead_times),
                "median_seconds": seconds(self.lead_time_median),
                "p90_seconds": seconds(self.lead_time_p90),
                "unknown_commits": self.lead_time_unknown,
            },
            "change_failure_rate": {
                "deployments": self.deployments,
                "failures": self.failures,
                "rate": self.change_failure_rate,
            },
            "time_to_restore": {
                "count": len(self.restore_times),
                "median_seconds": seconds(self.time_to_restore_median),
                "p90_seconds": seconds(self.time_to_restore_p90),
                "unrestored": self.unrestored,
            },
        }


def combine(name: str, window: Window, parts: Iterable[DeliveryMetrics]) -> DeliveryMetrics:
    """Several pipelines pooled: counts add up, percentiles are taken over all their values together."""
    parts = list(parts)
    return DeliveryMetrics(
        name=name,
        window=window,
        promotions=sum(p.promotions for p in parts),
        deployments=sum(p.deployments for p in parts),
        failures=sum(p.failures for p in parts),
        lead_times=tuple(t for p in parts for t in p.lead_times),
        lead_time_unknown=sum(p.lead_time_unknown for p in parts),
        restore_times=tuple(t for p in parts for t in p.restore_times),
        unrestored=sum(p.unrestored for p in parts),
        pipelines=tuple(p.name for p in parts),
    )


def record_time(rec: Record) -> datetime:
    """When a record was written; a hand-edited time is an error naming the record (cut, never echoed whole)."""
    try:
        moment = datetime.fromisoformat(rec.at)
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise EvidenceError(
            f"a {rec.kind!r} record of {rec.pipeline[:60]}/{rec.environment[:60]} on {rec.commit[:12]} has an "
            f"unreadable time {str(rec.at)[:40]!r}: expected ISO 8601 with a UTC offset"
        )
    return moment


@dataclass(frozen=True)
class _Failure:
    start: datetime
    tag: str
    counted: bool  # its deployment is in the window


def pipeline_metrics(
    pipeline: str,
    production: str,
    records: Iterable[Record],
    commit_times: Mapping[str, datetime],
    window: Window,
) -> DeliveryMetrics:
    """The metrics of ``pipeline`` whose last environment is ``production``, from all its evidence.

    Records before the window still matter (a release promoted before it and rolled back in it is a failure
    of that earlier window, not of this one); records at or after ``until`` are ignored, as if not yet written.
    ``commit_times``: commit id -> the committer time of that commit (what lead time starts from)."""
    relevant = [
        (record_time(rec), rec)
        for rec in records
        if rec.pipeline == pipeline and rec.environment == production and rec.kind in _ORDER
    ]
    relevant.sort(key=lambda item: (item[0], _ORDER[item[1].kind]))
    promotions = deployments = failures = unknown = unrestored = 0
    lead_times: list[timedelta] = []
    restore_times: list[timedelta] = []
    live: dict[str, datetime] = {}  # promoted version -> when, until it is rolled back
    open_failures: list[_Failure] = []

    def restore(at: datetime) -> None:
        for failure in open_failures:
            if failure.counted:
                restore_times.append(at - failure.start)
        open_failures.clear()

    for at, rec in relevant:
        if at >= window.until:
            break
        counted = at in window
        if rec.kind == "promoted":
            restore(at)  # verified before it was recorded: production is good again
            live[rec.tag] = at
            if counted:
                promotions += 1
                deployments += 1
                if (committed := commit_times.get(rec.commit)) is not None:
                    lead_times.append(at - committed)
                else:
                    unknown += 1
        elif rec.kind == "failed":
            open_failures.append(_Failure(at, rec.tag, counted))
            if counted:
                deployments += 1
                failures += 1
        elif any(failure.tag == rec.tag for failure in open_failures):
            # The failed promotion's own rollback, or the rollback flow run on it once that rollback had failed
            # too (its record then hangs on the rollback's commit): verified before it was recorded.
            restore(at)
        elif (promoted_at := live.pop(rec.tag, None)) is not None:
            # The rollback flow took a live release back: that deployment failed, and was restored now.
            if promoted_at in window:
                failures += 1
                restore_times.append(at - promoted_at)
            restore(at)
        else:
            # A promotion that failed and rolled back before "failed" records existed: a failed deployment
            # whose start Git does not know, so it has no time to restore.
            if counted:
                deployments += 1
                failures += 1
            restore(at)
    unrestored = sum(1 for failure in open_failures if failure.counted)
    return DeliveryMetrics(
        name=pipeline,
        window=window,
        promotions=promotions,
        deployments=deployments,
        failures=failures,
        lead_times=tuple(lead_times),
        lead_time_unknown=unknown,
        restore_times=tuple(restore_times),
        unrestored=unrestored,
        pipelines=(pipeline,),
    )


def commits_to_time(records: Iterable[Record], pipeline: str, production: str) -> set[str]:
    """The commits whose times lead time needs: those of the pipeline's production ``promoted`` records."""
    return {
        rec.commit
        for rec in records
        if rec.kind == "promoted" and (rec.pipeline, rec.environment) == (pipeline, production)
    }


# --- rendering --------------------------------------------------------------------------------------


def format_duration(value: timedelta | None) -> str:
    """``3d 4h``, ``2h 5m``, ``40s``: two units at most, enough to compare; "-" for none."""
    if value is None:
        return "-"
    sign, seconds = ("-", -value.total_seconds()) if value < timedelta(0) else ("", value.total_seconds())
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def _rate(metrics: DeliveryMetrics) -> str:
    rate = metrics.change_failure_rate
    if rate is None:
        return "n/a (no production promotion)"
    return f"{rate:.0%} ({metrics.failures}/{metrics.deployments})"


def _restore(metrics: DeliveryMetrics) -> str:
    text = f"{format_duration(metrics.time_to_restore_median)} / {format_duration(metrics.time_to_restore_p90)}"
    return text + (f" ({metrics.unrestored} not restored)" if metrics.unrestored else "")


def _lead(metrics: DeliveryMetrics) -> str:
    text = f"{format_duration(metrics.lead_time_median)} / {format_duration(metrics.lead_time_p90)}"
    return text + (f" ({metrics.lead_time_unknown} commits unknown)" if metrics.lead_time_unknown else "")


COLUMNS = (
    "pipeline",
    "promotions (per day)",
    "lead time median / p90",
    "change failure rate",
    "time to restore median / p90",
)


def rows(metrics: Sequence[DeliveryMetrics]) -> list[tuple[str, ...]]:
    return [
        (
            m.name,
            f"{m.promotions} ({m.deployment_frequency:.2f})",
            _lead(m),
            _rate(m),
            _restore(m),
        )
        for m in metrics
    ]


def render_table(metrics: Sequence[DeliveryMetrics]) -> str:
    """A plain-text table for a terminal, columns padded to their widest cell."""
    table = [COLUMNS, *rows(metrics)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)


def render_markdown(metrics: Sequence[DeliveryMetrics], window: Window) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "/").replace("\n", " ")

    lines = [
        "# delivery metrics",
        "",
        f"from promotion evidence in Git, {window.since.isoformat()} to {window.until.isoformat()} "
        "(definitions: docs/metrics.md)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows(metrics)]
    return "\n".join(lines)
