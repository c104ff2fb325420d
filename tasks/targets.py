"""Point an environment at a version: the Git write that a promotion is.

Each tracking kind has a pure edit (text in, text out, via :mod:`tasks.manifests`) and a Git operation that
applies it with retry (:class:`tasks.gitrepo.GitRepository`). Reading what an environment tracks today uses
the same locators, so a plan, a rollback and a re-run all agree on "current".
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import Environment, TrackBranch, TrackImagePolicy, TrackKustomizeImage, TrackTag
from tasks import manifests
from tasks.errors import RefusedError
from tasks.gitrepo import CommitResult, GitRepository

if TYPE_CHECKING:
    from tasks.setters import UpdateResult

PROMOTE_TRAILER = "Promoted-By: gitops-promote"


class TargetError(RefusedError, ValueError):
    """The environment cannot be pointed at the version as configured."""


@dataclass(frozen=True)
class PlannedChange:
    """What pointing ``environment`` at ``new`` changes, before anything is written."""

    environment: str
    file: str | None
    old: str | None
    new: str
    diff: str

    @property
    def changes_anything(self) -> bool:
        return self.old != self.new


def tracked_file(env: Environment) -> str | None:
    if isinstance(env.tracks, TrackTag):
        return env.tracks.application_file
    if isinstance(env.tracks, TrackKustomizeImage):
        return env.tracks.file
    return None


def read_current(env: Environment, text: str) -> str:
    """The version ``env`` tracks, read from its file's text."""
    tracks = env.tracks
    source = tracked_file(env) or env.name
    if isinstance(tracks, TrackTag):
        return manifests.get_application_revision(text, source_index=tracks.source_index, source=source)
    if isinstance(tracks, TrackKustomizeImage):
        image = manifests.get_kustomize_image(text, tracks.image, source=source)
        value = image.digest if tracks.field == "digest" else image.new_tag
        if value is None:
            raise TargetError(f"{source}: image {tracks.image!r} has no {tracks.field}; add one to promote by it")
        return value
    raise TargetError(f"environment {env.name!r} ({tracks.kind}) has no single file value to read")


def edit_text(env: Environment, text: str, value: str) -> str:
    """The file's text with ``env`` pointed at ``value``; only that value changes."""
    tracks = env.tracks
    source = tracked_file(env) or env.name
    if isinstance(tracks, TrackTag):
        return manifests.set_application_revision(text, value, source_index=tracks.source_index, source=source)
    if isinstance(tracks, TrackKustomizeImage):
        if tracks.field == "digest":
            return manifests.set_kustomize_image(text, tracks.image, digest=value, source=source)
        return manifests.set_kustomize_image(text, tracks.image, new_tag=value, source=source)
    raise TargetError(f"environment {env.name!r} ({tracks.kind}) is not promoted by editing one file")


def plan_change(env: Environment, text: str, value: str) -> PlannedChange:
    file = tracked_file(env)
    old = read_current(env, text)
    new_text = edit_text(env, text, value)
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True), new_text.splitlines(keepends=True), f"a/{file}", f"b/{file}"
        )
    )
    return PlannedChange(environment=env.name, file=file, old=old, new=value, diff=diff)


def commit_message(pipeline: str, env: Environment, old: str | None, new: str) -> str:
    return f"promote({pipeline}): {env.name} {old or '(none)'} -> {new}\n\n{PROMOTE_TRAILER}\n"


def point_environment(repo: GitRepository, branch: str, pipeline: str, env: Environment, value: str) -> CommitResult:
    """Write ``value`` where ``env`` tracks its version and push it (a no-op if it is already there)."""
    file = tracked_file(env)
    if file is None:
        raise TargetError(f"environment {env.name!r} ({env.tracks.kind}) is not promoted by editing one file")
    seen: dict[str, str] = {}

    def edit(workdir: Path) -> list[str]:
        path = workdir / file
        if not path.is_file():
            raise TargetError(f"{file} does not exist on branch {branch}; check tracks.file in the pipeline")
        text = path.read_text(encoding="utf-8")
        seen["old"] = read_current(env, text)
        new_text = edit_text(env, text, value)
        if new_text != text:
            path.write_text(new_text, encoding="utf-8")
        return [file]

    # The message names the old value, which only the edit (on the fresh checkout) knows.
    return repo.commit_and_push(branch, edit, lambda: commit_message(pipeline, env, seen.get("old"), value))


