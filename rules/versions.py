"""Release versions: parse tags, compute the next release candidate, choose tags in a semver range.

Release tags look like ``v1.2.3`` (stable) and ``v1.2.3-rc1`` (candidate). The rc number is compared as a
number: plain semver compares the pre-release ``rc10`` below ``rc9`` (alphanumeric identifiers compare as
text), which would make ``-rc10`` an older candidate than ``-rc9``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import semver

Bump = Literal["major", "minor", "patch"]

_CORE = r"(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
_PREFIX_RE = re.compile(r"[A-Za-z0-9_./-]{0,40}")
_LABEL_RE = re.compile(r"[a-z][a-z0-9]{0,19}")
# Masterminds/semver (the library Flux's image policies use, via fluxcd/pkg version.ParseVersion) reads each
# number as a uint64 (version.go NewVersion: strconv.ParseUint): a larger one is not a version at all.
_MAX_NUMBER = 2**64 - 1
_MAX_TAG = 255  # a Git ref name component longer than this is not one we made; never parse megabytes


def _echo(text: str, limit: int = 80) -> str:
    """User or repository text in an error message: bounded, so a hostile tag cannot flood the output."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


class VersionError(ValueError):
    """A version, tag or range that cannot be understood; the message says what is accepted."""


@dataclass(frozen=True, order=False)
class ReleaseVersion:
    """A stable release (``rc is None``) or a numbered release candidate of it."""

    major: int
    minor: int
    patch: int
    rc: int | None = None
    # The tag this version was read from, when it came from a repository's tags (TagScheme.versions): a
    # repository may spell its tags without the scheme's prefix. Not part of the version's identity.
    spelled: str | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def is_rc(self) -> bool:
        return self.rc is not None

    def sort_key(self) -> tuple[int, int, int, int, int]:
        # A stable release sorts after all of its candidates.
        return (*self.core, 1 if self.rc is None else 0, self.rc or 0)

    def __lt__(self, other: ReleaseVersion) -> bool:
        return self.sort_key() < other.sort_key()

    def __le__(self, other: ReleaseVersion) -> bool:
        return self.sort_key() <= other.sort_key()

    def __gt__(self, other: ReleaseVersion) -> bool:
        return self.sort_key() > other.sort_key()

    def __ge__(self, other: ReleaseVersion) -> bool:
        return self.sort_key() >= other.sort_key()

    def stable(self) -> ReleaseVersion:
        """The stable version this candidate becomes (``1.2.3-rc2`` -> ``1.2.3``)."""
        return ReleaseVersion(self.major, self.minor, self.patch)

    def bumped(self, bump: Bump) -> ReleaseVersion:
        if bump == "major":
            return ReleaseVersion(self.major + 1, 0, 0)
        if bump == "minor":
            return ReleaseVersion(self.major, self.minor + 1, 0)
        return ReleaseVersion(self.major, self.minor, self.patch + 1)

    def with_rc(self, rc: int) -> ReleaseVersion:
        return ReleaseVersion(self.major, self.minor, self.patch, rc)

    def __str__(self) -> str:
        return self.format()

    def format(self, prefix: str = "", rc_label: str = "rc") -> str:
        text = f"{prefix}{self.major}.{self.minor}.{self.patch}"
        return text if self.rc is None else f"{text}-{rc_label}{self.rc}"


