"""The Flux readiness rules against what the real controllers wrote: every version of a Kustomization that
Flux v1.9.6 wrote during a verification in tests/real/test_flux_verification.py, recorded into tests/data/flux/
(PROMOTE_RECORD_FLUX_FIXTURES=1), replayed here through ``judge_kustomization`` in order. The real-controller
tests and these table tests judge the same statuses, so both tiers agree.

For each recording: no version before the decisive one gives a verdict (all wait), and the decisive one gives
the recorded outcome; the previous revision's Ready=True never passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rules.readiness import flux_revision_matches, judge_kustomization

DATA = Path(__file__).resolve().parent.parent / "data" / "flux"
RECORDINGS = sorted(DATA.glob("*.json"))
# The scenarios the real-controller tests record; each must be here (record them again after changing them).
EXPECTED = {"wait-true-rollout", "wait-false-applied", "health-checks", "health-check-failed", "build-failed"}


def load(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def test_every_scenario_is_recorded() -> None:
    assert {path.stem for path in RECORDINGS} == EXPECTED, (
        "tests/data/flux/ must hold one recording per scenario: run "
        "PROMOTE_RECORD_FLUX_FIXTURES=1 hack/test -m real_controllers tests/real/test_flux_verification.py"
    )


def replay(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The verdict on each recorded version, as verification sees them after asking Flux to reconcile: the
    token is the one on the versions after our request (the last one written)."""
    versions = record["versions"]
    tokens = [v["metadata"]["annotations"].get("reconcile.fluxcd.io/requestedAt") for v in versions]
    token = next((t for t in reversed(tokens) if t), None)
    verdicts: list[tuple[str, str]] = []
    for version in versions:
        verdict = judge_kustomization(version, record["revision"], requested_at=token)
        verdicts.append((verdict.state, verdict.message))
    return verdicts


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_recorded_flux_statuses(path: Path) -> None:
    record = load(path)
    verdicts = replay(record)
    decided = [i for i, (state, _) in enumerate(verdicts) if state != "waiting"]
    assert decided, f"no recorded version decides; verdicts: {verdicts}"
    first = decided[0]
    state, message = verdicts[first]
    assert (state, record["expect_message"] in message) == (record["expect"], True), verdicts
    # Ready=True at the previous revision (the versions before our commit was applied) never passed.
    for version, (state, _) in zip(record["versions"], verdicts, strict=True):
        applied = (version.get("status") or {}).get("lastAppliedRevision")
        if flux_revision_matches(applied, record["previous"]) and state == "ready":
            pytest.fail(f"passed on the previous revision's status: {version['status']}")


@pytest.mark.parametrize("path", [p for p in RECORDINGS if load(p)["expect"] == "failed"], ids=lambda p: p.stem)
def test_recorded_failures_beside_reconciling_fail_fast(path: Path) -> None:
    """What the issue was: real Flux writes a failed attempt as Ready=False beside Reconciling=True
    (ProgressingWithRetry), never Stalled. The recording shows that shape, and the rules fail on it."""
    record = load(path)
    shapes = []
    for version in record["versions"]:
        conditions = {c["type"]: c for c in (version.get("status") or {}).get("conditions") or []}
        shapes.append(
            (
                (conditions.get("Ready") or {}).get("reason"),
                (conditions.get("Reconciling") or {}).get("status"),
                (conditions.get("Reconciling") or {}).get("reason"),
                "Stalled" in conditions,
            )
        )
    assert any(
        ready == record["expect_message"] and reconciling == "True" and reason == "ProgressingWithRetry"
        for ready, reconciling, reason, _ in shapes
    ), shapes
    assert not any(stalled for *_, stalled in shapes), shapes
