"""Flux commit message templates: rendered as Go's text/template renders them, or refused up front.

Expected strings are worked out from Go's rules (trim markers strip all adjacent spaces, tabs and newlines;
``println`` ends with a newline; ``print`` puts a space only between two non-strings; an image prints as
``name:tag``; a struct as ``{field field}``; maps range in sorted key order).
"""

from __future__ import annotations

import pytest

from pipeline.model import TrackImagePolicy
from rules.fluxtemplate import TemplateData, TemplateError, check, render, render_update
from rules.imageupdates import Change, ObjectRef, UpdateResult

SEED = TrackImagePolicy.model_fields["message_template"].default
DEPLOYMENT = ObjectRef("apps/v1", "Deployment", "frontend", "shop")
RELEASE = ObjectRef("helm.toolkit.fluxcd.io/v2", "HelmRelease", "frontend", "shop")
WORKER = ObjectRef("apps/v1", "Deployment", "worker", "shop")


def frontend(path: str = "apps") -> UpdateResult:
    return UpdateResult(
        path=path,
        policy="flux-system:frontend",
        image="registry.example/shop/frontend",
        tag="1.2.3",
        changes=(
            Change(
                "apps/frontend/deployment.yaml",
                DEPLOYMENT,
                "registry.example/shop/frontend:1.0.0",
                "registry.example/shop/frontend:1.2.3",
                "flux-system:frontend",
                12,
            ),
            Change("apps/frontend/release.yml", RELEASE, "1.0.0", "1.2.3", "flux-system:frontend:tag", 10),
        ),
    )


def worker() -> UpdateResult:
    change = Change(
        "apps/worker/deployment.yaml",
        WORKER,
        "reg.example:5000/worker:7",
        "reg.example:5000/worker:8",
        "flux-system:worker",
        9,
    )
    return UpdateResult("apps", "flux-system:worker", "reg.example:5000/worker", "8", (change,))


def data(*results: UpdateResult, values: dict[str, str] | None = None) -> TemplateData:
    return TemplateData("flux-system", "shop-automation", results or (frontend(),), values or {})


# --- rendering --------------------------------------------------------------------------------------------


def test_seed_template_one_image() -> None:
    assert SEED == "Update {{range .Updated.Images}}{{println .}}{{end}}"
    assert render(SEED, data()) == "Update registry.example/shop/frontend:1.2.3\n"


def test_seed_template_several_images() -> None:
    assert render(SEED, data(frontend(), worker())) == (
        "Update registry.example/shop/frontend:1.2.3\nreg.example:5000/worker:8\n"
    )


def test_render_update_for_one_policy() -> None:
    template = "{{ .AutomationObject }}: {{ range .Updated.Images }}{{ . }}{{ end }}"
    assert render_update(template, frontend(), automation="shop") == (
        "flux-system/shop: registry.example/shop/frontend:1.2.3"
    )
    assert render_update(template, frontend(), automation="team/shop").startswith("team/shop: ")


def test_nothing_changed_renders_the_static_text() -> None:
    empty = UpdateResult("apps", "flux-system:frontend", "registry.example/shop/frontend", "1.2.3", ())
    assert render(SEED, data(empty)) == "Update "
    assert render("{{range .Changed.Changes}}x{{else}}no change{{end}}", data(empty)) == "no change"


def test_automation_object_prints_namespace_slash_name() -> None:
    template = "{{ .AutomationObject }} {{ .AutomationObject.Namespace }} {{ .AutomationObject.Name }}"
    assert render(template, data()) == "flux-system/shop-automation flux-system shop-automation"


def test_trim_markers_and_comments() -> None:
    template = "a \n\t {{- .AutomationObject.Name -}} \n b{{/* gone */}}c {{- /* also gone */ -}} \n d"
    assert render(template, data()) == "ashop-automationbcd"
    assert render("x {{-3}} y", data()) == "x -3 y"  # "{{-3" is the number -3, not a trim marker


def test_updated_files_and_objects() -> None:
    template = (
        "{{ range $filename, $_ := .Updated.Files -}}\n"
        "file {{ $filename }}:{{ range $resource, $images := .Objects }} {{ $resource.Kind }}/{{ $resource.Name }}"
        "{{ range $images }}={{ . }}{{ end }}{{ end }}\n"
        "{{ end -}}\n"
        "{{ range $resource, $_ := .Updated.Objects }}[{{ $resource.APIVersion }} {{ $resource.Namespace }}]{{ end }}"
    )
    assert render(template, data(frontend(), worker())) == (
        "file frontend/deployment.yaml: Deployment/frontend=registry.example/shop/frontend:1.2.3\n"
        "file frontend/release.yml: HelmRelease/frontend=registry.example/shop/frontend:1.2.3\n"
        "file worker/deployment.yaml: Deployment/worker=reg.example:5000/worker:8\n"
        # objects sort by apiVersion, kind, name, namespace (Go sorts struct keys field by field)
        "[apps/v1 shop][apps/v1 shop][helm.toolkit.fluxcd.io/v2 shop]"
    )


