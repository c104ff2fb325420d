"""The nightly's delivery-metrics artifact never fails the nightly: a pipeline that cannot be measured gets a
line saying why, and an artifact that cannot be written is a warning. (The artifact a real nightly writes is
read back from the Prefect server in test_flows.test_nightly_one_failure_does_not_stop_the_others.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import nightly


def test_an_unmeasurable_pipeline_is_a_line_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: dict[str, str] = {}

    def keep(key: str, markdown: str, description: str) -> None:
        written[key] = markdown

    monkeypatch.setattr(nightly, "create_markdown_artifact", keep)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    warnings: list[str] = []
    nightly.write_metrics_artifact([str(broken)], warnings.append)
    assert warnings == []
    assert f"- {broken}: not measured: " in written["delivery-metrics"], written
    assert "| (all pipelines) |" not in written["delivery-metrics"]  # nothing measured, nothing pooled


def test_an_artifact_that_cannot_be_written_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: object) -> None:
        raise RuntimeError("the API is down")

    monkeypatch.setattr(nightly, "create_markdown_artifact", refuse)
    warnings: list[str] = []
    nightly.write_metrics_artifact([], warnings.append)
    assert warnings == ["could not write the delivery-metrics artifact: the API is down"]
