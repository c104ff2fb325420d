"""Kubernetes manifest formats this tool edits: Argo CD Application ``targetRevision``, Kustomize ``images[]``,
Flux setter markers. Each changes one value and leaves every other byte of the file as it was, through the
splice engine in :mod:`rules.yamledit`.

Every function takes ``source`` (the file name) for its error messages, validates its inputs first and
computes all edits before applying any: a ``ManifestError`` means nothing was changed.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.yamledit import (
    INT_TAG,
    Check,
    Edit,
    ManifestError,
    PathKey,
    apply,
    compose,
    compose_one,
    is_null,
    line_of,
    mapping_value,
    navigate,
    render,
    scalar_or_none,
    scalar_value,
    set_scalar,
    walk_values,
)

__all__ = [
    "KustomizeImage",
    "ManifestError",
    "SetterField",
    "SetterMarker",
    "find_setter_markers",
    "get_application_revision",
    "get_kustomize_image",
    "set_application_revision",
    "set_kustomize_image",
    "set_replicas_patch",
    "set_setter_values",
]

_DEFAULT_SOURCE = "<string>"

SetterField = Literal["image", "tag", "name", "digest"]

# Grammar of github.com/distribution/reference (regexp.go); ASCII only, unlike Go's \w in Python.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME_RE = re.compile(_NAME)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_REFERENCE_RE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
_NAME_MAX = 255  # distribution's NameTotalLengthMax
# Registered algorithms have a fixed, lowercase encoding (opencontainers/go-digest).
_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}

# The marker comment at the end of a value's line; in a flow collection written over several lines the comma that
# ends the entry comes first (`{name: web, image: x:1, # {...}` and JSON-style `"image": "x:1", # {...}`), and
# go-yaml, which Flux reads with, gives the comment to that value all the same.
_MARKER_COMMENT_RE = re.compile(r"(?:[ \t]*,)?[ \t]+#+[ \t]*(\{.*\})[ \t]*\r?")  # kyaml trims every leading #

_HEAD_COMMENT_RE = re.compile(r"[ \t]*#+[ \t]*(\{.*\})[ \t]*\r?")
# Before a list item on its own line: the indentation (group 1), then a block list's dash if any (a flow list's item
# has none).
_ITEM_PREFIX_RE = re.compile(r"([ \t]*)(?:-[ \t]+)?")
_SUFFIX_FIELDS: dict[str, SetterField] = {"tag": "tag", "name": "name", "digest": "digest"}
_KUSTOMIZE_FIELDS = (("new_name", "newName"), ("new_tag", "newTag"), ("digest", "digest"))
_PATCH_LISTS = ("patches", "patchesJson6902")
_REPLICAS_PATH = "/spec/replicas"


@dataclass(frozen=True)
class KustomizeImage:
    """One entry of a kustomization's ``images:`` list: what an overlay runs."""

    name: str
    new_name: str | None = None
    new_tag: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class SetterMarker:
    """A Flux image-automation marker such as ``# {"$imagepolicy": "flux-system:app:tag"}``."""

    line: int  # 1-based line of the marked value
    policy: str  # "<namespace>:<name>" of the ImagePolicy
    field: SetterField  # "image" means the whole reference
    value: str  # the value the marker currently sits on


# ---------------------------------------------------------------------------------------------------
# Kustomize images


def parse_reference(image: str, *, source: str = _DEFAULT_SOURCE) -> KustomizeImage:
    """An image reference ``name[:tag][@digest]`` split into its parts (``new_tag``/``digest``)."""
    match = _REFERENCE_RE.fullmatch(image)
    if match is None:
        raise ManifestError(source, f"invalid image reference {image!r}: expected name[:tag][@digest]")
    return KustomizeImage(name=match["name"], new_tag=match["tag"], digest=match["digest"])


def get_kustomize_image(text: str, image: str, *, source: str = _DEFAULT_SOURCE) -> KustomizeImage:
    """Read the ``images:`` entry named ``image`` of a kustomization."""
    docs = compose(text, source)
    doc_index, path, entry = _find_image_entry(docs, image, source)
    values = {}
    for _, key in _KUSTOMIZE_FIELDS:
        navigate(docs[doc_index], (*path, key), source)  # a key given twice is refused, as for a write
        node = mapping_value(entry, key)
        values[key] = None if node is None else scalar_value(node, f"images[{image}].{key}", source)
    return KustomizeImage(image, values["newName"], values["newTag"], values["digest"])


