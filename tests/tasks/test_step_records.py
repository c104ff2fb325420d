"""A verification's evidence is written in the verification's own step (tasks/steps.py): a record that cannot be
written raises its own error (never a failed verification: tests/flows/test_flows.py shows production is not
rolled back for it), retried or not as the Git remote answers, against a real Git server over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.load import load_pipeline
from rules.errors import is_transient
from tasks import evidence
from tasks.connections import Connections
from tasks.gitrepo import GitAuth, GitRepository
from tasks.steps import EvidenceNotRecordedError, TransientEvidenceError, _write_record
from tests.support.gitserver import Outage, make_origin, run_git, serve_git_over_http

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_the_remote_cannot_take_now_is_retried_and_one_it_refuses_is_not(tmp_path: Path) -> None:
    bare, seed = make_origin(tmp_path, {"README.md": "hello\n"})
    commit = run_git(seed, "rev-parse", "HEAD")
    pipeline = load_pipeline(str(ROOT / "deployments" / "examples" / "tags.yaml"))
    rec = evidence.Record("verified", pipeline.name, "staging", "v1.0.1-rc1", commit)
    outage = Outage()
    with serve_git_over_http(tmp_path, "ci", "token-1234", outage) as base:
        url = f"{base}/{bare.name}"
        good = Connections(pipeline, GitRepository(url, tmp_path / "a", auth=GitAuth("ci", "token-1234")), print)
        good.repo.fetch()
        outage.fail_next = 1000  # the remote answers 503 for as long as this step tries
        with pytest.raises(TransientEvidenceError) as unavailable:
            _write_record(good, rec)
        assert is_transient(unavailable.value), "a remote having a bad minute: the step is tried again"
        message = str(unavailable.value)
        assert "[staging] verified, but its 'verified' record could not be written to Git" in message, message
        assert "nothing was rolled back" in message and "token-1234" not in message, message

        outage.fail_next = 0
        wrong = Connections(pipeline, GitRepository(url, tmp_path / "b", auth=GitAuth("ci", "wrong")), print)
        with pytest.raises(EvidenceNotRecordedError) as refused:
            _write_record(wrong, rec)
        assert not is_transient(refused.value), "a refusal fails the same way again: not retried"
    assert run_git(bare, "notes", "--ref=promote", "list") == ""  # nothing half-written