@dataclass(frozen=True)
class TagScheme:
    """How release tags are spelled: ``{prefix}1.2.3`` and ``{prefix}1.2.3-{rc_label}N``."""

    prefix: str = "v"
    rc_label: str = "rc"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise VersionError(
                f"tag prefix {self.prefix!r} is not allowed: use up to 40 letters, digits, '_', '.', '/', '-'"
            )
        if not _LABEL_RE.fullmatch(self.rc_label):
            raise VersionError(
                f"rc label {self.rc_label!r} is not allowed: use a lowercase word such as 'rc' (v1.2.3-rc1)"
            )

    @property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(rf"{re.escape(self.prefix)}{_CORE}(?:-{re.escape(self.rc_label)}(?P<rc>[1-9]\d*))?")

    def parse_tag(self, tag: str) -> ReleaseVersion | None:
        """The version a tag names, or None for tags that are not release tags (``latest``, ``release-5``)."""
        if not isinstance(tag, str) or len(tag) > _MAX_TAG:
            return None
        match = self._pattern.fullmatch(tag)
        if match is None:
            # Accept the bare version as well, so "1.2.3" and "v1.2.3" both name a release.
            match = re.fullmatch(rf"{_CORE}(?:-{re.escape(self.rc_label)}(?P<rc>[1-9]\d*))?", tag)
            if match is None:
                return None
        rc = match.group("rc")
        numbers = [match.group(name) for name in ("major", "minor", "patch")] + ([rc] if rc else [])
        # Length first: int() of a 5000-digit string raises (Python's digit limit) instead of answering.
        if any(len(n) > 20 or int(n) > _MAX_NUMBER for n in numbers):
            return None
        return ReleaseVersion(
            int(match.group("major")),
            int(match.group("minor")),
            int(match.group("patch")),
            int(rc) if rc else None,
        )

    def parse(self, text: str) -> ReleaseVersion:
        """Like :meth:`parse_tag` but for user input: anything else is an error saying what is accepted."""
        version = self.parse_tag(text.strip()) if isinstance(text, str) else None
        if version is None:
            raise VersionError(
                f"{_echo(str(text))} is not a release version: expected {self.tag(ReleaseVersion(1, 2, 3))} "
                f"or {self.tag(ReleaseVersion(1, 2, 3, 1))} (prefix optional, numbers up to {_MAX_NUMBER})"
            )
        return version

    def tag(self, version: ReleaseVersion) -> str:
        """The tag of ``version``: as the repository spells it when the version was read from its tags, else
        in this scheme (new tags always are)."""
        return version.spelled or version.format(self.prefix, self.rc_label)

    def versions(self, tags: Iterable[str]) -> list[ReleaseVersion]:
        """The release versions among ``tags``, oldest first; other tags are ignored.

        A repository may spell a version with and without the prefix (``v1.2.0`` and ``1.2.0``): that is one
        version, and :meth:`tag` names it by the scheme's own spelling when it exists, else by the other one,
        whatever order the tags are listed in.
        """
        found: dict[ReleaseVersion, ReleaseVersion] = {}
        for tag in tags:
            version = self.parse_tag(tag)
            if version is None:
                continue
            canonical = version.format(self.prefix, self.rc_label)
            known = found.get(version)
            if known is None or (known.spelled != canonical and (tag == canonical or tag < (known.spelled or ""))):
                found[version] = ReleaseVersion(version.major, version.minor, version.patch, version.rc, spelled=tag)
        return sorted(found.values(), key=ReleaseVersion.sort_key)


def latest_stable(versions: Iterable[ReleaseVersion]) -> ReleaseVersion | None:
    stables = [v for v in versions if not v.is_rc]
    return max(stables, key=ReleaseVersion.sort_key) if stables else None


def latest_rc(versions: Iterable[ReleaseVersion]) -> ReleaseVersion | None:
    rcs = [v for v in versions if v.is_rc]
    return max(rcs, key=ReleaseVersion.sort_key) if rcs else None


def next_rc(
    versions: Iterable[ReleaseVersion],
    bump: Bump = "patch",
    initial: ReleaseVersion = ReleaseVersion(0, 1, 0),
) -> ReleaseVersion:
    """The next release candidate after the newest stable release.

    ``v1.2.3`` released -> ``v1.2.4-rc1`` (patch); candidates of that target already tagged -> the next
    number (``-rc2`` after ``-rc1``, ``-rc10`` after ``-rc9``). With no stable release yet, the target is
    ``initial``, or the rc series in progress when that is higher: ``v2.0.0-rc3`` with nothing released gives
    ``v2.0.0-rc4``, never a ``v0.1.0-rc1`` that would sort below it (semver.org item 11: precedence is by
    major, minor, patch first).
    """
    if bump not in ("major", "minor", "patch"):
        raise VersionError(f"bump {str(bump)[:20]!r} is not one of: major, minor, patch")
    known = list(versions)
    stable = latest_stable(known)
    if stable is None:
        in_progress = latest_rc(known)
        target = initial.stable()
        if in_progress is not None and in_progress.core > target.core:
            target = in_progress.stable()
    else:
        target = stable.bumped(bump)
    taken = [v.rc for v in known if v.core == target.core and v.rc is not None]
    return target.with_rc(max(taken, default=0) + 1)