def set_kustomize_image(
    text: str,
    image: str,
    *,
    new_tag: str | None = None,
    new_name: str | None = None,
    digest: str | None = None,
    source: str = _DEFAULT_SOURCE,
) -> str:
    """Set ``newTag`` / ``newName`` / ``digest`` of the ``images:`` entry named ``image``.

    Existing keys get their value replaced; a missing key is added on a new line after the entry's last
    key, at the same indentation (the one case where the diff adds a line).
    """
    wanted = {"new_tag": new_tag, "new_name": new_name, "digest": digest}
    if all(value is None for value in wanted.values()):
        raise ManifestError(source, f"nothing to set for image {image!r}: pass new_tag, new_name or digest")
    if new_tag is not None:
        _validate_tag(new_tag, source)
    if new_name is not None:
        _validate_name(new_name, source)
    if digest is not None:
        _validate_digest(digest, source)

    docs = compose(text, source)
    doc_index, path, entry = _find_image_entry(docs, image, source)
    edits: list[Edit] = []
    checks: list[Check] = []
    missing: list[tuple[str, str]] = []
    for attr, key in _KUSTOMIZE_FIELDS:
        value = wanted[attr]
        if value is None:
            continue
        node = mapping_value(entry, key)
        if node is None:
            missing.append((key, value))
            checks.append(Check(doc_index, (*path, key), value))
        else:
            edit, check = set_scalar(text, doc_index, (*path, key), node, value, f"images[{image}].{key}", source)
            edits.append(edit)
            checks.append(check)
    if missing:
        edits.append(_insert_keys(text, entry, missing))
    return apply(text, edits, checks, source)


def _find_image_entry(
    docs: Sequence[Node | None], image: str, source: str
) -> tuple[int, tuple[PathKey, ...], MappingNode]:
    found: list[tuple[int, tuple[PathKey, ...], MappingNode]] = []
    names: list[str] = []
    has_list = False
    for doc_index, root in enumerate(docs):
        images = mapping_value(root, "images")
        if images is None or is_null(images):
            continue
        if not isinstance(images, SequenceNode):
            raise ManifestError(source, f"images: is not a list (line {line_of(images)})")
        has_list = True
        for i, entry in enumerate(images.value):
            name_node = mapping_value(entry, "name")
            if not isinstance(entry, MappingNode) or not isinstance(name_node, ScalarNode):
                continue
            names.append(name_node.value)
            if name_node.value == image:
                found.append((doc_index, ("images", i), entry))
    if not has_list:
        raise ManifestError(
            source, f"image {image!r} not found: the file has no images: list; add one with `- name: {image}`"
        )
    if not found:
        there = ", ".join(repr(n) for n in names) or "none"
        raise ManifestError(
            source,
            f"image {image!r} not found in images: (images there: {there}); "
            f"use one of those names or add an entry `- name: {image}`",
        )
    if len(found) > 1:
        lines = ", ".join(str(line_of(entry)) for _, _, entry in found)
        raise ManifestError(source, f"image {image!r} is listed {len(found)} times (lines {lines}); keep one")
    return found[0]


def _insert_keys(text: str, entry: MappingNode, items: Sequence[tuple[str, str]]) -> Edit:
    """Add ``key: value`` pairs after the last key of a mapping, in the mapping's own layout."""
    last_value = entry.value[-1][1]
    # A new value takes the quoting of its neighbour, so `newTag: "1.0"` gets `digest: "sha256:..."`.
    style = last_value.style if isinstance(last_value, ScalarNode) and last_value.style in ("'", '"') else None
    if entry.flow_style:
        at = last_value.end_mark.index
        return Edit(at, at, "".join(f", {key}: {render(value, style)}" for key, value in items))
    newline = "\r\n" if "\r\n" in text else "\n"
    indent = " " * entry.value[0][0].start_mark.column
    lines = "".join(f"{indent}{key}: {render(value, style)}{newline}" for key, value in items)
    end = last_value.end_mark.index
    if end > 0 and text[end - 1] == "\n":  # block collections and block scalars end at a line start
        return Edit(end, end, lines)
    eol = text.find("\n", end)
    if eol == -1:  # last line of a file without a final newline
        return Edit(len(text), len(text), newline + lines.removesuffix(newline))
    return Edit(eol + 1, eol + 1, lines)


