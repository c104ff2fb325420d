"""Pipeline roots (pipeline/paths.py): a flow run's pipeline_file and pipelines_dir name files under them only,
whatever ``..`` or symlinks say; a file that is not a pipeline is refused without repeating it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.load import PipelineError, load_pipeline
from pipeline.paths import ROOTS_ENV, configured_roots, confine


def test_paths_inside_the_roots_are_allowed_and_resolved(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    (root / "team").mkdir(parents=True)
    (root / "team" / "shop.yaml").write_text("name: shop\n")
    assert confine(root / "team" / ".." / "team" / "shop.yaml", [root]) == (root / "team" / "shop.yaml").resolve()
    assert confine(root, [root]) == root.resolve()


@pytest.mark.parametrize("target", ["../secret.yaml", "/etc/hostname", "team/../../secret.yaml"])
def test_paths_outside_the_roots_are_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "deployments"
    (root / "team").mkdir(parents=True)
    (tmp_path / "secret.yaml").write_text("password: hunter2\n")
    path = target if target.startswith("/") else str(root / target)
    with pytest.raises(PipelineError, match="outside the pipeline roots") as caught:
        confine(path, [root])
    assert ROOTS_ENV in str(caught.value)


def test_a_symlink_out_of_the_roots_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "deployments"
    root.mkdir()
    (tmp_path / "secret.yaml").write_text("password: hunter2\n")
    (root / "shop.yaml").symlink_to(tmp_path / "secret.yaml")
    with pytest.raises(PipelineError, match="outside the pipeline roots"):
        confine(root / "shop.yaml", [root])


def test_roots_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ROOTS_ENV, f"{tmp_path / 'a'}:{tmp_path / 'b'}:")
    assert configured_roots() == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]
    monkeypatch.delenv(ROOTS_ENV)
    assert configured_roots() is None


@pytest.mark.parametrize(
    "content",
    [
        "root:$6$HASHED-SECRET-4711:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
        "api_key: HASHED-SECRET-4711\n",
        "ok: 1\n\tbad: HASHED-SECRET-4711\n",  # a YAML error quotes the line it failed on
    ],
)
def test_a_file_that_is_not_a_pipeline_is_not_repeated(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    assert "HASHED-SECRET-4711" not in str(caught.value)
