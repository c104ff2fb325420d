"""The GitOps repository: a cached clone, refs, idempotent annotated tags, commits pushed with retry, merges.

Credentials reach Git only through the environment of the ``git`` child process and a GIT_ASKPASS helper
that reads them from there, so a token never appears in a remote URL, in process arguments, in logs or in
exception text (messages are also scrubbed, in case a server echoes something back).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Concatenate, ParamSpec, TypeVar

import git

from tasks.errors import PromoteError, TransientError
from tasks.refnames import is_full_sha, is_valid_branch_name, is_valid_tag_name

P = ParamSpec("P")
R = TypeVar("R")

_ASKPASS = """#!/bin/sh
# Answers git's credential prompts from the environment; holds no secret itself.
case "$1" in
  Username*) printf '%s\\n' "$PROMOTE_GIT_USERNAME" ;;
  *) printf '%s\\n' "$PROMOTE_GIT_PASSWORD" ;;
esac
"""


class GitError(PromoteError, RuntimeError):
    """A Git operation failed; the message names the repository and the operation, never a secret."""


class TransientGitError(GitError, TransientError):
    """The Git host could not be reached or answered 5xx: the same command may work on a retry."""


# git's own wording for network trouble (transport, DNS, HTTP 5xx): only here, where git's stderr is read.
_NETWORK_HINTS = (
    "Could not resolve host",
    "Connection refused",
    "Connection reset",
    "timed out",
    "early EOF",
    "The requested URL returned error: 5",
    "RPC failed",
    "unable to access",
)


class TagConflictError(GitError):
    """The tag exists at another commit: tags are never moved."""


class MergeConflictError(GitError):
    """The promotion merge does not apply cleanly; nothing was pushed."""


class PushRejectedError(GitError):
    """The remote kept moving for every attempt."""


@dataclass(frozen=True)
class GitAuth:
    """HTTP(S) credentials: a username and a token. ``repr`` hides the token."""

    username: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class Author:
    name: str = "gitops-promote"
    email: str = "gitops-promote@localhost"


@dataclass(frozen=True)
class LogEntry:
    sha: str
    subject: str
    message: str


@dataclass(frozen=True)
class TagResult:
    tag: str
    commit: str
    created: bool  # False: the tag already pointed at this commit (a re-run)


@dataclass(frozen=True)
class CommitResult:
    commit: str
    changed: bool  # False: the files already held these values; nothing was committed
    attempts: int


def validate_tag_name(tag: str) -> str:
    if not is_valid_tag_name(tag):
        raise GitError(
            f"{tag!r} is not an acceptable tag name: use letters, digits and . _ / + - "
            "(no leading '-', no '..', no trailing '.' or '/')"
        )
    return tag


def validate_ref_name(ref: str) -> str:
    """A branch, tag or commit that is safe to hand to git (never an option, never a revision expression)."""
    if is_full_sha(ref):
        return ref
    if not is_valid_branch_name(ref):
        raise GitError(f"{ref!r} is not a valid Git ref name")
    return ref


def display_url(url: str) -> str:
    """The URL as users may see it: any userinfo removed."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url)