# ---------------------------------------------------------------------------------------------------
# Replica patches


def set_replicas_patch(
    text: str,
    value: int,
    *,
    kind: str | None = "Deployment",
    target_name: str | None = None,
    source: str = _DEFAULT_SOURCE,
) -> str:
    """Set the replica count in a kustomization patch written as a literal block scalar (``patch: |-``).

    Both JSON6902 ops (``op: replace``/``add`` with ``path: /spec/replicas``) and strategic-merge patches
    (``spec: {replicas: N}``) are found. ``kind`` and ``target_name`` narrow the match by the patch's
    ``target`` (or the strategic-merge patch's own kind/name); more than one match is an error.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(source, f"replicas must be a non-negative integer, got {value!r}")
    docs = compose(text, source)
    matches: list[tuple[int, tuple[PathKey, ...], ScalarNode, tuple[PathKey, ...], ScalarNode, str]] = []
    for doc_index, root in enumerate(docs):
        for list_key in _PATCH_LISTS:
            patches = mapping_value(root, list_key)
            if not isinstance(patches, SequenceNode):
                continue
            for i, entry in enumerate(patches.value):
                patch = mapping_value(entry, "patch")
                if not isinstance(patch, ScalarNode):
                    continue
                found = _replicas_in_patch(patch.value, mapping_value(entry, "target"), kind, target_name)
                if found is None:
                    continue
                inner_path, inner_node, label = found
                if patch.style != "|":
                    raise ManifestError(
                        source,
                        f"the replicas patch at line {line_of(patch)} is not a literal block scalar "
                        "(`patch: |-`), so it cannot be edited in place; rewrite it as one",
                    )
                matches.append((doc_index, (list_key, i, "patch"), patch, inner_path, inner_node, label))
    if not matches:
        wanted = f" for kind {kind!r}" if kind else ""
        wanted += f" named {target_name!r}" if target_name else ""
        raise ManifestError(
            source,
            f"no patch setting {_REPLICAS_PATH}{wanted} found in patches:; add one "
            "(`- op: replace`, `path: /spec/replicas`, `value: N` with a target) or check kind/target_name",
        )
    if len(matches) > 1:
        listed = "; ".join(f"line {line_of(patch)}: {label}" for _, _, patch, _, _, label in matches)
        raise ManifestError(
            source, f"{len(matches)} patches set {_REPLICAS_PATH} ({listed}); pass kind/target_name to pick one"
        )
    doc_index, path, patch, inner_path, inner_node, _ = matches[0]
    start, end = _block_scalar_span(text, patch, inner_node, source)
    # Replicas must stay an integer: render plain even if the old value was quoted.
    edit = Edit(start, end, str(value))
    return apply(text, [edit], [Check(doc_index, (*path, *inner_path), str(value), INT_TAG)], source)


def _replicas_in_patch(
    content: str, target: Node | None, kind: str | None, name: str | None
) -> tuple[tuple[PathKey, ...], ScalarNode, str] | None:
    """Locate the replicas value inside a patch's text, if this patch sets replicas for the target."""
    # Not YAML (or not one document): not a patch we can edit, and kustomize will say so itself.
    root = compose_one(content)
    target_kind = scalar_or_none(mapping_value(target, "kind"))
    target_name = scalar_or_none(mapping_value(target, "name"))
    found: tuple[tuple[PathKey, ...], ScalarNode] | None = None
    if isinstance(root, SequenceNode):  # JSON6902 op list
        for i, op in enumerate(root.value):
            value = mapping_value(op, "value")
            if (
                scalar_or_none(mapping_value(op, "op")) in ("replace", "add")
                and scalar_or_none(mapping_value(op, "path")) == _REPLICAS_PATH
                and isinstance(value, ScalarNode)
            ):
                found = ((i, "value"), value)
                break
    elif isinstance(root, MappingNode):  # strategic merge patch
        replicas = mapping_value(mapping_value(root, "spec"), "replicas")
        if isinstance(replicas, ScalarNode):
            found = (("spec", "replicas"), replicas)
            target_kind = target_kind or scalar_or_none(mapping_value(root, "kind"))
            target_name = target_name or scalar_or_none(mapping_value(mapping_value(root, "metadata"), "name"))
    if found is None:
        return None
    if kind is not None and target_kind is not None and target_kind != kind:
        return None
    if name is not None and target_name != name:
        return None
    return (*found, f"{target_kind or '?'}/{target_name or '*'}")


