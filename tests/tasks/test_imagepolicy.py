"""Choosing a tag as Flux's ImagePolicy does, and writing it through setter markers under a path."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.load import PipelineError, parse_pipeline
from pipeline.model import ImagePolicy, TagFilter, compile_tag_pattern
from rules.imageupdates import Change, ObjectRef
from tasks.imagepolicy import ImagePolicyError, expand_extract, select_tag
from tasks.manifests import ManifestError
from tasks.setters import apply_to_files

ANY = TagFilter()


def semver(range_text: str) -> ImagePolicy:
    return ImagePolicy(semver=range_text)


# --- select_tag ---------------------------------------------------------------------------------------


def test_semver_range_returns_the_original_tag() -> None:
    tags = ["1.0.0", "1.2.0", "v1.3.0", "1.4.0-rc.1", "2.0.0", "latest", "sha-abc"]
    assert select_tag(tags, ANY, semver("1.x.x")) == "v1.3.0"
    assert select_tag(tags, ANY, semver(">=1.0.0")) == "2.0.0"
    assert select_tag(tags, ANY, semver("~1.2")) == "1.2.0"


def test_semver_prereleases_only_when_the_range_names_one() -> None:
    tags = ["1.3.0", "1.4.0-rc.1", "1.4.0-rc.2", "2.0.0"]
    assert select_tag(tags, ANY, semver("1.x.x")) == "1.3.0"
    assert select_tag(tags, ANY, semver(">=1.4.0-rc.0 <2.0.0")) == "1.4.0-rc.2"


def test_semver_nothing_in_range_is_none() -> None:
    assert select_tag(["1.0.0", "latest"], ANY, semver("3.x")) is None
    assert select_tag([], ANY, semver("1.x")) is None


def test_semver_on_extracted_values() -> None:
    tag_filter = TagFilter(pattern=r"^release-(?P<version>.+)$", extract="$version")
    tags = ["release-1.2.3", "release-1.10.0", "other-9.9.9", "release-banana"]
    assert select_tag(tags, tag_filter, semver("1.x")) == "release-1.10.0"


def test_alphabetical_asc_selects_the_last_desc_the_first() -> None:
    tags = ["2026-02-20", "2026-03-05", "2026-01-15"]
    assert select_tag(tags, ANY, ImagePolicy(alphabetical="asc")) == "2026-03-05"
    assert select_tag(tags, ANY, ImagePolicy(alphabetical="desc")) == "2026-01-15"
    # Flux's API reference: "Given the letters of the alphabet as tags, ascending order would select Z".
    assert select_tag(list("AZMB"), ANY, ImagePolicy(alphabetical="asc")) == "Z"


def test_numerical_asc_selects_the_highest_desc_the_lowest() -> None:
    tags = ["9", "10", "100", "0"]
    assert select_tag(tags, ANY, ImagePolicy(numerical="asc")) == "100"
    assert select_tag(tags, ANY, ImagePolicy(numerical="desc")) == "0"
    assert select_tag(tags, ANY, ImagePolicy(alphabetical="asc")) == "9"  # text order differs
    assert select_tag(["1.5", "1.10", "-3"], ANY, ImagePolicy(numerical="asc")) == "1.5"
    assert select_tag(["1.5", "1.10", "-3"], ANY, ImagePolicy(numerical="desc")) == "-3"


def test_numerical_with_extract_timestamps() -> None:
    """Flux's documented example: main-<sha>-<unix time>, ordered by the time, returning the whole tag."""
    tag_filter = TagFilter(pattern=r"^main-[a-f0-9]+-(?P<ts>[0-9]+)", extract="$ts")
    tags = ["main-abc1234-1700000100", "main-def5678-1700000050", "main-0000000-99", "feature-x-1800000000", "latest"]
    assert select_tag(tags, tag_filter, ImagePolicy(numerical="asc")) == "main-abc1234-1700000100"
    assert select_tag(tags, tag_filter, ImagePolicy(numerical="desc")) == "main-0000000-99"


