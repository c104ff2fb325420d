"""The byte-exact YAML splice engine: change scalar values in a YAML text and leave every other byte as it was.

A ruamel.yaml load/dump round trip re-indents files that mix ``- `` and ``  - `` list styles, moves
comment columns and folds long values, so it would turn a one-value promotion into a noisy diff. Here
ruamel only *composes* the text: the node tree carries the start/end offset of every scalar. A format
module (:mod:`tasks.manifests` for Kubernetes manifests, :mod:`tasks.yamlpath` for any YAML by path) locates
its scalars with :func:`compose`, :func:`navigate` and :func:`mapping_value`, asks :func:`set_scalar` for
each :class:`Edit` (the new value rendered in the old scalar's quoting style) and its :class:`Check`, and
:func:`apply` splices them all into the original text and re-reads the result to prove every value landed
where it was meant to. Anchored, aliased and block scalars are refused rather than guessed at.

Every function takes ``source`` (the file name) for its error messages; a :class:`ManifestError` means
nothing was changed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import implicit_resolvers

from tasks.errors import RefusedError

__all__ = [
    "INT_TAG",
    "STR_TAG",
    "Check",
    "Edit",
    "ManifestError",
    "PathKey",
    "apply",
    "compose",
    "is_null",
    "line_of",
    "mapping_value",
    "navigate",
    "needs_quotes",
    "render",
    "replace_scalar",
    "scalar_or_none",
    "scalar_value",
    "set_scalar",
    "walk_values",
]

PathKey = str | int
STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
# Characters a plain scalar may hold in block and flow context alike without any chance of being read
# as an indicator, a comment or a flow separator.
_PLAIN_SAFE_RE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+=~^-]*")
_PROPERTIES_RE = re.compile(r"(?:![^\s]*\s+)+")  # an explicit tag such as `!!str ` before a scalar


class ManifestError(RefusedError, ValueError):
    """A manifest edit that cannot be made; the message names the file, the thing and what to do."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Check:
    """After splicing, the scalar at ``path`` in document ``doc`` must read ``expected``.

    ``tag`` is the type it must resolve to; None for a value left as it was.
    """

    doc: int
    path: tuple[PathKey, ...]
    expected: str
    tag: str | None = STR_TAG


def compose(text: str, source: str) -> Sequence[Node | None]:
    try:
        return _composed(text)
    except YAMLError as exc:
        raise ManifestError(source, f"not valid YAML: {exc}") from None


@functools.lru_cache(maxsize=64)
def _composed(text: str) -> tuple[Node | None, ...]:
    # Cached (nodes are only read, never changed): one promotion reads, edits and re-checks the same few
    # files, and ruamel composes in pure Python (~1.3 ms for a small Application file).
    return tuple(YAML(typ="rt").compose_all(text))