def _exclusive(method: Callable[Concatenate[GitRepository, P], R]) -> Callable[Concatenate[GitRepository, P], R]:
    """Run a method that touches the work tree or refs under the cache's lock."""

    def wrapper(self: GitRepository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.locked():
            return method(self, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class GitRepository:
    """A local clone of ``url`` kept in ``cache_dir`` and reused (fetched, not re-cloned) across runs.

    Every method fetches first and works from the remote's state, so the cache never needs to be
    trusted; a file lock keeps two processes on the same machine out of each other's work tree.
    """

    def __init__(
        self,
        url: str,
        cache_dir: str | Path,
        *,
        auth: GitAuth | None = None,
        author: Author = Author(),
        push_attempts: int = 5,
    ) -> None:
        if url.startswith("-"):
            raise GitError("a repository URL may not start with '-'")
        self.url = url
        self.auth = auth
        self.author = author
        self.push_attempts = push_attempts
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = Path(cache_dir).expanduser() / f"repo-{key}"
        self._repo: git.Repo | None = None
        self._thread_lock = threading.RLock()
        self._notes_cache: dict[str, tuple[str, dict[str, str]]] = {}
        self._lookup_lock = threading.Lock()
        self._lock_depth = 0
        self._lock_handle: IO[str] | None = None

    def __repr__(self) -> str:
        return f"GitRepository({display_url(self.url)!r})"

    # --- plumbing ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": self.author.name,
            "GIT_AUTHOR_EMAIL": self.author.email,
            "GIT_COMMITTER_NAME": self.author.name,
            "GIT_COMMITTER_EMAIL": self.author.email,
        }
        if self.auth is not None:
            env |= {
                "GIT_ASKPASS": str(self._askpass()),
                "PROMOTE_GIT_USERNAME": self.auth.username,
                "PROMOTE_GIT_PASSWORD": self.auth.token,
            }
        return env

    def _askpass(self) -> Path:
        script = self.path.parent / "git-askpass.sh"
        if not script.exists():
            script.parent.mkdir(parents=True, exist_ok=True)
            tmp = script.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_ASKPASS)
            tmp.chmod(stat.S_IRWXU)
            tmp.replace(script)
        return script

    def _scrub(self, text: str) -> str:
        text = text.replace(self.url, display_url(self.url))
        if self.auth is not None and self.auth.token:
            text = text.replace(self.auth.token, "***")
        return text

    def _git(self, *args: str) -> str:
        repo = self._open()
        try:
            with repo.git.custom_environment(**self._env()):
                return str(repo.git.execute(["git", *args], with_extended_output=False))
        except git.GitCommandError as exc:
            stderr = self._scrub(str(exc.stderr or "").strip().removeprefix("stderr: ").strip("'\n "))
            error = TransientGitError if any(hint in stderr for hint in _NETWORK_HINTS) else GitError
            raise error(f"git {args[0]} failed in {display_url(self.url)}: {stderr}") from None

    def _open(self) -> git.Repo:
        if self._repo is None:
            if (self.path / ".git").is_dir():
                self._repo = git.Repo(self.path)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._repo = git.Repo.init(self.path)
                self._repo.git.execute(["git", "remote", "add", "origin", self.url])
        return self._repo

    @contextlib.contextmanager
    def locked(self) -> Iterator[GitRepository]:
        """Hold the cache's lock: one writer per machine and repository. Re-entrant within this object."""
        with self._thread_lock:
            if self._lock_depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_handle = (self.path.parent / f"{self.path.name}.lock").open("w")
                fcntl.flock(self._lock_handle, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_handle is not None:
                    fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
                    self._lock_handle.close()
                    self._lock_handle = None

    @_exclusive
    def fetch(self) -> None:
        """Bring the cache up to date with the remote (branches, tags, promotion notes)."""
        self._open()
        self._git(
            "fetch",
            "--prune",
            "--prune-tags",
            "--force",
            "--tags",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/notes/*:refs/notes/*",
        )

    # --- reading ----------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """The commit a branch, tag or commit id names, as the remote has it."""
        validate_ref_name(ref)
        candidates = (f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref)
        if is_full_sha(ref):  # a commit id: look it up first, not as a branch and a tag (2 git runs)
            candidates = (ref, *candidates[:2])
        for candidate in candidates:
            if (commit := self._commit_of(candidate)) is not None:
                return commit
        raise GitError(f"{ref!r} is not a branch, tag or commit of {display_url(self.url)}")

    def _commit_of(self, rev: str) -> str | None:
        """The commit ``rev`` names, or None. Asks one long-lived ``git cat-file --batch-check`` (it reads refs
        and objects afresh on each question, so fetches and gc are seen) instead of starting a ``git rev-parse``
        per lookup: a promotion resolves a dozen names, up to three lookups each."""
        with self._lookup_lock:  # one question and answer at a time on the shared pipe
            try:
                found = self._open().git.get_object_header(f"{rev}^{{commit}}")[0]
            except ValueError:  # missing or ambiguous, as rev-parse --verify would refuse it
                return None
        return found.decode("ascii") if isinstance(found, bytes) else str(found)

    def tags(self) -> list[str]:
        out = self._git("tag", "--list")
        return [line for line in out.splitlines() if line]

    def remote_tag_commit(self, tag: str) -> str | None:
        """The commit the remote's tag points at (peeled), or None; asks the remote, not the cache."""
        validate_tag_name(tag)
        out = self._git("ls-remote", "--tags", "origin", f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}")
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            refs[name] = sha
        return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")

    def tag_message(self, tag: str) -> str:
        validate_tag_name(tag)
        return self._git("tag", "--list", "--format=%(contents)", "--end-of-options", tag).strip()

    def read_file(self, ref: str, path: str) -> str:
        commit = self.resolve(ref)
        return self._git("show", f"{commit}:{path}")

    def list_files(self, ref: str, path: str) -> list[str]:
        """Repository-relative paths of the files under ``path`` at ``ref``."""
        commit = self.resolve(ref)
        out = self._git("ls-tree", "-r", "--name-only", "--full-tree", commit, "--", path)
        return [line for line in out.splitlines() if line]

    def log(
        self,
        since: str | None,
        until: str,
        *,
        merges: bool = True,
        limit: int | None = None,
        paths: Sequence[str] = (),
    ) -> list[LogEntry]:
        """Commits reachable from ``until`` but not from ``since``, newest first (only those touching
        ``paths``, if given)."""
        spec = self.resolve(until) if since is None else f"{self.resolve(since)}..{self.resolve(until)}"
        options = ([] if merges else ["--no-merges"]) + ([f"--max-count={limit}"] if limit else [])
        out = self._git("log", *options, "--format=%H%x1f%s%x1f%B%x1e", spec, "--", *paths)
        entries = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\x1f")
            if len(fields) == 3:
                entries.append(LogEntry(sha=fields[0], subject=fields[1], message=fields[2]))
        return entries

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        try:
            self._git("merge-base", "--is-ancestor", ancestor, descendant)
        except GitError:
            return False
        return True

    # --- tags -------------------------------------------------------------------------------------

    @_exclusive
    def create_tag(self, tag: str, commit: str, message: str) -> TagResult:
        """Create and push an annotated tag at ``commit``; a no-op if the remote already has it there.

        A tag at another commit is a :class:`TagConflictError` and nothing is pushed: tags are never
        moved, because Argo CD and people already rely on what they point at.
        """
        validate_tag_name(tag)
        if not is_full_sha(commit):
            raise GitError(f"{commit!r} is not a full commit id")
        existing = self.remote_tag_commit(tag)
        if existing is not None:
            return self._existing_tag(tag, commit, existing)
        self._git("tag", "--force", "--annotate", f"--message={message}", tag, commit)
        try:
            self._git("push", "origin", f"refs/tags/{tag}:refs/tags/{tag}")
        except GitError:
            # Someone may have pushed the same tag in between: decide on what the remote now holds.
            existing = self.remote_tag_commit(tag)
            if existing is None:
                self._git("tag", "--delete", tag)
                raise
            return self._existing_tag(tag, commit, existing)
        return TagResult(tag=tag, commit=commit, created=True)

    def _existing_tag(self, tag: str, commit: str, existing: str) -> TagResult:
        if existing != commit:
            raise TagConflictError(
                f"tag {tag} already exists in {display_url(self.url)} at {existing[:12]}, not at {commit[:12]}; "
                "tags are never moved: choose another version, or delete the tag on purpose first"
            )
        return TagResult(tag=tag, commit=commit, created=False)

    # --- notes (promotion evidence) ---------------------------------------------------------------

    def read_note(self, commit: str, notes_ref: str) -> str | None:
        try:
            return self._git("notes", f"--ref={notes_ref}", "show", commit)
        except GitError:
            return None

    @_exclusive
    def all_notes(self, notes_ref: str) -> dict[str, str]:
        """Every note under ``refs/notes/<notes_ref>``: annotated object -> note text. Read through one
        persistent ``cat-file --batch`` and cached until the notes ref moves."""
        try:
            tip = self._git("rev-parse", "--verify", "--quiet", f"refs/notes/{notes_ref}")
        except GitError:
            return {}
        cached = self._notes_cache.get(notes_ref)
        if cached is not None and cached[0] == tip:
            return dict(cached[1])
        repo = self._open()
        notes: dict[str, str] = {}
        for line in self._git("notes", f"--ref={notes_ref}", "list").splitlines():
            blob, _, annotated = line.partition(" ")
            if blob and annotated:
                notes[annotated] = repo.git.get_object_data(blob)[3].decode("utf-8").removesuffix("\n")
        self._notes_cache[notes_ref] = (tip, notes)
        return dict(notes)

    def parent(self, commit: str) -> str:
        """The first parent of ``commit``."""
        return self._git("rev-parse", "--verify", "--end-of-options", f"{self.resolve(commit)}^1")

    def merge_of(self, branch: str, commit: str) -> str | None:
        """The newest merge commit on ``branch`` whose merged-in (second) parent is ``commit``."""
        out = self._git("log", "--merges", "--first-parent", "--format=%H %P", self.resolve(branch))
        for line in out.splitlines():
            sha, *parents = line.split()
            if len(parents) >= 2 and parents[1] == commit:
                return sha
        return None

    @_exclusive
    def update_note(self, commit: str, notes_ref: str, update: Callable[[str | None], str]) -> str:
        """Rewrite the note on ``commit`` with ``update(old)`` and push it, retrying if the notes moved."""
        for attempt in range(1, self.push_attempts + 1):
            self.fetch()
            old = self.read_note(commit, notes_ref)
            new = update(old)
            if new == old:
                return new
            self._git("notes", f"--ref={notes_ref}", "add", "--force", f"--message={new}", commit)
            try:
                self._git("push", "origin", f"refs/notes/{notes_ref}:refs/notes/{notes_ref}")
                return new
            except GitError as exc:
                if not _is_rejection(exc) or attempt == self.push_attempts:
                    raise
                _backoff(attempt)
        raise AssertionError("unreachable")

    # --- commits ----------------------------------------------------------------------------------

    def _checkout_remote_branch(self, branch: str) -> None:
        validate_ref_name(branch)
        self._git("checkout", "--force", "-B", branch, f"refs/remotes/origin/{branch}")
        self._git("clean", "-fdx")

    @_exclusive
    def commit_and_push(
        self,
        branch: str,
        edit: Callable[[Path], Sequence[str]],
        message: str | Callable[[], str],
    ) -> CommitResult:
        """Apply ``edit`` to a fresh checkout of ``branch``, commit what changed and push it.

        ``edit`` receives the work tree and returns the repository-relative paths it wrote. If the remote
        moved meanwhile the push is rejected; the edit is then applied again on the new tip (our change is
        a value, so re-applying it is the rebase) up to ``push_attempts`` times, with jittered backoff.
        Nothing is committed when the files already hold the values (a re-run). ``message`` may be a
        callable, evaluated after the edit (so it can name what the edit found).
        """
        for attempt in range(1, self.push_attempts + 1):
            self.fetch()
            self._checkout_remote_branch(branch)
            paths = list(edit(self.path))
            if not paths or not self._git("status", "--porcelain", "--", *paths):
                return CommitResult(commit=self.resolve(branch), changed=False, attempts=attempt)
            self._git("add", "--", *paths)
            text = message() if callable(message) else message
            self._git("commit", "--no-verify", f"--message={text}")
            if (pushed := self._push_head(branch, attempt)) is not None:
                return pushed
        raise AssertionError("unreachable")

    @_exclusive
    def restore_tree(self, branch: str, commit: str, message: str) -> CommitResult:
        """Commit, on top of ``branch``, the tree ``commit`` had, and push: a rollback that keeps history and
        works whatever came in between (merges, re-applied reverts). A no-op when the tree is already that."""
        target = self.resolve(commit)
        for attempt in range(1, self.push_attempts + 1):
            self.fetch()
            self._checkout_remote_branch(branch)
            self._git("read-tree", "-u", "--reset", target)
            if not self._git("diff", "--cached", "--name-only"):
                return CommitResult(commit=self._git("rev-parse", "HEAD"), changed=False, attempts=attempt)
            self._git("commit", "--no-verify", f"--message={message}")
            if (pushed := self._push_head(branch, attempt)) is not None:
                return pushed
        raise AssertionError("unreachable")

    def _push_head(self, branch: str, attempt: int) -> CommitResult | None:
        """Push HEAD to ``branch``: the result, or None when the remote moved and another attempt is left."""
        head = self._git("rev-parse", "HEAD")
        try:
            self._git("push", "origin", f"HEAD:refs/heads/{branch}")
            return CommitResult(commit=head, changed=True, attempts=attempt)
        except GitError as exc:
            if not _is_rejection(exc):
                raise
            if attempt == self.push_attempts:
                raise PushRejectedError(
                    f"gave up pushing to {branch} of {display_url(self.url)} after {attempt} attempts: "
                    "the branch kept moving"
                ) from None
        _backoff(attempt)
        return None

    @_exclusive
    def merge_no_ff(
        self,
        source: str,
        target: str,
        message: str,
        *,
        commit: str | None = None,
        own_marker: str | None = None,
        undo: Sequence[str] = (),
        allow_diverged: bool = False,
    ) -> CommitResult:
        """``git merge <source> --no-ff -m <message>`` into ``target``, then push ``target``.

        ``commit`` merges that commit of ``source`` (the one verified upstream) instead of its current tip.
        Commits on ``target`` that are merges, or carry ``own_marker`` (this tool's reverts), are not
        divergence. ``undo`` lists commits of ``target`` to revert first, in the same push: the reverts of
        earlier promotions whose changes this merge brings back (git would otherwise leave them out).

        Already merged (the source tip is in the target): a no-op. A target with commits the source does not
        have has diverged (someone changed production directly): refused unless ``allow_diverged``. A
        conflict aborts the merge; nothing is pushed in either case.
        """
        validate_ref_name(source)
        for attempt in range(1, self.push_attempts + 1):
            self.fetch()
            source_tip = self.resolve(source)
            if commit is not None:
                if not self.is_ancestor(commit, source_tip):
                    raise GitError(f"{commit[:12]} is not on {source} of {display_url(self.url)}")
                source_tip = self.resolve(commit)
            self._checkout_remote_branch(target)
            target_tip = self._git("rev-parse", "HEAD")
            if self.is_ancestor(source_tip, target_tip) and not undo:
                return CommitResult(commit=target_tip, changed=False, attempts=attempt)
            only_target = [
                entry
                for entry in self.log(source_tip, target_tip, merges=False)
                if own_marker is None or own_marker not in entry.message
            ]
            if not allow_diverged and only_target:
                listing = ", ".join(f"{entry.sha[:12]} {entry.subject}" for entry in only_target[:5])
                raise GitError(
                    f"{target} has diverged from {source} in {display_url(self.url)}: it has "
                    f"{len(only_target)} commit(s) that {source} does not ({listing}); bring them into {source} "
                    "first, or allow diverged merges for this environment"
                )
            for revert in undo:
                note = f"\n\n{own_marker}\n" if own_marker else "\n"
                try:
                    self._git("revert", "--no-edit", "--no-commit", revert)
                    self._git(
                        "commit",
                        "--no-verify",
                        f"--message=Re-apply what {revert[:12]} rolled back\n\nThis reverts commit {revert}.{note}",
                    )
                except GitError:
                    with contextlib.suppress(GitError):
                        self._git("revert", "--abort")
                    raise MergeConflictError(
                        f"re-applying the changes that {revert[:12]} rolled back on {target} of "
                        f"{display_url(self.url)} conflicts; resolve it in Git, nothing was pushed"
                    ) from None
            try:
                self._git("merge", "--no-ff", f"--message={message}", source_tip)
            except GitError:
                conflicted = self._git("diff", "--name-only", "--diff-filter=U")
                with contextlib.suppress(GitError):
                    self._git("merge", "--abort")
                raise MergeConflictError(
                    f"merging {source} into {target} in {display_url(self.url)} conflicts in: "
                    f"{', '.join(conflicted.split()) or 'unknown files'}; resolve it in Git, nothing was pushed"
                ) from None
            if (pushed := self._push_head(target, attempt)) is not None:
                return pushed
        raise AssertionError("unreachable")


def _is_rejection(exc: GitError) -> bool:
    """A push refused because the remote moved (as opposed to auth or network failures)."""
    text = str(exc)
    return any(
        mark in text
        for mark in (
            "[rejected]",
            "non-fast-forward",
            "fetch first",
            "stale info",
            "failed to update ref",
            "cannot lock ref",
        )
    )


def _backoff(attempt: int) -> None:
    # Jitter keeps two writers that collided once from colliding again in lockstep.
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))  # noqa: S311