# --- semver ranges (image tags), in the spirit of the constraints Flux's ImagePolicy accepts ----------

_X = r"(?:0|[1-9]\d*|[xX*])"
_PARTIAL_RE = re.compile(
    rf"^v?(?P<major>{_X})(?:\.(?P<minor>{_X}))?(?:\.(?P<patch>{_X}))?(?:-(?P<pre>[0-9A-Za-z.-]+))?$"
)
_CLAUSE_RE = re.compile(r"^(?P<op>>=|<=|!=|==|=|>|<|~|\^)?\s*(?P<ver>\S+)$")

_Bound = tuple[str, semver.Version]


def _partial(text: str, constraint: str) -> tuple[list[int | None], str | None]:
    match = _PARTIAL_RE.match(text)
    if match is None:
        raise VersionError(
            f"semver range {_echo(constraint)}: {_echo(text)} is not a version; use forms like 1.x.x, ^1.2, "
            f"~1.2.3, >=1.2.0 <2.0.0, 1.2 - 1.4"
        )
    parts: list[int | None] = []
    for name in ("major", "minor", "patch"):
        value = match.group(name)
        if value is not None and value not in "xX*" and (len(value) > 20 or int(value) > _MAX_NUMBER):
            raise VersionError(
                f"semver range {_echo(constraint)}: {_echo(value)} is larger than a version number can be "
                f"({_MAX_NUMBER})"
            )
        parts.append(None if value is None or value in "xX*" else int(value))
    # "1.x.3" has no meaning: once a part is a wildcard the rest must be too.
    seen_wild = False
    for part in parts:
        if part is None:
            seen_wild = True
        elif seen_wild:
            raise VersionError(f"semver range {_echo(constraint)}: {_echo(text)} has a number after a wildcard")
    return parts, match.group("pre")


def _ver(parts: list[int | None], pre: str | None = None) -> semver.Version:
    major, minor, patch = (p or 0 for p in parts)
    return semver.Version(major, minor, patch, prerelease=pre)


def _upper_of(parts: list[int | None]) -> semver.Version | None:
    """The exclusive upper bound of a partial version: 1 -> 2.0.0, 1.2 -> 1.3.0, * -> none."""
    major, minor, _patch = parts
    if major is None:
        return None
    if minor is None:
        return semver.Version(major + 1, 0, 0)
    return semver.Version(major, minor + 1, 0)


def _below(upper: semver.Version | None) -> list[_Bound]:
    return [] if upper is None else [("<", upper)]


def _clause_bounds(clause: str, constraint: str) -> list[_Bound]:
    match = _CLAUSE_RE.match(clause)
    if match is None:
        raise VersionError(f"semver range {_echo(constraint)}: cannot read {_echo(clause)}")
    op = match.group("op") or "="
    parts, pre = _partial(match.group("ver"), constraint)
    major, minor, patch = parts
    exact = patch is not None
    low = _ver(parts, pre)
    if op in ("=", "=="):
        return [(">=", low), ("<=", low)] if exact else [(">=", low), *_below(_upper_of(parts))]
    if op == "!=":
        return [("!=", low)]
    if op == ">":
        if exact:
            return [(">", low)]
        upper = _upper_of(parts)
        # ">*" has nothing above it; Masterminds/semver constraints.go reads it as "no version".
        return [(">=", upper)] if upper is not None else [("<", semver.Version(0, 0, 0))]
    if op == ">=":
        return [(">=", low)]
    if op == "<":
        return [("<", low)]
    if op == "<=":
        return [("<=", low)] if exact else _below(_upper_of(parts))
    if op == "~":
        # ~1.2.3 -> >=1.2.3 <1.3.0; ~1 -> >=1.0.0 <2.0.0
        upper = _upper_of([major, minor, None]) if minor is not None else _upper_of([major, None, None])
        return [(">=", low), *_below(upper)]
    # "^": the leftmost non-zero part stays fixed.
    if major is None:
        return [(">=", low)]
    if major > 0 or minor is None:
        return [(">=", low), ("<", semver.Version(major + 1, 0, 0))]
    if minor > 0 or patch is None:
        return [(">=", low), ("<", semver.Version(0, minor + 1, 0))]
    return [(">=", low), ("<", semver.Version(0, 0, patch + 1))]


