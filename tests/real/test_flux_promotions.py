"""Promotions through the real flows (promote-rc, promote-production) into environments that the real Flux
controllers deploy: one test per strategy, staging in one namespace and production in another, each verified
by the least-privileged verifier. A Git push is the only way anything changes in the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.cluster import RealCluster
from tests.conftest import VERIFIER_USER
from tests.support.fluxsite import IMAGE, OVERLAY_BASE, FluxSite, deployment, overlay, running_image, served_site
from tests.support.gitserver import run_git

pytestmark = [
    pytest.mark.kube,
    pytest.mark.real_controllers,
    pytest.mark.prefect,
    pytest.mark.usefixtures("prefect_api"),
]


@pytest.fixture
def site(
    real_admin: k8s.ApiClient, real_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FluxSite]:
    monkeypatch.setenv("PROMOTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMOTE_LOCK_TTL_SECONDS", "3")
    with served_site(real_admin, real_namespace, tmp_path / "git") as served:
        yield served


def write_pipeline(
    path: Path,
    site: FluxSite,
    cluster: RealCluster,
    tracks: dict[str, dict[str, Any]],
    namespaces: dict[str, str],
    *,
    expect_image: str | None = None,
) -> Path:
    """staging then production, each verified through its Flux Kustomization (named for the environment) and
    the Deployment ``web`` in its namespace."""
    kubeconfig = str(cluster.api.kubeconfig_for(VERIFIER_USER))
    environments = []
    for env in ("staging", "production"):
        check: dict[str, Any] = {"name": "web", "namespace": namespaces[env], "container": "web"}
        if expect_image is not None:
            check["expect_image"] = expect_image
        environments.append(
            {
                "name": env,
                "tracks": tracks[env],
                "verify": {
                    "cluster": {"kubeconfig": kubeconfig, "lock_namespace": site.namespace},
                    "gitops": {"kind": "flux", "name": env, "namespace": site.namespace},
                    "deployments": [check],
                    "timeout_seconds": 240,
                    "health_grace_seconds": 0,
                },
            }
        )
    pipeline = {
        "name": "web",
        "repository": {"url": str(site.origin), "branch": "main"},
        "versioning": {"tag_prefix": "v", "bump": "patch"},
        "environments": environments,
    }
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def git(site: FluxSite, *args: str) -> str:
    return run_git(site.origin, *args)


def notes(site: FluxSite) -> str:
    try:
        return git(site, "log", "--notes=promote", "--format=%N", "--all")
    except Exception:  # no notes ref yet
        return ""


def test_overlay_promotion_rolls_production_back_when_flux_reports_health_check_failed(
    site: FluxSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    """staging runs 1.0.1; in production its pods never get ready (the overlay says 1.0.1 breaks there), the real
    controller-manager reports ProgressDeadlineExceeded, Flux HealthCheckFailed: promote-production fails on it
    and rolls back to 1.0.0, which Flux applies and verification passes again."""
    broken_here = {"annotations": {"never-ready-image.sandbox.promote": f"{IMAGE}:1.0.1"}}
    first = site.create_origin(
        {
            **OVERLAY_BASE,
            "overlays/staging/kustomization.yaml": overlay("staging"),
            "overlays/production/kustomization.yaml": overlay("production", pod=broken_here),
        }
    )
    site.create_source()
    site.create_kustomization("staging", "./overlays/staging", timeout="40s")
    site.create_kustomization(
        "production", "./overlays/production", timeout="40s", targetNamespace=production_namespace
    )
    site.wait_until_applied("staging", first)
    site.wait_until_applied("production", first)
    tracks = {
        env: {"kind": "kustomize-image", "file": f"overlays/{env}/kustomization.yaml", "image": IMAGE}
        for env in ("staging", "production")
    }
    namespaces = {"staging": real_namespace, "production": production_namespace}
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, namespaces)
    # CI built 1.0.1 and set it in staging's overlay.
    ci = site.push({"overlays/staging/kustomization.yaml": overlay("staging", tag="1.0.1")}, "ci: web 1.0.1")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"
    assert site.kustomization("staging")["status"]["lastAppliedRevision"].endswith(ci)

    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_failed()
    message = str(prod.message)
    assert "ROLLED BACK to 1.0.0" in message, message
    assert "HealthCheckFailed" in message, message
    subjects = git(site, "log", "-2", "--format=%s", "main").splitlines()
    assert subjects == ["promote(web): production 1.0.1 -> 1.0.0", "promote(web): production 1.0.0 -> 1.0.1"]
    rollback = site.head()
    # The rollback is what Flux runs now, rolled out by the real controllers.
    assert site.kustomization("production")["status"]["lastAppliedRevision"].endswith(rollback)
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.0"
    live: Any = k8s.AppsV1Api(real_admin).read_namespaced_deployment("web", production_namespace)
    assert (live.status.updated_replicas, live.status.available_replicas) == (2, 2)


def test_branch_promotion_merges_and_flux_applies_the_merge_commit(
    site: FluxSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    files = {"deploy/kustomization.yaml": "resources:\n  - deployment.yaml\n", "deploy/deployment.yaml": deployment()}
    first = site.create_origin(files, branches=("staging",))
    site.create_source("staging-src", ref={"branch": "staging"})
    site.create_source("main-src", ref={"branch": "main"})
    site.create_kustomization("staging", "./deploy", source="staging-src")
    site.create_kustomization("production", "./deploy", source="main-src", targetNamespace=production_namespace)
    site.wait_until_applied("staging", first)
    site.wait_until_applied("production", first)
    tracks = {
        "staging": {"kind": "branch", "branch": "staging"},
        "production": {"kind": "branch", "branch": "main", "merge_from": "staging"},
    }
    namespaces = {"staging": real_namespace, "production": production_namespace}
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, namespaces)
    change = site.push({"deploy/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "web 1.0.1", branch="staging")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert site.kustomization("staging")["status"]["lastAppliedRevision"].endswith(change)
    assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"

    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    merge = site.head("main")
    assert git(site, "rev-parse", f"{merge}^2") == change  # a --no-ff merge of what staging verified
    assert site.kustomization("production")["status"]["lastAppliedRevision"].endswith(merge)
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"


def test_tag_promotion_with_flux_tracking_release_tags(
    site: FluxSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    """Flux follows tags by semver range: staging takes release candidates, production stable releases. The rc
    tag promote-rc cuts, and the stable tag promote-production creates at the same commit, are what Flux runs."""
    application = """\
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {{name: web-{env}, namespace: argocd}}
spec:
  source: {{repoURL: https://git.example/web.git, path: deploy, targetRevision: v1.0.0}}
  destination: {{namespace: web}}
"""
    files = {
        "deploy/kustomization.yaml": "resources:\n  - deployment.yaml\n",
        "deploy/deployment.yaml": deployment(),
        **{f"apps/{env}/web.yaml": application.format(env=env) for env in ("staging", "production")},
    }
    first = site.create_origin(files)
    run_git(site.seed, "tag", "-a", "v1.0.0", "-m", "first release")
    run_git(site.seed, "push", "--quiet", "origin", "v1.0.0")
    site.create_source("staging-src", ref={"semver": ">=1.0.0-0"})
    site.create_source("production-src", ref={"semver": ">=1.0.0"})
    site.create_kustomization("staging", "./deploy", source="staging-src")
    site.create_kustomization("production", "./deploy", source="production-src", targetNamespace=production_namespace)
    site.wait_until_applied("staging", first)
    site.wait_until_applied("production", first)
    tracks = {env: {"kind": "tag", "application_file": f"apps/{env}/web.yaml"} for env in ("staging", "production")}
    namespaces = {"staging": real_namespace, "production": production_namespace}
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, namespaces)
    change = site.push({"deploy/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "web 1.0.1")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    assert git(site, "rev-parse", "v1.0.1-rc1^{commit}") == change
    assert site.kustomization("staging")["status"]["lastAppliedRevision"] == f"v1.0.1-rc1@sha1:{change}"
    assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"

    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    assert git(site, "rev-parse", "v1.0.1^{commit}") == change  # the stable tag at the verified rc's commit
    assert site.kustomization("production")["status"]["lastAppliedRevision"] == f"v1.0.1@sha1:{change}"
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"


def test_yaml_path_promotion_copies_the_image_flux_applies(
    site: FluxSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    files = {f"deploy/{env}/deployment.yaml": deployment() for env in ("staging", "production")}
    first = site.create_origin(files)
    site.create_source()
    site.create_kustomization("staging", "./deploy/staging")
    site.create_kustomization("production", "./deploy/production", targetNamespace=production_namespace)
    site.wait_until_applied("staging", first)
    site.wait_until_applied("production", first)
    path = "spec.template.spec.containers[name=web].image"
    tracks = {
        env: {"kind": "yaml-path", "edits": [{"name": "image", "file": f"deploy/{env}/deployment.yaml", "path": path}]}
        for env in ("staging", "production")
    }
    namespaces = {"staging": real_namespace, "production": production_namespace}
    pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, namespaces)
    site.push({"deploy/staging/deployment.yaml": deployment(image=f"{IMAGE}:1.0.1")}, "ci: web 1.0.1 in staging")

    rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
    assert rc.is_completed(), rc.message
    prod = promote_production(pipeline_file=str(pipeline), return_state=True)
    assert prod.is_completed(), prod.message
    written = site.head()
    assert f"image: {IMAGE}:1.0.1" in git(site, "show", f"{written}:deploy/production/deployment.yaml")
    assert site.kustomization("production")["status"]["lastAppliedRevision"].endswith(written)
    assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"


def test_image_policy_promotion_writes_setter_markers_flux_applies(
    site: FluxSite,
    real_cluster: RealCluster,
    real_admin: k8s.ApiClient,
    real_namespace: str,
    production_namespace: str,
    tmp_path: Path,
) -> None:
    from tests.support.registry import push_image, run_registry

    marker = '{{"$imagepolicy": "flux-system:web-{env}"}}'
    files = {
        f"apps/{env}/deployment.yaml": deployment().replace(
            f"image: {IMAGE}:1.0.0", f"image: {IMAGE}:1.0.0 # " + marker.format(env=env)
        )
        for env in ("staging", "production")
    }
    first = site.create_origin(files)
    site.create_source()
    site.create_kustomization("staging", "./apps/staging")
    site.create_kustomization("production", "./apps/production", targetNamespace=production_namespace)
    site.wait_until_applied("staging", first)
    site.wait_until_applied("production", first)
    with run_registry(tmp_path / "registry") as registry:
        push_image(registry.url, "sandbox/web", ["1.0.0", "1.0.1", "2.0.0"])
        tracks = {
            env: {
                "kind": "image-policy",
                "path": f"apps/{env}",
                "policy": f"flux-system:web-{env}",
                "registry": {"url": registry.url, "repository": "sandbox/web", "image": IMAGE},
                "choose": {"semver": "1.x.x"},
            }
            for env in ("staging", "production")
        }
        namespaces = {"staging": real_namespace, "production": production_namespace}
        pipeline = write_pipeline(tmp_path / "web.yaml", site, real_cluster, tracks, namespaces)

        rc = promote_rc(pipeline_file=str(pipeline), return_state=True)
        assert rc.is_completed(), rc.message
        assert rc.result()["rc"] == "1.0.1"
        staged = site.head()
        assert site.kustomization("staging")["status"]["lastAppliedRevision"].endswith(staged)
        assert running_image(real_admin, real_namespace) == f"{IMAGE}:1.0.1"

        prod = promote_production(pipeline_file=str(pipeline), return_state=True)
        assert prod.is_completed(), prod.message
        written = site.head()
        assert site.kustomization("production")["status"]["lastAppliedRevision"].endswith(written)
        assert running_image(real_admin, production_namespace) == f"{IMAGE}:1.0.1"
