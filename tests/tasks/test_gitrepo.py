"""The Git core against real repositories: a bare origin on disk, real clones, pushes, tags and a race."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tasks.gitrepo import (
    ForeignCommitError,
    GitAuth,
    GitError,
    GitRepository,
    MergeConflictError,
    TagConflictError,
    display_url,
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


def _set_value(rel: str, value: str):
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
    from rules.errors import is_transient
    from tasks.gitrepo import TransientGitError

    unreachable = GitRepository("http://127.0.0.1:9/nowhere.git", tmp_path / "cache")
    with pytest.raises(TransientGitError) as caught:
        unreachable.fetch()
    assert is_transient(caught.value)
    assert "Connection refused" in str(caught.value) or "unable to access" in str(caught.value)


def test_a_credential_helper_in_the_users_git_config_neither_stores_nor_replaces_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards issue 14 (High 1): with ``credential.helper=store`` in the user's ~/.gitconfig, an authenticated
    run saved the token to ~/.git-credentials, and a later run given another token was answered with the
    stored one. Authenticated Git now runs with helpers reset and the user's/system config shut out."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    assert run_git(tmp_path, "config", "--global", "credential.helper") == "store"  # the trap is armed
    bare, _ = make_origin(tmp_path, FILES)
    with serve_git_over_http(tmp_path, "ci", TOKEN) as base:
        url = f"{base}/{bare.name}"
        repo = GitRepository(url, tmp_path / "cache", auth=GitAuth("ci", TOKEN))
        repo.fetch()
        assert repo.create_tag("v9.9.8", repo.resolve("main"), "pushed with a helper configured").created
        assert not (home / ".git-credentials").exists()
        assert not any(TOKEN.encode() in p.read_bytes() for p in home.rglob("*") if p.is_file())
        wrong = GitRepository(url, tmp_path / "cache2", auth=GitAuth("ci", "wrong-" + TOKEN))
        with pytest.raises(GitError, match=r"git fetch failed in http://127\.0\.0\.1") as caught:
            wrong.fetch()  # the token given is the one used: no stored credential answers instead
        assert "wrong-" not in str(caught.value)


def test_a_planted_askpass_script_in_the_cache_is_never_run(tmp_path: Path) -> None:
    """Guards issue 14 (Low 14): a ``git-askpass.sh`` planted in the cache directory used to be run with the
    token in its environment. Git now gets its credentials from a helper in its environment, no file."""
    bare, _ = make_origin(tmp_path, FILES)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    marker = tmp_path / "askpass-ran"
    planted = cache / "git-askpass.sh"
    planted.write_text(
        f'#!/bin/sh\nenv > "{marker}"\n'
        'case "$1" in Username*) echo "$PROMOTE_GIT_USERNAME" ;; *) echo "$PROMOTE_GIT_PASSWORD" ;; esac\n'
    )
    planted.chmod(0o755)
    with serve_git_over_http(tmp_path, "ci", TOKEN) as base:
        repo = GitRepository(f"{base}/{bare.name}", cache, auth=GitAuth("ci", TOKEN))
        repo.fetch()
        repo.remote_tag_commit("v1.0.0")
    assert not marker.exists()


def test_the_cache_lock_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """Guards issue 14 (Low 14): the lock file was opened with truncation through a planted symlink, emptying
    its target. It is now opened with O_NOFOLLOW and without O_TRUNC, and a link is refused by name."""
    bare, _ = make_origin(tmp_path, FILES)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    repo = GitRepository(str(bare), cache)
    (cache / f"{repo.path.name}.lock").symlink_to(victim)
    with pytest.raises(GitError, match=r"lock file .*\.lock is a symlink; remove it"):
        repo.fetch()
    assert victim.read_text() == "keep me\n"


def test_the_lock_file_is_not_truncated(tmp_path: Path) -> None:
    """Guards issue 14 (Low 14): taking the lock opens the file without truncating it."""
    bare, _ = make_origin(tmp_path, FILES)
    repo = GitRepository(str(bare), tmp_path / "cache")
    repo.fetch()
    lock = repo.path.parent / f"{repo.path.name}.lock"
    lock.write_text("left here\n")
    repo.fetch()
    assert lock.read_text() == "left here\n"


def test_the_cache_directories_are_private(tmp_path: Path) -> None:
    """Guards issue 14 (Low 14): cache directories were created 0755. They are now 0700 (parents created on
    the way too), and an existing wider one is narrowed."""
    bare, _ = make_origin(tmp_path, FILES)
    cache = tmp_path / "deep" / "cache"
    repo = repo_for(bare, cache)
    for directory in (tmp_path / "deep", cache, repo.path):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    wide = tmp_path / "wide"
    wide.mkdir()
    wide.chmod(0o755)
    repo_for(bare, wide)
    assert wide.stat().st_mode & 0o777 == 0o700


def test_a_symlinked_or_foreign_cache_directory_is_refused(tmp_path: Path) -> None:
    """Guards issue 14 (Low 14): the cache directory is trusted, so it must be ours and not a link to
    somewhere else: both are refused with what to do."""
    bare, _ = make_origin(tmp_path, FILES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "linked").symlink_to(elsewhere)
    with pytest.raises(GitError, match=r"cache directory .*linked is a symlink; remove the link"):
        GitRepository(str(bare), tmp_path / "linked").fetch()
    assert list(elsewhere.iterdir()) == []
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(GitError, match=r"cache directory .*foreign belongs to another user"):
        GitRepository(str(bare), foreign).fetch()


@pytest.mark.parametrize("answer", ["silence", "trickle"])
def test_a_fetch_from_a_server_that_does_not_answer_ends_at_its_deadline(tmp_path: Path, answer: str) -> None:
    """Guards issue 14 (Medium 4): ``git fetch`` against a server that accepts and then says nothing (or
    trickles a byte at a time) waited forever. Every network command now has an overall deadline and ends
    as a TransientGitError naming the repository and the deadline."""
    from tasks.gitrepo import TransientGitError

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)
            if answer == "trickle":
                threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:  # a header that never ends
                if stop.wait(0.5):
                    return
                conn.send(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/silent.git"
    repo = GitRepository(url, tmp_path / "cache", network_timeout=2)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            repo.fetch()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=120)  # generous: the deadline is 2 s
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(timeout=30)
    for conn in held:
        conn.close()
    server.close()
    assert not worker.is_alive(), "git fetch was still waiting after 120 s"
    assert isinstance(outcome[0], TransientGitError), outcome
    assert f"git fetch of {url} did not finish within its deadline of 2 s" in str(outcome[0])
    assert elapsed < 60


@pytest.mark.parametrize("token", ["abc\ndef", "abc\rdef", "abc\x00"])
def test_a_token_with_a_line_break_is_refused_without_echoing_it(token: str) -> None:
    """Guards issue 14 (Low 14/High 1): the token goes into Git's line-based credential answer; a line break
    would end it early or add fields, so it is refused (and not shown)."""
    with pytest.raises(GitError, match="token contains a line break") as caught:
        GitAuth("ci", token)
    assert "abc" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.org/platform/gitops.git?access_token=glpat-SECRETVALUE",
        "https://git.example.org/platform/gitops.git#SECRETVALUE",
        "HTTPS://ci:SECRETVALUE@git.example.org/platform/gitops.git",
        "SSH://git:SECRETVALUE@git.example.org/platform/gitops.git",
    ],
)
def test_a_repository_url_carrying_a_token_is_refused_at_validation_and_never_shown(url: str) -> None:
    """Guards issue 14 (Low 10): a repository URL with ``?access_token=`` (or userinfo) was accepted and
    printed. Validation now refuses it, naming the token reference to use instead and not echoing the URL,
    and display_url drops query strings and fragments as well as userinfo."""
    from pipeline.load import PipelineError, parse_pipeline

    text = (
        f"name: shop\nrepository:\n  url: {url!r}\nenvironments:\n  - name: staging\n"
        "    tracks: {kind: branch, branch: staging}\n"
    )
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="pipeline.yaml")
    message = str(caught.value)
    assert "repository.url" in message and "credentials.token_env" in message, message
    assert "SECRETVALUE" not in message
    assert "SECRETVALUE" not in display_url(url)
    assert display_url(url).lower().endswith("git.example.org/platform/gitops.git")


def test_option_like_revisions_from_commit_messages_never_reach_git_as_options(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    """A branch promotion reads revisions out of commit messages ("Rolled-back-source: ..."): text like
    --output=FILE must be a revision that does not exist, not an option git acts on."""
    bare, _seed = origin
    repo = GitRepository(str(bare), tmp_path / "cache")
    repo.fetch()
    head = repo.resolve("main")
    target = tmp_path / "written-by-git"
    for hostile in (f"--output={target}", "-h", ""):
        assert repo.is_ancestor(hostile, head) is False
        assert repo.is_ancestor(head, hostile) is False
    assert not target.exists()
    assert repo.is_ancestor(head, head) is True


def test_a_token_never_goes_over_plain_http_to_another_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the registry client already refused: Basic auth over http is the token in clear text on the path."""
    from pipeline.load import parse_pipeline
    from tasks.connections import open_repository

    monkeypatch.setenv("PROMOTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GIT_TOKEN_FOR_TEST", "t" * 20)

    def pipeline(url: str) -> str:
        return (
            f"name: shop\nrepository:\n  url: {url}\n  credentials: {{token_env: GIT_TOKEN_FOR_TEST}}\n"
            "environments:\n  - name: staging\n    tracks: {kind: tag, application_file: apps/staging.yaml}\n"
        )

    with pytest.raises(GitError, match="plain http to a host other than loopback"):
        open_repository(parse_pipeline(pipeline("http://git.example.com/team/gitops.git")))
    assert open_repository(parse_pipeline(pipeline("http://127.0.0.1:3000/team/gitops.git"))) is not None
    assert open_repository(parse_pipeline(pipeline("https://git.example.com/team/gitops.git"))) is not None