@dataclass(frozen=True)
class SemverRange:
    """A parsed range such as ``1.x.x``, ``>=1.2.0 <2.0.0`` or ``^1.2 || ^2``.

    Pre-releases match only an alternative (an AND group between ``||``) that itself names a pre-release, as
    in Masterminds/semver constraints.go (Constraints.Check, containsPre per group), the library behind Flux's
    ImagePolicy. So ``1.x.x`` means "only stable 1.x releases", and the ``-`` of ``1.2 - 1.4`` is no pre-release.
    """

    text: str
    alternatives: tuple[tuple[_Bound, ...], ...]
    allows_prerelease: bool
    prerelease_groups: tuple[bool, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemverRange:
        if not isinstance(text, str) or not text.strip():
            raise VersionError("semver range is empty: use forms like 1.x.x or >=1.2.0 <2.0.0")
        if len(text) > 1000:
            raise VersionError(f"semver range {_echo(text)} is {len(text)} characters long: keep it under 1000")
        alternatives: list[tuple[_Bound, ...]] = []
        groups: list[bool] = []
        for alternative in text.split("||"):
            alt = alternative.strip()
            if not alt:
                raise VersionError(f"semver range {_echo(text)}: empty alternative around '||'")
            bounds: list[_Bound] = []
            hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", alt)
            if hyphen:
                low_parts, low_pre = _partial(hyphen.group(1), text)
                high_parts, high_pre = _partial(hyphen.group(2), text)
                bounds.append((">=", _ver(low_parts, low_pre)))
                if high_parts[2] is None:
                    bounds.extend(_below(_upper_of(high_parts)))
                else:
                    bounds.append(("<=", _ver(high_parts, high_pre)))
                groups.append(bool(low_pre or high_pre))
            else:
                # "> = 1.2" style spacing is joined to its operator before splitting clauses.
                joined = re.sub(r"(>=|<=|!=|==|=|>|<|~|\^)\s+", r"\1", alt)
                pre = False
                for clause in re.split(r"[\s,]+", joined):
                    if clause:
                        clause_bounds = _clause_bounds(clause, text)
                        pre = pre or any(bound.prerelease for _op, bound in clause_bounds)
                        bounds.extend(clause_bounds)
                groups.append(pre)
            alternatives.append(tuple(bounds))
        return cls(
            text=text, alternatives=tuple(alternatives), allows_prerelease=any(groups), prerelease_groups=tuple(groups)
        )

    def matches(self, version: semver.Version) -> bool:
        groups = self.prerelease_groups or (self.allows_prerelease,) * len(self.alternatives)
        return any(
            (pre or not version.prerelease) and all(_holds(version, op, bound) for op, bound in alt)
            for alt, pre in zip(self.alternatives, groups, strict=True)
        )


def _holds(version: semver.Version, op: str, bound: semver.Version) -> bool:
    cmp = version.compare(bound)
    return {
        ">=": cmp >= 0,
        "<=": cmp <= 0,
        ">": cmp > 0,
        "<": cmp < 0,
        "!=": cmp != 0,
    }[op]


def parse_semver_tag(tag: str) -> semver.Version | None:
    """A registry tag as semver (``1.2.3``, ``v1.2.3``, ``1.2.3-rc.1+build``), or None if it is not one.

    As Masterminds/semver version.go NewVersion reads it for Flux: an optional lowercase ``v``, and each number a
    uint64 (``V1.2.3`` and ``99999999999999999999.0.0`` are not versions). OCI tags are at most 128 characters.
    """
    if not isinstance(tag, str) or len(tag) > 128:
        return None
    candidate = tag[1:] if tag[:1] == "v" else tag
    try:
        version = semver.Version.parse(candidate)
    except (ValueError, TypeError):
        return None
    if max(version.major, version.minor, version.patch) > _MAX_NUMBER:
        return None
    return version


def newest_in_range(tags: Iterable[str], range_text: str) -> str | None:
    """The tag with the highest version inside the range; None if none matches (tags that are not
    versions, such as ``latest``, are ignored)."""
    semver_range = SemverRange.parse(range_text)
    best: tuple[semver.Version, str] | None = None
    for tag in tags:
        version = parse_semver_tag(tag)
        if version is None or not semver_range.matches(version):
            continue
        if best is None or version.compare(best[0]) > 0:
            best = (version, tag)
    return None if best is None else best[1]
