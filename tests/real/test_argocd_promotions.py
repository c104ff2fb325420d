"""Promotions through the real flows (promote-rc, promote-production) into environments that the real Argo CD
deploys: one test per strategy, staging in one namespace and production in another, each verified through its
Application by the least-privileged verifier. The flows write the local origin; Argo CD fetches it over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.apiserver import apply_manifests
from sandbox.cluster import ARGOCD_NAMESPACE, RealCluster
from tests.conftest import VERIFIER_USER
from tests.support.argosite import ArgoSite, served_argo_site
from tests.support.fluxsite import IMAGE, OVERLAY_BASE, deployment, overlay, running_image
from tests.support.gitserver import run_git

pytestmark = [
    pytest.mark.kube,
    pytest.mark.real_controllers,
    pytest.mark.prefect,
    pytest.mark.usefixtures("prefect_api"),
]

ENVS = ("staging", "production")


@pytest.fixture
def site(
    real_admin: k8s.ApiClient, real_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArgoSite]:
    monkeypatch.setenv("PROMOTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMOTE_LOCK_TTL_SECONDS", "3")
    with served_argo_site(real_admin, real_namespace, tmp_path / "git") as served:
        yield served


def write_pipeline(
    path: Path,
    site: ArgoSite,
    cluster: RealCluster,
    tracks: dict[str, dict[str, Any]],
    applications: dict[str, str],
    namespaces: dict[str, str],
    *,
    timeout: float = 240,
) -> Path:
    kubeconfig = str(cluster.api.kubeconfig_for(VERIFIER_USER))
    environments = [
        {
            "name": env,
            "tracks": tracks[env],
            "verify": {
                "cluster": {"kubeconfig": kubeconfig, "lock_namespace": site.namespace},
                "gitops": {"kind": "argocd", "name": applications[env], "namespace": ARGOCD_NAMESPACE},
                "deployments": [{"name": "web", "namespace": namespaces[env], "container": "web"}],
                "timeout_seconds": timeout,
            },
        }
        for env in ENVS
    ]
    pipeline = {
        "name": "web",
        "repository": {"url": str(site.origin), "branch": "main"},
        "versioning": {"tag_prefix": "v", "bump": "patch"},
        "environments": environments,
    }
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def synced(site: ArgoSite, application: str) -> str:
    return str(site.application(application)["status"]["sync"]["revision"])


def applications_for(site: ArgoSite, paths: dict[str, str], namespaces: dict[str, str]) -> dict[str, str]:
    """One auto-synced Application per environment, into that environment's namespace."""
    return {env: site.create_application(paths[env], destination=namespaces[env]) for env in ENVS}


def test_overlay_promotion_rolls_production_back_when_argo_cd_reports_degraded(
    site: ArgoSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    """In production 1.0.1's pods never get ready (its overlay says so): the real controller-manager reports
    ProgressDeadlineExceeded, Argo CD Degraded; promote-production fails naming the Deployment's condition and
    rolls back to 1.0.0, which Argo CD syncs and the verification passes again."""
    broken_here = {"annotations": {"never-ready-image.sandbox.promote": f"{IMAGE}:1.0.1"}}
    first = site.create_origin(
        {
            **OVERLAY_BASE,
            "overlays/staging/kustomization.yaml": overlay("staging"),
            "overlays/production/kustomization.yaml": overlay("production", pod=broken_here),
        }
    )
    namespaces = {"staging": real_namespace, "production": production_namespace}
    apps = applications_for(site, {env: f"overlays/{env}" for env in ENVS}, namespaces)
    for name in apps.values():
        site.wait_until_healthy(name, first)
    tracks = {
        env: {"kind": "kustomize-image", "file": f"overlays/{env}/kustomization.yaml", "image": IMAGE} for env in ENVS
    }
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, apps, namespaces)
    ci = site.push({"overlays/staging/kustomization.yaml": overlay("staging", tag="1.0.1")}, "ci: web 1.0.1")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert synced(site, apps["staging"]) == ci
    assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"

    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_failed()
    message = str(prod.message)
    assert "ROLLED BACK to 1.0.0" in message, message
    assert "Degraded" in message and "ProgressDeadlineExceeded" in message, message
    rollback = run_git(site.origin, "rev-parse", "main")
    assert synced(site, apps["production"]) == rollback
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.0"


