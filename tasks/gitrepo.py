"""The GitOps repository: a cached clone, refs, idempotent annotated tags, commits pushed with retry, merges.

Credentials reach Git only through the environment of the ``git`` child process and a credential helper
given in that environment (``GIT_CONFIG_*``, no file) that reads them from there, so a token never appears in
a remote URL, in process arguments, in logs, in exception text (messages are also scrubbed, in case a server
echoes something back) or on disk. Authenticated Git runs with the user's and the system's Git config shut
out, so no credential helper there stores the token or answers with another one.

Every network command (fetch, push, ls-remote) has an overall deadline; the cache directory is private
(0700, ours, not a symlink) and its lock file is never followed through a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import random
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, NoReturn, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit

import git

from rules.errors import PromoteError, TransientError
from rules.refnames import is_full_sha, is_valid_branch_name, is_valid_tag_name
from rules.signatures import EvidencePolicy

P = ParamSpec("P")
R = TypeVar("R")

# A credential helper (git runs "!..." helpers with sh) that answers "get" from the child's environment and
# ignores "store" and "erase": it holds no secret and is no file anyone could replace.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; while read -r line && test -n "$line"; do :; done; '
    """printf 'username=%s\\npassword=%s\\n' "$PROMOTE_GIT_USERNAME" "$PROMOTE_GIT_PASSWORD"; }; f"""
)

# The commands that talk to the remote: each gets an overall deadline (GitRepository.network_timeout).
_NETWORK_COMMANDS = frozenset({"fetch", "push", "ls-remote"})
DEFAULT_NETWORK_TIMEOUT = 300.0
_MAX_STDERR = 1000  # git's stderr can carry what a server sent: only its tail is shown
_COMMITS_PER_LOG = 500  # commit ids per git log command line: far below any argument-length limit


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


class ForeignCommitError(GitError):
    """A pull request's branch carries a commit this tool did not write: it is never pushed over."""


@dataclass(frozen=True)
class Proposal:
    """Inside :meth:`GitRepository.proposing`: a write meant for ``base`` is made on base's tip as usual, and
    pushed to ``head`` (a pull request's branch) instead. ``own_marker`` is in every commit this tool writes."""

    base: str
    head: str
    own_marker: str


@dataclass(frozen=True)
class GitAuth:
    """HTTP(S) credentials: a username and a token, or a source that hands out the current token (a GitHub App's
    installation token changes every hour). ``repr`` hides the token."""

    username: str
    token: str = field(default="", repr=False)
    source: TokenSource | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _no_control("username", self.username)
        _no_control("token", self.token)

    def current(self) -> str:
        """The token to send now."""
        if self.source is None:
            return self.token
        token = self.source()
        _no_control("token", token)
        return token

    def secrets(self) -> list[str]:
        """Every token this may have sent, for scrubbing messages."""
        return [t for t in (self.token, *(self.source.handed_out if self.source else ())) if t]


class TokenSource(Protocol):
    """Hands out a token valid for a while yet; remembers each one it gave (tasks/forges/githubapp.py)."""

    handed_out: list[str]

    def __call__(self) -> str: ...


def _no_control(name: str, value: str) -> None:
    # A line break would end the credential answer early or add fields to it.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise GitError(f"the Git {name} contains a line break or another control character; store it without one")


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
    """The URL as users may see it: any userinfo, query string and fragment removed (either may hold a token)."""
    shown = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.IGNORECASE)
    return re.split(r"[?#]", shown, maxsplit=1)[0] if "://" in shown else shown