def _block_scalar_span(text: str, block: ScalarNode, inner: ScalarNode, source: str) -> tuple[int, int]:
    """Map a node found in a literal block scalar's content back to offsets in the file.

    Content line i is file line i after the `|` header, minus the block's indentation, so the column
    shifts by however much longer the file line is than the content line.
    """
    content_lines = block.value.split("\n")
    row, col, end_col = inner.start_mark.line, inner.start_mark.column, inner.end_mark.column
    if inner.end_mark.line != row:
        raise ManifestError(source, f"the replicas value at line {line_of(block) + 1 + row} spans lines")
    pos = text.index("\n", block.start_mark.index) + 1  # first content line
    for _ in range(row):
        pos = text.index("\n", pos) + 1
    eol = text.find("\n", pos)
    file_line = text[pos : len(text) if eol == -1 else eol].removesuffix("\r")
    content_line = content_lines[row]
    if not file_line.endswith(content_line):
        raise ManifestError(source, f"cannot map the patch at line {line_of(block)} back to the file")
    offset = pos + len(file_line) - len(content_line)
    return offset + col, offset + end_col


# ---------------------------------------------------------------------------------------------------
# Argo CD Application


def get_application_revision(
    text: str,
    *,
    source_index: int | None = None,
    app_name: str | None = None,
    source: str = _DEFAULT_SOURCE,
) -> str:
    """Read ``spec.source.targetRevision`` (or ``spec.sources[source_index]``) of an Application."""
    docs = compose(text, source)
    doc_index, path, node = _find_target_revision(docs, source_index, app_name, source)
    navigate(docs[doc_index], path, source)  # a key given twice on the way is refused, as for a write
    what = ".".join(str(p) for p in path)
    revision = scalar_value(node, what, source)
    if not revision:
        raise ManifestError(source, f"{what} at line {line_of(node)} is empty; set it to a tag, branch or commit")
    return revision


def set_application_revision(
    text: str,
    revision: str,
    *,
    source_index: int | None = None,
    app_name: str | None = None,
    source: str = _DEFAULT_SOURCE,
) -> str:
    """Set ``targetRevision`` of an Argo CD Application's source (``sources[source_index]`` if multi)."""
    _validate_revision(revision, source)
    docs = compose(text, source)
    doc_index, path, node = _find_target_revision(docs, source_index, app_name, source)
    what = ".".join(str(p) for p in path)
    edit, check = set_scalar(text, doc_index, path, node, revision, what, source)
    return apply(text, [edit], [check], source)


