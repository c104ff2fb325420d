"""Which Application manages an Application (an app of apps), from the tracking id Argo CD writes on it. The format
is argo-cd's util/argo/resource_tracking.go: ``<app>:<group>/<kind>:<namespace>/<name>``, ``<app>`` being
``<namespace>_<name>`` for an Application outside the controller's namespace; the value below is what the real
application controller v3.6.1 wrote in tests/real (an Application applied by the root Application demo-0)."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.verification import argocd_parent


def app(tracking: str | None) -> dict[str, Any]:
    annotations = {} if tracking is None else {"argocd.argoproj.io/tracking-id": tracking}
    return {"metadata": {"name": "child", "namespace": "argocd", "annotations": annotations}}


def test_the_real_controller_s_tracking_id_names_the_parent() -> None:
    parent = argocd_parent(app("demo-0:argoproj.io/Application:argocd/child"), "argocd")
    assert parent is not None and (parent.namespace, parent.name) == ("argocd", "demo-0")


def test_a_parent_in_another_namespace_is_qualified() -> None:
    parent = argocd_parent(app("team-a_root:argoproj.io/Application:argocd/child"), "argocd")
    assert parent is not None and (parent.namespace, parent.name) == ("team-a", "root")


@pytest.mark.parametrize(
    "tracking",
    [
        None,  # not applied by another Application
        "root:apps/Deployment:demo/web",  # a tracking id, but of something else
        "root",  # not a tracking id
        "Bad Name:argoproj.io/Application:argocd/child",  # not an object name: never reaches the API
        ":argoproj.io/Application:argocd/child",
    ],
)
def test_no_parent(tracking: str | None) -> None:
    assert argocd_parent(app(tracking), "argocd") is None