def test_numerical_refuses_non_numeric_values_as_flux_does() -> None:
    with pytest.raises(ImagePolicyError, match=r"tag 'latest' is not a number; set filter_tags.pattern"):
        select_tag(["1", "2", "latest"], ANY, ImagePolicy(numerical="asc"))
    tag_filter = TagFilter(pattern=r"^build-(\w+)$", extract="$1")
    with pytest.raises(ImagePolicyError, match=r"tag 'build-x1' \(extracted 'x1'\) is not a number"):
        select_tag(["build-1", "build-x1"], tag_filter, ImagePolicy(numerical="asc"))


def test_filter_pattern_is_searched_not_anchored() -> None:
    tags = ["1.0.0", "1.1.0-rc1", "rc-2.0.0", "2.0.0"]
    assert select_tag(tags, TagFilter(pattern="rc"), ImagePolicy(alphabetical="asc")) == "rc-2.0.0"
    assert select_tag(tags, TagFilter(pattern="^nothing$"), ImagePolicy(alphabetical="asc")) is None


def test_same_extracted_value_the_later_tag_wins() -> None:
    tag_filter = TagFilter(pattern=r"^(?:a|b)-(?P<n>\d+)$", extract="$n")
    assert select_tag(["a-7", "b-7", "a-3"], tag_filter, ImagePolicy(numerical="asc")) == "b-7"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$ts", "1700"),
        ("${ts}", "1700"),
        ("$1", "main"),
        ("${1}.$2", "main.1700"),
        ("$1x", ""),  # the group named "1x": Go reads the longest name
        ("${1}x", "mainx"),
        ("$$ts", "$ts"),
        ("$9", ""),  # no such group
        ("$nope", ""),
        ("$-", "$-"),  # not a reference: stays as it is
        ("${ts", "${ts"),
        ("v$ts-$1", "v1700-main"),
        ("$01", ""),  # a leading zero makes it a name, which does not exist
    ],
)
@pytest.mark.parametrize("compile_", [re.compile, compile_tag_pattern], ids=["re", "re2"])
def test_extract_expands_like_go(template: str, expected: str, compile_: Any) -> None:
    match = compile_(r"(?P<branch>\w+)-(?P<ts>\d+)").search("main-1700")
    assert match is not None
    assert expand_extract(template, match) == expected


@pytest.mark.parametrize("compile_", [re.compile, compile_tag_pattern], ids=["re", "re2"])
def test_extract_of_an_optional_group_that_did_not_match_is_empty(compile_: Any) -> None:
    match = compile_(r"^(a)?(b)$").search("b")
    assert match is not None
    assert expand_extract("[$1][$2]", match) == "[][b]"


# --- filter_tags.pattern is RE2, as Flux's (Go regexp) --------------------------------------------------


@pytest.mark.timeout(600)
def test_catastrophic_pattern_matches_in_linear_time() -> None:
    """Guards the RE2 engine: with Python's backtracking re, (a+)+$ took 3.8 s on a 25-character tag and four
    times as long per two more characters (a 30-character tag: minutes)."""
    tags = ["a" * 30 + "!", "a" * 29 + "!", "aaaa"]
    started = time.monotonic()
    assert select_tag(tags, TagFilter(pattern=r"(a+)+$"), ImagePolicy(alphabetical="asc")) == "aaaa"
    assert time.monotonic() - started < 15


def test_pattern_has_go_semantics() -> None:
    """RE2 as Go: \\d is ASCII only (Python's re also matches other scripts' digits)."""
    tags = ["\u0661\u0662", "12"]
    assert select_tag(tags, TagFilter(pattern=r"^\d+$"), ImagePolicy(alphabetical="asc")) == "12"


PIPELINE = (Path(__file__).resolve().parents[2] / "deployments/examples/image-policy.yaml").read_text()


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"^(?=v)\d+", "uses lookarounds"),
        (r"^v(?!1)", "uses lookarounds"),
        (r"(?<=v)1", "uses lookarounds"),
        (r"(?<!v)1", "uses lookarounds"),
        (r"^(a)\1$", "uses backreferences"),
        (r"^(?P<x>a)(?P=x)$", "not a regular expression Flux accepts"),
        (r"^a++$", "not a regular expression Flux accepts"),  # possessive: Python 3.11 has it, RE2 does not
        (r"^[unclosed", "not a regular expression Flux accepts"),
    ],
)
def test_patterns_go_regexp_refuses_are_refused_at_validate(pattern: str, reason: str) -> None:
    """Guards validation with the RE2 engine: what Go's regexp refuses fails at validate, naming the field and
    Flux (RE2), instead of validating with Python's re and differing from Flux at run time."""
    old = "pattern: '^v?\\d+\\.\\d+\\.\\d+$'"
    assert old in PIPELINE
    text = PIPELINE.replace(old, f"pattern: '{pattern}'")
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="image-policy.yaml")
    problems = [p for p in caught.value.problems if "filter_tags.pattern" in p]
    assert problems, caught.value.problems
    assert reason in problems[0]
    assert "RE2" in problems[0]
    assert "Flux" in problems[0]