def mapping_value(node: Node | None, key: str) -> Node | None:
    """The value of ``key`` in a mapping node; None for anything else."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return value_node  # type: ignore[no-any-return]
    return None


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def scalar_or_none(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and not is_null(node) else None


def scalar_value(node: Node, what: str, source: str) -> str | None:
    if not isinstance(node, ScalarNode):
        raise ManifestError(source, f"{what} at line {line_of(node)} is not a single value")
    return None if is_null(node) else str(node.value)


def line_of(node: Node | None) -> int:
    return 0 if node is None else int(node.start_mark.line) + 1


def walk_values(docs: Sequence[Node | None]) -> Iterator[tuple[int, tuple[PathKey, ...], ScalarNode]]:
    """Every scalar that is a mapping value or a list item, with its path."""

    def walk(
        node: Node, path: tuple[PathKey, ...], seen: frozenset[int]
    ) -> Iterator[tuple[tuple[PathKey, ...], ScalarNode]]:
        if id(node) in seen:  # an alias back to an enclosing anchored collection
            return
        seen = seen | {id(node)}
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):  # complex keys hold no image values
                    yield from walk(value_node, (*path, key_node.value), seen)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, (*path, i), seen)
        elif isinstance(node, ScalarNode) and path:
            yield path, node

    for doc_index, root in enumerate(docs):
        if root is not None:
            for path, node in walk(root, (), frozenset()):
                yield doc_index, path, node


def navigate(root: Node | None, path: Sequence[PathKey]) -> Node | None:
    node = root
    for i, key in enumerate(path):
        if isinstance(node, ScalarNode) and node.style == "|":  # into a patch's embedded YAML
            return navigate(YAML(typ="rt").compose(node.value), path[i:])
        if isinstance(key, int):
            node = node.value[key] if isinstance(node, SequenceNode) and key < len(node.value) else None
        else:
            node = mapping_value(node, key)
        if node is None:
            return None
    return node


def needs_quotes(value: str) -> bool:
    """Would this string, written plain, be read back as something else (number, bool, null, ...)?"""
    if not _PLAIN_SAFE_RE.fullmatch(value) or value.endswith(":"):
        return True
    # Both YAML 1.1 (go-yaml, kubectl: `on`, `0755`) and 1.2 (`1.10`) readers must see a string.
    return any(regexp.match(value) for _, _, regexp, _ in implicit_resolvers)


def render(value: str, style: str | None) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"' or needs_quotes(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def replace_scalar(text: str, node: Node, value: str, what: str, source: str) -> Edit:
    if not isinstance(node, ScalarNode):
        raise ManifestError(source, f"{what} at line {line_of(node)} is not a single value")
    if node.anchor is not None:
        raise ManifestError(
            source, f"{what} at line {line_of(node)} is anchored (&{node.anchor}) and may be shared; edit it by hand"
        )
    if node.style in ("|", ">"):
        raise ManifestError(source, f"{what} at line {line_of(node)} is a block scalar; write it on one line")
    start, end = node.start_mark.index, node.end_mark.index
    tagged = _PROPERTIES_RE.match(text, start, end)
    if tagged:  # keep an explicit `!!str ` in front of the value
        start = tagged.end()
    if start == end:
        # An empty value (`key:`) may be marked at the next line's start: write right after the indicator.
        at = len(text[:start].rstrip(" \t\r\n"))
        if at == 0 or text[at - 1] not in ":-":
            raise ManifestError(source, f"{what} at line {line_of(node)} is empty; write a value there by hand")
        return Edit(at, at, " " + render(value, None))
    return Edit(start, end, render(value, node.style))


def set_scalar(
    text: str, doc: int, path: tuple[PathKey, ...], node: Node, value: str, what: str, source: str
) -> tuple[Edit, Check]:
    """The edit setting one scalar, and the check proving it. A value already there stays untouched,
    even when unquoted (`newTag: 1.0`), so re-running a promotion changes nothing."""
    edit = replace_scalar(text, node, value, what, source)
    if isinstance(node, ScalarNode) and node.value == value and not is_null(node):
        return Edit(edit.start, edit.end, text[edit.start : edit.end]), Check(doc, path, value, None)
    return edit, Check(doc, path, value)


def apply(text: str, edits: Sequence[Edit], checks: Sequence[Check], source: str) -> str:
    """Splice all edits in one go, then re-read the result and check every value landed."""
    out: list[str] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: e.start):
        if edit.start < pos:
            raise ManifestError(source, "internal error: overlapping edits; the file was not changed")
        out += [text[pos : edit.start], edit.text]
        pos = edit.end
    out.append(text[pos:])
    new_text = "".join(out)
    docs = compose(new_text, source)
    for check in checks:
        node = navigate(docs[check.doc] if check.doc < len(docs) else None, check.path)
        if not (isinstance(node, ScalarNode) and node.value == check.expected and check.tag in (None, node.tag)):
            where = ".".join(str(p) for p in check.path)
            raise ManifestError(
                source, f"internal error: {where} would not read {check.expected!r}; the file was not changed"
            )
    return new_text
