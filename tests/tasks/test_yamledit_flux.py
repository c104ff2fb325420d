"""GitOps files as Flux's parser reads them: go-yaml v3 (kustomize's kyaml) accepts some files ruamel refuses,
and a promotion Flux itself would perform must not be blocked by our parser. One table row per rule, the comment
naming the go-yaml v3 file and function it is ported from (gopkg.in/yaml.v3 at v3.0.1). Hostile files (an alias
bomb, a huge or deeply nested file) end quickly with a short error naming the file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rules import yamlpath
from rules.yamledit import MAX_FILE_BYTES, ManifestError
from tasks import manifests
from tasks.setters import apply_to_files

APP = (
    "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: shop\nspec:\n  source:\n"
    "    repoURL: https://git.example/app.git\n    targetRevision: v1.0.0\n"
)
VALUES = 'image:\n  repository: shop\n  tag: "1.0.0" # {"$imagepolicy": "flux-system:shop:tag"}\n'
KUSTOMIZATION = (
    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nimages:\n  - name: shop\n    newTag: 1.0.0\n"
)


def app_revision(text: str) -> str:
    return manifests.set_application_revision(text, "v1.1.0", source="app.yaml")


def values_path(text: str) -> str:
    return yamlpath.set_values(text, [("image.tag", "1.1.0")], source="values.yaml")


def setter(text: str) -> str:
    return manifests.set_setter_values(text, "flux-system:shop", tag="1.1.0", source="values.yaml")[0]


def kustomize_image(text: str) -> str:
    return manifests.set_kustomize_image(text, "shop", new_tag="1.1.0", source="kustomization.yaml")


Edit = Callable[[str], str]
OLD: dict[Edit, str] = {app_revision: "v1.0.0", values_path: "1.0.0", setter: "1.0.0", kustomize_image: "1.0.0"}
NEW: dict[Edit, str] = {app_revision: "v1.1.0", values_path: "1.1.0", setter: "1.1.0", kustomize_image: "1.1.0"}

# (id, edit, text): files go-yaml v3 reads; the edit must work and change only the value's bytes.
ACCEPTED: list[tuple[str, Edit, str]] = [
    # scannerc.go yaml_parser_scan_to_next_token: in block context a tab is skipped once a simple key can no
    # longer start (after a value), so a tab before a comment or at the line end is whitespace. ruamel
    # refuses every such tab; before this, the promotion stopped with "not valid YAML".
    (
        "tab-before-comment",
        app_revision,
        APP.replace("targetRevision: v1.0.0", "targetRevision: v1.0.0\t# pinned by CI"),
    ),
    ("tab-at-line-end", app_revision, APP.replace("v1.0.0\n", "v1.0.0\t\n")),
    ("tab-before-setter-marker", setter, VALUES.replace('"1.0.0" #', '"1.0.0"\t#')),
    ("tabs-and-spaces-before-comment", values_path, VALUES.replace('"1.0.0" #', '"1.0.0" \t \t#')),
    ("tab-after-list-item", kustomize_image, KUSTOMIZATION.replace("newTag: 1.0.0", "newTag: 1.0.0\t")),
    # readerc.go yaml_parser_determine_encoding: a UTF-8 byte order mark at the start is skipped.
    ("bom", app_revision, "\ufeff" + APP),
    ("bom-setter", setter, "\ufeff" + VALUES),
    # scannerc.go (is_break): CR LF is a line break; the edit keeps it.
    ("crlf", app_revision, APP.replace("\n", "\r\n")),
    ("crlf-setter", setter, VALUES.replace("\n", "\r\n")),
    ("crlf-kustomization", kustomize_image, KUSTOMIZATION.replace("\n", "\r\n")),
    # parserc.go yaml_parser_process_directives: %YAML 1.1 is the version go-yaml reads.
    ("yaml-1.1-directive", app_revision, "%YAML 1.1\n---\n" + APP),
    # parserc.go: document start and end markers.
    ("document-markers", app_revision, "---\n" + APP + "...\n"),
    ("empty-documents", app_revision, "---\n---\n" + APP),
    # resolve.go: yes/no are strings to go-yaml v3, booleans to YAML 1.1 readers: either way not on the path.
    ("yes-no-values", values_path, "enabled: yes\nother: no\n" + VALUES),
    # decode.go mapping: duplicates elsewhere than on the edited path are no concern of this edit (Helm
    # values read by go-yaml v2 take the last one; kustomize refuses them whatever we do).
    (
        "duplicate-key-off-the-path",
        values_path,
        VALUES.replace("  repository: shop\n", "  repository: a\n  repository: b\n"),
    ),
    # scannerc.go: anchors and aliases elsewhere in the file.
    ("anchors-elsewhere", values_path, "base: &b {a: 1}\nother: *b\n" + VALUES),
    # scannerc.go: no limit on a value's length (simple keys are limited to 1024 characters).
    ("very-long-line", values_path, "blob: " + "x" * 500_000 + "\n" + VALUES),
    (
        "json",
        app_revision,
        '{"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "shop"}, '
        '"spec": {"source": {"repoURL": "x", "targetRevision": "v1.0.0"}}}\n',
    ),
    ("no-final-newline", app_revision, APP.rstrip("\n")),
]


@pytest.mark.parametrize(("edit", "text"), [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_files_flux_reads_are_edited(edit: Edit, text: str) -> None:
    """A file go-yaml v3 reads is edited, and only the promoted value's bytes change (tabs, BOM, CRLF kept)."""
    out = edit(text)
    assert out == text.replace(OLD[edit], NEW[edit], 1)