MARK = "Promoted-By: gitops-promote"


def test_proposing_pushes_to_the_pull_request_branch_once_and_rebuilds_it_on_a_moved_base(
    origin: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, seed = origin
    repo = repo_for(bare, tmp_path / "cache")
    base = run_git(bare, "rev-parse", "main")
    edit = _set_value("apps/production/app.yaml", "v1.2.3")
    message = f"production -> v1.2.3\n\n{MARK}\n"
    with repo.proposing("main", "promote/app/production/v1.2.3", MARK):
        first = repo.commit_and_push("main", edit, message)
    assert first.changed
    assert run_git(bare, "rev-parse", "main") == base  # the base is not written
    assert run_git(bare, "rev-parse", "promote/app/production/v1.2.3") == first.commit
    assert run_git(bare, "rev-parse", f"{first.commit}^") == base
    with repo.proposing("main", "promote/app/production/v1.2.3", MARK):
        again = repo.commit_and_push("main", edit, message)
    assert again.changed and again.commit == first.commit  # a re-run: the same commit, nothing pushed

    moved = commit_file(seed, "apps/production/app.yaml", "targetRevision: v1.0.0  # ops\n", "ops: a comment")
    with repo.proposing("main", "promote/app/production/v1.2.3", MARK):
        rebuilt = repo.commit_and_push("main", edit, message)
    assert rebuilt.commit != first.commit
    assert run_git(bare, "rev-parse", f"{rebuilt.commit}^") == moved  # made again on the new tip
    assert run_git(bare, "show", f"{rebuilt.commit}:apps/production/app.yaml") == "targetRevision: v1.2.3"

    # Someone else's commit on the branch is never pushed over: the next rebuild is refused, naming it.
    run_git(seed, "fetch", "--quiet", "origin")
    run_git(seed, "checkout", "--quiet", "-B", "fix", "origin/promote/app/production/v1.2.3")
    (seed / "NOTES.md").write_text("review\n")
    run_git(seed, "add", "NOTES.md")
    run_git(seed, "commit", "--quiet", "-m", "review: notes")
    run_git(seed, "push", "--quiet", "origin", "HEAD:refs/heads/promote/app/production/v1.2.3")
    commit_file(seed, "other.txt", "x\n", "another change on main")
    with (
        repo.proposing("main", "promote/app/production/v1.2.3", MARK),
        pytest.raises(
            ForeignCommitError, match=r"1 commit\(s\) this tool did not write \([0-9a-f]{12} review: notes\)"
        ),
    ):
        repo.commit_and_push("main", edit, message)
    assert run_git(bare, "log", "-1", "--format=%s", "promote/app/production/v1.2.3") == "review: notes"
    # Outside the block, writes go to the base again.
    assert repo.commit_and_push("main", edit, message).changed
    assert run_git(bare, "show", "main:apps/production/app.yaml") == "targetRevision: v1.2.3"


def test_a_pull_request_branch_may_not_be_its_base(origin: tuple[Path, Path], tmp_path: Path) -> None:
    repo = repo_for(origin[0], tmp_path / "cache")
    with pytest.raises(GitError, match="cannot be the branch it merges into"), repo.proposing("main", "main", MARK):
        pass
