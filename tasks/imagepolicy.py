"""Flux-style image policy: choose a registry tag, then write it through the setter markers under a path.

Choosing follows Flux's image-reflector-controller (``internal/policy``):

* ``filterTags.pattern`` is searched (not anchored) in each tag; ``extract`` (``$ts``, ``${ts}``, ``$1``)
  is expanded from the match as Go's ``Regexp.Expand`` does, and the *extracted* values are ordered while
  the *original* tag is returned. Two tags with the same extracted value: the later one in the listing wins
  (Flux keeps them in a map keyed by the extracted value).
* ``semver``: values that parse as semver (an optional leading ``v``) inside the range; pre-releases only
  when the range names one (``tasks.versions.SemverRange``); the highest wins.
* ``alphabetical`` / ``numerical``: ``asc`` selects the *last* value of the ascending order, ``desc`` the
  first. Flux's API reference (AlphabeticalPolicy.order): "Given the letters of the alphabet as tags,
  ascending order would select Z, and descending order would select A"; NumericalPolicy.order: "Given the
  integer values from 0 to 9 as tags, ascending order would select 9, and descending order would select 0".
* ``numerical`` with a value that is not a number: Flux fails the policy ("failed to parse invalid numeric
  value"), it does not skip the tag. So do we, naming the tag and the filter that would exclude it.

Nothing left after filtering (or nothing in the semver range) is ``None``: a clear no-op for the flow.

Writing computes every file's new text before it writes any, so an error leaves the tree as it was.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import Node, ScalarNode

from promote.pipeline import ImagePolicy, TagFilter
from tasks.manifests import ManifestError, find_setter_markers, mapping_value, set_setter_values
from tasks.versions import newest_in_range

__all__ = [
    "Change",
    "ImagePolicyError",
    "ObjectRef",
    "UpdateResult",
    "apply_to_files",
    "expand_extract",
    "select_tag",
]

_NAME_CHAR = re.compile(r"\w", re.ASCII)
# Go's strconv.ParseFloat in decimal form (tags cannot hold '+', hex floats or "Inf" in a useful way).
_DECIMAL_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_YAML_SUFFIXES = (".yaml", ".yml")
_MARKER_KEY = "$imagepolicy"


class ImagePolicyError(ValueError):
    """A policy that cannot choose among the tags it is given; the message names the tag and the fix."""


# --- choosing a tag ---------------------------------------------------------------------------------------


def select_tag(tags: Iterable[str], tag_filter: TagFilter, policy: ImagePolicy) -> str | None:
    """The tag the policy selects among ``tags``, or None when no tag passes the filter and the policy."""
    candidates = _filtered(tags, tag_filter)  # extracted value -> original tag
    if not candidates:
        return None
    if policy.semver is not None:
        return _newest_semver(candidates, policy.semver)
    if policy.alphabetical is not None:
        ordered = sorted(candidates)  # Go compares strings bytewise; tags are ASCII, so code points agree
        return candidates[ordered[-1] if policy.alphabetical == "asc" else ordered[0]]
    if policy.numerical is not None:
        return candidates[_numerical_pick(candidates, policy.numerical, tag_filter)]
    raise ImagePolicyError("the image policy sets none of semver, alphabetical, numerical")  # the model forbids it


def _filtered(tags: Iterable[str], tag_filter: TagFilter) -> dict[str, str]:
    pattern = re.compile(tag_filter.pattern)
    result: dict[str, str] = {}
    for tag in tags:
        match = pattern.search(tag)
        if match is None:
            continue
        value = expand_extract(tag_filter.extract, match) if tag_filter.extract else tag
        result[value] = tag
    return result


def expand_extract(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$name``/``${name}``/``$1`` replaced from ``match``, as Go's ``Regexp.Expand``.

    A name is the longest run of letters, digits and '_' (``$1x`` is the group named ``1x``, not ``$1``
    then ``x``); ``$$`` is a '$'; a group that does not exist or did not take part is empty; a '$' that
    starts no valid reference stays as it is.
    """
    out: list[str] = []
    i = 0
    while i < len(template):
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            break
        out.append(template[i:dollar])
        i = dollar + 1
        if template.startswith("$", i):
            out.append("$")
            i += 1
            continue
        name, i_after = _reference_name(template, i)
        if name is None:
            out.append("$")
            continue
        i = i_after
        out.append(_group(match, name))
    return "".join(out)


