"""Delivery metrics on a synthetic evidence history whose answers are worked out by hand below.

Every expected number is a literal with its arithmetic beside it; the records carry fixed timestamps, so
nothing depends on when the test runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tasks.evidence import EvidenceError, Record
from tasks.metrics import (
    DeliveryMetrics,
    Window,
    combine,
    format_duration,
    nearest_rank,
    parse_since,
    pipeline_metrics,
    render_markdown,
    render_table,
)

H = timedelta(hours=1)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text + "+00:00")


def rec(kind: str, tag: str, at: str, commit: str, *, pipeline: str = "shop", env: str = "production") -> Record:
    return Record(kind=kind, pipeline=pipeline, environment=env, tag=tag, commit=commit, at=at + "+00:00")  # type: ignore[arg-type]


def sha(n: int) -> str:
    return f"{n:040x}"


# 10 days: 2024-05-01 00:00 (in) to 2024-05-11 00:00 (out).
WINDOW = Window(t("2024-05-01T00:00:00"), t("2024-05-11T00:00:00"))

COMMITTED = {
    sha(0): t("2024-04-29T00:00:00"),
    sha(1): t("2024-04-29T12:00:00"),
    sha(2): t("2024-05-02T00:00:00"),
    sha(3): t("2024-05-04T12:00:00"),
    sha(4): t("2024-05-06T18:00:00"),
    sha(5): t("2024-05-08T00:00:00"),
    sha(6): t("2024-05-09T20:00:00"),
    sha(7): t("2024-05-10T00:00:00"),
    sha(8): t("2024-05-10T06:00:00"),
}

HISTORY = [
    rec("promoted", "v1.0.0", "2024-04-30T00:00:00", sha(0)),  # before the window: not counted
    rec("promoted", "v1.0.1", "2024-05-01T00:00:00", sha(1)),  # exactly at since: counted
    rec("failed", "v1.0.2", "2024-05-02T06:00:00", sha(2)),  # did not come up ...
    rec("rolled-back", "v1.0.2", "2024-05-02T06:30:00", sha(2)),  # ... and its own rollback restored it
    rec("promoted", "v1.0.2", "2024-05-03T00:00:00", sha(2)),  # the re-run made it
    rec("promoted", "v1.0.3", "2024-05-05T00:00:00", sha(3)),
    rec("rolled-back", "v1.0.3", "2024-05-05T12:00:00", sha(3)),  # the rollback flow took a live release back
    rec("promoted", "v1.0.4", "2024-05-07T00:00:00", sha(4)),
    rec("failed", "v1.0.5", "2024-05-09T00:00:00", sha(5)),  # its rollback failed too: no rolled-back record
    rec("promoted", "v1.0.6", "2024-05-10T00:00:00", sha(6)),  # restores v1.0.5's failure
    rec("failed", "v1.0.7", "2024-05-10T12:00:00", sha(7)),  # never restored inside the window
    rec("promoted", "v1.0.8", "2024-05-11T00:00:00", sha(8)),  # exactly at until: not counted, restores nothing
    # Not production, or not this pipeline: ignored.
    rec("promoted", "v1.0.9", "2024-05-04T00:00:00", sha(3), env="staging"),
    rec("failed", "v1.0.9", "2024-05-04T00:00:00", sha(3), env="staging"),
    rec("promoted", "v2.0.0", "2024-05-04T00:00:00", sha(3), pipeline="cart"),
    rec("verified", "v1.0.3-rc1", "2024-05-04T00:00:00", sha(3)),
]


def shop(window: Window = WINDOW, history: list[Record] = HISTORY) -> DeliveryMetrics:
    return pipeline_metrics("shop", "production", history, COMMITTED, window)


def test_the_four_keys_of_the_synthetic_history() -> None:
    m = shop()
    # Deployment frequency: promoted in [since, until): v1.0.1, v1.0.2, v1.0.3, v1.0.4, v1.0.6 = 5 in 10 days.
    assert m.promotions == 5
    assert m.deployment_frequency == pytest.approx(0.5)  # 5 / 10
    # Lead time (promoted at - committed at):
    #   v1.0.1: 05-01 00:00 - 04-29 12:00 = 36h     v1.0.2: 05-03 00:00 - 05-02 00:00 = 24h
    #   v1.0.3: 05-05 00:00 - 05-04 12:00 = 12h     v1.0.4: 05-07 00:00 - 05-06 18:00 = 6h
    #   v1.0.6: 05-10 00:00 - 05-09 20:00 = 4h
    # sorted 4h, 6h, 12h, 24h, 36h (n = 5): median = rank ceil(0.5*5) = 3rd = 12h; p90 = rank ceil(0.9*5) = 5th = 36h
    assert sorted(m.lead_times) == [4 * H, 6 * H, 12 * H, 24 * H, 36 * H]
    assert m.lead_time_median == 12 * H
    assert m.lead_time_p90 == 36 * H
    assert m.lead_time_unknown == 0
    # Change failure rate: deployments = 5 promoted + 3 failed (v1.0.2, v1.0.5, v1.0.7) = 8;
    # failures = those 3 + v1.0.3 (rolled back after it went live) = 4; 4 / 8 = 0.5.
    assert (m.deployments, m.failures) == (8, 4)
    assert m.change_failure_rate == pytest.approx(0.5)
    # Time to restore: v1.0.2: 06:30 - 06:00 = 30m; v1.0.3: 05-05 12:00 - 05-05 00:00 = 12h;
    # v1.0.5: 05-10 00:00 - 05-09 00:00 = 24h; v1.0.7: not restored before until (v1.0.8 is at until).
    # sorted 30m, 12h, 24h (n = 3): median = rank ceil(1.5) = 2nd = 12h; p90 = rank ceil(2.7) = 3rd = 24h
    assert sorted(m.restore_times) == [timedelta(minutes=30), 12 * H, 24 * H]
    assert m.time_to_restore_median == 12 * H
    assert m.time_to_restore_p90 == 24 * H
    assert m.unrestored == 1


def test_window_boundaries_are_since_inclusive_and_until_exclusive() -> None:
    second = timedelta(seconds=1)
    later = shop(Window(WINDOW.since + second, WINDOW.until))
    assert later.promotions == 4  # v1.0.1 at exactly 05-01 00:00 drops out: 5 - 1
    assert sorted(later.lead_times) == [4 * H, 6 * H, 12 * H, 24 * H]  # its 36h with it
    longer = shop(Window(WINDOW.since, WINDOW.until + second))
    assert longer.promotions == 6  # v1.0.8 at exactly 05-11 00:00 comes in: 5 + 1
    # ... and restores v1.0.7: 05-11 00:00 - 05-10 12:00 = 12h; sorted 30m, 12h, 12h, 24h
    assert sorted(longer.restore_times) == [timedelta(minutes=30), 12 * H, 12 * H, 24 * H]
    assert longer.unrestored == 0


def test_a_failure_belongs_to_the_window_of_its_deployment() -> None:
    # From 05-09 06:00: v1.0.5 failed at 05-09 00:00, before it, so its restore in the window is not counted.
    m = shop(Window(t("2024-05-09T06:00:00"), WINDOW.until))
    assert (m.promotions, m.deployments, m.failures) == (1, 2, 1)  # v1.0.6 promoted; v1.0.7 failed
    assert m.restore_times == () and m.unrestored == 1
    assert m.change_failure_rate == pytest.approx(0.5)  # 1 / 2


def test_an_empty_window_is_named_not_divided_by_zero() -> None:
    m = shop(Window(t("2024-06-01T00:00:00"), t("2024-06-08T00:00:00")))
    assert (m.promotions, m.deployments, m.failures) == (0, 0, 0)
    assert m.deployment_frequency == 0.0
    assert m.no_production_promotion and m.change_failure_rate is None
    assert m.lead_time_median is None and m.time_to_restore_p90 is None
    assert "n/a (no production promotion)" in render_table([m])


def test_a_pipeline_that_never_reached_production_pools_with_the_others() -> None:
    cart_only_staging = [rec("promoted", "v3.0.0", "2024-05-02T00:00:00", sha(1), pipeline="web", env="staging")]
    web = pipeline_metrics("web", "production", cart_only_staging, COMMITTED, WINDOW)
    assert web.no_production_promotion and web.change_failure_rate is None
    api_history = [rec("promoted", "v9.0.0", "2024-05-02T02:00:00", sha(2), pipeline="api")]
    api = pipeline_metrics("api", "production", api_history, COMMITTED, WINDOW)
    assert api.lead_times == (2 * H,)  # 05-02 02:00 - 05-02 00:00
    everything = combine("(all pipelines)", WINDOW, [shop(), web, api])
    assert everything.promotions == 6  # 5 + 0 + 1
    assert everything.deployment_frequency == pytest.approx(0.6)  # 6 / 10
    # pooled lead times 2h, 4h, 6h, 12h, 24h, 36h (n = 6): median = rank 3 = 6h; p90 = rank ceil(5.4) = 6 = 36h
    assert everything.lead_time_median == 6 * H and everything.lead_time_p90 == 36 * H
    assert everything.change_failure_rate == pytest.approx(4 / 9)  # (4 + 0 + 0) / (8 + 0 + 1)
    table = render_table([shop(), web, api, everything])
    assert table.splitlines()[2].startswith("web ") and "n/a (no production promotion)" in table.splitlines()[2]
    assert "| shop | 5 (0.50) | 12h 0m / 1d 12h | 50% (4/8) | 12h 0m / 1d 0h (1 not restored) |" in render_markdown(
        [shop()], WINDOW
    )


def test_a_rollback_without_a_failed_record_counts_as_a_failure_of_unknown_duration() -> None:
    # History from before "failed" records: a promotion that did not come up left only its rollback.
    legacy = [
        rec("promoted", "v1.0.0", "2024-05-02T00:00:00", sha(1)),
        rec("rolled-back", "v1.0.1", "2024-05-03T00:00:00", sha(2)),
    ]
    m = pipeline_metrics("shop", "production", legacy, COMMITTED, WINDOW)
    assert (m.promotions, m.deployments, m.failures) == (1, 2, 1)  # 1 promoted + 1 failed-and-rolled-back
    assert m.restore_times == () and m.unrestored == 0


def test_the_rollback_flow_after_a_failed_rollback_restores_without_a_second_deployment() -> None:
    history = [
        rec("failed", "app:1.2", "2024-05-02T00:00:00", sha(2)),  # and its own rollback failed: no record
        rec("rolled-back", "app:1.2", "2024-05-02T03:00:00", sha(9)),  # on the rollback flow's own commit
    ]
    m = pipeline_metrics("shop", "production", history, COMMITTED, WINDOW)
    assert (m.deployments, m.failures) == (1, 1)  # the failed one only: the rollback is its restore
    assert m.restore_times == (3 * H,) and m.unrestored == 0  # 03:00 - 00:00


def test_a_commit_the_repository_does_not_have_is_counted_apart() -> None:
    history = [rec("promoted", "v1.0.0", "2024-05-02T00:00:00", sha(99))]
    m = pipeline_metrics("shop", "production", history, COMMITTED, WINDOW)
    assert (m.promotions, m.lead_times, m.lead_time_unknown) == (1, (), 1)


def test_nearest_rank() -> None:
    ten = [n * H for n in range(10, 0, -1)]  # 10h .. 1h, unsorted on purpose
    assert nearest_rank(ten, 50) == 5 * H  # rank ceil(0.5 * 10) = 5
    assert nearest_rank(ten, 90) == 9 * H  # rank ceil(0.9 * 10) = 9
    assert nearest_rank(ten[:4], 50) == 8 * H  # 7h..10h: rank ceil(0.5 * 4) = 2nd smallest = 8h
    assert nearest_rank([3 * H], 90) == 3 * H
    assert nearest_rank([], 50) is None


def test_an_unreadable_record_time_names_the_record_and_is_cut() -> None:
    bad = Record(kind="promoted", pipeline="shop", environment="production", tag="v1", commit=sha(1), at="x" * 500)
    with pytest.raises(EvidenceError) as caught:
        pipeline_metrics("shop", "production", [bad], COMMITTED, WINDOW)
    assert "'promoted' record of shop/production on 000000000000" in str(caught.value)
    assert len(str(caught.value)) < 300


NOW = t("2024-06-01T00:00:00")


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("30d", t("2024-05-02T00:00:00")),
        ("12h", t("2024-05-31T12:00:00")),
        ("2w", t("2024-05-18T00:00:00")),
        ("2024-05-01", t("2024-05-01T00:00:00")),
        ("2024-05-01T12:00:00+02:00", t("2024-05-01T10:00:00")),
    ],
)
def test_since_accepts_durations_and_iso_dates(text: str, since: datetime) -> None:
    assert parse_since(text, NOW) == since


@pytest.mark.parametrize("text", ["30", "30x", "-3d", "0h", "99999d", "2024-13-01", "2025-01-01", "y" * 10_000])
def test_since_refuses_anything_else_naming_the_flag(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--since: ") as caught:
        parse_since(text, NOW)
    assert len(str(caught.value)) < 200


def test_durations_read_in_two_units() -> None:
    assert [format_duration(d) for d in (timedelta(seconds=40), 125 * timedelta(seconds=1), 26 * H, None)] == [
        "40s",
        "2m 5s",
        "1d 2h",
        "-",
    ]
    assert WINDOW.days == 10 and t("2024-05-01T00:00:00") in WINDOW and WINDOW.until not in WINDOW