def test_flux_documentation_example_with_changed() -> None:
    """The example of Flux's ImageUpdateAutomation docs (message template section)."""
    template = """Automated image update

Automation name: {{ .AutomationObject }}

Files:
{{ range $filename, $_ := .Changed.FileChanges -}}
- {{ $filename }}
{{ end -}}

Objects:
{{ range $resource, $changes := .Changed.Objects -}}
- {{ $resource.Kind }} {{ $resource.Name }}
  Changes:
{{- range $_, $change := $changes }}
    - {{ $change.OldValue }} -> {{ $change.NewValue }}
{{ end -}}
{{ end -}}
"""
    assert render(template, data()) == (
        "Automated image update\n"
        "\n"
        "Automation name: flux-system/shop-automation\n"
        "\n"
        "Files:\n"
        "- frontend/deployment.yaml\n"
        "- frontend/release.yml\n"
        "Objects:\n"
        "- Deployment frontend\n"
        "  Changes:\n"
        "    - registry.example/shop/frontend:1.0.0 -> registry.example/shop/frontend:1.2.3\n"
        "- HelmRelease frontend\n"
        "  Changes:\n"
        "    - 1.0.0 -> 1.2.3\n"
    )


def test_changes_print_as_go_structs_and_images_as_refs() -> None:
    assert render("{{ .Changed.Changes }}", data()) == (
        "[{registry.example/shop/frontend:1.0.0 registry.example/shop/frontend:1.2.3 flux-system:frontend} "
        "{1.0.0 1.2.3 flux-system:frontend:tag}]"
    )
    assert render("{{ .Updated.Images }}", data(frontend(), worker())) == (
        "[registry.example/shop/frontend:1.2.3 reg.example:5000/worker:8]"
    )
    template = "{{ range .Changed.Changes }}{{ .Setter }};{{ end }}"
    assert render(template, data()) == "flux-system:frontend;flux-system:frontend:tag;"


def test_image_ref_methods() -> None:
    template = (
        "{{ range .Updated.Images }}"
        "{{ .Registry }}|{{ .Repository }}|{{ .Identifier }}|{{ .Name }}|{{ .Policy }}\n"
        "{{ end }}"
    )
    assert render(template, data(frontend(), worker())) == (
        "registry.example|shop/frontend|1.2.3|registry.example/shop/frontend:1.2.3|flux-system/frontend\n"
        "reg.example:5000|worker|8|reg.example:5000/worker:8|flux-system/worker\n"
    )


def test_image_ref_parts_of_a_docker_hub_image_are_refused() -> None:
    hub = UpdateResult("", "ns:app", "library/nginx", "1.25", (Change("a.yaml", DEPLOYMENT, "1", "2", "ns:app", 1),))
    assert render("{{ range .Updated.Images }}{{ . }}{{ end }}", data(hub)) == "library/nginx:1.25"
    with pytest.raises(TemplateError, match="names no registry host"):
        render("{{ range .Updated.Images }}{{ .Registry }}{{ end }}", data(hub))


def test_conditions_and_functions() -> None:
    template = (
        '{{ if eq .AutomationObject.Name "other" }}A{{ else if eq (len .Changed.Changes) 2 }}B{{ else }}C{{ end }}'
        "{{ if not .Changed.Changes }}empty{{ end }}"
        "{{ with .Changed.Changes }} {{ len . }} changes{{ end }}"
        '{{ if and .Changed.Changes (ne .AutomationObject.Namespace "x") }} ok{{ end }}'
        '{{ if or "" .Values.cluster }} never{{ else }} fallback{{ end }}'
        "{{ if .Values.missing }} never{{ end }}"
    )
    assert render(template, data(values={"cluster": ""})) == "B 2 changes ok fallback"
    with pytest.raises(TemplateError, match=r"a key of \.Values passed to a function is not set"):
        render("{{ not .Values.missing }}", data())


def test_print_printf_println_follow_go() -> None:
    template = (
        '{{ print 1 2 "x" 3 true }}|{{ println "a" 1 }}|'
        '{{ printf "%s has %d change(s), 100%%" .AutomationObject.Name (len .Changed.Changes) }}'
    )
    assert render(template, data()) == "1 2x3 true|a 1\n|shop-automation has 2 change(s), 100%"
    assert render('{{ .AutomationObject.Name | printf "<%v>" }}', data()) == "<shop-automation>"
    assert render('{{ len "héllo" }} {{ "tab\\there" }} {{ `raw\\n` }}', data()) == "6 tab\there raw\\n"


