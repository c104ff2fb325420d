"""Git ref-name rules, as plain predicates: the pipeline model checks branch names with them before any Git
library is loaded, and :mod:`tasks.gitrepo` before anything reaches ``git``.

The rules are git's ``check-ref-format`` (``refs.c``: ``check_refname_component`` and ``check_refname_format``),
plus what makes a name unsafe or ambiguous here: a leading '-' (it would read as an option), the names git
gives its own pseudo-refs (``HEAD``, ``FETCH_HEAD``, ... resolve to the work tree's state, not to a branch)
and more than :data:`MAX_REF_LENGTH` characters.
"""

from __future__ import annotations

import re

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
TAG_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<![./])(?<!\.lock)$")
MAX_REF_LENGTH = 200
# Characters check-ref-format refuses anywhere: controls, space, ~ ^ : ? * [ \ and DEL.
_BAD_CHAR = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
# HEAD, FETCH_HEAD, ORIG_HEAD, MERGE_HEAD, CHERRY_PICK_HEAD, REVERT_HEAD, BISECT_HEAD, AUTO_MERGE...
_PSEUDO_REF = re.compile(r"HEAD|[A-Z_]+_HEAD|AUTO_MERGE")


def ref_name_problem(name: str) -> str | None:
    """Why ``name`` is not a ref name git accepts (and this tool hands to git), or None when it is."""
    if not name:
        return "it is empty"
    if len(name) > MAX_REF_LENGTH:
        return f"it is {len(name)} characters long; the limit is {MAX_REF_LENGTH}"
    if name.startswith("-"):
        return "it starts with '-' (git would read it as an option)"
    if name == "@":
        return "'@' alone is git's name for HEAD"
    if "@{" in name:
        return "it contains '@{' (git's reflog syntax)"
    bad = _BAD_CHAR.search(name)
    if bad:
        return f"it contains {bad.group()!r} (no spaces, control characters or ~ ^ : ? * [ \\)"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it has an empty part ('/' at the start or the end, or '//')"
    if ".." in name:
        return "it contains '..'"
    if name.endswith("."):
        return "it ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return f"its part {part[:40]!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its part {part[:40]!r} ends with '.lock'"
    return None


def branch_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a branch this tool works with, or None."""
    problem = ref_name_problem(name)
    if problem is None and _PSEUDO_REF.fullmatch(name):
        problem = f"{name} is a name git gives its own pseudo-refs (HEAD, FETCH_HEAD, ORIG_HEAD, MERGE_HEAD ...)"
    if problem is None and name.startswith("refs/"):
        # "refs/heads/main" as a branch name is the branch refs/heads/refs/heads/main: give the short name.
        problem = f"give the branch's short name ({name.removeprefix('refs/heads/')[:60]}), not a full ref"
    return problem


def is_valid_branch_name(name: str) -> bool:
    return branch_name_problem(name) is None


def is_valid_tag_name(tag: str) -> bool:
    return bool(TAG_RE.fullmatch(tag)) and ref_name_problem(tag) is None


def is_full_sha(ref: str) -> bool:
    return bool(SHA_RE.fullmatch(ref))
