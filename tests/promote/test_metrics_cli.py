"""``promote metrics`` as users run it (a subprocess) on a real Git origin whose promotion notes were written
through tasks/evidence.py, with commit and record times placed so the answers can be worked out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tasks import evidence
from tasks.gitrepo import GitRepository
from tests.support.cli import promote
from tests.support.gitserver import make_origin, run_git

PIPELINE = """\
name: {name}
repository:
  url: {url}
environments:
  - name: staging
    tracks: {{kind: tag, application_file: apps/staging.yaml}}
  - name: production
    tracks: {{kind: tag, application_file: apps/production.yaml}}
"""
H = timedelta(hours=1)


def commit_at(seed: Path, monkeypatch: pytest.MonkeyPatch, when: datetime, message: str) -> str:
    """A commit pushed to origin whose committer time is ``when`` (what lead time starts from)."""
    monkeypatch.setenv("GIT_COMMITTER_DATE", when.isoformat())
    run_git(seed, "commit", "--quiet", "--allow-empty", "-m", message)
    run_git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    return run_git(seed, "rev-parse", "HEAD")


@pytest.fixture
def pipelines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """shop: two production promotions, one failed one rolled back; cart (same repository): staging only."""
    origin, seed = make_origin(tmp_path, {"apps/staging.yaml": "kind: Application\n"})
    # Whole seconds (records keep seconds), 5 days back: well inside --since 30d and 7d.
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    c1 = commit_at(seed, monkeypatch, base, "feature one")
    c2 = commit_at(seed, monkeypatch, base + 24 * H, "feature two")
    c3 = commit_at(seed, monkeypatch, base + 48 * H, "feature three")
    writer = GitRepository(str(origin), tmp_path / "writer")

    def note(kind: str, pipeline: str, env: str, tag: str, commit: str, at: datetime) -> None:
        rec = evidence.Record(kind=kind, pipeline=pipeline, environment=env, tag=tag, commit=commit, at=at.isoformat())  # type: ignore[arg-type]
        evidence.record(writer, rec)

    note("promoted", "shop", "staging", "v1.0.1-rc1", c1, base + 1 * H)  # not production: ignored
    note("promoted", "shop", "production", "v1.0.1", c1, base + 6 * H)  # lead 6h
    note("promoted", "shop", "production", "v1.0.2", c2, base + 26 * H)  # lead 26h - 24h = 2h
    note("failed", "shop", "production", "v1.0.3", c3, base + 50 * H)
    note("rolled-back", "shop", "production", "v1.0.3", c3, base + 50 * H + timedelta(minutes=30))  # 30m
    note("promoted", "cart", "staging", "v2.0.0-rc1", c3, base + 49 * H)
    directory = tmp_path / "pipelines"
    directory.mkdir()
    for name in ("shop", "cart"):
        (directory / f"{name}.yaml").write_text(PIPELINE.format(name=name, url=origin))
    return directory


def test_metrics_json_from_real_notes(pipelines: Path, tmp_path: Path) -> None:
    proc = promote("metrics", str(pipelines), "--since", "30d", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_name = {row["name"]: row for row in json.loads(proc.stdout)}
    assert list(by_name) == ["cart", "shop", "(all pipelines)"]  # files in name order, then the pooled row
    shop = by_name["shop"]
    assert shop["deployment_frequency"]["promotions"] == 2
    assert shop["deployment_frequency"]["per_day"] == pytest.approx(2 / 30, rel=1e-3)  # 2 in 30 days
    # lead times 2h, 6h (n = 2): median = rank ceil(1.0) = 1st = 2h = 7200 s; p90 = rank ceil(1.8) = 2nd = 6h
    assert shop["lead_time_for_changes"] == {
        "count": 2,
        "median_seconds": 7200.0,
        "p90_seconds": 21600.0,
        "unknown_commits": 0,
    }
    # deployments: 2 promoted + 1 failed = 3; failures: 1; restored 30 minutes later by its rollback
    assert shop["change_failure_rate"] == {"deployments": 3, "failures": 1, "rate": pytest.approx(1 / 3)}
    assert shop["time_to_restore"] == {"count": 1, "median_seconds": 1800.0, "p90_seconds": 1800.0, "unrestored": 0}
    cart = by_name["cart"]
    assert cart["deployment_frequency"]["promotions"] == 0 and cart["change_failure_rate"]["rate"] is None
    overall = by_name["(all pipelines)"]
    assert overall["change_failure_rate"] == shop["change_failure_rate"]
    assert overall["lead_time_for_changes"] == shop["lead_time_for_changes"]


def test_metrics_table(pipelines: Path, tmp_path: Path) -> None:
    proc = promote("metrics", str(pipelines / "shop.yaml"), str(pipelines / "cart.yaml"), "--since", "7d", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("delivery metrics from ")
    shop = next(line for line in lines if line.startswith("shop "))
    # 2 promotions in 7 days = 0.29 a day; lead 2h / 6h; 1 of 3 failed; restored in 30 minutes
    assert " ".join(shop.split()) == "shop 2 (0.29) 2h 0m / 6h 0m 33% (1/3) 30m 0s / 30m 0s", shop
    cart = next(line for line in lines if line.startswith("cart "))
    assert "n/a (no production promotion)" in cart


@pytest.mark.parametrize("since", ["soon", "30 days", "3y", "9" * 5000])
def test_metrics_refuses_a_bad_since_naming_the_flag(tmp_path: Path, since: str) -> None:
    (tmp_path / "p.yaml").write_text("not even read\n")
    proc = promote("metrics", str(tmp_path / "p.yaml"), "--since", since, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.startswith("promote metrics: --since: ") and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr) < 300  # the input is cut, never echoed whole