# (id, edit, text, message): files that go-yaml v3 refuses too, or that readers disagree on: a short error
# naming the file and the line.
REFUSED: list[tuple[str, Edit, str, str]] = [
    # scannerc.go yaml_parser_scan_to_next_token: a tab where a simple key may start (indentation, right after
    # ':' or '-') is not whitespace: "found character that cannot start any token".
    ("tab-indentation", app_revision, APP.replace("    targetRevision", "\ttargetRevision"), "line 8 has a tab"),
    ("tab-after-colon", app_revision, APP.replace("targetRevision: v1.0.0", "targetRevision:\tv1.0.0"), "line 8"),
    ("tab-only-line", app_revision, APP.replace("spec:\n", "spec:\n\t\n"), "line 6 has a tab"),
    # decode.go mapping: "mapping key already defined at line N": kustomize (and so Flux) refuses the file,
    # go-yaml v2 readers (Helm, Argo CD via sigs.k8s.io/yaml) take the last one, and ours would have edited
    # the first, a value nobody reads.
    (
        "duplicate-key-on-the-path",
        app_revision,
        APP + "  source:\n    repoURL: x\n    targetRevision: v0.9.0\n",
        "key 'source' is given 2 times in one mapping (lines 6, 9)",
    ),
    ("duplicate-leaf-key", values_path, VALUES + '  tag: "0.9.0"\n', "key 'tag' is given 2 times"),
    (
        "duplicate-kustomize-field",
        kustomize_image,
        KUSTOMIZATION + "    newTag: 0.9.0\n",
        "key 'newTag' is given 2 times",
    ),
    # parserc.go yaml_parser_process_directives: any %YAML other than 1.1 is "incompatible"; ruamel raised an
    # AssertionError (a traceback) on 1.3.
    ("yaml-1.3-directive", app_revision, "%YAML 1.3\n---\n" + APP, "%YAML directive"),
    # scannerc.go max_flow_level / max_indents: go-yaml stops at 10000 levels; ruamel's recursion ends far
    # sooner, which was a RecursionError traceback.
    ("deep-nesting", values_path, "deep: " + "[" * 3000 + "]" * 3000 + "\n" + VALUES, "nested too deeply"),
]