def _find_target_revision(
    docs: Sequence[Node | None], source_index: int | None, app_name: str | None, source: str
) -> tuple[int, tuple[PathKey, ...], Node]:
    apps: list[tuple[int, MappingNode, str | None]] = []
    kinds: list[str] = []
    for doc_index, root in enumerate(docs):
        kind = scalar_or_none(mapping_value(root, "kind"))
        name = scalar_or_none(mapping_value(mapping_value(root, "metadata"), "name"))
        api = scalar_or_none(mapping_value(root, "apiVersion")) or ""
        kinds.append(f"{kind or '?'}/{name or '?'}")
        if kind == "Application" and api.startswith("argoproj.io/") and isinstance(root, MappingNode):
            apps.append((doc_index, root, name))
    if not apps:
        raise ManifestError(
            source,
            "no Argo CD Application (apiVersion: argoproj.io/v1alpha1, kind: Application) in the file "
            f"(documents: {', '.join(kinds) or 'none'}); point the pipeline at the Application manifest",
        )
    if app_name is not None:
        named = [app for app in apps if app[2] == app_name]
        if not named:
            there = ", ".join(repr(app[2]) for app in apps)
            raise ManifestError(source, f"no Application named {app_name!r} (Applications there: {there})")
        apps = named
    if len(apps) > 1:
        there = ", ".join(repr(app[2]) for app in apps)
        raise ManifestError(source, f"{len(apps)} Applications in the file ({there}); pass app_name to pick one")
    doc_index, app, name = apps[0]
    label = f"Application {name!r}"

    spec = mapping_value(app, "spec")
    sources = mapping_value(spec, "sources")
    single = mapping_value(spec, "source")
    # Argo CD ignores spec.source when spec.sources is set, so sources decides.
    if isinstance(sources, SequenceNode):
        count = len(sources.value)
        listed = ", ".join(
            f"[{i}] {scalar_or_none(mapping_value(src, 'repoURL')) or '?'}" for i, src in enumerate(sources.value)
        )
        if source_index is None:
            raise ManifestError(
                source, f"{label} has {count} sources ({listed}); pass source_index to say which one to set"
            )
        if not 0 <= source_index < count:
            raise ManifestError(
                source,
                f"source_index {source_index} is out of range: {label} has {count} sources ({listed})",
            )
        target: Node | None = sources.value[source_index]
        path: tuple[PathKey, ...] = ("spec", "sources", source_index)
    elif isinstance(single, MappingNode):
        if source_index is not None:
            raise ManifestError(source, f"{label} has a single spec.source, not spec.sources; do not pass source_index")
        target, path = single, ("spec", "source")
    else:
        raise ManifestError(source, f"{label} has no spec.source or spec.sources mapping")
    where = ".".join(str(p) for p in path)
    if not isinstance(target, MappingNode):
        raise ManifestError(source, f"{label}: {where} is not a mapping (line {line_of(target)})")
    revision = mapping_value(target, "targetRevision")
    if revision is None:
        raise ManifestError(
            source,
            f"{label}: {where} has no targetRevision (Argo CD then tracks HEAD); "
            f"add `targetRevision: HEAD` under {where} to let promotions set it",
        )
    return doc_index, (*path, "targetRevision"), revision


# ---------------------------------------------------------------------------------------------------
# Flux image-automation setter markers


def find_setter_markers(text: str, *, source: str = _DEFAULT_SOURCE) -> list[SetterMarker]:
    """All ``{"$imagepolicy": ...}`` markers on values of the file, in file order."""
    return [marker for marker, _, _, _ in _markers(text, _objects(text, source))]


def _objects(text: str, source: str) -> Sequence[Node | None]:
    """The file's documents, each an object (a mapping) or empty: Flux's reader refuses a file with a document
    that is a bare list or value, and updates nothing in it."""
    docs = compose(text, source)
    for doc in docs:
        if doc is not None and not isinstance(doc, MappingNode):
            raise ManifestError(
                source,
                f"the document at line {line_of(doc)} is a {'list' if isinstance(doc, SequenceNode) else 'bare value'}"
                ", not an object: Flux reads no setter markers in such a file",
            )
    return docs