def test_values() -> None:
    assert render("cluster {{ .Values.cluster }}", data(values={"cluster": "prod"})) == "cluster prod"
    assert render("{{ .Values.nope }}", data()) == "<no value>"  # Go's rendering of a missing map key
    assert render("{{ .Values }}", data(values={"b": "2", "a": "1"})) == "map[a:1 b:2]"


def test_files_are_relative_to_the_update_path() -> None:
    template = "{{ range $f, $_ := .Changed.FileChanges }}{{ $f }} {{ end }}"
    assert render(template, data(frontend("."))) == "apps/frontend/deployment.yaml apps/frontend/release.yml "
    assert render(template, data(frontend("apps"))) == "frontend/deployment.yaml frontend/release.yml "


def test_check_accepts_what_renders() -> None:
    check(SEED)
    check("{{/* nothing */}}")
    check("")


# --- refusing what is not supported ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message", "where"),
    [
        ('{{template "x"}}', r"\{\{template\}\} is not supported", "line 1 column 3"),
        ('{{define "x"}}a{{end}}', r"\{\{define\}\} is not supported", "line 1 column 3"),
        ("{{range .Updated.Images}}{{break}}{{end}}", r"\{\{break\}\} is not supported", "column 28"),
        (
            "Update\n  {{ .Updated.Foo }}",
            r"unknown field \.Foo of update\.Result \(\.Updated\); it has: \.Files",
            "line 2",
        ),
        ("{{ .Changed.ImageResult }}", r"unknown field \.ImageResult", "line 1"),
        ("{{ range .Updated.Images }}{{ .Tag }}{{ end }}", r"unknown field \.Tag of update\.ImageRef", "column 31"),
        ("{{range .Updated.Images}}{{println .}}", r"\{\{range\}\} is never closed with \{\{end\}\}", "column 3"),
        ("a{{end}}", r"\{\{end\}\} without a matching", "column 4"),
        ("{{else}}", r"\{\{else\}\} outside", "column 3"),
        ("{{if .Changed.Changes}}a{{else}}b{{else}}c{{end}}", "a second", "column 36"),
        ("{{range .Updated.Images}}{{else if .Changed}}{{end}}", r"else if.* not supported inside \{\{range\}\}", ""),
        ("{{ .AutomationObject.Name | lower }}", r"function 'lower' is not supported", "column 29"),
        ("{{ .Changed.Objects }}", r"type map\[update\.ObjectIdentifier\]\[\]update\.Change has no supported", ""),
        (
            "{{ range $r, $_ := .Changed.Objects }}{{ $r }}{{ end }}",
            r"update\.ObjectIdentifier has no supported.*\.Kind",
            "",
        ),
        ("{{ $x := .Changed }}", "declarations and assignments are only supported in", ""),
        ('{{ printf "%5s" "a" }}', r"printf supports only %s, %v, %d and %%", ""),
        ('{{ printf "%s %s" "a" }}', r"2 verb\(s\) for 1 argument\(s\)", ""),
        ("{{ printf .AutomationObject.Name }}", "literal format string", ""),
        ("{{ .Updated", "unclosed action", "column 1"),
        ("{{/* open", "unclosed comment", ""),
        ("{{ 1.5 }}", "only decimal integers", ""),
        ("{{ 'a' }}", "character constants", ""),
        ("{{ nil }}", "nil is not supported", ""),
        ("{{ .Updated.Images.Foo }}", r"unknown field \.Foo of \[\]update\.ImageRef", ""),
        ("{{ range .AutomationObject }}{{ end }}", "range over types.NamespacedName is not supported", ""),
        ("{{ eq .AutomationObject.Name 1 }}", "compares strings, integers or booleans of one type", ""),
        ("{{ $nope }}", r"undefined variable \$nope", ""),
        ("{{ print len }}", "needs parentheses", ""),
        ("{{ }}", "empty action", ""),
    ],
)
def test_unsupported_templates_are_refused_with_the_place(template: str, message: str, where: str) -> None:
    with pytest.raises(TemplateError, match=message) as error:
        check(template)
    assert str(error.value).startswith("message template, line ")
    assert where in str(error.value)


def test_range_variables_end_with_their_range() -> None:
    with pytest.raises(TemplateError, match=r"undefined variable \$img"):
        check("{{ range $img := .Updated.Images }}{{ end }}{{ $img }}")
    with pytest.raises(TemplateError, match=r"undefined variable \$img"):
        check("{{ range $img := .Updated.Images }}{{ else }}{{ $img }}{{ end }}")


def test_a_template_nested_hundreds_deep_is_an_error_not_a_crash() -> None:
    """Was a RecursionError that took `promote receive` down at start (it reads every pipeline file)."""
    from rules.fluxtemplate import TemplateError, check

    deep = "{{" + "(" * 330 + ".Updated" + ")" * 330 + "}}"
    with pytest.raises(TemplateError, match="nested too deeply"):
        check(deep)