# --- apply_to_files ---------------------------------------------------------------------------------------

DEPLOYMENT = """\
# The app's Deployment; the image line is updated by the promotion.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: shop   # keep this comment
spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.example/shop/frontend:1.0.0  # {"$imagepolicy": "flux-system:frontend"}
        - name: sidecar
          image: registry.example/sidecar:3.1.0 # {"$imagepolicy": "flux-system:sidecar"}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: untouched
data:
  image: registry.example/shop/frontend:1.0.0
"""

HELM_VALUES = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: frontend
  namespace: shop
spec:
  values:
    image:
      repository: registry.example/shop/frontend # {"$imagepolicy": "flux-system:frontend:name"}
      tag: "1.0.0" # {"$imagepolicy": "flux-system:frontend:tag"}
"""


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "apps/frontend").mkdir(parents=True)
    (root / "apps/frontend/deployment.yaml").write_text(DEPLOYMENT)
    (root / "apps/frontend/release.yml").write_text(HELM_VALUES)
    (root / "apps/frontend/notes.txt").write_text('image: x:1 # {"$imagepolicy": "flux-system:frontend"}\n')
    (root / "apps/.hidden").mkdir()
    (root / "apps/.hidden/copy.yaml").write_text(DEPLOYMENT)
    (root / "other").mkdir()
    (root / "other/outside-path.yaml").write_text(DEPLOYMENT)
    return root


def test_apply_updates_only_marked_values_and_keeps_comments(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    result = apply_to_files(root, "apps", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")

    assert (root / "apps/frontend/deployment.yaml").read_text() == DEPLOYMENT.replace(
        "frontend:1.0.0  #", "frontend:1.2.3  #"
    )
    assert (root / "apps/frontend/release.yml").read_text() == HELM_VALUES.replace('"1.0.0"', '"1.2.3"')
    # Hidden folders are read as Flux's reader reads them (image-automation-controller's filereader.go).
    assert (root / "apps/.hidden/copy.yaml").read_text() == DEPLOYMENT.replace("frontend:1.0.0  #", "frontend:1.2.3  #")
    assert (root / "other/outside-path.yaml").read_text() == DEPLOYMENT
    assert "x:1 #" in (root / "apps/frontend/notes.txt").read_text()

    deployment = ObjectRef("apps/v1", "Deployment", "frontend", "shop")
    release = ObjectRef("helm.toolkit.fluxcd.io/v2", "HelmRelease", "frontend", "shop")
    assert result.path == "apps"
    assert result.files == ("apps/.hidden/copy.yaml", "apps/frontend/deployment.yaml", "apps/frontend/release.yml")
    assert result.objects == (deployment, release)
    assert result.images == ("registry.example/shop/frontend:1.2.3",)
    assert result.changes == (
        Change(
            "apps/.hidden/copy.yaml",
            deployment,
            "registry.example/shop/frontend:1.0.0",
            "registry.example/shop/frontend:1.2.3",
            "flux-system:frontend",
            12,
        ),
        Change(
            "apps/frontend/deployment.yaml",
            deployment,
            "registry.example/shop/frontend:1.0.0",
            "registry.example/shop/frontend:1.2.3",
            "flux-system:frontend",
            12,
        ),
        Change("apps/frontend/release.yml", release, "1.0.0", "1.2.3", "flux-system:frontend:tag", 10),
    )


def test_apply_again_changes_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    apply_to_files(root, "apps", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")
    before = (root / "apps/frontend/deployment.yaml").stat().st_mtime_ns
    again = apply_to_files(root, "apps", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")
    assert not again.changed
    assert again.files == () and again.images == ()
    assert (root / "apps/frontend/deployment.yaml").stat().st_mtime_ns == before


def test_apply_keeps_crlf_line_endings_and_file_mode(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    original = HELM_VALUES.replace("\n", "\r\n").encode()
    path = root / "values.yaml"
    path.write_bytes(original)
    path.chmod(0o640)
    apply_to_files(root, ".", "flux-system:frontend", "registry.example/shop/frontend", "2.0.0")
    assert path.read_bytes() == original.replace(b'"1.0.0"', b'"2.0.0"')
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_marked_file_that_is_not_yaml_is_skipped_and_the_others_updated(tmp_path: Path) -> None:
    """As Flux's reader (image-automation-controller's internal/update/filereader.go): a file that mentions a marker
    but does not read as YAML (a Helm template) is skipped, and said so; the others are still updated."""
    root = _tree(tmp_path)
    broken = root / "apps/frontend/zz-broken.yaml"
    text = 'image: a:1 # {"$imagepolicy": "flux-system:frontend"}\n  bad: [indent\n'
    broken.write_text(text)
    result = apply_to_files(root, "apps", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")
    assert broken.read_text() == text
    assert (root / "apps/frontend/release.yml").read_text() == HELM_VALUES.replace('"1.0.0"', '"1.2.3"')
    (skipped,) = result.skipped
    assert skipped.startswith("apps/frontend/zz-broken.yaml: ") and "not valid YAML" in skipped
    assert "apps/frontend/zz-broken.yaml" not in result.files


def test_when_the_only_marked_file_is_not_yaml_the_error_says_so(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "chart/templates").mkdir(parents=True)
    (root / "chart/templates/deploy.yaml").write_text(
        'image: {{ .Values.image }} # {"$imagepolicy": "flux-system:frontend"}\n{{- end }}\n'
    )
    with pytest.raises(ManifestError, match=r"1 file\(s\) mention a marker but do not read as YAML, e\.g\. chart/"):
        apply_to_files(root, ".", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")


def test_apply_digest_only_markers_are_an_error(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.yaml").write_text(HELM_VALUES)
    (root / "b.yaml").write_text('digest: sha256:00 # {"$imagepolicy": "flux-system:frontend:digest"}\n')
    with pytest.raises(ManifestError, match=r"b.yaml: the markers of policy 'flux-system:frontend' set digest"):
        apply_to_files(root, "", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")
    assert (root / "a.yaml").read_text() == HELM_VALUES


def test_apply_without_any_marker_names_the_path_and_the_syntax(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with pytest.raises(ManifestError) as error:
        apply_to_files(root, "apps", "flux-system:backend", "registry.example/shop/backend", "1.2.3")
    message = str(error.value)
    assert message.startswith('apps/: no {"$imagepolicy": "flux-system:backend"} setter marker')
    assert '# {"$imagepolicy": "flux-system:backend"}' in message


def test_apply_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    for bad in ("../", "apps/../../repo2", str(tmp_path)):
        with pytest.raises(ManifestError, match=r"relative to the repository root|outside the repository"):
            apply_to_files(root, bad, "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")
    with pytest.raises(ManifestError, match="not a directory"):
        apply_to_files(root, "nope", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3")


OLD_DIGEST = "sha256:" + "0" * 64
DIGEST_VALUES = f"""\
image:
  tag: 1.0.0 # {{"$imagepolicy": "flux-system:frontend:tag"}}
  digest: {OLD_DIGEST} # {{"$imagepolicy": "flux-system:frontend:digest"}}
"""
NEW_DIGEST = "sha256:" + "1" * 64


def test_a_digest_is_written_through_digest_markers_and_none_empties_them(tmp_path: Path) -> None:
    """As Flux writes a latest ref (internal/update/setters.go; tests/tasks/test_setters_flux_oracle.py proves it
    against Flux's code): its digest, or, without one, an emptied pin, never the old image's digest under the new
    tag."""
    for digest, written in ((NEW_DIGEST, NEW_DIGEST), (None, '""')):
        root = tmp_path / f"repo-{bool(digest)}"
        root.mkdir()
        (root / "values.yaml").write_text(DIGEST_VALUES)
        result = apply_to_files(root, ".", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3", digest)
        text = (root / "values.yaml").read_text()
        assert "  tag: 1.2.3 #" in text and f"  digest: {written} #" in text, text
        assert result.image_ref == "registry.example/shop/frontend:1.2.3" + (f"@{digest}" if digest else "")