@pytest.mark.parametrize(("edit", "text", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_files_flux_refuses_are_a_short_named_error(edit: Edit, text: str, message: str) -> None:
    """Refused with a ManifestError naming the file and the problem (and its line where there is one)."""
    with pytest.raises(ManifestError) as caught:
        edit(text)
    assert message in str(caught.value)
    assert str(caught.value).split(":")[0] in ("app.yaml", "values.yaml", "kustomization.yaml")
    assert len(str(caught.value)) < 400


def test_duplicate_key_on_the_path_is_refused_on_read_too() -> None:
    """Reading the current value through a duplicated key would report the first one, which readers ignore."""
    with pytest.raises(ManifestError, match="given 2 times"):
        yamlpath.get_value(VALUES + '  tag: "0.9.0"\n', "image.tag", source="values.yaml")
    with pytest.raises(ManifestError, match="given 2 times"):
        manifests.get_application_revision(APP + "    targetRevision: v0.9.0\n", source="app.yaml")


# --- hostile files -----------------------------------------------------------------------------------------------


def alias_bomb(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("edit", [setter, values_path], ids=["setter-markers", "path"])
def test_alias_bomb_is_walked_once(edit: Edit) -> None:
    """Nine aliases of nine aliases, 12 levels deep (9**12 values if expanded, under 1 KiB of text): the setter
    walk visits each node once (it took 7.6 s at 7 levels and grew ninefold per level), so the edit beside
    it is made at once."""
    text = alias_bomb(12) + VALUES
    started = time.monotonic()
    assert edit(text) == text.replace("1.0.0", "1.1.0", 1)
    assert time.monotonic() - started < 30  # typically milliseconds


def test_a_marker_under_an_alias_is_one_value() -> None:
    """A marked value shared through ``<<: *base`` is one node: written once, as Flux's kyaml does."""
    text = 'base: &base\n  tag: "1.0.0" # {"$imagepolicy": "flux-system:shop:tag"}\nimage:\n  <<: *base\n'
    out, count = manifests.set_setter_values(text, "flux-system:shop", tag="1.1.0", source="values.yaml")
    assert count == 1 and out == text.replace("1.0.0", "1.1.0")


def test_huge_file_is_refused_before_parsing() -> None:
    """A file over the 4 MiB limit is refused at once with its size, not parsed for minutes."""
    text = VALUES + "blob: " + "x" * (MAX_FILE_BYTES + 10) + "\n"
    started = time.monotonic()
    with pytest.raises(ManifestError, match=r"values.yaml: is 4\.0 MiB; files over 4 MiB are not edited") as caught:
        values_path(text)
    assert time.monotonic() - started < 10
    assert len(str(caught.value)) < 200


def test_bad_yaml_with_a_huge_line_gives_a_short_error() -> None:
    """The parser's message is capped: a 3 MB broken line gives a few hundred characters naming the line."""
    with pytest.raises(ManifestError, match=r"values.yaml: not valid YAML") as caught:
        values_path("a: [" + "x" * 3_000_000 + "\n")
    assert "line 1" in str(caught.value) and len(str(caught.value)) <= 320


def test_setters_skip_a_large_unmarked_file_and_refuse_a_large_marked_one(tmp_path: Path) -> None:
    """A large file without markers beside the manifests (a CRD bundle) does not stop the update and is not
    loaded whole; a marked one over the limit is refused by name, and nothing is written."""
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "values.yaml").write_text(VALUES)
    (apps / "crds.yaml").write_text("x: " + "y" * (MAX_FILE_BYTES + 100) + "\n")
    result = apply_to_files(tmp_path, "apps", "flux-system:shop", "shop", "1.1.0")
    assert result.changed and (apps / "values.yaml").read_text() == VALUES.replace("1.0.0", "1.1.0")
    (apps / "values.yaml").write_text(VALUES)
    (apps / "crds.yaml").write_text("x: " + "y" * (MAX_FILE_BYTES + 100) + "\n" + VALUES.replace("image:", "other:"))
    with pytest.raises(ManifestError, match=r"apps/crds.yaml: holds a setter marker but is over 4 MiB"):
        apply_to_files(tmp_path, "apps", "flux-system:shop", "shop", "1.1.0")
    assert (apps / "values.yaml").read_text() == VALUES
