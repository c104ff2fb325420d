"""What a write through Flux setter markers changed (tasks/setters.py writes; rules/fluxtemplate.py reports it as
Flux's commit templates see it): plain data, so the rules that read it need nothing that writes files."""

from __future__ import annotations

from dataclasses import dataclass


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
    """What tasks/setters.py's ``apply_to_files`` changed; empty ``changes``: every marker held the image."""

    path: str  # the update path the files were searched under, '/'-separated, relative to the root
    policy: str
    image: str  # repository, e.g. registry.example/app
    tag: str
    changes: tuple[Change, ...]
    # Files that mention a marker but do not read as YAML (a Helm template), skipped as Flux skips them: why, each
    skipped: tuple[str, ...] = ()
    digest: str | None = None  # the latest ref's digest, when the update wrote one

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def image_ref(self) -> str:
        return f"{self.image}:{self.tag}" + (f"@{self.digest}" if self.digest else "")

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