def merge_branches(
    repo: GitRepository, env: Environment, pipeline: str, *, commit: str | None = None, undo: Sequence[str] = ()
) -> CommitResult:
    """Merge the upstream branch (at ``commit``, the one verified there) into ``env``'s branch, ``--no-ff``,
    after re-applying the rollbacks in ``undo``. This tool's own commits on the target are not divergence."""
    tracks = env.tracks
    if not isinstance(tracks, TrackBranch) or tracks.merge_from is None:
        raise TargetError(f"environment {env.name!r} is not promoted by a branch merge")
    message = tracks.merge_message.format(from_branch=tracks.merge_from, environment=env.name, pipeline=pipeline)
    return repo.merge_no_ff(
        tracks.merge_from,
        tracks.branch,
        f"{message}\n\n{PROMOTE_TRAILER}\n",
        commit=commit,
        own_marker=PROMOTE_TRAILER,
        undo=undo,
    )


def _is_manifest(path: str) -> bool:
    return path.endswith((".yaml", ".yml")) and not any(part.startswith(".") for part in path.split("/"))


def read_policy_tag(repo: GitRepository, ref: str, env: Environment) -> str | None:
    """The tag an image-policy environment's setter markers hold at ``ref`` (None when no marker holds one)."""
    tracks = env.tracks
    if not isinstance(tracks, TrackImagePolicy):
        raise TargetError(f"environment {env.name!r} does not track an image policy")
    commit = repo.resolve(ref)
    for file in repo.list_files(commit, tracks.path):
        if not _is_manifest(file):
            continue
        text = repo.read_file(commit, file)
        for marker in manifests.find_setter_markers(text, source=file):
            if marker.policy != tracks.policy:
                continue
            if marker.field == "tag":
                return marker.value
            if marker.field == "image":
                reference = manifests.parse_reference(marker.value, source=file)
                if reference.new_tag is not None:
                    return reference.new_tag
    return None


def point_image_policy(repo: GitRepository, branch: str, pipeline: str, env: Environment, tag: str) -> CommitResult:
    """Write ``<image>:<tag>`` through the environment's setter markers under its path and push, with the
    pipeline's message template (Flux's ``messageTemplate``) as the commit message. A no-op when every
    marker already holds it."""
    from tasks.setters import apply_to_files  # late: only image-policy pipelines need it

    tracks = env.tracks
    if not isinstance(tracks, TrackImagePolicy):
        raise TargetError(f"environment {env.name!r} does not track an image policy")
    result: dict[str, UpdateResult] = {}

    def edit(workdir: Path) -> list[str]:
        update = apply_to_files(workdir, tracks.path, tracks.policy, tracks.registry.image_name, tag)
        result["update"] = update
        return list(update.files)

    def message() -> str:
        return f"{policy_commit_message(tracks, result['update'], pipeline).rstrip()}\n\n{PROMOTE_TRAILER}\n"

    return repo.commit_and_push(branch, edit, message)


def policy_commit_message(tracks: TrackImagePolicy, update: UpdateResult, pipeline: str) -> str:
    """The commit message from the environment's template, rendered as Flux renders it; the automation
    object is ``<policy namespace>/<pipeline>``."""
    from tasks.fluxtemplate import TemplateData, render

    namespace = tracks.policy.split(":", 1)[0]
    return render(tracks.message_template, TemplateData(namespace, pipeline, [update]))


def plan_image_policy(repo: GitRepository, ref: str, env: Environment, tag: str) -> str:
    """The unified diff that writing ``tag`` through ``env``'s setter markers would make, computed on a
    scratch copy of the files under its path (nothing in the repository is touched)."""
    import tempfile

    from tasks.setters import apply_to_files

    tracks = env.tracks
    if not isinstance(tracks, TrackImagePolicy):
        raise TargetError(f"environment {env.name!r} does not track an image policy")
    commit = repo.resolve(ref)
    with tempfile.TemporaryDirectory(prefix="promote-plan-") as scratch:
        root = Path(scratch)
        before: dict[str, str] = {}
        for file in repo.list_files(commit, tracks.path):
            if _is_manifest(file):
                before[file] = repo.read_file(commit, file)
                (root / file).parent.mkdir(parents=True, exist_ok=True)
                (root / file).write_text(before[file], encoding="utf-8")
        update = apply_to_files(root, tracks.path, tracks.policy, tracks.registry.image_name, tag)
        return "".join(
            "".join(
                difflib.unified_diff(
                    before[file].splitlines(keepends=True),
                    (root / file).read_text(encoding="utf-8").splitlines(keepends=True),
                    f"a/{file}",
                    f"b/{file}",
                )
            )
            for file in update.files
        )
