"""Git ref-name rules, as plain predicates: the pipeline model checks branch names with them before any Git
library is loaded, and :mod:`tasks.gitrepo` before anything reaches ``git``."""

from __future__ import annotations

import re

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
TAG_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<![./])(?<!\.lock)$")


def is_valid_branch_name(name: str) -> bool:
    """Git's ref-format rules that matter here, plus no leading '-' (so it never reads as an option)."""
    return bool(
        name
        and not name.startswith(("-", "/"))
        and not name.endswith(("/", ".", ".lock"))
        and ".." not in name
        and "@{" not in name
        and "//" not in name
        and not re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name)
    )


def is_valid_tag_name(tag: str) -> bool:
    return bool(TAG_RE.fullmatch(tag))


def is_full_sha(ref: str) -> bool:
    return bool(SHA_RE.fullmatch(ref))
