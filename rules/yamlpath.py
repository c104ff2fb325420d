"""Values in any YAML file by path (Helm ``values.yaml``, ``Chart.yaml``, a manifest), read and written
byte-exact through :mod:`rules.yamledit`.

The path syntax, one step after another:

* ``key`` or ``key.other``: mapping keys, separated by dots. A key with dots or brackets in it is quoted:
  ``annotations."app.kubernetes.io/version"``.
* ``[2]``: the list item at that index (from 0), e.g. ``containers[0].image``.
* ``[name=app]``: the one list item that is a mapping whose ``name`` is ``app``, e.g.
  ``dependencies[name=redis].version`` or ``spec.template.spec.containers[name=app].image``. No such item,
  or several, is an error.

A path must end at a single scalar value in exactly one document of the file. Writing keeps every other
byte: comments, quoting style (``"1.10"`` stays a string), anchors, flow style. A path that goes through
an anchored or aliased node is refused, since the edit would change every place that shares it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.yamledit import ManifestError, PathKey, apply, compose, line_of, navigate, set_scalar

__all__ = ["Index", "Key", "PathSyntaxError", "Select", "get_value", "parse_path", "set_values", "validate_value"]

_PLAIN_KEY = r"[^.\[\]\"\s][^.\[\]\"]*"
_STEP_RE = re.compile(
    rf"""(?P<key>{_PLAIN_KEY}|"(?P<quoted>[^"]*)")|\[(?:(?P<index>\d+)|(?P<field>[^=\]\s]+)=(?P<value>[^\]]*))\]"""
)
_MAX_PATH = 512
# What a promoted value may be: image tags, versions, digests, image references. Nothing that YAML or a
# commit message could read as structure.
_VALUE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@/+-]{0,255}")


class PathSyntaxError(ValueError):
    """A path that does not follow the syntax; the message shows where."""


@dataclass(frozen=True)
class Key:
    name: str

    def __str__(self) -> str:
        return self.name if re.fullmatch(_PLAIN_KEY, self.name) and " " not in self.name.strip() else f'"{self.name}"'


@dataclass(frozen=True)
class Index:
    index: int

    def __str__(self) -> str:
        return f"[{self.index}]"


@dataclass(frozen=True)
class Select:
    field: str
    value: str

    def __str__(self) -> str:
        return f"[{self.field}={self.value}]"


