"""Versions as upstream orders and reads them: one table row per rule, the comment naming where the rule comes from
(semver.org 2.0.0 items, the python ``semver`` package's Version.compare, Masterminds/semver as Flux's image
policies use it). Rows marked "ours" are this tool's release-tag rules, with the reason."""

from __future__ import annotations

import pytest
import semver

from rules.versions import (
    ReleaseVersion,
    SemverRange,
    TagScheme,
    VersionError,
    latest_rc,
    latest_stable,
    newest_in_range,
    next_rc,
    parse_semver_tag,
)

SCHEME = TagScheme()

# --- precedence -------------------------------------------------------------------------------------------------

PRECEDENCE: list[tuple[str, str, str, int]] = [
    # semver.org item 11.2: major, minor, patch compare numerically.
    ("numeric-core", "1.10.0", "1.9.0", 1),
    # semver.org item 11.3: a pre-release has lower precedence than its normal version.
    ("pre-release-below-release", "1.0.0-rc.1", "1.0.0", -1),
    # semver.org item 11.4.1: numeric identifiers compare numerically.
    ("numeric-identifiers", "1.0.0-rc.10", "1.0.0-rc.9", 1),
    # semver.org item 11.4.2: alphanumeric identifiers compare in ASCII order, so rc10 < rc9 ...
    ("alphanumeric-identifiers", "1.0.0-rc10", "1.0.0-rc9", -1),
    # semver.org item 11.4.3: numeric identifiers are below alphanumeric ones.
    ("numeric-below-alphanumeric", "1.0.0-1", "1.0.0-alpha", -1),
    # semver.org item 11.4.4: a larger set of identifiers wins when all before are equal.
    ("longer-pre-release", "1.0.0-alpha.1", "1.0.0-alpha", 1),
    # semver.org item 10: build metadata is ignored in precedence.
    ("build-metadata-ignored", "1.0.0+build.2", "1.0.0+build.1", 0),
]


@pytest.mark.parametrize(("a", "b", "order"), [r[1:] for r in PRECEDENCE], ids=[r[0] for r in PRECEDENCE])
def test_semver_precedence_as_the_semver_package_computes_it(a: str, b: str, order: int) -> None:
    """The semver package (used for image tags and ranges) follows semver.org item 11 row by row."""
    assert semver.Version.parse(a).compare(b) == order


def test_rc_numbers_compare_as_numbers_unlike_semver_item_11_4_2() -> None:
    """ours: release tags spell candidates -rcN (no dot), which semver.org item 11.4.2 would order rc10 < rc9;
    the rc number is compared as a number, and otherwise the order is semver's (items 11.2 and 11.3)."""
    versions = SCHEME.versions(["v1.0.0-rc9", "v1.0.0-rc10", "v1.0.0", "v0.9.0", "v1.0.1-rc1"])
    assert [SCHEME.tag(v) for v in versions] == ["v0.9.0", "v1.0.0-rc9", "v1.0.0-rc10", "v1.0.0", "v1.0.1-rc1"]


# --- an rc series with no stable release yet --------------------------------------------------------------------

NEXT_RC: list[tuple[str, list[str], str, str]] = [
    # ours: nothing tagged: the configured initial version's first candidate.
    ("nothing-tagged", [], "0.1.0", "v0.1.0-rc1"),
    # ours: an rc series of the initial version in progress continues it.
    ("initial-series-in-progress", ["v0.1.0-rc1", "v0.1.0-rc2"], "0.1.0", "v0.1.0-rc3"),
    # semver.org item 11.2: a series in progress above the initial version continues; v0.1.0-rc1 would sort
    # below v2.0.0-rc3 and never be "the newest candidate".
    ("higher-series-in-progress", ["v2.0.0-rc3"], "0.1.0", "v2.0.0-rc4"),
    ("newest-of-several-series", ["v0.1.0-rc4", "v0.2.0-rc1"], "0.1.0", "v0.2.0-rc2"),
    # ours: a series below the configured initial version is abandoned for the initial one.
    ("initial-above-series", ["v0.1.0-rc4"], "1.0.0", "v1.0.0-rc1"),
    # ours: once something is released, the bump from it decides (unchanged).
    ("released", ["v2.0.0-rc3", "v1.4.0"], "0.1.0", "v1.4.1-rc1"),
]


