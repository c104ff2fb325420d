"""The Argo CD readiness rules against what the real controller wrote: every version of an Application that
Argo CD v3.6.1 wrote during a verification in tests/real/test_argocd_verification.py, recorded into
tests/data/argocd/ (PROMOTE_RECORD_ARGOCD_FIXTURES=1), replayed here through ``judge_application`` in order, as
verification judges them (tasks/verification.py ``_wait_argocd``: the flags it carries from one version to the
next), each at the moment it arrived and with the default ``health_grace_seconds``.

For each recording: no version before the decisive one gives a verdict, the decisive one gives the recorded
outcome, and the previous revision's Healthy never passes. The real controller's six steps for a rollout are in
them: the operation set while still Synced at the old commit, Running, OutOfSync at the new one, the operation
Succeeded while still OutOfSync, Synced + Progressing, Healthy (or Degraded).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rules.readiness import Judgement, judge_application

DATA = Path(__file__).resolve().parent.parent / "data" / "argocd"
RECORDINGS = sorted(DATA.glob("*.json"))
EXPECTED = {"auto-sync-rollout", "sync-started-by-us", "degraded", "comparison-error"}
GRACE = 10.0  # verify.health_grace_seconds' default (pipeline/model.py)


def load(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_every_scenario_is_recorded() -> None:
    assert {path.stem for path in RECORDINGS} == EXPECTED, (
        "tests/data/argocd/ must hold one recording per scenario: run "
        "PROMOTE_RECORD_ARGOCD_FIXTURES=1 hack/test -m real_controllers tests/real/test_argocd_verification.py"
    )


def replay(record: dict[str, Any], versions: list[dict[str, Any]] | None = None) -> list[Judgement]:
    """The verdict on each version at its arrival, carrying the flags as verification does."""
    revision = record["revision"]
    seen_progressing = rollout_seen = False
    verdicts = []
    for version in versions if versions is not None else record["versions"]:
        verdict = judge_application(
            version,
            revision,
            health_grace_seconds=GRACE,
            seen_progressing=seen_progressing,
            rollout_seen=rollout_seen,
            now=datetime.fromisoformat(version["arrived"]),
        )
        verdicts.append(verdict)
        sync = (version.get("status") or {}).get("sync") or {}
        health = ((version.get("status") or {}).get("health") or {}).get("status")
        if sync.get("revision") == revision and health not in (None, "Unknown", "Degraded"):
            seen_progressing = True
        if sync.get("revision") == revision and health == "Progressing":
            rollout_seen = True
    return verdicts


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_recorded_argocd_statuses(path: Path) -> None:
    record = load(path)
    verdicts = replay(record)
    decided = [i for i, v in enumerate(verdicts) if v.state != "waiting"]
    assert decided, [(v.state, v.message) for v in verdicts]
    first = verdicts[decided[0]]
    assert (first.state, record["expect_message"] in first.message) == (record["expect"], True), [
        (v.state, v.message) for v in verdicts
    ]
    for version, verdict in zip(record["versions"], verdicts, strict=True):
        synced = ((version.get("status") or {}).get("sync") or {}).get("revision")
        if record["previous"] and synced == record["previous"]:
            assert verdict.state == "waiting", f"decided on the previous revision's status: {version['status']}"


@pytest.mark.parametrize("scenario", ["auto-sync-rollout", "sync-started-by-us"])
def test_healthy_after_the_rollout_is_not_held_by_the_grace(scenario: str) -> None:
    """The real controller wrote Progressing at our revision before Healthy: that Healthy ends the rollout, and
    the first Healthy at our revision passes at once (it arrived less than the grace after the sync finished)."""
    record = load(DATA / f"{scenario}.json")
    verdicts = replay(record)
    healthy = [
        i
        for i, v in enumerate(record["versions"])
        if v["status"].get("sync", {}).get("revision") == record["revision"]
        and v["status"].get("health", {}).get("status") == "Healthy"
        and v["status"].get("sync", {}).get("status") == "Synced"
    ]
    assert healthy and verdicts[healthy[0]].state == "ready", [(v.state, v.message) for v in verdicts]
    shapes = [(v["status"]["sync"].get("status"), v["status"]["health"].get("status")) for v in record["versions"]]
    assert ("Synced", "Progressing") in shapes[: healthy[0]], shapes


@pytest.mark.parametrize("scenario", ["auto-sync-rollout", "sync-started-by-us"])
def test_a_stale_healthy_without_the_rollout_waits_out_the_grace(scenario: str) -> None:
    """The same recording without its Progressing versions: Synced and Healthy at our revision right after the
    sync, which is what a controller whose cache still holds the old Deployment would write. The grace holds it."""
    record = load(DATA / f"{scenario}.json")
    revision = record["revision"]
    stale = [
        v
        for v in record["versions"]
        if not (
            v["status"].get("sync", {}).get("revision") == revision and v["status"]["health"]["status"] == "Progressing"
        )
    ]
    index, original = next(
        (i, v)
        for i, v in enumerate(stale)
        if v["status"]["sync"].get("revision") == revision
        and v["status"]["sync"].get("status") == "Synced"
        and v["status"]["health"]["status"] == "Healthy"
    )
    # It arrives right when the sync finished, as a stale Healthy would.
    first_healthy = {**original, "arrived": original["status"]["operationState"]["finishedAt"].replace("Z", "+00:00")}
    verdicts = replay(record, [*stale[:index], first_healthy])
    assert verdicts[-1].state == "waiting" and "letting health settle" in verdicts[-1].message, verdicts[-1]