def test_tag_promotion_through_an_app_of_apps(
    site: ArgoSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    """The environments' Applications are files in the repository (apps/<env>/web.yaml), applied by a root
    Application: promote-rc and promote-production change their targetRevision to the rc and the stable tag."""
    namespaces = {"staging": real_namespace, "production": production_namespace}
    names = {env: f"{real_namespace}-{env}"[:53] for env in ENVS}
    files = {"deploy/kustomization.yaml": "resources:\n  - deployment.yaml\n", "deploy/deployment.yaml": deployment()}
    for env in ENVS:
        files[f"apps/{env}/web.yaml"] = f"""\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: {names[env]}
  namespace: {ARGOCD_NAMESPACE}
spec:
  project: default
  source:
    repoURL: {site.url}
    path: deploy
    targetRevision: v1.0.0   # the release this environment runs
  destination:
    server: https://kubernetes.default.svc
    namespace: {namespaces[env]}
  syncPolicy:
    automated: {{}}
"""
    first = site.create_origin(files)
    site.tag("v1.0.0")
    root = f"{real_namespace}-root"[:53]
    apply_manifests(
        real_admin,
        [
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": {"name": root},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": site.url,
                        "targetRevision": "main",
                        "path": "apps",
                        "directory": {"recurse": True},
                    },
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": ARGOCD_NAMESPACE},
                    "syncPolicy": {"automated": {}},
                },
            }
        ],
        namespace=ARGOCD_NAMESPACE,
    )
    site.applications += [root, *names.values()]
    for env in ENVS:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                site.wait_until_healthy(names[env], first, timeout=5)
                break
            except Exception:  # not created by the root Application yet
                time.sleep(0.5)
    tracks = {env: {"kind": "tag", "application_file": f"apps/{env}/web.yaml"} for env in ENVS}
    # Below Argo CD's 180 s poll: the child Applications change in time only because verification asks the root
    # Application (found by the tracking id on the child) to refresh too.
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, names, namespaces, timeout=120)
    change = site.push({"deploy/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "web 1.0.1")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert run_git(site.origin, "rev-parse", "v1.0.1-rc1^{commit}") == change
    assert synced(site, names["staging"]) == change
    assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"

    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    assert run_git(site.origin, "rev-parse", "v1.0.1^{commit}") == change
    assert site.application(names["production"])["spec"]["source"]["targetRevision"] == "v1.0.1"
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"


def test_branch_promotion_merges_and_argo_cd_syncs_the_merge_commit(
    site: ArgoSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    files = {"deploy/kustomization.yaml": "resources:\n  - deployment.yaml\n", "deploy/deployment.yaml": deployment()}
    first = site.create_origin(files, branches=("staging",))
    namespaces = {"staging": real_namespace, "production": production_namespace}
    branches = {"staging": "staging", "production": "main"}
    apps = {env: site.create_application("deploy", revision=branches[env], destination=namespaces[env]) for env in ENVS}
    for name in apps.values():
        site.wait_until_healthy(name, first)
    tracks = {
        "staging": {"kind": "branch", "branch": "staging"},
        "production": {"kind": "branch", "branch": "main", "merge_from": "staging"},
    }
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, apps, namespaces)
    change = site.push({"deploy/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "web 1.0.1", branch="staging")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert synced(site, apps["staging"]) == change
    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    merge = run_git(site.origin, "rev-parse", "main")
    assert run_git(site.origin, "rev-parse", f"{merge}^2") == change
    assert synced(site, apps["production"]) == merge
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"


def test_yaml_path_promotion_copies_the_image_argo_cd_syncs(
    site: ArgoSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    first = site.create_origin({f"deploy/{env}/deployment.yaml": deployment() for env in ENVS})
    namespaces = {"staging": real_namespace, "production": production_namespace}
    apps = applications_for(site, {env: f"deploy/{env}" for env in ENVS}, namespaces)
    for name in apps.values():
        site.wait_until_healthy(name, first)
    path = "spec.template.spec.containers[name=web].image"
    tracks = {
        env: {"kind": "yaml-path", "edits": [{"name": "image", "file": f"deploy/{env}/deployment.yaml", "path": path}]}
        for env in ENVS
    }
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, apps, namespaces)
    site.push({"deploy/staging/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "ci: web 1.0.1 in staging")
    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    written = run_git(site.origin, "rev-parse", "main")
    assert f"image: {IMAGE}:1.0.1" in run_git(site.origin, "show", f"{written}:deploy/production/deployment.yaml")
    assert synced(site, apps["production"]) == written
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"