def set_setter_values(
    text: str,
    policy: str,
    *,
    image: str | None = None,
    tag: str | None = None,
    name: str | None = None,
    digest: str | None = None,
    clear_digest: bool = False,
    source: str = _DEFAULT_SOURCE,
) -> tuple[str, int]:
    """Write a policy's latest image through its setter markers, as Flux's ``Setters`` strategy does.

    ``policy`` is ``"<namespace>:<name>"``. Give the full reference as ``image`` (``repo:tag``,
    optionally ``@digest``) or its parts. A whole-reference marker keeps the parts not given from its
    current value (a new tag drops an old digest, which pinned the old tag); ``:tag``/``:name``/``:digest``
    markers take just their part and are left alone when it is not given. ``clear_digest``: with no digest
    given, ``:digest`` markers beside the policy's other markers are emptied, as Flux empties them for a latest
    ref without a digest (an old digest left there would pin the old image under the new tag). Returns the new
    text and how many values changed (0 when the markers already hold the values).
    """
    if image is not None:
        if (tag, name, digest) != (None, None, None):
            raise ManifestError(source, "pass either image or its parts (name, tag, digest), not both")
        match = _REFERENCE_RE.fullmatch(image)
        if match is None:
            raise ManifestError(source, f"invalid image reference {image!r}: expected name[:tag][@digest]")
        name, tag, digest = match["name"], match["tag"], match["digest"]
    if (tag, name, digest) == (None, None, None):
        raise ManifestError(source, f"nothing to set for policy {policy!r}: pass image, tag, name or digest")
    if name is not None:
        _validate_name(name, source)
    if tag is not None:
        _validate_tag(tag, source)
    if digest is not None:
        _validate_digest(digest, source)

    docs = _objects(text, source)
    all_markers = _markers(text, docs)
    markers = [m for m in all_markers if m[0].policy == policy]
    if not markers:
        there = ", ".join(sorted({repr(m[0].policy) for m in all_markers})) or "none"
        raise ManifestError(
            source,
            f'no {{"$imagepolicy": "{policy}"}} setter marker found (policies marked here: {there}); '
            'add a line comment such as `# {"$imagepolicy": "' + policy + '"}` to the value to update',
        )
    parts: dict[str, str | None] = {"name": name, "tag": tag, "digest": digest}
    if digest is None and clear_digest and any(m[0].field != "digest" for m in markers):
        parts["digest"] = ""
    edits: list[Edit] = []
    checks: list[Check] = []
    for marker, doc_index, path, node in markers:
        if marker.field == "image":
            value: str | None = _merge_reference(marker, name, tag, digest, source)
        else:
            value = parts[marker.field]
        if value is None:
            continue
        edit, check = set_scalar(text, doc_index, path, node, value, f"the value marked for {policy}", source)
        checks.append(check)
        if text[edit.start : edit.end] != edit.text:
            edits.append(edit)
    if not checks:
        fields = ", ".join(sorted({m[0].field for m in markers}))
        raise ManifestError(
            source, f"the markers of policy {policy!r} set {fields}, which was not given; pass image or {fields}"
        )
    return apply(text, edits, checks, source), len(edits)


def _markers(text: str, docs: Sequence[Node | None]) -> list[tuple[SetterMarker, int, tuple[PathKey, ...], ScalarNode]]:
    found: list[tuple[SetterMarker, int, tuple[PathKey, ...], ScalarNode]] = []
    seen: set[int] = set()
    previous: dict[int, Node] | None = None  # each list item's previous sibling, found once when first needed
    for doc_index, path, node in walk_values(docs):
        if id(node) in seen:  # reached again through an alias (`<<: *base`): one value, one edit
            continue
        seen.add(id(node))
        comment = _line_comment(text, node)
        if comment is None and isinstance(path[-1], int):
            previous = _previous_items(docs) if previous is None else previous
            before = previous.get(id(node))
            comment = _head_comment(text, node, after_collection=isinstance(before, MappingNode | SequenceNode))
        if comment is None:
            continue
        parsed = _parse_marker(comment)
        if parsed is not None:
            policy, field = parsed
            found.append((SetterMarker(line_of(node), policy, field, node.value), doc_index, path, node))
    return found


def _previous_items(docs: Sequence[Node | None]) -> dict[int, Node]:
    """For every list item (by ``id``), the item before it in its list: one pass over the documents."""
    previous: dict[int, Node] = {}
    seen: set[int] = set()
    stack = [doc for doc in docs if doc is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, SequenceNode):
            previous.update((id(item), before) for before, item in itertools.pairwise(node.value))
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            stack.extend(value for _, value in node.value)
    return previous


def _line_comment(text: str, node: ScalarNode) -> str | None:
    """The marker-shaped comment at the end of the value's line (kyaml's LineComment), if any."""
    end = node.end_mark.index
    if node.style in ("|", ">") or node.end_mark.column == 0:
        return None  # ends at the start of a line (block scalar, some empty values): no comment of its own
    eol = text.find("\n", end)
    comment = _MARKER_COMMENT_RE.fullmatch(text, end, len(text) if eol == -1 else eol)
    return comment[1] if comment is not None else None


