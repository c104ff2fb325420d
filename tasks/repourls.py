"""Repository URLs compared as forges compare them: the same repository by HTTP, SSH or its web page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["normalize_repository"]


def normalize_repository(url: str) -> str | None:
    """``https://Git.Example/Team/App.git``, ``git@git.example:team/app``, ``ssh://git@git.example/team/app``
    -> ``git.example/team/app`` (lowercase; user info, port, ``.git`` and slashes dropped; a local path stays
    as it is, resolved)."""
    text = url.strip()
    scp = re.match(r"^[\w.-]+@([\w.-]+):(?!//)(.+)$", text)
    if scp:
        host, path = scp.group(1), scp.group(2)
    else:
        try:
            parts = urlsplit(text)
        except ValueError:
            return None
        if not parts.scheme or not parts.hostname:
            if text.startswith("/"):  # a local path (the sandbox and the tests)
                return str(Path(text).resolve()).removesuffix(".git").rstrip("/")
            return None
        if parts.scheme == "file":
            return str(Path(parts.path).resolve()).removesuffix(".git").rstrip("/")
        host, path = parts.hostname, parts.path
    path = path.strip("/").removesuffix(".git").strip("/")
    # Forges match owner and name case-insensitively (github.com/Team/App is github.com/team/app).
    return f"{host}/{path}".lower() if path else None
