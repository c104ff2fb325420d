"""``yaml-path``: values at paths in YAML files: Helm ``values.yaml`` (``image.tag``), ``Chart.yaml``
(``version``, ``appVersion``), any manifest (``spec.template.spec.containers[name=app].image``).

An environment lists its edits as ``{file, path, name}``; promotion copies the values the environment before
it *verified*, paired by name, into this environment's files: every edit in one commit, only the values'
bytes changed (:mod:`rules.yamlpath`). The evidence key is the value when all edits carry the same one
(``1.2.3``), else ``name=value`` pairs (``app=1.2.3,chart=0.4.0``). Rollback writes the previous values back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.model import Environment, TrackYamlPath
from rules import yamlpath
from tasks.gitrepo import CommitResult
from tasks.strategies import files
from tasks.strategies.base import ReleaseError, verification_values
from tasks.strategies.copied import CopiedValueStrategy

if TYPE_CHECKING:
    from tasks.connections import Connections


def _tracks(env: Environment) -> TrackYamlPath:
    assert isinstance(env.tracks, TrackYamlPath)
    return env.tracks


def values_key(values: dict[str, str]) -> str:
    """The evidence key of a set of values (see the module docstring)."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    return ",".join(f"{name}={value}" for name, value in sorted(values.items()))


def values_of(env: Environment, key: str) -> dict[str, str]:
    """The value each edit of ``env`` gets for ``key`` (the inverse of :func:`values_key`)."""
    names = [edit.key for edit in _tracks(env).edits]
    if "=" not in key:
        return dict.fromkeys(names, key)
    pairs = dict(item.split("=", 1) for item in key.split(","))
    missing = [name for name in names if name not in pairs]
    if missing:
        raise ReleaseError(f"{key!r} carries no value for {', '.join(missing)} of {env.name}")
    return {name: pairs[name] for name in names}


def _edit(env: Environment, index: int) -> files.TextEdit:
    edit = _tracks(env).edits[index]
    return files.TextEdit(
        edit.file,
        read=lambda text: yamlpath.get_value(text, edit.path, source=edit.file),
        write=lambda text, value: yamlpath.set_values(text, [(edit.path, value)], source=edit.file),
    )


def _pairs(env: Environment, key: str) -> list[tuple[files.TextEdit, str]]:
    values = values_of(env, key)
    return [(_edit(env, i), values[edit.key]) for i, edit in enumerate(_tracks(env).edits)]


class YamlPathStrategy(CopiedValueStrategy):
    kind = "yaml-path"

    def image_name(self, env: Environment) -> str:
        return env.name

    def label(self, env: Environment, value: str) -> str:
        return value

    def paths(self, env: Environment) -> list[str]:
        return sorted({edit.file for edit in _tracks(env).edits})

    def read_at(self, conn: Connections, env: Environment, ref: str) -> str | None:
        edits = _tracks(env).edits
        return values_key({edit.key: files.read(conn.repo, ref, _edit(env, i)) for i, edit in enumerate(edits)})

    def planned_diff(self, conn: Connections, env: Environment, value: str) -> str:
        return files.plan(conn.repo, conn.pipeline.repository.branch, _pairs(env, value))[1]

    def write(self, conn: Connections, env: Environment, value: str) -> CommitResult:
        pipeline = conn.pipeline
        names = [edit.key for edit in _tracks(env).edits]
        return files.point(
            conn.repo,
            pipeline.repository.branch,
            _pairs(env, value),
            lambda old: files.commit_message(
                pipeline.name, env.name, values_key(dict(zip(names, old, strict=True))) if old else None, value
            ),
        )

    def values(self, conn: Connections, env: Environment, value: str, revision: str) -> dict[str, str]:
        """``{tag}``/``{version}``: the first edit's value (the Deployments run it by default); each edit's
        value under its name too (``{image.tag}``, ``{chart}``)."""
        carried = values_of(env, value)
        first = carried[_tracks(env).edits[0].key]
        return {**carried, **verification_values(first, revision)}