@pytest.mark.parametrize(("tags", "initial", "expected"), [r[1:] for r in NEXT_RC], ids=[r[0] for r in NEXT_RC])
def test_next_rc_with_no_stable_release(tags: list[str], initial: str, expected: str) -> None:
    """With no stable release, the next candidate never sorts below a candidate already tagged."""
    candidate = next_rc(SCHEME.versions(tags), "patch", SCHEME.parse(initial))
    assert SCHEME.tag(candidate) == expected
    newest = latest_rc(SCHEME.versions(tags))
    if newest is not None and latest_stable(SCHEME.versions(tags)) is None:
        assert candidate > newest


# --- tags with and without the prefix ---------------------------------------------------------------------------

SPELLINGS: list[tuple[str, list[str], str, str | None]] = [
    # ours: a repository that spells its tags without the prefix: the version is named by the tag it has, so
    # resolving it finds the tag (scheme.tag used to invent "v1.2.0", which does not exist).
    ("only-bare", ["1.2.0", "1.3.0-rc1"], "1.3.0-rc1", "1.2.0"),
    ("only-prefixed", ["v1.2.0", "v1.3.0-rc1"], "v1.3.0-rc1", "v1.2.0"),
    # ours: both spellings of one version are one version; the scheme's own spelling names it, in any order.
    ("both-prefixed-first", ["v1.2.0", "1.2.0", "v1.3.0-rc1", "1.3.0-rc1"], "v1.3.0-rc1", "v1.2.0"),
    ("both-bare-first", ["1.3.0-rc1", "1.2.0", "v1.2.0", "v1.3.0-rc1"], "v1.3.0-rc1", "v1.2.0"),
    # ours: mixed: each version by the spelling it has.
    ("mixed", ["1.2.0", "v1.3.0-rc1"], "v1.3.0-rc1", "1.2.0"),
    ("no-release-tags", ["latest", "release-5"], "", None),
]


@pytest.mark.parametrize(("tags", "rc_tag", "stable_tag"), [r[1:] for r in SPELLINGS], ids=[r[0] for r in SPELLINGS])
def test_tags_with_and_without_the_prefix(tags: list[str], rc_tag: str, stable_tag: str | None) -> None:
    """scheme.tag of a version read from the repository is a tag the repository has."""
    versions = SCHEME.versions(tags)
    assert len(versions) == len({(v.core, v.rc) for v in versions})  # one entry per version
    assert all(SCHEME.tag(v) in tags for v in versions)
    newest = latest_rc(versions)
    stable = latest_stable(versions)
    assert (SCHEME.tag(newest) if newest else "") == rc_tag
    assert (SCHEME.tag(stable) if stable else None) == stable_tag


def test_new_tags_always_use_the_scheme_spelling() -> None:
    """ours: a version computed from the repository's (bare) tags is tagged in the configured scheme."""
    versions = SCHEME.versions(["1.2.0", "1.2.1-rc1"])
    assert SCHEME.tag(next_rc(versions, "patch")) == "v1.2.1-rc2"
    assert SCHEME.tag(latest_rc(versions).stable()) == "v1.2.1"
    assert SCHEME.tag(SCHEME.parse("1.2.1-rc1")) == "v1.2.1-rc1"  # user input is normalised, as before
    assert ReleaseVersion(1, 2, 0, spelled="1.2.0") == ReleaseVersion(1, 2, 0)


# --- never a crash: a named answer or a named error -------------------------------------------------------------

