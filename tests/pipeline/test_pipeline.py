"""Pipeline files: the examples validate, broken files give file/line/field/allowed errors, and the CLI exits
non-zero on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.load import PipelineError, load_pipeline, parse_pipeline
from promote.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deployments" / "examples").glob("*.yaml"))

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


def test_there_is_an_example_per_strategy() -> None:
    kinds = {env.tracks.kind for path in EXAMPLES for env in load_pipeline(path).environments}
    assert kinds == {"tag", "branch", "kustomize-image", "image-policy", "yaml-path"}


def test_there_is_an_example_of_release_windows_and_a_soak_time() -> None:
    gates = [env.gate for path in EXAMPLES for env in load_pipeline(path).environments]
    assert any(gate.windows and gate.min_soak for gate in gates)
    kinds = {"allow" if window.allow else "deny" for gate in gates for window in gate.windows}
    assert kinds == {"allow", "deny"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    assert load_pipeline(path).environments


def test_defaults() -> None:
    pipeline = parse_pipeline(MINIMAL)
    assert pipeline.repository.branch == "main"
    assert pipeline.versioning.scheme.tag(pipeline.versioning.scheme.parse("1.2.3-rc4")) == "v1.2.3-rc4"
    assert pipeline.environment("staging").gate.approval is False
    with pytest.raises(KeyError, match="has no environment 'prod'; it has: staging"):
        pipeline.environment("prod")


def _problems(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, source="deployments/shop.yaml")
    assert str(caught.value).startswith("deployments/shop.yaml: invalid pipeline file")
    return caught.value.problems


def test_unknown_kind_names_line_field_and_allowed_values() -> None:
    problems = _problems(MINIMAL.replace("kind: tag", "kind: tags"))
    assert problems == [
        "line 7: environments[0].tracks.kind: unknown kind 'tags'; allowed: 'tag', 'branch', 'kustomize-image', "
        "'image-policy', 'yaml-path'"
    ]


def test_misspelt_field_lists_allowed_fields() -> None:
    problems = _problems(MINIMAL.replace("application_file", "aplication_file"))
    assert any(
        p.startswith(
            "line 8: environments[0].tracks.aplication_file: unknown field; allowed: kind, "
            "application_file, source_index"
        )
        for p in problems
    ), problems
    assert any("environments[0].tracks.application_file: required field is missing" in p for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("url: /srv/git/gitops.git", "url: https://me:tok3n@git.example.org/x.git", "carries a password or token"),
        ("apps/staging.yaml", "../../etc/passwd", "without '..'"),
        ("name: staging", "name: Staging", "environments[0].name: 'Staging' is not allowed here"),
        ("name: shop", "name: shop\nversioning:\n  bump: huge", "versioning.bump: must be one of: 'major', 'minor'"),
        ("name: shop", "name: shop\nversioning:\n  tag_prefix: 'v '", "tag prefix 'v ' is not allowed"),
        ("  url: /srv/git/gitops.git", "  url: /srv/git/gitops.git\n  branch: '-x'", "not a valid Git branch name"),
    ],
)
def test_field_errors(old: str, new: str, expected: str) -> None:
    problems = _problems(MINIMAL.replace(old, new))
    assert any(expected in p for p in problems), problems
    assert "tok3n" not in "\n".join(problems)


def test_bad_semver_range_is_rejected_at_validation() -> None:
    text = (ROOT / "deployments/examples/image-policy.yaml").read_text().replace("semver: 1.x.x", "semver: 1.x.3")
    problems = _problems(text)
    assert any("choose: semver range '1.x.3'" in p for p in problems), problems


def test_duplicate_environments_and_missing_merge_source() -> None:
    text = MINIMAL + "  - name: staging\n    tracks: {kind: branch, branch: production}\n"
    problems = _problems(text)
    assert any("repeated: staging" in p for p in problems), problems


def test_not_yaml_and_not_a_mapping() -> None:
    assert "not valid YAML" in _problems("name: [unclosed\n")[0]
    assert "must be a YAML mapping" in _problems("- just\n- a list\n")[0]


def test_cli_validate_valid_examples_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "deployments/examples")]) == 0
    out = capsys.readouterr().out
    assert "tags.yaml: ok (pipeline shop: dev -> staging -> production)" in out


def test_cli_validate_broken_file_exits_nonzero_naming_the_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MINIMAL.replace("kind: tag", "kind: tagz"))
    proc = subprocess.run(
        [sys.executable, "-m", "promote.cli", "validate", str(broken)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert f"{broken}: invalid pipeline file" in proc.stderr
    assert "line 7: environments[0].tracks.kind: unknown kind 'tagz'" in proc.stderr


def test_cli_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read the file: No such file or directory" in capsys.readouterr().err


def _env(name: str, tracks: str) -> str:
    return f"""
  - name: {name}
    tracks:
{tracks}"""


OVERLAY = "      kind: kustomize-image\n      file: overlays/{0}/kustomization.yaml\n      image: app"
BRANCH = "      kind: branch\n      branch: {0}"
TAG = "      kind: tag\n      application_file: apps/{0}.yaml"
YAML_PATH = (
    "      kind: yaml-path\n      edits:\n        - name: image\n          file: envs/{0}/values.yaml\n"
    "          path: image.tag"
)


def _pipeline(*envs: str) -> str:
    head = MINIMAL.split("environments:")[0]
    return head + "environments:" + "".join(envs) + "\n"


@pytest.mark.parametrize(
    ("envs", "problem"),
    [
        (
            [_env("staging", YAML_PATH.format("staging")), _env("prod", OVERLAY.format("prod"))],
            "environment 'prod' (kustomize-image) cannot be promoted from 'staging' (yaml-path)",
        ),
        (
            [
                _env("staging", YAML_PATH.format("staging")),
                _env("prod", YAML_PATH.format("prod").replace("name: image", "name: chart")),
            ],
            "only one of them has: chart, image",
        ),
        (
            [_env("staging", YAML_PATH.format("staging").replace("path: image.tag", "path: image..tag"))],
            "'image..tag': a key is missing after the '.' at character 6",
        ),
        (
            [_env("staging", TAG.format("staging")), _env("prod", OVERLAY.format("prod"))],
            "environment 'prod' (kustomize-image) cannot be promoted from 'staging' (tag): its upstream must track "
            "image-policy or kustomize-image",
        ),
        (
            [
                _env("staging", BRANCH.format("staging")),
                _env("prod", BRANCH.format("main") + "\n      merge_from: stage"),
            ],
            "environment 'prod' merges from 'stage', but the environment before it ('staging') tracks branch "
            "'staging': set tracks.merge_from to 'staging'",
        ),
        (
            [_env("staging", TAG.format("staging")), _env("qa", BRANCH.format("qa")), _env("prod", TAG.format("prod"))],
            "environment 'qa' (branch) cannot be promoted from 'staging' (tag): its upstream must track branch",
        ),
        (
            [
                _env("staging", "      kind: branch\n      branch: staging"),
                _env(
                    "prod",
                    BRANCH.format("main") + "\n      merge_from: staging\n      merge_message: 'Promote {branch}'",
                ),
            ],
            "merge_message: '{branch}' is not a placeholder; allowed: {from_branch}, {environment}, {pipeline}",
        ),
    ],
    ids=[
        "overlay-after-yaml-path",
        "yaml-path-names-differ",
        "yaml-path-syntax",
        "overlay-after-tag",
        "merge-from-mismatch",
        "branch-in-a-tag-chain",
        "merge-message",
    ],
)
def test_shapes_the_flows_cannot_promote_are_refused(envs: list[str], problem: str) -> None:
    problems = _problems(_pipeline(*envs))
    assert any(problem in p for p in problems), problems


def test_supported_shapes_validate() -> None:
    parse_pipeline(
        _pipeline(_env("dev", BRANCH.format("main")), _env("staging", TAG.format("s")), _env("prod", TAG.format("p")))
    )
    parse_pipeline(
        _pipeline(
            _env("staging", BRANCH.format("staging")),
            _env("prod", BRANCH.format("main") + "\n      merge_from: staging"),
        )
    )
    parse_pipeline(_pipeline(_env("staging", OVERLAY.format("staging")), _env("prod", OVERLAY.format("prod"))))
    # chains of any length, for every strategy
    parse_pipeline(_pipeline(*(_env(e, TAG.format(e)) for e in ("dev", "qa", "staging", "prod"))))
    parse_pipeline(_pipeline(*(_env(e, OVERLAY.format(e)) for e in ("dev", "staging", "prod"))))
    parse_pipeline(_pipeline(*(_env(e, YAML_PATH.format(e)) for e in ("dev", "staging", "prod"))))


GITHUB_APP = (ROOT / "deployments" / "examples" / "pull-request-github-app.yaml").read_text()
APP_BLOCK = """    github_app:
      app_id: "123456"                  # the App ID (or the Client ID, Iv...) from the app's settings page
      installation_id: 45678901
      private_key:
        env: GITHUB_APP_PRIVATE_KEY     # the .pem file's text; or secret_block: github-app-key"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (APP_BLOCK, APP_BLOCK + "\n    token_env: GITHUB_TOKEN", "set exactly one of token_env"),
        (APP_BLOCK, APP_BLOCK + "\n    username: bot", "used as user x-access-token: remove username"),
        ('app_id: "123456"', 'app_id: "12 34"', "repository.credentials.github_app.app_id"),
        ("installation_id: 45678901", "installation_id: 0", "greater than 0"),
        ("provider: github", "provider: gitlab", "write.provider is gitlab: set write.provider: github"),
    ],
)
def test_a_github_app_as_credentials_is_checked(old: str, new: str, expected: str) -> None:
    assert old in GITHUB_APP
    problems = _problems(GITHUB_APP.replace(old, new))
    assert any(expected in problem for problem in problems), problems


def test_a_github_app_is_no_registry_s_credentials() -> None:
    app = parse_pipeline(GITHUB_APP).repository.credentials
    assert app is not None and app.github_app is not None and app.github_app.installation_id == 45678901
    from pipeline.model import ImageRegistry

    with pytest.raises(ValueError, match="not a registry's"):
        ImageRegistry(url="https://registry.example", repository="app", credentials=app)
