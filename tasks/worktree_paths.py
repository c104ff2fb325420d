"""Where a promotion may write in a checkout of the GitOps repository: a file named by the pipeline, reached
without passing through a symlink.

A committed symlink (the file itself or a parent directory) would make a write land outside the repository,
or in another file of it than the one named (``.git/config`` included), and Git would then see no change in
the named path. So every symlink on the way is refused, whether it leads out of the tree or stays inside it:
following an inside link would silently edit a file the pipeline does not name.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

__all__ = ["escape_problem", "first_symlink", "refusal", "write_text"]


def escape_problem(file: str) -> str | None:
    """Why ``file`` cannot name a file of the work tree (absolute, ``..``, inside ``.git``), or None."""
    path = PurePosixPath(file)
    if path.is_absolute() or Path(file).is_absolute():
        return "the path must be relative to the repository root"
    if ".." in path.parts:
        return "the path leads outside the repository ('..'); use a path inside it"
    if ".git" in path.parts:
        return "the path is inside .git, which is Git's own data, not the repository's files"
    return None


def first_symlink(workdir: Path, file: str) -> str | None:
    """The repository-relative path of the first symlink among ``file``'s parent directories and ``file``
    itself in the checkout at ``workdir``, or None. Nothing is followed."""
    parts = PurePosixPath(file).parts
    current = workdir
    for index, part in enumerate(parts):
        current = current / part
        if current.is_symlink():
            return "/".join(parts[: index + 1])
        if not current.exists():
            return None
    return None


def refusal(file: str, link: str) -> str:
    """The refusal for a symlink ``link`` on the way to ``file``, saying what to do."""
    what = "is a symlink" if link == file else f"is reached through the symlink {link}"
    return (
        f"{file} {what} in the repository; promotions never write through symlinks (one can lead out of the "
        "repository or into another file than the one named): point the pipeline at the real file, or commit "
        "the file in place of the link"
    )


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to the existing regular file ``path`` without following a symlink at its last step (the
    parents were checked by :func:`first_symlink`)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
