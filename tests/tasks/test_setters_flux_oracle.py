"""Our setter writes (tasks/setters.py) against Flux's own (image-automation-controller v1.2.0's
internal/update.UpdateWithSetters, built by hack/build-cluster-binaries flux-setters): every case of the corpus in
tests/data/setters-oracle/ is updated by both, and the values must agree. Formatting may differ (we keep every byte
but the value; Flux re-serialises what it touches). A value difference fails the case unless the table below
names it, with why; the table is the one in deployments/README.md ("Setter markers beside Flux's own code")."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.yamledit import ManifestError
from tasks.setters import apply_to_files
from tests.support.fluxsetters import FluxSetters, Policy

CORPUS = Path(__file__).resolve().parents[1] / "data" / "setters-oracle"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())

# Where we differ from Flux on purpose: Flux is wrong there, and we keep what is right.
DELIBERATE = {
    "tag-that-looks-like-a-float": "Flux keeps the float tag on the new text (`tag: !!float 1.2.3`, which no YAML "
    "reader can load as a float); we write a string",
    "null-tag": "Flux keeps the null tag (`tag: !!null 1.2.3`); we write a string",
    "kind-list": "Flux writes each item of a `kind: List` to a new file (deployment_web.yaml, service_web.yaml) and "
    "leaves the list as it was, so the cluster gets the old list and the new copies; we update the list in place",
    "digest-only-markers": "with no digest in the latest ref, Flux empties a file's only marker, a `:digest` one, "
    "and the image runs by whatever tag is left there; we refuse, and write nothing",
}
# Where Flux is right and we are not yet: each still differs (the test says when one no longer does).
TO_FIX: dict[str, str] = {}  # none left


@pytest.fixture(scope="module")
def flux() -> FluxSetters:
    return FluxSetters.ensure()


def _scalars(node: Node | None, path: str = "") -> Iterator[tuple[str, str, str]]:
    """Every scalar of a document as (path, resolved tag, value): what a YAML reader would get, not the bytes."""
    if isinstance(node, ScalarNode):
        yield path, str(node.tag), str(node.value)
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield from _scalars(value, f"{path}.{key.value}")
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            yield from _scalars(item, f"{path}[{index}]")


def _values(root: Path) -> dict[str, list[tuple[str, str, str]] | str]:
    """Per file under ``root``: its scalars (YAML files), or its text (any other file)."""
    found: dict[str, list[tuple[str, str, str]] | str] = {}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        text = file.read_text()
        if file.suffix not in (".yaml", ".yml"):
            found[rel] = text
            continue
        try:
            found[rel] = [s for doc in YAML().compose_all(text) for s in _scalars(doc)]
        except Exception as exc:  # a file one side made unreadable differs from one it did not
            found[rel] = f"unreadable: {type(exc).__name__}"
    return found


def _ours(case: Path, work: Path, policy: Policy) -> dict[str, list[tuple[str, str, str]] | str]:
    shutil.copytree(case / "files", work)
    with contextlib.suppress(ManifestError):  # nothing marked for the policy: nothing written, as Flux writes nothing
        apply_to_files(work, ".", policy.ref, policy.image, policy.tag, policy.digest or None)
    return _values(work)


def _flux(flux: FluxSetters, case: Path, tmp: Path, policy: Policy) -> dict[str, list[tuple[str, str, str]] | str]:
    source = tmp / "flux-in"
    shutil.copytree(case / "files", source)
    out = tmp / "flux-out"
    flux.update(source, out, [policy])
    for file in (p for p in out.rglob("*") if p.is_file()):  # what Flux rewrote replaces the original
        shutil.copy(file, source / file.relative_to(out))
    return _values(source)


@pytest.mark.parametrize("name", CASES)
def test_our_setter_writes_agree_with_flux_s(flux: FluxSetters, tmp_path: Path, name: str) -> None:
    case = CORPUS / name
    policy = Policy(**json.loads((case / "policy.json").read_text()))
    ours = _ours(case, tmp_path / "ours", policy)
    theirs = _flux(flux, case, tmp_path, policy)
    differs = {f: (ours.get(f), theirs.get(f)) for f in sorted(set(ours) | set(theirs)) if ours.get(f) != theirs.get(f)}
    if name in DELIBERATE or name in TO_FIX:
        assert differs, f"{name} no longer differs from Flux: take it out of the table ({(DELIBERATE | TO_FIX)[name]})"
        return
    assert not differs, f"{name}: our values differ from Flux's:\n" + "\n".join(
        f"  {f}:\n    ours: {a}\n    flux: {b}" for f, (a, b) in differs.items()
    )
    assert ours != _values(case / "files"), f"{name}: the case changes nothing, so it proves nothing"


def test_the_tables_name_cases_of_the_corpus_and_the_readme_shows_the_deliberate_ones() -> None:
    assert set(DELIBERATE) <= set(CASES) and set(TO_FIX) <= set(CASES)
    readme = (Path(__file__).resolve().parents[2] / "deployments" / "README.md").read_text()
    for name in DELIBERATE:
        assert f"`{name}`" in readme, name
