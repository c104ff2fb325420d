"""Version arithmetic: rc numbering, rc -> stable, semver ranges; pure functions, no Prefect."""

from __future__ import annotations

import pytest

from rules.versions import (
    ReleaseVersion,
    SemverRange,
    TagScheme,
    VersionError,
    latest_rc,
    newest_in_range,
    next_rc,
    parse_semver_tag,
)

SCHEME = TagScheme()


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v1.2.3", ReleaseVersion(1, 2, 3)),
        ("1.2.3", ReleaseVersion(1, 2, 3)),
        ("v1.2.3-rc1", ReleaseVersion(1, 2, 3, 1)),
        ("1.2.3-rc12", ReleaseVersion(1, 2, 3, 12)),
        ("v0.0.0", ReleaseVersion(0, 0, 0)),
    ],
)
def test_parse_tag_with_and_without_prefix(tag: str, expected: ReleaseVersion) -> None:
    assert SCHEME.parse_tag(tag) == expected


@pytest.mark.parametrize(
    "tag",
    ["latest", "release-5", "v1.2", "v1.2.3-rc0", "v01.2.3", "v1.2.3-beta1", "v1.2.3-rc", "", "vv1.2.3"],
)
def test_non_release_tags_are_ignored_not_crashes(tag: str) -> None:
    assert SCHEME.parse_tag(tag) is None


def test_versions_ignores_foreign_tags_and_sorts_rc_numerically() -> None:
    tags = ["latest", "v1.2.3-rc9", "v1.2.3-rc10", "release-5", "v1.2.3-rc2", "v1.2.2"]
    assert [SCHEME.tag(v) for v in SCHEME.versions(tags)] == [
        "v1.2.2",
        "v1.2.3-rc2",
        "v1.2.3-rc9",
        "v1.2.3-rc10",
    ]


def test_rc10_is_newer_than_rc9() -> None:
    assert ReleaseVersion(1, 2, 3, 10) > ReleaseVersion(1, 2, 3, 9)
    assert latest_rc(SCHEME.versions(["v1.2.3-rc9", "v1.2.3-rc10"])) == ReleaseVersion(1, 2, 3, 10)


def test_stable_sorts_after_its_candidates() -> None:
    assert ReleaseVersion(1, 2, 3) > ReleaseVersion(1, 2, 3, 99)
    assert ReleaseVersion(1, 2, 4, 1) > ReleaseVersion(1, 2, 3)


@pytest.mark.parametrize(
    ("tags", "bump", "expected"),
    [
        (["v1.2.3"], "patch", "v1.2.4-rc1"),
        (["v1.2.3"], "minor", "v1.3.0-rc1"),
        (["v1.2.3"], "major", "v2.0.0-rc1"),
        (["v1.2.3", "v1.2.4-rc1"], "patch", "v1.2.4-rc2"),
        (["v1.2.3", "v1.2.4-rc9"], "patch", "v1.2.4-rc10"),
        (["v1.2.3", "v1.2.4-rc1", "v1.2.4"], "patch", "v1.2.5-rc1"),
        ([], "patch", "v0.1.0-rc1"),
        (["latest", "release-5"], "minor", "v0.1.0-rc1"),
        # A candidate of another line does not change this bump's numbering.
        (["v1.2.3", "v1.3.0-rc4"], "patch", "v1.2.4-rc1"),
    ],
)
def test_next_rc(tags: list[str], bump: str, expected: str) -> None:
    assert SCHEME.tag(next_rc(SCHEME.versions(tags), bump)) == expected  # type: ignore[arg-type]


def test_next_rc_rejects_unknown_bump() -> None:
    with pytest.raises(VersionError, match="major, minor, patch"):
        next_rc([], "huge")  # type: ignore[arg-type]


def test_rc_to_stable() -> None:
    assert SCHEME.tag(SCHEME.parse("v1.2.3-rc4").stable()) == "v1.2.3"


def test_invalid_user_version_is_a_clear_error() -> None:
    with pytest.raises(VersionError, match=r"'1\.2' is not a release version: expected v1\.2\.3 or v1\.2\.3-rc1"):
        SCHEME.parse("1.2")


def test_custom_scheme() -> None:
    scheme = TagScheme(prefix="shop/v", rc_label="rc")
    assert scheme.tag(ReleaseVersion(2, 0, 0, 3)) == "shop/v2.0.0-rc3"
    assert scheme.parse_tag("shop/v2.0.0-rc3") == ReleaseVersion(2, 0, 0, 3)
    # The bare version is accepted; another prefix is not this scheme's tag.
    assert scheme.parse_tag("2.0.0") == ReleaseVersion(2, 0, 0)
    assert scheme.parse_tag("other/v2.0.0") is None


@pytest.mark.parametrize(("prefix", "label"), [("v ", "rc"), ("v", "RC"), ("v", "rc-"), ("$(x)", "rc")])
def test_bad_scheme_is_rejected(prefix: str, label: str) -> None:
    with pytest.raises(VersionError):
        TagScheme(prefix=prefix, rc_label=label)


TAGS = [
    "latest",
    "0.9.0",
    "1.0.0",
    "1.2.0",
    "v1.4.2",
    "1.10.0",
    "1.11.0-rc.1",
    "2.0.0",
    "release-5",
    "sha-abc",
]


@pytest.mark.parametrize(
    ("range_text", "expected"),
    [
        ("1.x.x", "1.10.0"),  # 1.10 > 1.4 numerically; the rc is excluded
        ("1.x", "1.10.0"),
        ("*", "2.0.0"),
        (">=1.2.0 <2.0.0", "1.10.0"),
        (">=1.2.0, <1.5.0", "v1.4.2"),
        ("^1.2", "1.10.0"),
        ("~1.2", "1.2.0"),
        ("~1.4.0", "v1.4.2"),
        ("<1.0.0", "0.9.0"),
        ("1.2 - 1.4", "v1.4.2"),
        ("^0.9 || ^2", "2.0.0"),
        (">=1.11.0-rc.0 <2.0.0", "1.11.0-rc.1"),
        ("3.x.x", None),
        ("=1.2.0", "1.2.0"),
    ],
)
def test_newest_in_range(range_text: str, expected: str | None) -> None:
    assert newest_in_range(TAGS, range_text) == expected


@pytest.mark.parametrize("bad", ["", "  ", "1.x.3", "banana", ">=1.2.0 ||", "^^1"])
def test_bad_range_is_a_clear_error(bad: str) -> None:
    with pytest.raises(VersionError, match="semver range"):
        SemverRange.parse(bad)


def test_parse_semver_tag_ignores_non_versions() -> None:
    assert parse_semver_tag("latest") is None
    assert str(parse_semver_tag("v1.2.3")) == "1.2.3"
