"""Delivery metrics of pipelines, read from their repositories' promotion notes (the I/O side of
:mod:`tasks.metrics`): ``promote metrics`` and the nightly's ``delivery-metrics`` artifact."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.model import Pipeline
from tasks import evidence
from tasks.connections import open_repository
from tasks.metrics import DeliveryMetrics, Window, combine, commits_to_time, pipeline_metrics

OVERALL = "(all pipelines)"


def measure_pipeline(pipeline: Pipeline, window: Window, *, fetch: bool = True) -> DeliveryMetrics:
    """One pipeline's metrics; its production is the last environment of its chain. ``fetch``: bring the
    cached clone up to date first (False: its notes were fetched moments ago)."""
    repo = open_repository(pipeline)
    if fetch:
        repo.fetch()
    records = evidence.all_records(repo)
    production = pipeline.last.name
    times = repo.commit_times(commits_to_time(records, pipeline.name, production))
    return pipeline_metrics(pipeline.name, production, records, times, window)


def measure_pipelines(pipelines: Sequence[Pipeline], window: Window) -> list[DeliveryMetrics]:
    """One row per pipeline, then the pooled row (none for no pipelines).

    Each repository is fetched once (several pipelines may share one). A pipeline named twice with the same
    repository is measured once: its records would count twice in the pooled row."""
    fetched: set[str] = set()
    seen: set[tuple[str, str]] = set()
    rows: list[DeliveryMetrics] = []
    for pipeline in pipelines:
        url = pipeline.repository.url
        if (url, pipeline.name) in seen:
            continue
        seen.add((url, pipeline.name))
        rows.append(measure_pipeline(pipeline, window, fetch=url not in fetched))
        fetched.add(url)
    return [*rows, combine(OVERALL, window, rows)] if rows else []