Step = Key | Index | Select


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of ``text`` (see the module docstring), or :class:`PathSyntaxError` saying where it breaks."""
    if not text or len(text) > _MAX_PATH:
        raise PathSyntaxError(f"a path has 1 to {_MAX_PATH} characters, such as image.tag")
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        if steps and text[pos] == ".":
            pos += 1
            if pos == len(text) or text[pos] in ".[":
                raise PathSyntaxError(f"{_shown(text)}: a key is missing after the '.' at character {pos}")
        match = _STEP_RE.match(text, pos)
        if match is None or (steps and match.group("key") and text[pos - 1] != "."):
            raise PathSyntaxError(
                f"{_shown(text)}: cannot read the path at character {pos + 1}; write keys as a.b, list items as "
                '[0] or [name=value], and quote keys with dots: "a.b"'
            )
        if match.group("index") is not None:
            steps.append(Index(int(match.group("index"))))
        elif match.group("field") is not None:
            steps.append(Select(match.group("field"), match.group("value")))
        else:
            quoted = match.group("quoted")
            steps.append(Key(quoted if quoted is not None else match.group("key")))
        pos = match.end()
    return tuple(steps)


def validate_value(value: str, what: str) -> str:
    if not _VALUE_RE.fullmatch(value):
        raise ManifestError(
            what,
            f"{_shown(value)} cannot be promoted: a value is an image tag, version, digest or image reference "
            "(letters, digits and . _ : @ / + -, at most 256 characters)",
        )
    return value


def _prefix(steps: Sequence[Step]) -> str:
    if not steps:
        return "the document"
    return "".join(("." if isinstance(step, Key) and i else "") + str(step) for i, step in enumerate(steps))


def _step(node: Node | None, step: Step, where: str, source: str) -> tuple[PathKey, Node]:
    if isinstance(step, Key):
        if not isinstance(node, MappingNode):
            raise ManifestError(source, f"{where} is not a mapping, so it has no key {step.name!r}")
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == step.name:
                return step.name, value_node
        raise ManifestError(source, f"{where} has no key {step.name!r}")
    if not isinstance(node, SequenceNode):
        raise ManifestError(source, f"{where} is not a list, so it has no item {step}")
    if isinstance(step, Index):
        if step.index >= len(node.value):
            raise ManifestError(source, f"{where} has {len(node.value)} item(s), so no item {step}")
        return step.index, node.value[step.index]
    matches = [
        (i, item)
        for i, item in enumerate(node.value)
        if isinstance(item, MappingNode)
        and any(
            isinstance(k, ScalarNode) and k.value == step.field and isinstance(v, ScalarNode) and v.value == step.value
            for k, v in item.value
        )
    ]
    if len(matches) != 1:
        count = "no item" if not matches else f"{len(matches)} items"
        raise ManifestError(source, f"{where} has {count} with {step.field} = {step.value!r}; exactly one must match")
    return matches[0]


def _locate(docs: Sequence[Node | None], path: str, source: str) -> tuple[int, tuple[PathKey, ...], ScalarNode]:
    steps = parse_path(path)
    found: list[tuple[int, tuple[PathKey, ...], ScalarNode]] = []
    errors: list[str] = []
    for doc_index, root in enumerate(docs):
        node: Node | None = root
        keys: list[PathKey] = []
        try:
            for i, step in enumerate(steps):
                assert node is not None
                # An alias (*ref) is its anchored node itself: editing through it would change every place
                # that shares it, so any anchored node on the way is refused (the scalar's own anchor is
                # refused by set_scalar).
                if node.anchor is not None and i:
                    raise ManifestError(
                        source,
                        f"{_prefix(steps[:i])} (line {line_of(node)}) is anchored (&{node.anchor}) and may be "
                        "shared; edit it by hand",
                    )
                key, node = _step(node, step, _prefix(steps[:i]), source)
                keys.append(key)
        except ManifestError as exc:
            errors.append(str(exc).removeprefix(f"{source}: "))
            continue
        if not isinstance(node, ScalarNode):
            raise ManifestError(source, f"{path} (line {line_of(node)}) is not a single value")
        found.append((doc_index, tuple(keys), node))
    if len(found) == 1:
        return found[0]
    if found:
        raise ManifestError(source, f"{path} is in {len(found)} documents of the file; it must be in exactly one")
    if len(docs) == 1 and errors:
        raise ManifestError(source, f"path {path}: {errors[0]}; nothing was written")
    raise ManifestError(source, f"path {path} is in none of the file's {len(docs)} document(s); nothing was written")


def get_value(text: str, path: str, *, source: str) -> str:
    """The scalar at ``path`` (its text as written, without quotes)."""
    docs = compose(text, source)
    doc, keys, node = _locate(docs, path, source)
    navigate(docs[doc], keys, source)  # a key given twice on the way: refused, as apply() refuses to write it
    return str(node.value)


def set_values(text: str, edits: Sequence[tuple[str, str]], *, source: str) -> str:
    """``text`` with each ``(path, value)`` written; only those values' bytes change. All edits are located
    and checked before any is applied, so an error changes nothing."""
    docs = compose(text, source)
    splices = []
    checks = []
    for path, value in edits:
        validate_value(value, source)
        doc, keys, node = _locate(docs, path, source)
        edit, check = set_scalar(text, doc, keys, node, value, path, source)
        splices.append(edit)
        checks.append(check)
    return apply(text, splices, checks, source)
