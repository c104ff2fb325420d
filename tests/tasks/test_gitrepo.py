"""The Git core against real repositories: a bare origin on disk, real clones, pushes, tags and a race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tasks.gitrepo import (
    GitAuth,
    GitError,
    GitRepository,
    MergeConflictError,
    TagConflictError,
    validate_tag_name,
)
from tests.support.gitserver import commit_file, make_origin, run_git, serve_git_over_http

FILES = {
    "apps/staging/app.yaml": "targetRevision: v1.0.0\n",
    "apps/production/app.yaml": "targetRevision: v1.0.0\n",
}


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path]:
    return make_origin(tmp_path, FILES, branches=("staging", "production"))


def repo_for(origin: Path, cache: Path) -> GitRepository:
    repo = GitRepository(str(origin), cache)
    repo.fetch()
    return repo


def test_cache_is_reused_and_fetched_not_recloned(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    repo = repo_for(bare, tmp_path / "cache")
    first = repo.resolve("main")
    marker = repo.path / ".git" / "promote-marker"
    marker.write_text("same clone")
    new = commit_file(seed, "README.md", "hello\n", "docs")
    again = GitRepository(str(bare), tmp_path / "cache")
    again.fetch()
    assert again.path == repo.path
    assert marker.read_text() == "same clone"  # the cache directory survived: fetched, not re-cloned
    assert again.resolve("main") == new != first


def test_resolve_branch_tag_and_commit(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    head = run_git(seed, "rev-parse", "HEAD")
    run_git(seed, "tag", "-a", "v1.0.0", "-m", "one")
    run_git(seed, "push", "--quiet", "origin", "v1.0.0")
    repo = repo_for(bare, tmp_path / "cache")
    assert repo.resolve("main") == head
    assert repo.resolve("v1.0.0") == head  # annotated tag peeled to its commit
    assert repo.resolve(head) == head
    with pytest.raises(GitError, match="'nope' is not a branch, tag or commit"):
        repo.resolve("nope")


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "main..HEAD", "a b", "HEAD@{1}", ""])
def test_refs_that_could_be_options_or_expressions_are_refused(
    origin: tuple[Path, Path], tmp_path: Path, ref: str
) -> None:
    repo = repo_for(origin[0], tmp_path / "cache")
    with pytest.raises(GitError, match="not a valid Git ref name"):
        repo.resolve(ref)


def test_annotated_tag_is_pushed_and_idempotent(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _seed = origin
    repo = repo_for(bare, tmp_path / "cache")
    head = repo.resolve("main")
    first = repo.create_tag("v1.2.3-rc1", head, "release candidate v1.2.3-rc1")
    assert first.created
    assert run_git(bare, "cat-file", "-t", "refs/tags/v1.2.3-rc1") == "tag"  # annotated, on the remote
    assert run_git(bare, "rev-parse", "refs/tags/v1.2.3-rc1^{commit}") == head
    second = GitRepository(str(bare), tmp_path / "other-cache").create_tag("v1.2.3-rc1", head, "again")
    assert not second.created  # a re-run is a no-op
    assert run_git(bare, "tag", "-l", "--format=%(contents)", "v1.2.3-rc1").strip() == "release candidate v1.2.3-rc1"


def test_same_tag_at_another_commit_is_a_hard_error_and_pushes_nothing(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, seed = origin
    repo = repo_for(bare, tmp_path / "cache")
    old = repo.resolve("main")
    repo.create_tag("v1.2.3-rc1", old, "rc")
    new = commit_file(seed, "README.md", "x\n", "change")
    repo.fetch()
    refs_before = run_git(bare, "for-each-ref")
    with pytest.raises(TagConflictError, match=r"tag v1.2.3-rc1 already exists .* at [0-9a-f]{12}, not at"):
        repo.create_tag("v1.2.3-rc1", new, "rc")
    assert run_git(bare, "for-each-ref") == refs_before
    assert run_git(bare, "rev-parse", "refs/tags/v1.2.3-rc1^{commit}") == old


@pytest.mark.parametrize("tag", ["-v1", "v1..2", "v1 2", "v1.lock", "v1/", "x@{y}"])
def test_invalid_tag_names_are_refused(tag: str) -> None:
    with pytest.raises(GitError, match="not an acceptable tag name"):
        validate_tag_name(tag)


def _set_value(rel: str, value: str):  # type: ignore[no-untyped-def]
    def edit(workdir: Path) -> list[str]:
        (workdir / rel).write_text(f"targetRevision: {value}\n")
        return [rel]

    return edit


def test_commit_and_push_changes_only_the_file_and_is_idempotent(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = origin
    repo = repo_for(bare, tmp_path / "cache")
    result = repo.commit_and_push("main", _set_value("apps/staging/app.yaml", "v1.2.3-rc1"), "staging -> v1.2.3-rc1")
    assert result.changed and result.attempts == 1
    assert run_git(bare, "show", "main:apps/staging/app.yaml") == "targetRevision: v1.2.3-rc1"
    assert run_git(bare, "log", "-1", "--format=%s", "main") == "staging -> v1.2.3-rc1"
    assert run_git(bare, "diff", "--name-only", "main~1", "main") == "apps/staging/app.yaml"
    again = repo.commit_and_push("main", _set_value("apps/staging/app.yaml", "v1.2.3-rc1"), "staging -> v1.2.3-rc1")
    assert not again.changed and again.commit == result.commit
    assert run_git(bare, "rev-list", "--count", "main") == "2"


def test_push_after_remote_moved_reapplies_on_new_tip(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    repo = repo_for(bare, tmp_path / "cache")
    moved = {"done": False}

    def edit(workdir: Path) -> list[str]:
        if not moved["done"]:
            # Someone else pushes between our checkout and our push.
            commit_file(seed, "other.txt", "theirs\n", "their change")
            moved["done"] = True
        (workdir / "apps/production/app.yaml").write_text("targetRevision: v1.2.3\n")
        return ["apps/production/app.yaml"]

    result = repo.commit_and_push("main", edit, "production -> v1.2.3")
    assert result.changed and result.attempts == 2
    assert run_git(bare, "show", "main:other.txt") == "theirs"
    assert run_git(bare, "show", "main:apps/production/app.yaml") == "targetRevision: v1.2.3"


def test_two_concurrent_writers_both_land(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = origin
    # Separate caches: two machines (or two workers) writing to the same origin at the same moment.
    writers = [GitRepository(str(bare), tmp_path / f"cache-{i}", push_attempts=8) for i in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(index: int) -> None:
        def edit(workdir: Path) -> list[str]:
            (workdir / f"env-{index}.txt").write_text(f"{index}\n")
            barrier.wait(timeout=30) if edit.first else None  # type: ignore[attr-defined]
            edit.first = False  # type: ignore[attr-defined]
            return [f"env-{index}.txt"]

        edit.first = True  # type: ignore[attr-defined]
        try:
            writers[index].commit_and_push("main", edit, f"writer {index}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    files = run_git(bare, "ls-tree", "--name-only", "main").split()
    assert {"env-0.txt", "env-1.txt"} <= set(files)
    subjects = run_git(bare, "log", "--format=%s", "main").splitlines()
    assert sorted(subjects[:2]) == ["writer 0", "writer 1"]


def test_merge_no_ff_promotes_branch(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    staged = commit_file(seed, "apps/app.yaml", "replicas: 2\n", "staging change", branch="staging")
    repo = repo_for(bare, tmp_path / "cache")
    result = repo.merge_no_ff("staging", "production", "Promote staging to production")
    assert result.changed
    parents = run_git(bare, "rev-list", "--parents", "-n", "1", "production").split()
    assert len(parents) == 3 and parents[2] == staged  # a real merge commit, --no-ff
    assert run_git(bare, "log", "-1", "--format=%s", "production") == "Promote staging to production"
    again = repo.merge_no_ff("staging", "production", "Promote staging to production")
    assert not again.changed and again.commit == result.commit


def test_merge_of_a_given_commit_rollback_and_reapply(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    production_before = run_git(bare, "rev-parse", "production")
    verified = commit_file(seed, "apps/app.yaml", "replicas: 2\n", "verified in staging", branch="staging")
    commit_file(seed, "apps/app.yaml", "replicas: 3\n", "not verified yet", branch="staging")
    repo = repo_for(bare, tmp_path / "cache")
    with pytest.raises(GitError, match=r"is not on staging"):
        repo.merge_no_ff("staging", "production", "Promote", commit=production_before[:7] + "0" * 33)
    merged = repo.merge_no_ff("staging", "production", "Promote\n\nMARK", commit=verified, own_marker="MARK")
    assert run_git(bare, "rev-list", "--parents", "-n", "1", "production").split()[2] == verified
    assert run_git(bare, "show", "production:apps/app.yaml") == "replicas: 2"
    assert repo.merge_of("production", verified) == merged.commit
    restored = repo.restore_tree("production", production_before, "Roll back\n\nMARK")
    assert restored.changed and run_git(bare, "diff", production_before, "production") == ""
    again = repo.restore_tree("production", production_before, "Roll back\n\nMARK")  # a re-run: no-op
    assert not again.changed and again.commit == restored.commit
    # Promoting the same commit again: the rollback is re-applied first (a plain merge would bring nothing),
    # and this tool's own merge and rollback on production are not divergence.
    back = repo.merge_no_ff(
        "staging", "production", "Promote\n\nMARK", commit=verified, own_marker="MARK", undo=[restored.commit]
    )
    assert back.changed and run_git(bare, "show", "production:apps/app.yaml") == "replicas: 2"
    assert "This reverts commit " + restored.commit in run_git(bare, "log", "-1", "--format=%B", "production")


def test_all_notes_and_list_files(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    commit_file(seed, "apps/a.yaml", "a: 1\n", "a")
    repo = repo_for(bare, tmp_path / "cache")
    repo.fetch()
    head = repo.resolve("main")
    assert repo.all_notes("promote") == {}
    repo.update_note(head, "promote", lambda old: "first")
    assert repo.all_notes("promote") == {head: "first"}
    assert "apps/a.yaml" in repo.list_files("main", "apps")


def test_merge_conflict_fails_clearly_and_pushes_nothing(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    commit_file(seed, "apps/app.yaml", "replicas: 2\n", "staging", branch="staging")
    prod = commit_file(seed, "apps/app.yaml", "replicas: 5\n", "prod hotfix", branch="production")
    repo = repo_for(bare, tmp_path / "cache")
    with pytest.raises(MergeConflictError, match=r"conflicts in: apps/app.yaml; .*nothing was pushed"):
        repo.merge_no_ff("staging", "production", "Promote", allow_diverged=True)
    assert run_git(bare, "rev-parse", "production") == prod


def test_diverged_target_is_refused(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, seed = origin
    commit_file(seed, "a.txt", "a\n", "staging work", branch="staging")
    prod = commit_file(seed, "b.txt", "b\n", "direct prod commit", branch="production")
    repo = repo_for(bare, tmp_path / "cache")
    with pytest.raises(GitError, match=r"production has diverged from staging .* 1 commit\(s\) .*direct prod commit"):
        repo.merge_no_ff("staging", "production", "Promote")
    assert run_git(bare, "rev-parse", "production") == prod


def test_notes_from_a_second_cache_keep_the_first_writers_note(origin: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = origin
    a = repo_for(bare, tmp_path / "a")
    b = repo_for(bare, tmp_path / "b")
    commit = a.resolve("main")
    # b's cache was fetched before a wrote: update_note must fetch again, not overwrite a's note.
    a.update_note(commit, "promote", lambda old: "\n".join(filter(None, [old, "staging ok"])))
    b.update_note(commit, "promote", lambda old: "\n".join(filter(None, [old, "production ok"])))
    assert run_git(bare, "notes", "--ref=promote", "show", commit) == "staging ok\nproduction ok"


TOKEN = "s3cr3t-token-value-1234"


def test_token_over_http_never_in_config_url_or_errors(tmp_path: Path) -> None:
    bare, _ = make_origin(tmp_path, FILES)
    with serve_git_over_http(tmp_path, "ci", TOKEN) as base:
        url = f"{base}/{bare.name}"
        repo = GitRepository(url, tmp_path / "cache", auth=GitAuth("ci", TOKEN))
        repo.fetch()
        head = repo.resolve("main")
        assert repo.create_tag("v9.9.9", head, "tagged over http").created
        assert run_git(bare, "rev-parse", "refs/tags/v9.9.9^{commit}") == head
        # The token is in no file of the cache (remote URL, config, askpass helper).
        for path in repo.path.parent.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path
        assert TOKEN not in repr(repo) and TOKEN not in repr(repo.auth)
        wrong = GitRepository(url, tmp_path / "cache2", auth=GitAuth("ci", "wrong-" + TOKEN))
        with pytest.raises(GitError) as caught:
            wrong.fetch()
        assert "wrong-" + TOKEN not in str(caught.value)
        assert "git fetch failed in http://127.0.0.1" in str(caught.value)


def test_network_failures_are_transient_at_the_git_border(tmp_path: Path) -> None:
    """gitrepo itself classifies git's failure: an unreachable host is TransientGitError (retried by the steps),
    an unknown ref a plain GitError (terminal); no other module reads git's stderr."""
    from tasks.errors import is_transient
    from tasks.gitrepo import TransientGitError

    unreachable = GitRepository("http://127.0.0.1:9/nowhere.git", tmp_path / "cache")
    with pytest.raises(TransientGitError) as caught:
        unreachable.fetch()
    assert is_transient(caught.value)
    assert "Connection refused" in str(caught.value) or "unable to access" in str(caught.value)
