"""The edit-and-push that every file-writing strategy shares: read a value from a file's text, write a new one
(only that value's bytes change), commit with this tool's trailer and push, with retry on a moving remote.

A strategy describes *where* its value lives as :class:`TextEdit`\\ s; this module does the Git part once:
the plan's diff, the write, the "what did it run before this tool wrote here" question of a re-run, and the
refusal to write through a symlink (:mod:`tasks.worktree_paths`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rules.errors import RefusedError
from tasks import evidence, worktree_paths
from tasks.gitrepo import CommitResult, GitError, GitRepository


class TargetError(RefusedError, ValueError):
    """The environment cannot be pointed at the version as configured."""


@dataclass(frozen=True)
class TextEdit:
    """Where one value lives in one file: ``read(text)`` gives it, ``write(text, value)`` the new text."""

    file: str
    read: Callable[[str], str]
    write: Callable[[str, str], str]


@dataclass(frozen=True)
class PlannedChange:
    old: dict[str, str]  # file#index -> the value there now
    diff: str


def unified_diff(file: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{file}", f"b/{file}"
        )
    )


def _files_in_order(pairs: Sequence[tuple[TextEdit, str]]) -> list[str]:
    return list(dict.fromkeys(edit.file for edit, _ in pairs))


def _edited(texts: dict[str, str], pairs: Sequence[tuple[TextEdit, str]]) -> tuple[dict[str, str], list[str]]:
    """Every file's new text (edits to the same file apply in order) and each edit's old value."""
    new = dict(texts)
    old: list[str] = []
    for edit, value in pairs:
        old.append(edit.read(new[edit.file]))
        new[edit.file] = edit.write(new[edit.file], value)
    return new, old


def plan(repo: GitRepository, ref: str, pairs: Sequence[tuple[TextEdit, str]]) -> tuple[list[str], str]:
    """(each edit's value now, the unified diff of writing them) at ``ref``; nothing is written. A file reached
    through a symlink is refused here already, before a promotion creates anything."""
    files = _files_in_order(pairs)
    for file in files:
        if (link := repo.symlink_on_path(ref, file)) is not None:
            raise TargetError(worktree_paths.refusal(file, link))
    texts = {file: repo.read_file(ref, file) for file in files}
    new, old = _edited(texts, pairs)
    return old, "".join(unified_diff(f, texts[f], new[f]) for f in texts if new[f] != texts[f])


def read(repo: GitRepository, ref: str, edit: TextEdit) -> str:
    return edit.read(repo.read_file(ref, edit.file))


def inside_work_tree(workdir: Path, file: str) -> Path:
    """``workdir/file``, refusing a path that leaves the work tree or passes through a symlink (the file's or a
    parent directory's, wherever it points): see :mod:`tasks.worktree_paths`."""
    problem = worktree_paths.escape_problem(file)
    if problem is not None:
        raise TargetError(f"{file}: {problem}")
    link = worktree_paths.first_symlink(workdir, file)
    if link is not None:
        raise TargetError(worktree_paths.refusal(file, link))
    return workdir / file


def point(
    repo: GitRepository,
    branch: str,
    pairs: Sequence[tuple[TextEdit, str]],
    message: Callable[[list[str]], str],
) -> CommitResult:
    """Write every ``(edit, value)`` and push one commit (a no-op when all values are in place already).
    ``message(old_values)`` gives the commit message, with this tool's trailer added. Every file's new text
    is computed before any is written: an error leaves the checkout as it was."""
    seen: list[str] = []

    def edit(workdir: Path) -> list[str]:
        files = _files_in_order(pairs)
        paths = {file: inside_work_tree(workdir, file) for file in files}
        for file, path in paths.items():
            if not path.is_file():
                raise TargetError(f"{file} does not exist on branch {branch}; check the file in the pipeline")
        texts = {file: path.read_text(encoding="utf-8") for file, path in paths.items()}
        new, old = _edited(texts, pairs)
        seen[:] = old
        for file, path in paths.items():
            if new[file] != texts[file]:
                worktree_paths.write_text(path, new[file])
        return files

    # The message names the old values, which only the edit (on the fresh checkout) knows.
    return repo.commit_and_push(branch, edit, lambda: f"{message(seen).rstrip()}\n\n{evidence.PROMOTE_TRAILER}\n")


def commit_message(pipeline: str, env: str, old: str | None, new: str) -> str:
    return f"promote({pipeline}): {env} {old or '(none)'} -> {new}"


def value_before_write(
    repo: GitRepository,
    pipeline: str,
    env: str,
    branch: str,
    paths: Sequence[str],
    value: str,
    running: str | None,
    read_at: Callable[[str], str | None],
) -> str | None:
    """What ``env`` ran before this tool wrote ``value`` there: ``running`` itself unless it already is
    ``value`` (a re-run after a crash after the write-back), then the value at the parent of that write
    (``read_at(commit)``), so the re-run can still roll back and records the true "from"."""
    if running != value or not paths:
        return running
    touched = repo.log(None, branch, limit=1, paths=list(paths))
    if not touched or evidence.PROMOTE_TRAILER not in touched[0].message:
        return running
    try:
        prior = read_at(repo.parent(touched[0].sha))
    except (GitError, RefusedError, ValueError):
        return running  # the file did not exist before: nothing better to go back to
    # That write may have been a rollback *to* value (away from a failed prior): then prior is no target.
    rolled_back_to_value = any(
        (rec.kind, rec.pipeline, rec.environment, rec.tag) == ("rolled-back", pipeline, env, prior)
        and rec.details.get("to") == value
        for rec in evidence.all_records(repo)
    )
    return running if rolled_back_to_value else prior
