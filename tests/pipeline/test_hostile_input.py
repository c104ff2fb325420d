"""Hostile pipeline files: size, alias expansion, nesting and echoed values are bounded, so a small or a huge
bad file gives a short, clear error quickly instead of megabytes of output or a hang."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.load import MAX_FILE_BYTES, MAX_PROBLEMS, PipelineError, parse_pipeline

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
name: shop
repository:
  url: /srv/git/gitops.git
environments:
  - name: staging
    tracks:
      kind: tag
      application_file: apps/staging.yaml
"""


def alias_bomb(levels: int) -> str:
    """A "billion laughs" file: each level is nine aliases of the one before, ``9**levels`` values in all."""
    lines = ["a0: &a0 [" + ",".join(['"xxxxxxxx"'] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "name: shop\nrepository: {url: /x}\n" + "\n".join(lines) + f"\nenvironments: *a{levels}\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="shop.yaml")
    return caught.value.problems


@pytest.mark.parametrize("levels", [5, 8])
def test_alias_bomb_gives_a_short_error_quickly(tmp_path: Path, levels: int) -> None:
    """Guards the alias-expansion bound: a ~400-byte file once gave 34.7 MB of errors (and 430 bytes ran past
    60 s) because pydantic validated, and the errors echoed, every expanded value."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(levels))
    assert bomb.stat().st_size < 600
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "promote.cli", "validate", str(bomb)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert time.monotonic() - started < 20
    assert proc.returncode == 1
    assert len(proc.stdout) + len(proc.stderr) < 2000, proc.stderr[:2000]
    assert "expands to more than" in proc.stderr
    assert "aliases" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reasonable_aliases_and_merge_keys_still_work() -> None:
    """The bound leaves room for the anchors people write to share settings between environments."""
    envs = "".join(
        f"""  - name: env{i}
    tracks: {{kind: tag, application_file: apps/env{i}.yaml}}
    verify:
      <<: *verify
      timeout_seconds: {100 + i}
"""
        for i in range(20)
    )
    text = MINIMAL + "    verify: &verify\n      timeout_seconds: 300\n      health_grace_seconds: 5\n" + envs
    pipeline = parse_pipeline(text)
    assert [env.verify.timeout_seconds for env in pipeline.environments] == [300, *range(100, 120)]
    assert {env.verify.health_grace_seconds for env in pipeline.environments} == {5}


def test_huge_field_value_gives_a_short_message() -> None:
    """Guards the echo cap: a huge value was repeated whole in the error (a 50 MB value gave a 52 MB line)."""
    huge = "A" * (MAX_FILE_BYTES - 1000)
    problems = _problems(MINIMAL.replace("name: shop", f"name: {huge}"))
    assert len(problems[0]) < 300, problems[0][:300]
    assert problems[0].startswith("line 1: name: 'AAAA")
    assert "\u2026" in problems[0]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("apps/staging.yaml", "/" + "a" * 500_000),  # pattern mismatch
        ("kind: tag", "kind: " + "t" * 500_000),  # unknown discriminator
        ("url: /srv/git/gitops.git", "url: /x\n  branch: 'a b" + "c" * 500_000 + "'"),  # a validator's message
    ],
    ids=["pattern", "kind", "validator"],
)
def test_every_kind_of_error_caps_what_it_echoes(old: str, new: str) -> None:
    """Guards the echo cap for each way an error repeats the input (pattern, kind, validator messages)."""
    problems = _problems(MINIMAL.replace(old, new))
    assert problems
    assert all(len(p) < 700 for p in problems), [p[:200] for p in problems]


def test_file_larger_than_the_limit_is_refused_with_its_size() -> None:
    """Guards the size limit: parse_pipeline (used by the flows too) refuses text over MAX_FILE_BYTES."""
    problems = _problems(MINIMAL + "#" + "x" * MAX_FILE_BYTES + "\n")
    assert len(problems) == 1
    assert "larger than 1024 KiB" in problems[0]


def test_many_problems_are_counted_not_all_printed() -> None:
    """Guards the problem cap: a thousand bad environments report MAX_PROBLEMS lines and a count."""
    envs = "".join(f"  - name: E{i}\n    tracks: {{kind: tag, application_file: a.yaml}}\n" for i in range(1000))
    problems = _problems(MINIMAL.split("environments:")[0] + "environments:\n" + envs)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1] == f"... and {1000 - MAX_PROBLEMS} more problems"


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    """Guards the depth bound: deeply nested lists are a named error, not a RecursionError."""
    for depth in (70, 5000):
        problems = _problems(MINIMAL + "versioning: " + "[" * depth + "]" * depth + "\n")
        assert problems == ["mappings and lists are nested more than 64 levels deep; a pipeline file needs a handful"]


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        ("url: /srv/git/gitops.git", "url: fd::3", "other transports (ext::, fd::, remote helpers) are refused"),
        ("url: /srv/git/gitops.git", "url: 'ext::sh -c touch% /tmp/pwned'", "are refused"),
        ("url: /srv/git/gitops.git", "url: 'foo://host/repo.git'", "are refused"),
        ("url: /srv/git/gitops.git", "url: /srv/git/gitops.git\n  branch: refs/heads/main", "short name (main)"),
        (
            "url: /srv/git/gitops.git",
            'url: /srv/git/gitops.git\n  author: {name: "bot\\0evil", email: bot@x}',
            "control characters",
        ),
        (
            "url: /srv/git/gitops.git",
            'url: /srv/git/gitops.git\n  author: {name: "bot <root@x>", email: bot@x}',
            "angle brackets",
        ),
    ],
    ids=["fd-transport", "ext-transport", "unknown-scheme", "full-ref-branch", "nul-in-author", "brackets-in-author"],
)
def test_repository_settings_git_would_misuse_are_validation_errors(replace: str, by: str, message: str) -> None:
    """Each passed validate and failed (or ran a command) only when git used it, mid-promotion."""
    problems = _problems(MINIMAL.replace(replace, by))
    assert any(message in problem for problem in problems), problems
