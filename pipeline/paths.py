"""Which files a flow run may read as pipeline files.

A flow run's ``pipeline_file`` and ``pipelines_dir`` come from whoever can start a run (the UI, the API, a
trigger's event payload). Confined, they can only name files under the pipeline roots: the directories in
``PROMOTE_PIPELINE_ROOTS`` (separated by ``:``), or ``deployments/`` under the worker's working directory for
runs of a deployment. Paths are resolved first (``..``, symlinks), so neither leads out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.load import PipelineError

ROOTS_ENV = "PROMOTE_PIPELINE_ROOTS"
DEFAULT_ROOT = "deployments"


def configured_roots() -> list[Path] | None:
    """The roots ``PROMOTE_PIPELINE_ROOTS`` names, or None when it is not set."""
    value = os.environ.get(ROOTS_ENV, "")
    roots = [Path(part).expanduser().resolve() for part in value.split(os.pathsep) if part.strip()]
    return roots or None


def default_roots() -> list[Path]:
    return [(Path.cwd() / DEFAULT_ROOT).resolve()]


def confine(path: str | Path, roots: Sequence[Path]) -> Path:
    """``path`` resolved, if it lies under one of ``roots``; otherwise a :class:`PipelineError` naming the roots
    (never the file's content)."""
    shown = str(path)[:200]
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the path
        raise PipelineError(shown, ["cannot resolve this path"]) from None
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return resolved
    where = ", ".join(str(root)[:200] for root in roots)
    raise PipelineError(
        shown,
        [
            f"outside the pipeline roots ({where}): a flow run reads pipeline files only there. Put the file "
            f"there, or set {ROOTS_ENV} on the worker to the directories it may read"
        ],
    )