def _credential_scope(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL: the only place the credential helper answers for (a
    redirect to another host gets no token)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port else "")


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700, or check an existing one: a real directory (not a symlink),
    owned by us; a wider mode is narrowed. Others must not plant or read anything in the cache."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise GitError(
            f"the cache directory {path} is a symlink; remove the link (gitops-promote creates the directory) or "
            "set PROMOTE_CACHE_DIR to a directory of your own"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise GitError(f"the cache directory {path} is not a directory; remove it or set PROMOTE_CACHE_DIR")
    if info.st_uid != os.geteuid():
        raise GitError(
            f"the cache directory {path} belongs to another user (uid {info.st_uid}); use a directory of your own "
            "(PROMOTE_CACHE_DIR)"
        )
    if info.st_mode & 0o077:
        path.chmod(0o700)


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
        network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
        evidence_policy: EvidencePolicy | None = None,
    ) -> None:
        if url.startswith("-"):
            raise GitError("a repository URL may not start with '-'")
        if not network_timeout > 0:
            raise GitError("the Git network timeout must be a positive number of seconds")
        self.url = url
        self.auth = auth
        self.author = author
        self.push_attempts = push_attempts
        self.network_timeout = network_timeout
        # How evidence notes are signed and which signatures count (tasks/evidence.py reads it).
        self.evidence_policy = evidence_policy
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        self.path = Path(cache_dir).expanduser() / f"repo-{key}"
        self._repo: git.Repo | None = None
        self._thread_lock = threading.RLock()
        self._notes_cache: dict[str, tuple[str, dict[str, str]]] = {}
        self._lookup_lock = threading.Lock()
        self._lock_depth = 0
        self._lock_fd: int | None = None
        self._cache_checked = False
        self._proposal: Proposal | None = None

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
            scope = _credential_scope(self.url)
            env |= {
                # The user's and the system's config are shut out: a helper there (credential.helper=store)
                # would save the token to ~/.git-credentials and answer later runs with it instead of theirs;
                # url.*.insteadOf there could send the token to another host.
                "GIT_CONFIG_GLOBAL": os.devnull,
                "GIT_CONFIG_NOSYSTEM": "1",
                # Command-line level config: an empty helper resets the list (the cache's own config included),
                # then ours answers for the repository's host only.
                "GIT_CONFIG_COUNT": "2",
                "GIT_CONFIG_KEY_0": "credential.helper",
                "GIT_CONFIG_VALUE_0": "",
                "GIT_CONFIG_KEY_1": f"credential.{scope}.helper" if scope else "credential.helper",
                "GIT_CONFIG_VALUE_1": _CREDENTIAL_HELPER,
                "GIT_ASKPASS": "",  # no prompt program: a refused token fails, it is not asked for again
                "SSH_ASKPASS": "",
                "PROMOTE_GIT_USERNAME": self.auth.username,
                "PROMOTE_GIT_PASSWORD": self.auth.current(),
            }
        return env

    def _cache_root(self) -> Path:
        """The cache directory, private and checked once per object (see :func:`_private_dir`)."""
        root = self.path.parent
        if not self._cache_checked:
            _private_dir(root)
            self._cache_checked = True
        return root

    def _scrub(self, text: str) -> str:
        text = text.replace(self.url, display_url(self.url))
        for secret in self.auth.secrets() if self.auth is not None else ():
            text = text.replace(secret, "***")
        return text

    def _git(self, *args: str) -> str:
        repo = self._open()
        if args[0] in _NETWORK_COMMANDS:
            return self._git_network(args)
        try:
            with repo.git.custom_environment(**self._env()):
                return str(repo.git.execute(["git", *args], with_extended_output=False))
        except git.GitCommandError as exc:
            self._fail(args, str(exc.stderr or "").strip().removeprefix("stderr: ").strip("'\n "))

    def _fail(self, args: Sequence[str], stderr: str) -> NoReturn:
        stderr = self._scrub(stderr.strip())
        if len(stderr) > _MAX_STDERR:
            stderr = "..." + stderr[-_MAX_STDERR:]
        error = TransientGitError if any(hint in stderr for hint in _NETWORK_HINTS) else GitError
        raise error(f"git {args[0]} failed in {display_url(self.url)}: {stderr}")

    def _git_network(self, args: Sequence[str]) -> str:
        """Run a command that talks to the remote, killed (with the helpers it started, e.g. git-remote-https)
        when it outlives ``network_timeout``: a server that accepts and then stays silent must not hold a
        promotion forever. curl also gives up on a transfer below 1 byte/s for a minute."""
        env = {**os.environ, "GIT_HTTP_LOW_SPEED_LIMIT": "1", "GIT_HTTP_LOW_SPEED_TIME": "60"}
        env |= {**self._env(), "LC_ALL": "C", "LANGUAGE": "C"}  # git's English wording is read below
        for name in ("GIT_HTTP_LOW_SPEED_LIMIT", "GIT_HTTP_LOW_SPEED_TIME"):  # the user's own setting wins
            env[name] = os.environ.get(name, env[name])
        try:
            proc = subprocess.Popen(
                ["git", *args],
                cwd=self.path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: the deadline kills the helpers too
            )
        except OSError as exc:
            raise GitError(f"cannot run git for {display_url(self.url)}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(timeout=self.network_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=30)  # pipes close once the group is gone
            raise TransientGitError(
                f"git {args[0]} of {display_url(self.url)} did not finish within its deadline of "
                f"{self.network_timeout:g} s (the server did not answer in time) and was stopped"
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            self._fail(args, err.decode("utf-8", "replace"))
        return out.decode("utf-8", "replace").removesuffix("\n")

    def _open(self) -> git.Repo:
        if self._repo is None:
            self._cache_root()
            if (self.path / ".git").is_dir():
                self._repo = git.Repo(self.path)
            else:
                with contextlib.suppress(FileExistsError):
                    self.path.mkdir(mode=0o700)
                self._repo = git.Repo.init(self.path)
                self._repo.git.execute(["git", "remote", "add", "origin", self.url])
        return self._repo

    @contextlib.contextmanager
    def locked(self) -> Iterator[GitRepository]:
        """Hold the cache's lock: one writer per machine and repository. Re-entrant within this object."""
        with self._thread_lock:
            if self._lock_depth == 0:
                self._lock_fd = self._open_lock()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _open_lock(self) -> int:
        """The lock file, opened without following a symlink and without truncating: a planted link must not
        make us create or empty a file elsewhere."""
        lock = self._cache_root() / f"{self.path.name}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise GitError(f"the lock file {lock} is a symlink; remove it (gitops-promote creates it)") from None
            raise GitError(f"cannot open the lock file {lock}: {exc.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise GitError(f"the lock file {lock} is not a regular file; remove it (gitops-promote creates it)")
        return fd

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

    def symlink_on_path(self, ref: str, path: str) -> str | None:
        """The first of ``path``'s parent directories and ``path`` itself that is a symlink at ``ref``
        (repository-relative), or None; one ``ls-tree`` of every prefix."""
        commit = self.resolve(ref)
        parts = [part for part in path.split("/") if part]
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if not prefixes:
            return None
        literal = [f":(literal){prefix}" for prefix in prefixes]  # a '*' in a name is no pattern here
        out = self._git("ls-tree", "-z", "--full-tree", commit, "--", *literal)
        for entry in out.split("\0"):
            meta, _, name = entry.partition("\t")
            if meta.startswith("120000 "):
                return name
        return None

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

    def commit_times(self, commits: Iterable[str]) -> dict[str, datetime]:
        """The committer time of each of ``commits`` (full ids) the repository has; unknown ones are left out
        (a note can outlive a force-pushed commit). A few git runs for any number of commits."""
        wanted = sorted({commit for commit in commits if is_full_sha(commit)})  # never an option or a range
        times: dict[str, datetime] = {}
        for start in range(0, len(wanted), _COMMITS_PER_LOG):
            chunk = wanted[start : start + _COMMITS_PER_LOG]
            out = self._git(
                "log", "--no-walk=unsorted", "--ignore-missing", "--format=%H %ct", "--end-of-options", *chunk
            )
            for line in out.splitlines():
                sha, _, stamp = line.partition(" ")
                if stamp.isdigit():
                    times[sha] = datetime.fromtimestamp(int(stamp), UTC)
        return times

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is an ancestor of ``descendant``; False for anything that is not a revision
        (values can come from commit messages: "--output=x" must never reach git as an option)."""
        if any(value.startswith("-") or not value or len(value) > 256 for value in (ancestor, descendant)):
            return False
        try:
            self._git("merge-base", "--is-ancestor", "--end-of-options", ancestor, descendant)
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
                # A note is anyone's text: one that is not UTF-8 is read with replacement characters (and then
                # is not a record of this tool) instead of stopping every reader.
                data = repo.git.get_object_data(blob)[3]
                notes[annotated] = data.decode("utf-8", errors="replace").removesuffix("\n")
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
            # From a file, not --message: a note of any size fits (no argument length limit) and stays out of
            # the process list.
            with tempfile.NamedTemporaryFile("w", dir=self.path / ".git", prefix="promote-note-", suffix=".txt") as f:
                f.write(new)
                f.flush()
                self._git("notes", f"--ref={notes_ref}", "add", "--force", f"--file={f.name}", commit)
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
            if (proposed := self._proposed_already(branch, tree=self._git("write-tree"))) is not None:
                return CommitResult(commit=proposed, changed=True, attempts=attempt)
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
            if (proposed := self._proposed_already(branch, tree=self._git("write-tree"))) is not None:
                return CommitResult(commit=proposed, changed=True, attempts=attempt)
            self._git("commit", "--no-verify", f"--message={message}")
            if (pushed := self._push_head(branch, attempt)) is not None:
                return pushed
        raise AssertionError("unreachable")

    # --- pull requests' branches ----------------------------------------------------------------------

    @contextlib.contextmanager
    def proposing(self, base: str, head: str, own_marker: str) -> Iterator[None]:
        """Inside the block, writes meant for ``base`` go to branch ``head`` (see :class:`Proposal`): the same
        edit, commit, retry on a moving remote and re-run check; a re-run whose ``head`` already proposes the
        same change on base's tip pushes nothing; a ``head`` made on an older tip of ``base`` is made again on
        the new one (a rebase) when it holds only this tool's commits, and refused otherwise."""
        validate_ref_name(base)
        validate_ref_name(head)
        if head == base:
            raise GitError(f"a pull request's branch cannot be the branch it merges into ({base})")
        self._proposal = Proposal(base, head, own_marker)
        try:
            yield
        finally:
            self._proposal = None

    def _proposed_already(self, branch: str, *, tree: str | None = None, contains: str | None = None) -> str | None:
        """Inside :meth:`proposing`, for a write to its base: the remote ``head`` when it already proposes this
        change (made on base's current tip, with ``tree``, containing ``contains``); else None."""
        proposal = self._proposal
        if proposal is None or proposal.base != branch:
            return None
        head = self._commit_of(f"refs/remotes/origin/{proposal.head}")
        base = self._commit_of(f"refs/remotes/origin/{branch}")
        if head is None or base is None or not self.is_ancestor(base, head):
            return None
        if tree is not None and self._git("rev-parse", "--verify", "--end-of-options", f"{head}^{{tree}}") != tree:
            return None
        if contains is not None and not self.is_ancestor(contains, head):
            return None
        return head

    def _push_target(self, branch: str) -> tuple[str, list[str]]:
        """Where HEAD goes for a write to ``branch``, with the push options: ``branch`` itself, or a proposal's
        ``head`` with a lease on what it holds now (never over someone else's commit)."""
        proposal = self._proposal
        if proposal is None or proposal.base != branch:
            return branch, []
        remote = self._commit_of(f"refs/remotes/origin/{proposal.head}")
        if remote is not None:
            # What the pull request's branch has that neither its base nor the new head has: commits that would be
            # lost by pushing over it. Only this tool's own (an earlier attempt at this change) may go.
            out = self._git(
                "log", "--format=%H%x1f%s%x1f%B%x1e", remote, f"^refs/remotes/origin/{branch}", "^HEAD", "--"
            )
            foreign = [
                fields[:2]
                for record in out.split("\x1e")
                if len(fields := record.strip("\n").split("\x1f")) == 3 and proposal.own_marker not in fields[2]
            ]
            if foreign:
                listing = ", ".join(f"{sha[:12]} {subject[:60]}" for sha, subject in foreign[:3])
                raise ForeignCommitError(
                    f"branch {proposal.head} of {display_url(self.url)} has {len(foreign)} commit(s) this tool did not "
                    f"write ({listing}); it is not pushed over: bring the pull request up to date with {branch} by "
                    "hand (or close it and delete the branch), then run the promotion again"
                )
        return proposal.head, [f"--force-with-lease=refs/heads/{proposal.head}:{remote or ''}"]

    def _push_head(self, branch: str, attempt: int) -> CommitResult | None:
        """Push HEAD to ``branch`` (or, proposing, to the pull request's branch): the result, or None when the
        remote moved and another attempt is left."""
        head = self._git("rev-parse", "HEAD")
        target, options = self._push_target(branch)
        try:
            self._git("push", *options, "origin", f"HEAD:refs/heads/{target}")
            return CommitResult(commit=head, changed=True, attempts=attempt)
        except GitError as exc:
            if not _is_rejection(exc):
                raise
            if attempt == self.push_attempts:
                raise PushRejectedError(
                    f"gave up pushing to {target} of {display_url(self.url)} after {attempt} attempts: "
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
            if (proposed := self._proposed_already(target, contains=source_tip)) is not None and not undo:
                return CommitResult(commit=proposed, changed=True, attempts=attempt)
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