def _head_comment(text: str, item: ScalarNode, *, after_collection: bool) -> str | None:
    """The marker-shaped comment on the line above a list item that starts its line (kyaml's HeadComment, which
    Flux's setters read when the item has no line comment): the nearest non-blank line above is that one comment,
    and the line right above it is no comment (go-yaml would join the two into one comment that is no marker).
    After an item that is a mapping or a list, go-yaml gives the comment to that item unless it stands exactly at
    the dash's column."""
    start = item.start_mark.index
    line_start = text.rfind("\n", 0, start) + 1
    prefix = _ITEM_PREFIX_RE.fullmatch(text, line_start, start)
    if prefix is None:
        return None
    # Back over the blank lines to the nearest line with something on it, and the line before that: only as far
    # as that (the whole text before every item would make a long file's reading quadratic).
    end = line_start - 1  # the newline ending the line above, or -1 at the top
    while end >= 0:
        begin = text.rfind("\n", 0, end) + 1
        line = text[begin:end]
        if line.strip():
            break
        end = begin - 1
    else:
        return None
    comment = _HEAD_COMMENT_RE.fullmatch(line)
    if comment is None:
        return None
    if begin > 0 and text[text.rfind("\n", 0, begin - 1) + 1 : begin - 1].lstrip().startswith("#"):
        return None
    if after_collection and len(line) - len(line.lstrip(" \t")) != len(prefix[1]):
        return None
    return comment[1]


def _parse_marker(comment: str) -> tuple[str, SetterField] | None:
    """The policy and field a marker names, read as kyaml's ``processShortHand`` reads it (fieldmeta.go): a JSON
    object of strings (null reads as ""), whose ``$imagepolicy`` names a setter exactly, `ns:name` or
    `ns:name:tag|name|digest`, with no space stripped."""
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(value is None or isinstance(value, str) for value in data.values()):
        return None
    ref = data.get("$imagepolicy")
    if not isinstance(ref, str):
        return None
    parts = ref.split(":")
    if len(parts) == 2 and all(parts):
        return ref, "image"
    if len(parts) == 3 and all(parts[:2]) and parts[2] in _SUFFIX_FIELDS:
        return f"{parts[0]}:{parts[1]}", _SUFFIX_FIELDS[parts[2]]
    return None  # Flux rejects other shapes too


def _merge_reference(marker: SetterMarker, name: str | None, tag: str | None, digest: str | None, source: str) -> str:
    current_name = current_tag = current_digest = None
    if name is None or tag is None:
        current = _REFERENCE_RE.fullmatch(marker.value)
        if current is None:
            raise ManifestError(
                source,
                f"line {marker.line}: {marker.value!r} is not an image reference, so part of it "
                "cannot be replaced on its own; pass the full image",
            )
        current_name, current_tag, current_digest = current["name"], current["tag"], current["digest"]
    new_name = name if name is not None else current_name
    new_tag: str | None
    new_digest: str | None
    if tag is not None:
        new_tag, new_digest = tag, digest
    else:
        new_tag, new_digest = current_tag, digest if digest is not None else current_digest
    return f"{new_name}{f':{new_tag}' if new_tag else ''}{f'@{new_digest}' if new_digest else ''}"


# ---------------------------------------------------------------------------------------------------
# Input validation


def _validate_tag(tag: str, source: str) -> None:
    if not _TAG_RE.fullmatch(tag):
        raise ManifestError(
            source, f"invalid image tag {tag!r}: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -"
        )


def _validate_name(name: str, source: str) -> None:
    if len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
        raise ManifestError(
            source,
            f"invalid image name {name!r}: expected [registry[:port]/]path with lowercase components "
            "(no tag or digest)",
        )


def _validate_digest(digest: str, source: str) -> None:
    algorithm, _, encoded = digest.partition(":")
    size = _DIGEST_HEX_LEN.get(algorithm)
    valid = bool(_DIGEST_RE.fullmatch(digest)) and (
        size is None or re.fullmatch(rf"[0-9a-f]{{{size}}}", encoded) is not None
    )
    if not valid:
        raise ManifestError(
            source, f"invalid digest {digest!r}: expected algorithm:hex such as sha256:<64 lowercase hex>"
        )


def _validate_revision(revision: str, source: str) -> None:
    problem = None
    if not revision:
        problem = "it is empty"
    elif any(ch.isspace() or not ch.isprintable() for ch in revision):
        problem = "it contains whitespace or control characters"
    elif ".." in revision:
        problem = "it contains '..'"
    elif revision.startswith("-"):
        problem = "it starts with '-'"
    if problem:
        raise ManifestError(source, f"invalid revision {revision!r}: {problem}; use a tag, branch or commit")
