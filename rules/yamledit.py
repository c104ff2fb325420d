"""The byte-exact YAML splice engine: change scalar values in a YAML text and leave every other byte as it was.

A ruamel.yaml load/dump round trip re-indents files that mix ``- `` and ``  - `` list styles, moves
comment columns and folds long values, so it would turn a one-value promotion into a noisy diff. Here
ruamel only *composes* the text: the node tree carries the start/end offset of every scalar. A format
module (:mod:`tasks.manifests` for Kubernetes manifests, :mod:`rules.yamlpath` for any YAML by path) locates
its scalars with :func:`compose`, :func:`navigate` and :func:`mapping_value`, asks :func:`set_scalar` for
each :class:`Edit` (the new value rendered in the old scalar's quoting style) and its :class:`Check`, and
:func:`apply` splices them all into the original text and re-reads the result to prove every value landed
where it was meant to. Anchored, aliased and block scalars are refused rather than guessed at.

Every function takes ``source`` (the file name) for its error messages; a :class:`ManifestError` means
nothing was changed.

Files are read as Flux's parser (go-yaml v3, through kustomize's kyaml) reads them where ruamel would refuse
or mislead: a tab between a value and its comment or the line end is whitespace (go-yaml scannerc.go
yaml_parser_scan_to_next_token), and a key given twice in a mapping on the edited path is refused with both
lines (go-yaml decode.go mapping: "already defined"), since readers disagree on which one counts. Hostile
files are bounded: at most :data:`MAX_FILE_BYTES`, nesting as deep as Python can compose (a clear error
beyond), aliases walked once (an alias bomb costs what its text costs), and error text capped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import implicit_resolvers

from rules.errors import RefusedError

__all__ = [
    "INT_TAG",
    "MAX_FILE_BYTES",
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
# A GitOps file is manifests and values, not data: a larger one is refused before any parsing, so a planted
# file cannot make a promotion spend minutes and gigabytes (ruamel composes ~1 MB/s in pure Python).
MAX_FILE_BYTES = 4 * 1024 * 1024
_MAX_ERROR = 300  # characters of a parser's message echoed into ours
_MAX_TAB_FIXES = 1000


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
    """The documents of ``text``, read as Flux reads them (see the module docstring), or a ManifestError
    naming the file and line."""
    # Each character is at least one byte: measure the bytes only when the characters alone do not decide.
    size = len(text) if len(text) > MAX_FILE_BYTES or len(text) <= MAX_FILE_BYTES // 4 else len(text.encode())
    if size > MAX_FILE_BYTES:
        raise ManifestError(
            source,
            f"is {size / 1048576:.1f} MiB; files over {MAX_FILE_BYTES // 1048576} MiB are not edited "
            "(split it, or edit it by hand)",
        )
    try:
        return _composed(text)
    except _ComposeError as exc:
        raise ManifestError(source, str(exc)) from None


class _ComposeError(Exception):
    """Why a text cannot be composed, already worded for a ManifestError."""


def _yaml_problem(exc: YAMLError) -> str:
    """A parser error in a few bounded lines: the line and column, the problem, and a capped snippet."""
    text = str(exc).replace(' in "<unicode string>",', "")
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _tab_separator(text: str, index: int) -> bool:
    """Is the tab at ``index`` whitespace go-yaml v3 skips between tokens? scannerc.go
    yaml_parser_scan_to_next_token skips tabs in block context unless a simple key may start there: at the
    start of a line (indentation) or after a ``:``, ``-`` or ``?`` indicator. ruamel refuses every one; in
    flow context (``[1,\t2]``) ruamel already accepts them."""
    start = index
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    return start > 0 and text[start - 1] not in "\r\n:-?"


def _compose_all(text: str) -> tuple[Node | None, ...]:
    fixed = text
    for _ in range(_MAX_TAB_FIXES):
        try:
            return tuple(YAML(typ="rt").compose_all(fixed))
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", "") or ""
            at = getattr(mark, "index", -1)
            if "cannot start any token" not in problem or not 0 <= at < len(fixed) or fixed[at] != "\t":
                raise _ComposeError(f"not valid YAML: {_yaml_problem(exc)}") from None
            if not _tab_separator(fixed, at):
                line = fixed.count("\n", 0, at) + 1
                raise _ComposeError(
                    f"line {line} has a tab where YAML needs spaces (indentation, or right after ':' or '-'); "
                    "Flux refuses it too: replace the tab with spaces"
                ) from None
            # Same length, so every offset ruamel reports is an offset into the original text.
            end = at
            while end < len(fixed) and fixed[end] in " \t":
                end += 1
            fixed = fixed[:at] + " " * (end - at) + fixed[end:]
        except RecursionError:
            raise _ComposeError(
                "is nested too deeply to edit (YAML collections inside collections, hundreds of levels); "
                "edit it by hand"
            ) from None
        except AssertionError as exc:  # ruamel asserts on a %YAML version it does not know
            if "version" not in str(exc):
                raise
            raise _ComposeError(
                "has a %YAML directive other than 1.1 or 1.2; Flux (go-yaml v3 parserc.go) reads only %YAML 1.1"
            ) from None
    raise _ComposeError(f"has more than {_MAX_TAB_FIXES} tabs between values and comments; use spaces")


@functools.lru_cache(maxsize=64)
def _composed(text: str) -> tuple[Node | None, ...]:
    # Cached (nodes are only read, never changed): one promotion reads, edits and re-checks the same few
    # files, and ruamel composes in pure Python (~1.3 ms for a small Application file).
    return _compose_all(text)


def compose_one(text: str) -> Node | None:
    """The single document of an embedded YAML text (a patch in a block scalar), or None if it is not
    exactly one readable document: embedded text is data to kustomize, which reports its own errors."""
    try:
        docs = _composed(text)
    except _ComposeError:
        return None
    return docs[0] if len(docs) == 1 else None


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
    """Every scalar that is a mapping value or a list item, with its path.

    Each node is visited once, at the first path that reaches it: an alias (``*ref``, ``<<: *base``) is the
    anchored node itself, so walking it again would find nothing new, and an alias bomb (nine aliases of nine
    aliases of ...) would take exponential time. Flux's kyaml walks alias nodes without expanding them either.
    """
    seen: set[int] = set()

    def walk(node: Node, path: tuple[PathKey, ...], depth: int) -> Iterator[tuple[tuple[PathKey, ...], ScalarNode]]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode):  # complex keys hold no image values
                    yield from walk(value_node, (*path, key_node.value), depth + 1)
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, (*path, i), depth + 1)
        elif isinstance(node, ScalarNode) and path:
            yield path, node

    for doc_index, root in enumerate(docs):
        if root is not None:
            for path, node in walk(root, (), 0):
                yield doc_index, path, node


def navigate(root: Node | None, path: Sequence[PathKey], source: str | None = None) -> Node | None:
    """The node at ``path``; with ``source``, a key given twice in a mapping on the way is a ManifestError
    (see :func:`unique_value`)."""
    node = root
    for i, key in enumerate(path):
        if isinstance(node, ScalarNode) and node.style == "|":  # into a patch's embedded YAML
            return navigate(compose_one(node.value), path[i:], source)
        if isinstance(key, int):
            node = node.value[key] if isinstance(node, SequenceNode) and key < len(node.value) else None
        elif source is not None:
            node = unique_value(node, key, source)
        else:
            node = mapping_value(node, key)
        if node is None:
            return None
    return node


def unique_value(node: Node | None, key: str, source: str) -> Node | None:
    """Like :func:`mapping_value`, but a key given twice is an error naming both lines: go-yaml v3 (decode.go
    mapping, "mapping key already defined") refuses the file, so Flux would not apply it, while readers built on
    go-yaml v2 (sigs.k8s.io/yaml: Helm, Argo CD) take the last one, so editing the first one would change a
    value nobody reads."""
    if not isinstance(node, MappingNode):
        return None
    lines = [
        line_of(key_node) for key_node, _ in node.value if isinstance(key_node, ScalarNode) and key_node.value == key
    ]
    if len(lines) > 1:
        raise ManifestError(
            source,
            f"key {_shown_key(key)} is given {len(lines)} times in one mapping (lines "
            f"{', '.join(map(str, lines[:5]))}); Flux refuses such a file and other tools read the last one: "
            "keep one",
        )
    return mapping_value(node, key)


def _shown_key(key: Any) -> str:
    text = str(key)
    return repr(text if len(text) <= 80 else text[:77] + "...")


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
        node = navigate(docs[check.doc] if check.doc < len(docs) else None, check.path, source)
        if not (isinstance(node, ScalarNode) and node.value == check.expected and check.tag in (None, node.tag)):
            where = ".".join(str(p) for p in check.path)
            raise ManifestError(
                source,
                f"internal error: {_shown_key(where)} would not read {check.expected!r}; the file was not changed",
            )
    return new_text
