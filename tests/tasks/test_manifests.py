"""Manifest edits change exactly one value: every expected text is the original with one hand-written
substring replaced, never the output of the function under test. Pure functions, no Prefect."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tasks.manifests import (
    KustomizeImage,
    ManifestError,
    SetterMarker,
    find_setter_markers,
    get_application_revision,
    get_kustomize_image,
    set_application_revision,
    set_kustomize_image,
    set_replicas_patch,
    set_setter_values,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "manifests"
DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER_DIGEST = "sha256:" + "fedcba9876543210" * 4


def load(name: str) -> str:
    # Bytes, not read_text(): universal newlines would hide a changed line ending.
    return (DATA / name).read_bytes().decode()


def replaced(text: str, old: str, new: str) -> str:
    """The expected result: ``old`` (which must be unique) replaced by ``new``."""
    assert text.count(old) == 1, f"{old!r} must occur exactly once in the fixture"
    return text.replace(old, new)


def changed_lines(old: str, new: str) -> list[str]:
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


# --- Kustomize images ------------------------------------------------------------------------------


def test_staging_overlay_new_tag_changes_only_the_tag() -> None:
    text = load("staging-kustomization.yaml")
    new = set_kustomize_image(text, "app", new_tag="v1.2.4-rc1")
    assert new == replaced(text, "  newTag: v1.2.3-staging\n", "  newTag: v1.2.4-rc1\n")
    assert changed_lines(text, new) == ["-  newTag: v1.2.3-staging", "+  newTag: v1.2.4-rc1"]


def test_comment_column_after_value_is_kept() -> None:
    text = load("production-kustomization.yaml")
    new = set_kustomize_image(text, "app", new_tag="v1.2.4")
    assert new == replaced(
        text, "  newTag: v1.2.3  # Promote by updating tag", "  newTag: v1.2.4  # Promote by updating tag"
    )


def test_single_and_double_quotes_are_kept() -> None:
    text = load("production-kustomization.yaml")
    new = set_kustomize_image(text, "ghcr.io/example/worker", new_tag="2024.07.0")
    assert new == replaced(text, "newTag: '2024.06.1'", "newTag: '2024.07.0'")
    new = set_kustomize_image(text, "nginx", new_tag="1.27.1")
    assert new == replaced(text, '  newTag: "1.27.0"    # pinned', '  newTag: "1.27.1"    # pinned')


def test_long_digest_is_replaced_in_place_not_folded() -> None:
    text = load("production-kustomization.yaml")
    old_digest = get_kustomize_image(text, "ghcr.io/example/worker").digest
    assert old_digest is not None
    new = set_kustomize_image(text, "ghcr.io/example/worker", digest=OTHER_DIGEST)
    assert new == replaced(text, f"  digest: {old_digest}\n", f"  digest: {OTHER_DIGEST}\n")


def test_mixed_list_styles_keep_their_indentation() -> None:
    text = load("mixed-indent-kustomization.yaml")
    new = set_kustomize_image(text, "backend", new_tag="v3.5.0")
    assert new == replaced(text, "    newTag: v3.4.0\n\nconfigMap", "    newTag: v3.5.0\n\nconfigMap")


def test_new_name_with_registry_port() -> None:
    text = load("mixed-indent-kustomization.yaml")
    new = set_kustomize_image(text, "frontend", new_name="registry.local:5000/org/frontend")
    assert new == replaced(
        text,
        "newName: gcr.io/org/frontend        # mirrored",
        "newName: registry.local:5000/org/frontend        # mirrored",
    )


def test_missing_digest_is_inserted_after_the_entrys_last_key() -> None:
    text = load("mixed-indent-kustomization.yaml")
    new = set_kustomize_image(text, "frontend", digest=DIGEST)
    assert new == replaced(
        text,
        "    newTag: v3.4.0\n  - name: backend",
        f"    newTag: v3.4.0\n    digest: {DIGEST}\n  - name: backend",
    )


def test_insert_after_a_trailing_comment_and_replace_in_one_go() -> None:
    text = load("production-kustomization.yaml")
    new = set_kustomize_image(text, "app", new_tag="v1.2.4", digest=DIGEST)
    assert new == replaced(
        text,
        "  newTag: v1.2.3  # Promote by updating tag\n",
        f"  newTag: v1.2.4  # Promote by updating tag\n  digest: {DIGEST}\n",
    )


def test_inserted_value_takes_its_neighbours_quotes() -> None:
    text = load("production-kustomization.yaml")
    new = set_kustomize_image(text, "nginx", digest=DIGEST)
    assert new == replaced(
        text,
        '  newTag: "1.27.0"    # pinned: CVE-2024-xxxx\n',
        f'  newTag: "1.27.0"    # pinned: CVE-2024-xxxx\n  digest: "{DIGEST}"\n',
    )


def test_insert_at_end_of_file_without_final_newline() -> None:
    text = "images:\n- name: app\n  newTag: v1 # last"
    new = set_kustomize_image(text, "app", new_name="gcr.io/org/app")
    assert new == text + "\n  newName: gcr.io/org/app"


@pytest.mark.parametrize(
    ("tag", "written"),
    [("1.10", '"1.10"'), ("1e3", '"1e3"'), ("0755", '"0755"'), ("on", '"on"'), ("true", '"true"'), ("v1.10", "v1.10")],
)
def test_plain_tag_that_would_read_as_another_type_gets_double_quotes(tag: str, written: str) -> None:
    text = load("staging-kustomization.yaml")
    new = set_kustomize_image(text, "app", new_tag=tag)
    assert new == replaced(text, "newTag: v1.2.3-staging", f"newTag: {written}")
    assert get_kustomize_image(new, "app").new_tag == tag


def test_flow_style_images_are_edited_in_place() -> None:
    text = 'images: [{name: app, newTag: "1.0"}, {name: db, newTag: v2}]  # flow\n'
    new = set_kustomize_image(text, "app", new_tag="1.1")
    assert new == replaced(text, 'newTag: "1.0"', 'newTag: "1.1"')
    new = set_kustomize_image(text, "db", digest=DIGEST)
    assert new == replaced(text, "newTag: v2}", f"newTag: v2, digest: {DIGEST}}}")
    assert get_kustomize_image(new, "db") == KustomizeImage("db", None, "v2", DIGEST)


def test_crlf_line_endings_survive_an_insert() -> None:
    text = "images:\r\n- name: app # x\r\n  newTag: v1\r\nresources:\r\n- base\r\n"
    new = set_kustomize_image(text, "app", new_tag="v2", digest=DIGEST)
    assert new == replaced(text, "  newTag: v1\r\n", f"  newTag: v2\r\n  digest: {DIGEST}\r\n")


def test_setting_the_current_value_returns_the_same_text() -> None:
    text = "images:\n- name: app\n  newTag: 1.0   # a float, but it is what is there\n"
    assert set_kustomize_image(text, "app", new_tag="1.0") == text


def test_explicit_tag_is_kept() -> None:
    text = "images:\n- name: app\n  newTag: !!str 1.0\n"
    assert set_kustomize_image(text, "app", new_tag="1.1") == replaced(text, "!!str 1.0", '!!str "1.1"')


def test_get_kustomize_image_reads_what_the_overlay_runs() -> None:
    text = load("production-kustomization.yaml")
    assert get_kustomize_image(text, "ghcr.io/example/worker") == KustomizeImage(
        name="ghcr.io/example/worker",
        new_name="registry.example.com:5000/mirror/worker",
        new_tag="2024.06.1",
        digest="sha256:3f1c5a9e0b7d2c4f6a8e1b3d5f7a9c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d0f1a",
    )
    assert get_kustomize_image(text, "nginx") == KustomizeImage("nginx", new_tag="1.27.0")


def test_unknown_image_names_the_file_and_lists_the_images_there() -> None:
    text = load("production-kustomization.yaml")
    with pytest.raises(ManifestError) as err:
        set_kustomize_image(text, "frontend", new_tag="v1", source="overlays/production/kustomization.yaml")
    message = str(err.value)
    assert message.startswith("overlays/production/kustomization.yaml: image 'frontend' not found")
    assert "'app', 'ghcr.io/example/worker', 'nginx'" in message
    assert err.value.source == "overlays/production/kustomization.yaml"
    with pytest.raises(ManifestError, match="image 'frontend' not found"):
        get_kustomize_image(text, "frontend")


def test_file_without_images_list() -> None:
    with pytest.raises(ManifestError, match=r"k\.yaml: .*no images: list"):
        set_kustomize_image("resources:\n- base\n", "app", new_tag="v1", source="k.yaml")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"new_tag": "-bad"}, "invalid image tag '-bad'"),
        ({"new_tag": "v1 2"}, "invalid image tag"),
        ({"new_tag": "x" * 129}, "invalid image tag"),
        ({"digest": "sha256:abc"}, "invalid digest"),
        ({"digest": "sha256:" + "A" * 64}, "invalid digest"),
        ({"new_name": "GCR.io/Org/App"}, "invalid image name"),
        ({"new_name": "gcr.io/org/app:v1"}, "invalid image name"),
        ({}, "nothing to set"),
    ],
)
def test_invalid_input_is_refused(kwargs: dict[str, str], match: str) -> None:
    text = load("staging-kustomization.yaml")
    with pytest.raises(ManifestError, match=match):
        set_kustomize_image(text, "app", **kwargs)


def test_one_invalid_field_changes_nothing_even_if_others_are_fine() -> None:
    text = load("staging-kustomization.yaml")
    with pytest.raises(ManifestError, match="invalid digest"):
        set_kustomize_image(text, "app", new_tag="v9", digest="md5:nope")


def test_anchored_value_is_refused() -> None:
    text = "images:\n- name: app\n  newTag: &t v1\n- name: app2\n  newTag: *t\n"
    with pytest.raises(ManifestError, match="anchored"):
        set_kustomize_image(text, "app2", new_tag="v2")


def test_an_anchored_marked_value_is_refused_naming_its_line_once() -> None:
    text = 'tag: &t 1.0.0 # {"$imagepolicy": "flux-system:web:tag"}\nother: *t\n'
    with pytest.raises(ManifestError) as refused:
        set_setter_values(text, "flux-system:web", tag="1.2.3", source="values.yaml")
    assert str(refused.value) == (
        "values.yaml: the value marked for flux-system:web at line 1 is anchored (&t) and may be shared; "
        "edit it by hand"
    )


def test_invalid_yaml_names_the_file() -> None:
    with pytest.raises(ManifestError, match=r"^bad\.yaml: not valid YAML"):
        set_kustomize_image("images: [\n", "app", new_tag="v1", source="bad.yaml")


# --- Replica patches -------------------------------------------------------------------------------


def test_replicas_patch_in_block_scalar() -> None:
    text = load("staging-kustomization.yaml")
    new = set_replicas_patch(text, 3)
    assert new == replaced(text, "      value: 2\n", "      value: 3\n")
    assert changed_lines(text, new) == ["-      value: 2", "+      value: 3"]


def test_replicas_patch_without_target_and_with_comments() -> None:
    text = load("production-kustomization.yaml")
    assert set_replicas_patch(text, 7) == replaced(text, "value: 5", "value: 7")
    text = "patches:\n- patch: |-   # scale\n    - op: replace\n      path: /spec/replicas\n      value: 2  # ha\n"
    assert set_replicas_patch(text, 10) == replaced(text, "value: 2  # ha", "value: 10  # ha")


def test_replicas_patch_kind_must_match() -> None:
    text = load("staging-kustomization.yaml")
    with pytest.raises(ManifestError, match="no patch setting /spec/replicas for kind 'StatefulSet'"):
        set_replicas_patch(text, 3, kind="StatefulSet")
    assert set_replicas_patch(text, 3, kind=None) == replaced(text, "value: 2", "value: 3")


def test_replicas_patch_ambiguous_targets_need_a_name() -> None:
    text = (
        "patches:\n"
        "- patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: 2\n"
        "  target:\n    kind: Deployment\n    name: web\n"
        '- patch: |\n    [{"op": "replace", "path": "/spec/replicas", "value": 1}]\n'
        "  target: {kind: Deployment, name: worker}\n"
    )
    with pytest.raises(ManifestError, match=r"2 patches set /spec/replicas .*Deployment/web.*Deployment/worker"):
        set_replicas_patch(text, 4)
    assert set_replicas_patch(text, 4, target_name="worker") == replaced(text, '"value": 1', '"value": 4')
    assert set_replicas_patch(text, 4, target_name="web") == replaced(text, "value: 2", "value: 4")


def test_replicas_in_strategic_merge_patch() -> None:
    text = (
        "patches:\n"
        "  - patch: |-\n"
        "      apiVersion: apps/v1\n      kind: Deployment\n      metadata:\n        name: web\n"
        "      spec:\n        replicas: 2 # keep small\n"
    )
    assert set_replicas_patch(text, 6) == replaced(text, "replicas: 2 #", "replicas: 6 #")


def test_replicas_patch_errors() -> None:
    with pytest.raises(ManifestError, match=r"^k\.yaml: no patch setting /spec/replicas"):
        set_replicas_patch("resources:\n- base\n", 2, source="k.yaml")
    folded = 'patches:\n- patch: \'[{"op": "replace", "path": "/spec/replicas", "value": 1}]\'\n'
    with pytest.raises(ManifestError, match="not a literal block scalar"):
        set_replicas_patch(folded, 2)
    for bad in (-1, True):
        with pytest.raises(ManifestError, match="non-negative integer"):
            set_replicas_patch(load("staging-kustomization.yaml"), bad)


# --- Argo CD Application ---------------------------------------------------------------------------


def test_application_in_multi_doc_file_by_name() -> None:
    text = load("applications.yaml")
    new = set_application_revision(text, "v1.2.3-rc2", app_name="shop-staging")
    assert new == replaced(
        text, "targetRevision: v1.2.3-rc1   # set by promote", "targetRevision: v1.2.3-rc2   # set by promote"
    )
    new = set_application_revision(text, "v1.2.3", app_name="shop-production")
    assert new == replaced(text, 'targetRevision: "v1.2.2"', 'targetRevision: "v1.2.3"')
    assert get_application_revision(new, app_name="shop-production") == "v1.2.3"
    assert get_application_revision(new, app_name="shop-staging") == "v1.2.3-rc1"


def test_several_applications_need_a_name() -> None:
    with pytest.raises(ManifestError, match=r"2 Applications .*'shop-staging', 'shop-production'.*app_name"):
        set_application_revision(load("applications.yaml"), "v1")
    with pytest.raises(ManifestError, match=r"no Application named 'shop-dev'"):
        get_application_revision(load("applications.yaml"), app_name="shop-dev")


def test_multi_source_application() -> None:
    text = load("multi-source-application.yaml")
    new = set_application_revision(text, "1.10", source_index=0)
    # A plain value that would read as a float gets double quotes.
    assert new == replaced(text, "targetRevision: 1.9.0", 'targetRevision: "1.10"')
    assert get_application_revision(new, source_index=0) == "1.10"
    new = set_application_revision(text, "release/2024-07", source_index=1)
    assert new == replaced(text, "targetRevision: 'main'", "targetRevision: 'release/2024-07'")


def test_multi_source_needs_a_valid_index() -> None:
    text = load("multi-source-application.yaml")
    with pytest.raises(ManifestError, match=r"has 2 sources \(\[0\] https://charts.example.com, \[1\] .*source_index"):
        set_application_revision(text, "v1")
    with pytest.raises(ManifestError, match=r"source_index 2 is out of range: .* has 2 sources"):
        get_application_revision(text, source_index=2)


def test_single_source_refuses_an_index() -> None:
    text = load("applications.yaml")
    with pytest.raises(ManifestError, match=r"single spec\.source"):
        set_application_revision(text, "v1", app_name="shop-staging", source_index=0)


def test_missing_target_revision_says_what_to_add() -> None:
    text = (
        "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n  name: a\n"
        "spec:\n  source:\n    repoURL: https://git.example.com/a.git\n    path: app\n"
    )
    with pytest.raises(ManifestError, match=r"^app\.yaml: .*spec\.source has no targetRevision.*add `targetRevision"):
        set_application_revision(text, "v1", source="app.yaml")


def test_empty_target_revision_is_filled() -> None:
    text = "apiVersion: argoproj.io/v1alpha1\nkind: Application\nspec:\n  source:\n    targetRevision:\n"
    assert set_application_revision(text, "HEAD") == text.replace("targetRevision:\n", "targetRevision: HEAD\n")


def test_not_an_application() -> None:
    text = load("staging-kustomization.yaml")
    with pytest.raises(ManifestError, match=r"^overlay\.yaml: no Argo CD Application .*Kustomization/\?"):
        set_application_revision(text, "v1", source="overlay.yaml")


@pytest.mark.parametrize("revision", ["", "v1 2", "v1\n", "main..dev", "-rf", "a\x00b", "tab\tx", "a\u200bb"])
def test_invalid_revision_is_refused(revision: str) -> None:
    with pytest.raises(ManifestError, match="invalid revision"):
        set_application_revision(load("applications.yaml"), revision, app_name="shop-staging")


# --- Flux setter markers ---------------------------------------------------------------------------


def test_find_setter_markers_parses_json_and_skips_strings_and_comment_lines() -> None:
    markers = find_setter_markers(load("deployment-setters.yaml"))
    assert markers == [
        SetterMarker(12, "flux-system:frontend-policy", "image", "gcr.io/org/frontend:1.0.0"),
        SetterMarker(16, "flux-system:frontend-policy", "image", "gcr.io/org/frontend:1.0.0"),
        SetterMarker(19, "flux-system:frontend-policy", "tag", "1.0.0"),
        SetterMarker(21, "flux-system:frontend-policy", "name", "gcr.io/org/frontend"),
        SetterMarker(25, "flux-system:envoy", "image", "envoyproxy/envoy:v1.30.1"),
    ]


def test_setters_in_deployment_whole_image_tag_and_name() -> None:
    text = load("deployment-setters.yaml")
    new, changed = set_setter_values(text, "flux-system:frontend-policy", image="gcr.io/org/frontend:1.1.0")
    expected = replaced(text, '"gcr.io/org/frontend:1.0.0" # {', '"gcr.io/org/frontend:1.1.0" # {')
    expected = replaced(expected, "image: gcr.io/org/frontend:1.0.0 #", "image: gcr.io/org/frontend:1.1.0 #")
    expected = replaced(expected, "value: 1.0.0   #", "value: 1.1.0   #")
    assert (new, changed) == (expected, 3)  # the name marker already holds gcr.io/org/frontend


def test_setters_already_up_to_date_change_nothing() -> None:
    text = load("deployment-setters.yaml")
    assert set_setter_values(text, "flux-system:envoy", image="envoyproxy/envoy:v1.30.1") == (text, 0)


def test_tag_only_keeps_the_name_of_whole_image_markers() -> None:
    text = load("deployment-setters.yaml")
    new, changed = set_setter_values(text, "flux-system:envoy", tag="v1.31.0")
    assert (new, changed) == (replaced(text, "envoy:v1.30.1", "envoy:v1.31.0"), 1)


def test_new_tag_drops_a_digest_that_pinned_the_old_one() -> None:
    text = f'image: gcr.io/org/app:1.0@{DIGEST} # {{"$imagepolicy": "ns:app"}}\n'
    assert set_setter_values(text, "ns:app", tag="1.1") == (replaced(text, f"1.0@{DIGEST}", "1.1"), 1)
    assert set_setter_values(text, "ns:app", image=f"gcr.io/org/app:1.2@{OTHER_DIGEST}")[0] == replaced(
        text, DIGEST, OTHER_DIGEST
    ).replace(":1.0@", ":1.2@")


def test_setters_in_kustomization_quote_a_numeric_tag() -> None:
    text = load("kustomization-setters.yaml")
    new, changed = set_setter_values(text, "flux-system:frontend-policy", image="gcr.io/org/frontend:1.1")
    assert (new, changed) == (replaced(text, "newTag: 1.0 #", 'newTag: "1.1" #'), 1)
    new, changed = set_setter_values(text, "flux-system:frontend-policy", name="registry.local/org/frontend")
    assert (new, changed) == (replaced(text, "newName: gcr.io/org/frontend", "newName: registry.local/org/frontend"), 1)


def test_setter_marker_on_list_item_and_in_multi_doc_file() -> None:
    text = (
        "kind: ConfigMap\n---\nkind: CronJob\nspec:\n  args:\n"
        '  - --image\n  - \'ghcr.io/org/job:0.1.0\'  # {"$imagepolicy": "jobs:job"}\n'
    )
    assert set_setter_values(text, "jobs:job", image="ghcr.io/org/job:0.2.0") == (
        replaced(text, "job:0.1.0'", "job:0.2.0'"),
        1,
    )


def test_setter_marker_on_an_empty_value_and_through_a_merge_key() -> None:
    text = (
        'base: &base\n  image: # {"$imagepolicy": "ns:app"}\n  pullPolicy: IfNotPresent\n'
        'job:\n  <<: *base\n  # {"$imagepolicy": "ns:app"}\n'
    )
    assert find_setter_markers(text) == [SetterMarker(2, "ns:app", "image", "")]
    assert set_setter_values(text, "ns:app", image="gcr.io/org/app:1.0") == (
        replaced(text, "image: #", "image: gcr.io/org/app:1.0 #"),
        1,
    )


def test_byte_order_mark_does_not_shift_the_edit() -> None:
    text = "\ufeff# overlay\nimages:\n- name: app\n  newTag: v1\n"
    assert set_kustomize_image(text, "app", new_tag="v2") == replaced(text, "newTag: v1", "newTag: v2")


def test_unknown_policy_lists_the_marked_policies() -> None:
    with pytest.raises(ManifestError) as err:
        set_setter_values(load("deployment-setters.yaml"), "flux-system:backend", tag="v1", source="deploy.yaml")
    message = str(err.value)
    assert message.startswith('deploy.yaml: no {"$imagepolicy": "flux-system:backend"} setter marker')
    assert "'flux-system:envoy', 'flux-system:frontend-policy'" in message


def test_setter_input_errors() -> None:
    text = load("kustomization-setters.yaml")
    policy = "flux-system:frontend-policy"
    with pytest.raises(ManifestError, match="not both"):
        set_setter_values(text, policy, image="gcr.io/org/frontend:1.1", tag="1.1")
    with pytest.raises(ManifestError, match="invalid image reference"):
        set_setter_values(text, policy, image="gcr.io/org/frontend:bad tag")
    with pytest.raises(ManifestError, match="invalid image tag"):
        set_setter_values(text, policy, tag=".hidden")
    with pytest.raises(ManifestError, match="nothing to set"):
        set_setter_values(text, policy)
    with pytest.raises(ManifestError, match="set name, tag, which was not given"):
        set_setter_values(text, policy, digest=DIGEST)