def _reference_name(template: str, i: int) -> tuple[str | None, int]:
    braced = template.startswith("{", i)
    j = i + 1 if braced else i
    k = j
    while k < len(template) and _NAME_CHAR.fullmatch(template[k]):
        k += 1
    name = template[j:k]
    if not name:
        return None, i
    if braced:
        if not template.startswith("}", k):
            return None, i
        k += 1
    return name, k


def _group(match: re.Match[str], name: str) -> str:
    # Go: a number when all digits without a leading zero (and below 1e8), else a group name.
    if name.isdigit() and (name == "0" or not name.startswith("0")) and len(name) <= 8:
        index = int(name)
        return (match.group(index) or "") if index <= (match.re.groups) else ""
    if name in match.re.groupindex:
        return match.group(name) or ""
    return ""


def _newest_semver(candidates: dict[str, str], range_text: str) -> str | None:
    """The tag whose (extracted) value is the newest version inside the range."""
    newest = newest_in_range(candidates, range_text)
    return None if newest is None else candidates[newest]


def _numerical_pick(candidates: dict[str, str], order: str, tag_filter: TagFilter) -> str:
    numbers: list[tuple[Decimal, str]] = []
    for value, tag in candidates.items():
        number = _decimal(value)
        if number is None:
            what = f"{tag!r}" if value == tag else f"{tag!r} (extracted {value!r})"
            raise ImagePolicyError(
                f"numerical image policy: tag {what} is not a number; set filter_tags.pattern (and extract) so "
                f"only numeric values remain, e.g. pattern '^[0-9]+$' or '^main-[a-f0-9]+-(?P<ts>[0-9]+)$' with "
                f"extract '$ts' (current pattern {tag_filter.pattern!r})"
            )
        numbers.append((number, value))
    # Flux walks the values and keeps the later one on ties; max()/min() keep the first, so walk the same way.
    best_number, best_value = numbers[0]
    for number, value in numbers[1:]:
        if (order == "asc" and number >= best_number) or (order == "desc" and number <= best_number):
            best_number, best_value = number, value
    return best_value


def _decimal(value: str) -> Decimal | None:
    if not _DECIMAL_RE.fullmatch(value):
        return None
    try:
        return Decimal(value)  # exact: 20260101123000 and 20260101123001 stay apart, unlike in a float
    except InvalidOperation:
        return None


# --- writing the tag through setter markers ---------------------------------------------------------


@dataclass(frozen=True, order=True)
class ObjectRef:
    """The YAML document a changed value sits in (Flux's ObjectIdentifier); empty strings when absent."""

    api_version: str
    kind: str
    name: str
    namespace: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind or '(no kind)'} {where}{self.name or '(no name)'}"


@dataclass(frozen=True)
class Change:
    """One marked value that changed (Flux's Change, plus where it is)."""

    file: str  # relative to the repository root, '/'-separated
    object: ObjectRef
    old_value: str
    new_value: str
    setter: str  # the marker's policy reference: "ns:name" (whole image) or "ns:name:tag" / ":name"
    line: int


@dataclass(frozen=True)
class UpdateResult:
    """What :func:`apply_to_files` changed; empty ``changes`` means every marker already held the image."""

    path: str  # the update path the files were searched under, '/'-separated, relative to the root
    policy: str
    image: str  # repository, e.g. registry.example/app
    tag: str
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted({c.file for c in self.changes}))

    @property
    def objects(self) -> tuple[ObjectRef, ...]:
        return tuple(sorted({c.object for c in self.changes}))

    @property
    def images(self) -> tuple[str, ...]:
        """The image references written, for commit messages (``registry.example/app:1.2.3``)."""
        return (self.image_ref,) if self.changes else ()


