"""Git ref-name rules, as git's check-ref-format applies them (refs.c: check_refname_component,
check_refname_format), plus the names this tool refuses on top: pseudo-refs, a leading '-', over-long names."""

from __future__ import annotations

import pytest

from rules.refnames import MAX_REF_LENGTH, branch_name_problem, is_valid_branch_name, is_valid_tag_name


@pytest.mark.parametrize(
    "name",
    ["main", "release/1.2", "feature/x-y_z", "v1.2.3", "a.b", "user@host", "x+y", "a" * MAX_REF_LENGTH, "heads"],
)
def test_ordinary_branch_names_are_accepted(name: str) -> None:
    assert branch_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        # check-ref-format rules (git-check-ref-format(1), numbered as there)
        ("a/.hidden", "starts with '.'"),  # 1: no component begins with a dot
        (".main", "starts with '.'"),
        ("a/b.lock/c", "ends with '.lock'"),  # 1: no component ends with .lock
        ("main.lock", "ends with '.lock'"),
        ("a..b", "contains '..'"),  # 3
        ("a b", "contains ' '"),  # 4: no space, control, ~ ^ :
        ("a\tb", "contains '\\t'"),
        ("a~1", "contains '~'"),
        ("a^", "contains '^'"),
        ("a:b", "contains ':'"),
        ("a?", "contains '?'"),  # 5: no ? * [
        ("a*", "contains '*'"),
        ("a[b", "contains '['"),
        ("/a", "empty part"),  # 6: no leading or trailing slash, no //
        ("a/", "empty part"),
        ("a//b", "empty part"),
        ("a.", "ends with '.'"),  # 7
        ("a@{1}", "'@{'"),  # 8
        ("@", "'@' alone"),  # 9
        ("a\\b", "contains '\\\\'"),  # 10
        ("", "empty"),
        # this tool's own
        ("-rf", "starts with '-'"),
        ("HEAD", "pseudo-refs"),
        ("FETCH_HEAD", "pseudo-refs"),
        ("ORIG_HEAD", "pseudo-refs"),
        ("MERGE_HEAD", "pseudo-refs"),
        ("CHERRY_PICK_HEAD", "pseudo-refs"),
        ("a" * (MAX_REF_LENGTH + 1), "the limit is 200"),
        ("a" * 5000, "5000 characters long"),
    ],
)
def test_refused_branch_names_say_why(name: str, why: str) -> None:
    """Guards the check-ref-format port and its additions (@, HEAD and the pseudo-refs, length): these were
    accepted as branch names before and failed, or named the wrong thing, when git ran."""
    problem = branch_name_problem(name)
    assert problem is not None, name
    assert why in problem
    assert not is_valid_branch_name(name)
    assert len(problem) < 200


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("v1.2.3", True),
        ("v1.2.3-rc1", True),
        ("release/1.0", True),
        ("-rf1.2.3", False),
        ("a..b/1.2.3", False),
        ("a/.b1.2.3", False),
        ("x.lock/1.2.3", False),
        ("a//1.2.3", False),
        ("v1.2.3.lock", False),
        ("t" * 201, False),
    ],
)
def test_tag_names(tag: str, valid: bool) -> None:
    assert is_valid_tag_name(tag) is valid
