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
