"""The migrated-database snapshot (sandbox/prefect_server.py): the first real server of a Prefect install
leaves it, the next starts from a copy, and the copy is a working server holding nothing of the first one's
data. Each test starts real ``prefect server`` processes in a cache of its own."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from sandbox.prefect_server import PrefectServer, template_dir

pytestmark = pytest.mark.prefect


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PROMOTE_PREFECT_DB_TEMPLATE", raising=False)
    return tmp_path / "cache"


def test_the_first_server_leaves_a_snapshot_the_next_starts_from(tmp_path: Path, cache: Path) -> None:
    template = template_dir()
    assert template is not None and template.parent == cache / "gitops-promote"
    assert not template.exists()

    with PrefectServer(home=tmp_path / "first") as first:
        assert not first.from_template
        assert (template / "prefect.db").is_file(), "the first start should have saved the snapshot"
        # Data written after the snapshot must not reach the next server.
        created = httpx.post(f"{first.api_url}/variables/", json={"name": "only_in_first", "value": "x"}, timeout=30)
        assert created.status_code == 201, created.text[:300]

    with PrefectServer(home=tmp_path / "second") as second:
        assert second.from_template
        api = second.api_url
        assert httpx.get(f"{api}/variables/name/only_in_first", timeout=30).status_code == 404
        # Block registration was skipped on this start: the snapshot's block types must be there.
        secret = httpx.get(f"{api}/block_types/slug/secret", timeout=30)
        assert secret.status_code == 200, secret.text[:300]
        # And the copy is a working database, not a read-only one.
        created = httpx.post(f"{api}/variables/", json={"name": "in_second", "value": "y"}, timeout=30)
        assert created.status_code == 201, created.text[:300]
    assert (tmp_path / "second" / "prefect.db").stat().st_ino != (template / "prefect.db").stat().st_ino


def test_turned_off_no_snapshot_is_made(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMOTE_PREFECT_DB_TEMPLATE", "0")
    assert template_dir() is None
    with PrefectServer(home=tmp_path / "home") as server:
        assert not server.from_template
    assert not (cache / "gitops-promote").exists()