HOSTILE_TAGS: list[tuple[str, str, bool]] = [
    # int() of more than 4300 digits raises in Python 3.11
    ("5000-digits", "v" + "9" * 5000 + ".0.0", False),
    # Masterminds/semver version.go NewVersion: numbers are uint64 (this is 2**64)
    ("uint64-overflow", "v18446744073709551616.0.0", False),
    # ours: an rc number beyond uint64 is not a release tag; to semver it is a valid alphanumeric pre-release
    ("huge-rc", "v1.2.3-rc" + "9" * 30, True),
    ("100k", "v1.2.3" + "x" * 100_000, False),
    ("empty", "", False),
]


@pytest.mark.parametrize(("tag", "semver_ok"), [r[1:] for r in HOSTILE_TAGS], ids=[r[0] for r in HOSTILE_TAGS])
def test_hostile_tags_are_not_release_tags(tag: str, semver_ok: bool) -> None:
    """A tag anyone could push is ignored, never an exception that stops every promotion of the repository."""
    assert SCHEME.parse_tag(tag) is None
    assert SCHEME.versions([tag, "v1.0.0"]) == [ReleaseVersion(1, 0, 0)]
    assert (parse_semver_tag(tag) is not None) is semver_ok


def test_hostile_user_version_is_a_named_bounded_error() -> None:
    """A bad version from the user is a VersionError that says what is accepted and echoes a bounded piece."""
    with pytest.raises(VersionError, match="is not a release version") as caught:
        SCHEME.parse("v" + "9" * 5000 + ".0.0")
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    "text", [">=" + "9" * 5000, "1.x.3" + " " * 10 + "x" * 5000, "^18446744073709551616", "1.2.3 || " * 200]
)
def test_hostile_ranges_are_named_bounded_errors(text: str) -> None:
    """A range that cannot be read is a VersionError naming the range, never a ValueError from int()."""
    with pytest.raises(VersionError, match="semver range") as caught:
        SemverRange.parse(text)
    assert len(str(caught.value)) < 400


# --- ranges as Flux's image policies read them (Masterminds/semver) ---------------------------------------------

RANGES: list[tuple[str, list[str], str, str | None]] = [
    # Masterminds/semver constraints.go Constraints.Check: pre-releases only for an AND group naming one; the
    # "-" of a hyphen range is not a pre-release.
    ("hyphen-range-is-not-a-pre-release", ["1.2.0", "1.3.0-rc.1"], "1.2 - 1.4", "1.2.0"),
    # Constraints.Check: containsPre is per group: the stable group does not admit pre-releases.
    ("pre-release-per-group", ["1.2.0", "1.3.0-rc.1", "2.1.0-rc.1"], "^1.2 || >=2.1.0-rc.0", "2.1.0-rc.1"),
    ("pre-release-other-group-only", ["1.2.0", "1.3.0-rc.1"], "^1.2 || >=2.1.0-rc.0", "1.2.0"),
    # Masterminds/semver: "*" is any release, however large its major.
    ("star-has-no-upper-bound", ["1.0.0", "3000000000.0.0"], "*", "3000000000.0.0"),
    ("x-has-no-upper-bound", ["1.0.0", "3000000000.0.0"], "x", "3000000000.0.0"),
    # Masterminds/semver version.go: only a lowercase "v" prefix.
    ("uppercase-v-is-not-a-version", ["V9.0.0", "1.0.0"], "*", "1.0.0"),
    # semver.org item 10: build metadata does not make a version newer; the first listed wins a tie, as in
    # Flux's image-reflector-controller (GreaterThan is strict).
    ("build-metadata-tie", ["1.0.0+b1", "1.0.0+b2"], "1.x", "1.0.0+b1"),
]


@pytest.mark.parametrize(("tags", "text", "expected"), [r[1:] for r in RANGES], ids=[r[0] for r in RANGES])
def test_range_rule(tags: list[str], text: str, expected: str | None) -> None:
    """Each row is one rule of Masterminds/semver constraints as Flux's ImagePolicy applies them."""
    assert newest_in_range(tags, text) == expected