def apply_to_files(root: Path, subpath: str, policy_ref: str, image: str, tag: str) -> UpdateResult:
    """Write ``image:tag`` through every ``{"$imagepolicy": policy_ref...}`` marker in the YAML files under
    ``root/subpath``, keeping every other byte (comments, quoting, layout) of those files.

    A whole-image marker gets ``image:tag`` (an old digest goes: it pinned the old tag), ``:tag`` markers
    the tag, ``:name`` markers the image; ``:digest`` markers are left alone. Every edit is computed before
    any file is written: an error (``ManifestError``) leaves the tree unchanged.
    """
    base = _update_path(root, subpath)
    rel_path = base.relative_to(root.resolve()).as_posix()
    pending: list[tuple[Path, bytes]] = []
    changes: list[Change] = []
    marked_files = 0
    for file in _yaml_files(base):
        rel = file.relative_to(root.resolve()).as_posix()
        raw = file.read_bytes()
        if _MARKER_KEY.encode() not in raw:
            continue  # cheap screen, as Flux's reader does, before any YAML parsing
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(rel, "not UTF-8 text; setter markers can only be updated in UTF-8 YAML") from None
        before = [m for m in find_setter_markers(text, source=rel) if m.policy == policy_ref]
        if not before:
            continue
        marked_files += 1
        new_text, count = set_setter_values(text, policy_ref, name=image, tag=tag, source=rel)
        if count == 0:
            continue
        after = [m for m in find_setter_markers(new_text, source=rel) if m.policy == policy_ref]
        objects = _document_objects(new_text, rel)
        for old, new in zip(before, after, strict=True):
            if old.value != new.value:
                setter = policy_ref if old.field == "image" else f"{policy_ref}:{old.field}"
                changes.append(Change(rel, _object_at(objects, new.line), old.value, new.value, setter, new.line))
        pending.append((file, new_text.encode("utf-8")))
    if marked_files == 0:
        raise ManifestError(
            rel_path + "/" if rel_path != "." else "./",
            f'no {{"$imagepolicy": "{policy_ref}"}} setter marker in any *.yaml/*.yml file under this path; mark '
            f'the value to update with a line comment: `image: {image}:1.0.0 # {{"$imagepolicy": "{policy_ref}"}}` '
            f'or `tag: 1.0.0 # {{"$imagepolicy": "{policy_ref}:tag"}}`',
        )
    for file, data in pending:
        _write_replacing(file, data)
    return UpdateResult(path=rel_path, policy=policy_ref, image=image, tag=tag, changes=tuple(changes))


def _update_path(root: Path, subpath: str) -> Path:
    if PurePosixPath(subpath).is_absolute() or Path(subpath).is_absolute():
        raise ManifestError(subpath, "the update path must be relative to the repository root")
    resolved_root = root.resolve()
    base = (resolved_root / subpath).resolve()
    if not base.is_relative_to(resolved_root):
        raise ManifestError(subpath, "the update path leads outside the repository; use a path inside it")
    if not base.is_dir():
        raise ManifestError(subpath, "the update path is not a directory in the repository")
    return base


def _yaml_files(base: Path) -> list[Path]:
    found: list[Path] = []
    for directory, subdirs, files in os.walk(base):  # does not descend into symlinked directories
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            # A symlinked file is skipped: its target, if inside the tree, is visited as itself.
            if name.endswith(_YAML_SUFFIXES) and not name.startswith(".") and not path.is_symlink():
                found.append(path)
    return sorted(found)


def _document_objects(text: str, source: str) -> list[tuple[int, int, ObjectRef]]:
    """(first line, last line, object) of each YAML document, 1-based lines."""
    try:
        docs = list(YAML(typ="rt").compose_all(text))
    except YAMLError as exc:
        raise ManifestError(source, f"not valid YAML: {exc}") from None
    spans: list[tuple[int, int, ObjectRef]] = []
    for doc in docs:
        if doc is None:
            continue
        metadata = mapping_value(doc, "metadata")
        ref = ObjectRef(
            api_version=_scalar(mapping_value(doc, "apiVersion")),
            kind=_scalar(mapping_value(doc, "kind")),
            name=_scalar(mapping_value(metadata, "name")),
            namespace=_scalar(mapping_value(metadata, "namespace")),
        )
        spans.append((doc.start_mark.line + 1, doc.end_mark.line + 1, ref))
    return spans


def _object_at(spans: list[tuple[int, int, ObjectRef]], line: int) -> ObjectRef:
    for first, last, ref in spans:
        if first <= line <= last:
            return ref
    return ObjectRef("", "", "", "")


def _scalar(node: Node | None) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else ""


def _write_replacing(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename: a reader never sees half a manifest; the mode is kept."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
