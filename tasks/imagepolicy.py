"""Flux-style image policy: choose a registry tag by filter and policy, as Flux's ImagePolicy does.

Choosing follows Flux's image-reflector-controller (``internal/policy``):

* ``filterTags.pattern`` is an RE2 expression (Go's regexp syntax and semantics, matched in linear time: no
  pattern can backtrack for seconds), searched (not anchored) in each tag; ``extract`` (``$ts``, ``${ts}``, ``$1``)
  is expanded from the match as Go's ``Regexp.Expand`` does, and the *extracted* values are ordered while
  the *original* tag is returned. Two tags with the same extracted value: the later one in the listing wins
  (Flux keeps them in a map keyed by the extracted value).
* ``semver``: values that parse as semver (an optional leading ``v``) inside the range; pre-releases only
  when the range names one (``rules.versions.SemverRange``); the highest wins.
* ``alphabetical`` / ``numerical``: ``asc`` selects the *last* value of the ascending order, ``desc`` the
  first. Flux's API reference (AlphabeticalPolicy.order): "Given the letters of the alphabet as tags,
  ascending order would select Z, and descending order would select A"; NumericalPolicy.order: "Given the
  integer values from 0 to 9 as tags, ascending order would select 9, and descending order would select 0".
* ``numerical`` with a value that is not a number: Flux fails the policy ("failed to parse invalid numeric
  value"), it does not skip the tag. So do we, naming the tag and the filter that would exclude it.

Nothing left after filtering (or nothing in the semver range) is ``None``: a clear no-op for the flow.

Writing the chosen tag through setter markers is :mod:`tasks.setters`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Protocol

from pipeline.model import ImagePolicy, TagFilter, compile_tag_pattern
from rules.errors import RefusedError
from rules.versions import newest_in_range

__all__ = ["ImagePolicyError", "expand_extract", "select_tag"]

_NAME_CHAR = re.compile(r"\w", re.ASCII)
# Go's strconv.ParseFloat in decimal form (tags cannot hold '+', hex floats or "Inf" in a useful way).
_DECIMAL_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


class _Pattern(Protocol):
    @property
    def groups(self) -> int: ...

    @property
    def groupindex(self) -> Mapping[str, int]: ...


class Match(Protocol):
    """What expand_extract reads of a match: an ``re`` match, or an RE2 one (``re2`` mirrors ``re``)."""

    @property
    def re(self) -> _Pattern: ...

    def group(self, group: int | str, /) -> str | None: ...


class ImagePolicyError(RefusedError, ValueError):
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
    pattern = compile_tag_pattern(tag_filter.pattern)  # RE2, as Flux: linear time in the tag, Go's syntax
    result: dict[str, str] = {}
    for tag in tags:
        match = pattern.search(tag)
        if match is None:
            continue
        value = expand_extract(tag_filter.extract, match) if tag_filter.extract else tag
        result[value] = tag
    return result


def expand_extract(template: str, match: Match) -> str:
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


def _group(match: Match, name: str) -> str:
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
