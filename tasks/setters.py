"""Write an image through Flux setter markers (``# {"$imagepolicy": "ns:name"}``) in the YAML files under a path.

As Flux's image-automation-controller does: every marked value in every YAML file under the update path,
keeping every other byte. Every file's new text is computed before any is written, so an error leaves the
tree as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

from ruamel.yaml.nodes import Node, ScalarNode

from rules.imageupdates import Change, ObjectRef, UpdateResult
from rules.yamledit import MAX_FILE_BYTES, ManifestError, compose, mapping_value
from tasks import worktree_paths
from tasks.manifests import find_setter_markers, set_setter_values

__all__ = ["MARKER_KEY", "apply_to_files", "reads"]

_YAML_SUFFIXES = (".yaml", ".yml")
MARKER_KEY = "$imagepolicy"  # the cheap screen before any parsing, as Flux's reader does


def apply_to_files(
    root: Path, subpath: str, policy_ref: str, image: str, tag: str, digest: str | None = None
) -> UpdateResult:
    """Write ``image:tag`` (``@digest`` when given) through every ``{"$imagepolicy": policy_ref...}`` marker in the
    YAML files under ``root/subpath``, keeping every other byte (comments, quoting, layout) of those files.

    As Flux writes a policy's latest ref: a whole-image marker gets ``image:tag[@digest]`` (an old digest goes: it
    pinned the old tag), ``:tag`` markers the tag, ``:name`` markers the image, ``:digest`` markers the digest, or
    nothing when there is none (emptied beside the policy's other markers; a file whose markers set only the
    digest is refused). Every edit is computed before any file is written: an error (``ManifestError``) leaves
    the tree unchanged.
    """
    base = _update_path(root, subpath)
    rel_path = base.relative_to(root.resolve()).as_posix()
    pending: list[tuple[Path, bytes]] = []
    changes: list[Change] = []
    unreadable: list[str] = []
    marked_files = 0
    found, links = _yaml_files(base)
    for file in found:
        rel = file.relative_to(root.resolve()).as_posix()
        raw = _read_marked(file, rel)
        if raw is None:
            continue  # cheap screen, as Flux's reader does, before any YAML parsing
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(rel, "not UTF-8 text; setter markers can only be updated in UTF-8 YAML") from None
        try:
            before = [m for m in find_setter_markers(text, source=rel) if m.policy == policy_ref]
        except ManifestError as problem:
            # As Flux's reader does (internal/update/filereader.go): a file that mentions a marker but does not
            # read as YAML (a Helm template) is skipped, and the others are still updated.
            unreadable.append(str(problem)[:300])  # names the file
            continue
        if not before:
            continue
        marked_files += 1
        new_text, count = set_setter_values(
            text, policy_ref, name=image, tag=tag, digest=digest, clear_digest=digest is None, source=rel
        )
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
        skipped = [link.relative_to(root.resolve()).as_posix() for link in links]
        note = (
            f" ({len(skipped)} symlinked file(s) skipped, e.g. {skipped[0][:80]}: promotions never write through "
            "symlinks; commit the file in place of the link)"
            if skipped
            else ""
        )
        if unreadable:
            note += f" ({len(unreadable)} file(s) mention a marker but do not read as YAML, e.g. {unreadable[0]})"
        raise ManifestError(
            rel_path + "/" if rel_path != "." else "./",
            f'no {{"$imagepolicy": "{policy_ref}"}} setter marker in any *.yaml, *.yml or Kustomization file under '
            f"this path{note}; "
            f'mark the value to update with a line comment: `image: {image}:1.0.0 # {{"$imagepolicy": '
            f'"{policy_ref}"}}` or `tag: 1.0.0 # {{"$imagepolicy": "{policy_ref}:tag"}}`',
        )
    for file, data in pending:
        _write_replacing(file, data)
    return UpdateResult(
        path=rel_path,
        policy=policy_ref,
        image=image,
        tag=tag,
        changes=tuple(changes),
        skipped=tuple(unreadable),
        digest=digest,
    )


def _read_marked(file: Path, rel: str) -> bytes | None:
    """The file's bytes if it holds a setter marker at all, else None. A file over the edit limit (a large CRD
    bundle beside the manifests) is screened in chunks without loading it; holding a marker, it is refused."""
    key = MARKER_KEY.encode()
    with file.open("rb") as handle:
        head = handle.read(MAX_FILE_BYTES + 1)
        if len(head) <= MAX_FILE_BYTES:
            return head if key in head else None
        tail = head[-len(key) :]
        marked = key in head
        while not marked and (chunk := handle.read(1 << 20)):
            marked = key in tail + chunk
            tail = chunk[-len(key) :]
    if not marked:
        return None
    raise ManifestError(
        rel,
        f"holds a setter marker but is over {MAX_FILE_BYTES // 1048576} MiB; files that large are not edited "
        "(split it, or update it by hand)",
    )


def reads(rel: str) -> bool:
    """Whether the file at ``rel`` ('/'-separated) is one the update reads, as Flux's reader does
    (image-automation-controller's internal/update/filereader.go): a ``.yaml`` or ``.yml`` extension or the name
    ``Kustomization``, hidden files and folders included; nothing in Git's own ``.git``."""
    parts = rel.split("/")
    return ".git" not in parts[:-1] and (parts[-1].endswith(_YAML_SUFFIXES) or parts[-1] == "Kustomization")


def _update_path(root: Path, subpath: str) -> Path:
    if PurePosixPath(subpath).is_absolute() or Path(subpath).is_absolute():
        raise ManifestError(subpath, "the update path must be relative to the repository root")
    if (link := worktree_paths.first_symlink(root, subpath)) is not None:
        raise ManifestError(subpath, worktree_paths.refusal(subpath, link))
    resolved_root = root.resolve()
    base = (resolved_root / subpath).resolve()
    if not base.is_relative_to(resolved_root):
        raise ManifestError(subpath, "the update path leads outside the repository; use a path inside it")
    if not base.is_dir():
        raise ManifestError(subpath, "the update path is not a directory in the repository")
    return base


def _yaml_files(base: Path) -> tuple[list[Path], list[Path]]:
    """The files under ``base`` the update reads (:func:`reads`), and the symlinked ones skipped (never written
    through; a target inside the path is visited as itself). Symlinked directories are not descended into, nor
    Git's own ``.git``."""
    found: list[Path] = []
    links: list[Path] = []
    for directory, subdirs, files in os.walk(base):  # does not descend into symlinked directories
        subdirs[:] = sorted(d for d in subdirs if d != ".git")
        for name in sorted(files):
            path = Path(directory) / name
            if reads(name):
                (links if path.is_symlink() else found).append(path)
    return sorted(found), sorted(links)


def _document_objects(text: str, source: str) -> list[tuple[int, int, ObjectRef]]:
    """(first line, last line, object) of each YAML document, 1-based lines."""
    docs = compose(text, source)  # bounded and read as Flux reads it (rules.yamledit)
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
