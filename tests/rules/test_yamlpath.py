"""rules/yamlpath.py: the path syntax, and byte-exact reads and writes of values in any YAML file."""

from __future__ import annotations

import pytest

from rules.yamledit import ManifestError
from rules.yamlpath import Index, Key, PathSyntaxError, Select, get_value, parse_path, set_values

VALUES = """\
# shop in staging: a Helm values file with everything a person writes by hand.
replicaCount: 2
image:
  repository: registry.example.org/shop/web   # where CI pushes
  tag: "1.10"   # promoted from the environment before
  pullPolicy: IfNotPresent
podLabels:
  app.kubernetes.io/version: '1.10'
defaults: &limits {cpu: 500m, memory: 256Mi}
resources:
  limits: *limits
sidecars: [{name: proxy, image: envoy:1.30}, {name: log, image: fluentbit:3.0}]
"""

CHART = """\
apiVersion: v2
name: umbrella
version: 0.3.0
appVersion: "1.0.0"
dependencies:
  - name: redis
    version: 17.0.0
    repository: oci://registry.example.org/charts
  - name: shop
    version: 0.2.0   # the application chart
    repository: file://../shop
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  template:
    spec:
      containers:
      - name: app
        image: registry.example.org/shop:1.0.0
      - name: metrics
        image: registry.example.org/exporter:0.9
"""


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("image.tag", (Key("image"), Key("tag"))),
        ("dependencies[name=redis].version", (Key("dependencies"), Select("name", "redis"), Key("version"))),
        (
            "spec.template.spec.containers[name=app].image",
            (Key("spec"), Key("template"), Key("spec"), Key("containers"), Select("name", "app"), Key("image")),
        ),
        ("containers[0].image", (Key("containers"), Index(0), Key("image"))),
        ("matrix[1][0]", (Key("matrix"), Index(1), Index(0))),
        ('podLabels."app.kubernetes.io/version"', (Key("podLabels"), Key("app.kubernetes.io/version"))),
    ],
)
def test_path_syntax(path: str, steps: tuple[object, ...]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "1 to 512 characters"),
        ("image..tag", "a key is missing after the '.' at character 6"),
        ("image.", "a key is missing after the '.'"),
        (".image", "cannot read the path at character 1"),
        ("containers[x", "cannot read the path at character 11"),
        ("containers[=app]", "cannot read the path at character 11"),
        ("a" * 600, "1 to 512 characters"),
    ],
)
def test_path_syntax_errors_say_where(path: str, problem: str) -> None:
    with pytest.raises(PathSyntaxError, match=problem.replace("[", r"\[").replace(".", r"\.")):
        parse_path(path)


def test_reads_values_as_written() -> None:
    assert get_value(VALUES, "image.tag", source="values.yaml") == "1.10"
    assert get_value(VALUES, 'podLabels."app.kubernetes.io/version"', source="values.yaml") == "1.10"
    assert get_value(VALUES, "sidecars[name=log].image", source="values.yaml") == "fluentbit:3.0"
    assert get_value(CHART, "dependencies[name=shop].version", source="Chart.yaml") == "0.2.0"
    assert get_value(DEPLOYMENT, "spec.template.spec.containers[1].image", source="d.yaml").endswith(":0.9")


def test_several_edits_change_only_their_values_bytes() -> None:
    """Comments, quoting styles, the anchor and its alias and the flow-style list stay byte for byte;
    "1.10" stays a (quoted) string, as a YAML reader must see it."""
    new = set_values(
        VALUES,
        [
            ("image.tag", "1.11"),
            ('podLabels."app.kubernetes.io/version"', "1.11"),
            ("sidecars[name=proxy].image", "envoy:1.31"),
        ],
        source="values.yaml",
    )
    expected = (
        VALUES.replace('tag: "1.10"', 'tag: "1.11"')
        .replace("version: '1.10'", "version: '1.11'")
        .replace("envoy:1.30", "envoy:1.31")
    )
    assert new == expected


def test_a_plain_value_that_would_read_as_a_number_is_quoted() -> None:
    text = "image:\n  tag: latest  # moving\n"
    assert set_values(text, [("image.tag", "1.10")], source="v.yaml") == 'image:\n  tag: "1.10"  # moving\n'


def test_chart_and_manifest_paths() -> None:
    chart = set_values(CHART, [("dependencies[name=shop].version", "0.3.0"), ("appVersion", "1.2.0")], source="C")
    assert chart == CHART.replace("version: 0.2.0", "version: 0.3.0").replace('"1.0.0"', '"1.2.0"')
    image = "registry.example.org/shop:1.2.0"
    manifest = set_values(DEPLOYMENT, [("spec.template.spec.containers[name=app].image", image)], source="d")
    assert manifest == DEPLOYMENT.replace("registry.example.org/shop:1.0.0", image)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("image.digest", "values.yaml: path image.digest: image has no key 'digest'; nothing was written"),
        ("image", "image (line 4) is not a single value"),
        ("sidecars[name=nope].image", "sidecars has no item with name = 'nope'; exactly one must match"),
        ("sidecars[5].image", "sidecars has 2 item(s), so no item [5]"),
        ("replicaCount.x", "replicaCount is not a mapping"),
        ("resources.limits.cpu", "resources.limits (line 9) is anchored (&limits) and may be shared"),
        ("defaults.cpu", "defaults (line 9) is anchored (&limits) and may be shared"),
    ],
)
def test_a_path_that_is_not_there_names_the_file_and_the_path_and_writes_nothing(path: str, problem: str) -> None:
    with pytest.raises(ManifestError) as caught:
        set_values(VALUES, [("image.tag", "1.11"), (path, "2.0")], source="values.yaml")
    assert problem in str(caught.value)


def test_a_value_that_could_be_read_as_structure_is_refused() -> None:
    for value in ("1.0\nkind: Secret", "a b", "", "x" * 300, "#1"):
        with pytest.raises(ManifestError, match="cannot be promoted"):
            set_values(VALUES, [("image.tag", value)], source="values.yaml")


def test_a_path_in_several_documents_is_ambiguous() -> None:
    text = "image:\n  tag: a\n---\nimage:\n  tag: b\n"
    with pytest.raises(ManifestError, match=r"image\.tag is in 2 documents"):
        set_values(text, [("image.tag", "c")], source="two.yaml")
    assert set_values("kind: A\n---\nimage:\n  tag: b\n", [("image.tag", "c")], source="t") == (
        "kind: A\n---\nimage:\n  tag: c\n"
    )
