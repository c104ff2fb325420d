"""Values that validated but failed later (or did harm) are refused by ``promote validate``, naming the field:
merge messages beyond the documented placeholders, tag patterns RE2 would refuse, ref names and paths Git
would misread, out-of-range ports and unbounded names."""

from __future__ import annotations

import pytest

from pipeline.load import PipelineError, parse_pipeline
from pipeline.model import TrackBranch

BRANCHES = """\
name: shop
repository:
  url: /srv/git/gitops.git
environments:
  - name: staging
    tracks: {kind: branch, branch: staging}
  - name: prod
    tracks:
      kind: branch
      branch: main
      merge_from: staging
      merge_message: MESSAGE
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="shop.yaml")
    return caught.value.problems


# --- merge_message ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "{environment:>999999999}",  # str.format allocated a gigabyte for this one
        "{environment.__class__}",  # and read attributes for this one
        "{environment!r}",
        "{pipeline[0]}",
        "{0}",
        "{}",
        "{branch}",
        "Promote { environment }",
        "a lone { brace",
        "a lone } brace",
    ],
)
def test_merge_message_allows_only_the_documented_placeholders(message: str) -> None:
    """Guards the placeholder substitution: merge_message went to str.format, so format specs, conversions
    and attributes validated (and one allocated 1 GB at run time)."""
    problems = _problems(BRANCHES.replace("MESSAGE", repr(message)))
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 12: environments[1].tracks.merge_message: merge_message: "), problems
    assert "allowed: {from_branch}, {environment}, {pipeline}" in problems[0]


def test_merge_message_fills_placeholders_and_keeps_escaped_braces() -> None:
    """The documented placeholders and {{ }} escapes keep working, with no other interpretation."""
    message = "Promote {from_branch} to {environment} ({pipeline}) {{literal}} %s {{{environment}}}"
    pipeline = parse_pipeline(BRANCHES.replace("MESSAGE", repr(message)))
    tracks = pipeline.environment("prod").tracks
    assert isinstance(tracks, TrackBranch)
    assert tracks.merge_commit_message(environment="prod", pipeline="shop") == (
        "Promote staging to prod (shop) {literal} %s {prod}"
    )


def test_merge_message_values_are_not_reinterpreted() -> None:
    """A value that looks like a placeholder is inserted as it is (one pass, no recursion)."""
    tracks = TrackBranch(kind="branch", branch="main", merge_from="staging", merge_message="{environment}/{pipeline}")
    assert tracks.merge_commit_message(environment="{pipeline}", pipeline="x") == "{pipeline}/x"


# --- values that validated but failed later ---------------------------------------------------------

TAGGED = """\
name: shop
repository:
  url: /srv/git/gitops.git
  branch: main
environments:
  - name: staging
    tracks:
      kind: tag
      application_file: apps/staging.yaml
"""
IMAGE_POLICY = (
    TAGGED.split("environments:")[0]
    + """environments:
  - name: staging
    tracks:
      kind: image-policy
      path: apps/staging
      policy: flux-system:shop
      registry:
        url: https://registry.example.org
        repository: shop/frontend
      choose: {semver: 1.x.x}
    verify:
      deployments:
        - name: frontend
          container: app
"""
)


@pytest.mark.parametrize(
    ("base", "old", "new", "field", "why"),
    [
        (TAGGED, "name: shop", "name: shop\nversioning: {tag_prefix: '-rf'}", "versioning", "starts with '-'"),
        (TAGGED, "name: shop", "name: shop\nversioning: {tag_prefix: 'a..b/'}", "versioning", "contains '..'"),
        (TAGGED, "name: shop", "name: shop\nversioning: {tag_prefix: 'x/.'}", "versioning", "starts with '.'"),
        (TAGGED, "branch: main", "branch: '@'", "repository.branch", "'@' alone"),
        (TAGGED, "branch: main", "branch: HEAD", "repository.branch", "pseudo-refs"),
        (TAGGED, "branch: main", "branch: FETCH_HEAD", "repository.branch", "pseudo-refs"),
        (TAGGED, "branch: main", "branch: ORIG_HEAD", "repository.branch", "pseudo-refs"),
        (TAGGED, "branch: main", "branch: MERGE_HEAD", "repository.branch", "pseudo-refs"),
        (TAGGED, "branch: main", "branch: " + "b" * 5000, "repository.branch", "the limit is 200"),
        (TAGGED, "apps/staging.yaml", ".git/config", "environments[0].tracks.application_file", ".git directory"),
        (TAGGED, "apps/staging.yaml", "apps/.GIT/hooks/x", "environments[0].tracks.application_file", ".git dir"),
        (TAGGED, "apps/staging.yaml", "/etc/passwd", "environments[0].tracks.application_file", "leading '/'"),
        (TAGGED, "apps/staging.yaml", "apps/../../x", "environments[0].tracks.application_file", "without '..'"),
        (TAGGED, "apps/staging.yaml", "a" * 5000, "environments[0].tracks.application_file", "at most 1024"),
        (IMAGE_POLICY, "path: apps/staging", "path: .git", "environments[0].tracks.path", ".git directory"),
        (
            IMAGE_POLICY,
            "registry.example.org",
            "registry.example.org:99999",
            "environments[0].tracks.registry.url",
            "port must be a number from 1 to 65535",
        ),
        (
            IMAGE_POLICY,
            "registry.example.org",
            "registry.example.org:0",
            "environments[0].tracks.registry.url",
            "port must be a number from 1 to 65535",
        ),
        (IMAGE_POLICY, "container: app", "container: " + "c" * 5000, "container", "container name"),
        (IMAGE_POLICY, "shop/frontend", "shop/" + "f" * 5000, "environments[0].tracks.registry.repository", "255"),
        (TAGGED, "  branch: main", "  branch: main\n  author: {name: " + "n" * 5000 + "}", "author.name", "200"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 and "\n" not in value else None,
)
def test_values_that_failed_later_are_refused_naming_the_field(
    base: str, old: str, new: str, field: str, why: str
) -> None:
    """Guards validation of tag prefixes (as whole tags), branch names (check-ref-format, @ and pseudo-refs),
    repository paths (no .git part), registry ports and name lengths: each validated before and failed (or
    did harm) only once a promotion ran."""
    assert old in base
    problems = _problems(base.replace(old, new, 1))
    matching = [p for p in problems if field in p.split(": ")[1] or field in p]
    assert matching, problems
    assert why in matching[0], matching
    assert all(len(p) < 400 for p in problems), problems


@pytest.mark.parametrize(
    ("base", "old", "new"),
    [
        (TAGGED, "name: shop", "name: shop\nversioning: {tag_prefix: 'release/'}"),
        (TAGGED, "name: shop", "name: shop\nversioning: {tag_prefix: ''}"),
        (TAGGED, "branch: main", "branch: release/2026.1"),
        (TAGGED, "apps/staging.yaml", "apps/.github/staging.yaml"),
        (TAGGED, "apps/staging.yaml", "apps/x.git/staging.yaml"),
        (IMAGE_POLICY, "registry.example.org", "registry.example.org:65535"),
        (IMAGE_POLICY, "registry.example.org", "[::1]:5000"),
    ],
)
def test_neighbours_of_the_refused_values_still_validate(base: str, old: str, new: str) -> None:
    """The new rules refuse what Git or the registry would; names next to them stay valid."""
    parse_pipeline(base.replace(old, new, 1))
