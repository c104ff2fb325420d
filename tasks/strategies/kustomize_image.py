"""``kustomize-image``: a Kustomize overlay's ``images[name=image]`` entry carries the version.

The image tag (or digest) the environment before it runs, once verified there, is copied into this
overlay's entry; nothing else in the file changes. The Deployments must then run that image. Rollback
writes the previous value back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.model import Environment, TrackKustomizeImage
from tasks import manifests
from tasks.gitrepo import CommitResult
from tasks.strategies import files
from tasks.strategies.copied import CopiedValueStrategy

if TYPE_CHECKING:
    from tasks.connections import Connections


def _tracks(env: Environment) -> TrackKustomizeImage:
    assert isinstance(env.tracks, TrackKustomizeImage)
    return env.tracks


def overlay_edit(env: Environment) -> files.TextEdit:
    tracks = _tracks(env)
    file = tracks.file

    def read(text: str) -> str:
        image = manifests.get_kustomize_image(text, tracks.image, source=file)
        value = image.digest if tracks.field == "digest" else image.new_tag
        if value is None:
            raise files.TargetError(f"{file}: image {tracks.image!r} has no {tracks.field}; add one to promote by it")
        return value

    def write(text: str, value: str) -> str:
        if tracks.field == "digest":
            return manifests.set_kustomize_image(text, tracks.image, digest=value, source=file)
        return manifests.set_kustomize_image(text, tracks.image, new_tag=value, source=file)

    return files.TextEdit(file, read, write)


class KustomizeImageStrategy(CopiedValueStrategy):
    kind = "kustomize-image"

    def image_name(self, env: Environment) -> str:
        return _tracks(env).image

    def paths(self, env: Environment) -> list[str]:
        return [_tracks(env).file]

    def read_at(self, conn: Connections, env: Environment, ref: str) -> str | None:
        return files.read(conn.repo, ref, overlay_edit(env))

    def planned_diff(self, conn: Connections, env: Environment, value: str) -> str:
        return files.plan(conn.repo, conn.pipeline.repository.branch, [(overlay_edit(env), value)])[1]

    def write(self, conn: Connections, env: Environment, value: str) -> CommitResult:
        pipeline = conn.pipeline
        return files.point(
            conn.repo,
            pipeline.repository.branch,
            [(overlay_edit(env), value)],
            lambda old: files.commit_message(pipeline.name, env.name, old[0] if old else None, value),
        )
