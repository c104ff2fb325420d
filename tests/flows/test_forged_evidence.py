"""Forged evidence against the real flows: notes that someone with push access to ``refs/notes/promote`` wrote by
hand (plain git, pushed to the real bare origin) neither skip the approval gate nor promote an unverified rc,
once the pipeline trusts only its own signing key. Real Prefect server, real Git, the real kube-apiserver."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from pipeline.load import load_pipeline
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tasks.connections import open_repository
from tasks.evidence import Record
from tests.conftest import unique

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

KEY_ENV = "PROMOTE_TEST_EVIDENCE_KEY"


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    """The workers' evidence key (by reference: an environment variable)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv(KEY_ENV, private)
    return key


def signed_app(world: SandboxWorld, name: str, key: Ed25519PrivateKey, **kwargs: Any) -> SandboxApp:
    app = world.create_app(unique(name), **kwargs)
    pipeline = yaml.safe_load(app.pipeline_file.read_text())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pipeline["evidence"] = {"trusted_keys": [public.decode() + " promote-bot"], "signing_key": {"env": KEY_ENV}}
    app.pipeline_file.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    deadline = time.monotonic() + 300  # the simulated Argo CD first rolls out v1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    app.commit_change("feature: faster checkout")
    return app


def forge(app: SandboxApp, tmp_path: Path, commit: str, *records: Record) -> None:
    """Mallory clones the origin, writes a note by hand and pushes the notes ref."""
    clone = tmp_path / f"mallory-{time.monotonic_ns()}"
    git(tmp_path, "clone", "--quiet", str(app.origin), str(clone))
    if git(clone, "ls-remote", "origin", "refs/notes/promote"):
        git(clone, "fetch", "--quiet", "origin", "+refs/notes/promote:refs/notes/promote")
    old = git(clone, "notes", "--ref=promote", "show", commit) if _has_note(clone, commit) else ""
    body: dict[str, Any] = json.loads(old) if old else {"schema": 1, "records": []}
    body["records"] += [asdict(r) for r in records]
    git(clone, "notes", "--ref=promote", "add", "--force", "-m", json.dumps(body), commit)
    git(clone, "push", "--quiet", "--force", "origin", "refs/notes/promote:refs/notes/promote")


def _has_note(clone: Path, commit: str) -> bool:
    return commit in git(clone, "notes", "--ref=promote", "list")


def test_a_forged_approval_does_not_skip_the_gate(
    world: SandboxWorld, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    app = signed_app(world, "forged-ok", signing_key, approval_timeout=2)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    rc_commit = git(app.origin, "rev-parse", "v1.0.1-rc1^{commit}")
    # An approval of today's rc and a pre-approval of the next one, as the gate would have written them.
    forge(
        app,
        tmp_path,
        rc_commit,
        Record("approved", app.name, "production", "v1.0.1-rc1", rc_commit, by="mallory", reason="lgtm"),
        Record("approved", app.name, "production", "v1.0.2-rc1", rc_commit, by="mallory", reason="lgtm"),
    )
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    assert "approval timed out after 2s" in str(state.result(raise_on_failure=False))  # the gate asked a person
    assert "v1.0.1" not in git(app.origin, "tag", "--list").splitlines()
    # promote status names what it ignored.
    repo = open_repository(load_pipeline(app.pipeline_file))
    repo.fetch()
    ignored = [(i.reason, i.record.by if i.record else "") for i in evidence.ignored_records(repo)]
    assert ("unsigned", "mallory") in ignored


def test_a_forged_verification_does_not_promote_an_unverified_rc(
    world: SandboxWorld, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    app = signed_app(world, "forged-verified", signing_key, approval=False)
    head = git(app.origin, "rev-parse", "main")
    git(app.origin, "tag", "-a", "v1.0.1-rc1", "-m", "hand-made rc", head)
    forge(app, tmp_path, head, Record("verified", app.name, "staging", "v1.0.1-rc1", head, by="mallory"))
    before = git(app.origin, "for-each-ref", "refs/tags", "refs/heads")
    state = promote_production(pipeline_file=str(app.pipeline_file), rc="v1.0.1-rc1", return_state=True)
    assert state.is_failed()
    assert "v1.0.1-rc1 has no record of a passed verification in staging" in (state.message or "")
    assert git(app.origin, "for-each-ref", "refs/tags", "refs/heads") == before  # nothing tagged, nothing written


def test_the_tools_own_records_are_signed_and_count(
    world: SandboxWorld, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    app = signed_app(world, "signed", signing_key, approval=False)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_completed(), prod.message
    repo = open_repository(load_pipeline(app.pipeline_file))
    repo.fetch()
    records = evidence.all_records(repo)
    assert {(r.kind, r.environment) for r in records} >= {("verified", "staging"), ("promoted", "production")}
    assert all(r.sig.startswith("ed25519:") for r in records)
    assert evidence.ignored_records(repo) == []


def test_an_approval_by_someone_the_gate_no_longer_allows_does_not_count(
    world: SandboxWorld, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """bob approved (the tool recorded and signed it); then the gate's approvers became [alice]: the recorded
    approval no longer lets the promotion through."""
    app = signed_app(world, "approvers", signing_key, approval_timeout=2)
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    rc_commit = git(app.origin, "rev-parse", "v1.0.1-rc1^{commit}")
    pipeline = load_pipeline(app.pipeline_file)
    repo = open_repository(pipeline, signing=True)
    evidence.record(repo, Record("approved", app.name, "production", "v1.0.1-rc1", rc_commit, by="bob", reason="ok"))
    text = yaml.safe_load(app.pipeline_file.read_text())
    text["environments"][-1]["gate"]["approvers"] = ["alice"]
    app.pipeline_file.write_text(yaml.safe_dump(text, sort_keys=False))
    state = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    assert "approval timed out after 2s" in str(state.result(raise_on_failure=False))
    assert "v1.0.1" not in git(app.origin, "tag", "--list").splitlines()


def test_a_signing_key_that_is_missing_or_untrusted_fails_before_anything_changes(
    world: SandboxWorld, signing_key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = signed_app(world, "nokey", signing_key, approval=False)
    before = git(app.origin, "for-each-ref")
    monkeypatch.delenv(KEY_ENV)
    state = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    assert f"environment variable {KEY_ENV} is not set or empty" in (state.message or "")
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    monkeypatch.setenv(KEY_ENV, other.decode())
    state = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert state.is_failed()
    assert "is not one of evidence.trusted_keys" in (state.message or "")
    assert git(app.origin, "for-each-ref") == before
