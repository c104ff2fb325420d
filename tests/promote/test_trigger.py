"""The CI trigger's idempotency key: a retried step finds its run; different requests get runs of their own."""

from __future__ import annotations

import pytest

from promote.trigger import default_idempotency_key


@pytest.fixture(autouse=True)
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "CI_PIPELINE_ID", "CI_JOB_ID"):
        monkeypatch.delenv(name, raising=False)


def test_outside_ci_there_is_no_key() -> None:
    assert default_idempotency_key("promote-rc/default", {"pipeline_file": "deployments/shop.yaml"}) is None


def test_same_ci_run_and_request_same_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "4711")
    shop = default_idempotency_key("promote-rc/default", {"pipeline_file": "deployments/shop.yaml", "bump": "minor"})
    again = default_idempotency_key("promote-rc/default", {"bump": "minor", "pipeline_file": "deployments/shop.yaml"})
    assert shop == again and shop is not None and shop.startswith("github-4711-1-")


def test_other_pipelines_deployments_and_attempts_get_other_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_RUN_ID", "4711")
    shop = default_idempotency_key("promote-production/default", {"pipeline_file": "deployments/shop.yaml"})
    keys = {
        shop,
        default_idempotency_key("promote-production/default", {"pipeline_file": "deployments/web.yaml"}),
        default_idempotency_key("promote-production/eu", {"pipeline_file": "deployments/shop.yaml"}),
        default_idempotency_key("promote-production/default", {"pipeline_file": "deployments/shop.yaml", "rc": "x"}),
    }
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")  # a re-run of the workflow promotes again
    keys.add(default_idempotency_key("promote-production/default", {"pipeline_file": "deployments/shop.yaml"}))
    assert len(keys) == 5 and None not in keys


def test_gitlab_pipeline_and_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_PIPELINE_ID", "99")
    monkeypatch.setenv("CI_JOB_ID", "7")
    key = default_idempotency_key("nightly/default", {})
    assert key is not None and key.startswith("gitlab-99-7-")
