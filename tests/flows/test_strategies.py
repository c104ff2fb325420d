"""The other strategies through the same flows, against real parts: Kustomize overlay promotion (Argo CD) and
branch merges (Flux), with a real Prefect server, real Git origins and the real kube-apiserver, where the
simulated controllers roll out what Git says."""

from __future__ import annotations

import time
from typing import Any

import pytest

from flows.promote_production import promote_production
from flows.promote_rc import promote_rc
from sandbox.world import SandboxApp, SandboxWorld, git
from tasks import evidence
from tests.conftest import unique
from tests.support.flowruns import running_image

pytestmark = [pytest.mark.kube, pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]


def ready(world: SandboxWorld, name: str, strategy: Any, **kwargs: Any) -> SandboxApp:
    app = world.create_app(unique(name), strategy=strategy, **kwargs)
    deadline = time.monotonic() + 300  # the simulated controllers first roll out 1.0.0 everywhere
    while any(env.applied is None for env in app.envs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return app


def all_records(app: SandboxApp) -> list[evidence.Record]:
    listing = git(app.origin, "notes", "--ref=promote", "list").splitlines()
    records: list[evidence.Record] = []
    for line in listing:
        blob = line.split()[0]
        records += evidence.parse_records(git(app.origin, "cat-file", "blob", blob))
    return records


def head(app: SandboxApp, branch: str = "main") -> str:
    return git(app.origin, "rev-parse", branch)


# --- Kustomize overlays --------------------------------------------------------------------------------


def test_overlay_promotion_copies_the_verified_image_and_keeps_the_rest(world: SandboxWorld) -> None:
    app = ready(world, "ovl", "overlay", approval=False)
    production_file = "overlays/production/kustomization.yaml"
    before = git(app.origin, "show", f"main:{production_file}")
    app.release_image("1.0.1")

    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    result = rc.result()
    assert (result["action"], result["rc"]) == ("create", "1.0.1")
    verified = [r for r in all_records(app) if r.kind == "verified"]
    assert [(r.environment, r.tag) for r in verified] == [("staging", "1.0.1")]
    assert verified[0].commit == head(app)  # verified at the commit staging's Application synced

    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_completed(), prod.message
    after = git(app.origin, "show", f"main:{production_file}")
    # Only the tag changed: the comment, the replicas patch and the layout are the same text.
    assert after == before.replace(
        "newTag: 1.0.0  # Promote by updating tag", "newTag: 1.0.1  # Promote by updating tag"
    )
    message = git(app.origin, "log", "-1", "--format=%B", "main")
    assert message.startswith(f"promote({app.name}): production 1.0.0 -> 1.0.1")
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.1"
    assert prod.result()["version"] == "1.0.1"

    # Re-running repeats nothing: no new commit, the same image.
    tip = head(app)
    again = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert again.is_completed(), again.message
    assert head(app) == tip


def test_overlay_refuses_an_image_staging_did_not_verify(world: SandboxWorld) -> None:
    app = ready(world, "ovl-refuse", "overlay", approval=False)
    app.release_image("1.0.2")  # CI set it; promote-rc never verified it
    tip = head(app)
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_failed()
    assert "1.0.2 has no record of a passed verification in staging" in str(prod.message)
    assert head(app) == tip  # nothing written
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.0"


def test_overlay_production_failure_rolls_back_to_the_previous_image(world: SandboxWorld) -> None:
    app = ready(world, "ovl-rb", "overlay", approval=False)
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "1.0.3"
    app.release_image("1.0.3")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_failed()
    assert "ROLLED BACK to 1.0.0" in str(prod.message)
    text = git(app.origin, "show", "main:overlays/production/kustomization.yaml")
    assert "newTag: 1.0.0  # Promote by updating tag" in text
    subjects = git(app.origin, "log", "-2", "--format=%s", "main").splitlines()
    assert subjects == [
        f"promote({app.name}): production 1.0.3 -> 1.0.0",
        f"promote({app.name}): production 1.0.0 -> 1.0.3",
    ]
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.0"
    kinds = sorted(r.kind for r in all_records(app))
    assert kinds == ["failed", "rolled-back", "verified"]  # failed before its rollback (tasks/metrics.py)


# --- branch merges -----------------------------------------------------------------------------------


def test_branch_promotion_merges_the_verified_commit_no_ff(world: SandboxWorld) -> None:
    app = ready(world, "br", "branch", approval=False)
    staged = app.release_image("1.0.1")  # on the staging branch
    main_before = head(app, "main")

    rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rc.is_completed(), rc.message
    assert rc.result()["rc"] == staged
    app.commit_change("feature: not verified yet")  # staging moves on after the verification

    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_completed(), prod.message
    merge = head(app, "main")
    parents = git(app.origin, "rev-list", "--parents", "-n1", merge).split()[1:]
    assert parents == [main_before, staged]  # --no-ff, and the verified commit rather than staging's new tip
    assert git(app.origin, "log", "-1", "--format=%s", merge) == "Promote staging to production"
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.1"
    promoted = [r for r in all_records(app) if r.kind == "promoted"]
    assert [(r.environment, r.tag, r.details["revision"]) for r in promoted] == [("production", staged, merge)]

    again = promote_production(pipeline_file=str(app.pipeline_file), rc=staged, return_state=True)
    assert again.is_completed(), again.message
    assert head(app, "main") == merge  # already merged: nothing pushed


def test_branch_promotion_refuses_a_diverged_target(world: SandboxWorld) -> None:
    app = ready(world, "br-div", "branch", approval=False)
    app.release_image("1.0.1")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    hotfix = app.commit_change("hotfix straight on main", branch="main")
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_failed()
    assert "main has diverged from staging" in str(prod.message)
    assert head(app, "main") == hotfix  # nothing pushed


def test_branch_production_failure_reverts_the_merge(world: SandboxWorld) -> None:
    app = ready(world, "br-rb", "branch", approval=False)
    production = app.env("production")
    production.failure, production.failure_ref = "stalled", "1.0.4"  # Flux: Ready=False, Stalled
    app.release_image("1.0.4")
    main_before = head(app, "main")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert prod.is_failed()
    assert "ROLLED BACK" in str(prod.message)
    reverted = head(app, "main")
    assert git(app.origin, "diff", main_before, reverted) == ""  # the tree is what production ran before
    assert git(app.origin, "log", "-1", "--format=%s", reverted).startswith("Roll back production: revert promotion")
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.0"


def test_plan_shows_every_environment_and_changes_nothing(world: SandboxWorld) -> None:
    from pipeline.load import load_pipeline
    from tasks.connections import open_repository
    from tasks.plan import plan_pipeline

    app = ready(world, "ovl-plan", "overlay", approval=False)
    app.release_image("1.0.5")
    pipeline = load_pipeline(app.pipeline_file)
    refs = git(app.origin, "for-each-ref")
    before = {p.environment: p for p in plan_pipeline(open_repository(pipeline), pipeline)}
    assert before["staging"].current == "1.0.5" and "promote-rc verifies" in before["staging"].note
    assert "1.0.5 has no record of a passed verification in staging" in before["production"].note
    assert git(app.origin, "for-each-ref") == refs
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    refs = git(app.origin, "for-each-ref")
    after = {p.environment: p for p in plan_pipeline(open_repository(pipeline), pipeline)}
    production = after["production"]
    assert (production.current, production.proposed) == ("1.0.0", "1.0.5")
    assert "-  newTag: 1.0.0  # Promote by updating tag" in production.diff
    assert "+  newTag: 1.0.5  # Promote by updating tag" in production.diff
    assert "production (kustomize-image): 1.0.0 -> 1.0.5" in production.render()
    assert git(app.origin, "for-each-ref") == refs  # planning wrote nothing


def test_rollback_flow_for_overlays_and_branches(world: SandboxWorld) -> None:
    from flows.rollback import rollback

    overlay = ready(world, "ovl-back", "overlay", approval=False)
    overlay.release_image("1.0.6")
    assert promote_rc(pipeline_file=str(overlay.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(overlay.pipeline_file), return_state=True).is_completed()
    unknown = rollback(pipeline_file=str(overlay.pipeline_file), to_version="9.9.9", return_state=True)
    assert unknown.is_failed() and "9.9.9 never ran in production and was not verified upstream" in str(unknown.message)
    back = rollback(pipeline_file=str(overlay.pipeline_file), return_state=True)
    assert back.is_completed(), back.message
    assert (back.result()["from"], back.result()["to"]) == ("1.0.6", "1.0.0")  # from the promotion record
    assert "newTag: 1.0.0  # Promote by updating tag" in git(
        overlay.origin, "show", "main:overlays/production/kustomization.yaml"
    )
    assert running_image(world, overlay, "production") == f"registry.sandbox.local/{overlay.name}:1.0.0"

    branch = ready(world, "br-back", "branch", approval=False)
    branch.release_image("1.0.7")
    main_before = head(branch, "main")
    assert promote_rc(pipeline_file=str(branch.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(branch.pipeline_file), return_state=True).is_completed()
    reverted = rollback(pipeline_file=str(branch.pipeline_file), return_state=True)
    assert reverted.is_completed(), reverted.message
    assert git(branch.origin, "diff", main_before, "main") == ""
    assert running_image(world, branch, "production") == f"registry.sandbox.local/{branch.name}:1.0.0"


# --- image policy (a real docker-registry) -------------------------------------------------------------


def test_image_policy_promotes_registry_tags_through_setter_markers(world: SandboxWorld, tmp_path: Any) -> None:
    from tests.support.registry import push_image, run_registry

    with run_registry(tmp_path / "registry") as registry:
        world.registry_url = registry.url
        app = ready(world, "pol", "image-policy", approval=False)
        repository, image = f"sandbox/{app.name}", f"registry.sandbox.local/{app.name}"
        push_image(registry.url, repository, ["1.0.0", "1.0.1", "1.1.0-rc.1", "latest", "2.0.0"])
        staging_file = "apps/staging/deployment.yaml"

        rc = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
        assert rc.is_completed(), rc.message
        assert rc.result()["rc"] == "1.1.0-rc.1"  # staging's range takes release candidates, stops before 2
        text = git(app.origin, "show", f"main:{staging_file}")
        assert f'image: {image}:1.1.0-rc.1 # {{"$imagepolicy": "flux-system:{app.name}-staging"}}' in text
        assert text.startswith(f"# {app.name} in staging: the image below is written by")  # comments kept
        # The default Flux template, rendered as Flux does: one updated image per line.
        message = git(app.origin, "log", "-1", "--format=%B", "main")
        assert message.startswith(f"Update {image}:1.1.0-rc.1\n\n")
        assert running_image(world, app, "staging") == f"{image}:1.1.0-rc.1"

        # Production (1.x.x) chooses among what staging verified: only an rc so far, so a clear no-op.
        tip = head(app)
        nothing = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
        assert nothing.is_completed(), nothing.message
        assert "among the 1 verified in staging" in nothing.result()["nothing_to_do"]
        assert head(app) == tip

        push_image(registry.url, repository, ["1.1.0"])
        assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).result()["rc"] == "1.1.0"
        prod = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
        assert prod.is_completed(), prod.message
        assert (prod.result()["from"], prod.result()["version"]) == ("1.0.0", "1.1.0")
        assert f"+          image: {image}:1.1.0 # " in prod.result()["diff"]  # shown at the gate and in the audit
        assert git(app.origin, "log", "-1", "--format=%s", "main") == f"Update {image}:1.1.0"
        assert running_image(world, app, "production") == f"{image}:1.1.0"

        again = promote_rc(pipeline_file=str(app.pipeline_file), return_state=True)
        assert again.result()["action"] == "skip"  # verified in staging and live in production


def test_image_policy_refuses_a_requested_tag_outside_its_policy(world: SandboxWorld, tmp_path: Any) -> None:
    from tests.support.registry import push_image, run_registry

    with run_registry(tmp_path / "registry") as registry:
        world.registry_url = registry.url
        app = ready(world, "pol-out", "image-policy", approval=False)
        push_image(registry.url, f"sandbox/{app.name}", ["1.0.0", "1.2.0-rc.1"])
        assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).result()["rc"] == "1.2.0-rc.1"
        tip = head(app)
        prod = promote_production(pipeline_file=str(app.pipeline_file), rc="1.2.0-rc.1", return_state=True)
        assert prod.is_failed()
        assert "1.2.0-rc.1 is outside the image policy of production (semver 1.x.x)" in str(prod.message)
        assert head(app) == tip


def test_single_environment_image_policy_with_registry_credentials_and_a_gate(
    world: SandboxWorld, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image-policy example's shape: one environment, promote-production alone, against a registry that
    wants basic auth (the password comes from the environment variable the pipeline names)."""
    import base64

    from ruamel.yaml import YAML

    from tests.support.registry import bcrypt_hash, push_image, run_registry

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{bcrypt_hash('s3cret-registry-pass')}\n")
    auth = {"htpasswd": {"realm": "promote-test", "path": str(htpasswd)}}
    with run_registry(tmp_path / "registry", auth=auth) as registry:
        world.registry_url = registry.url
        app = ready(world, "pol-one", "image-policy", approval=False)
        basic = "Basic " + base64.b64encode(b"ci:s3cret-registry-pass").decode()
        push_image(
            registry.url, f"sandbox/{app.name}", ["1.0.0", "1.3.0", "1.4.0-rc.1"], headers={"Authorization": basic}
        )
        yaml = YAML()
        doc = yaml.load(app.pipeline_file.read_text())
        doc["environments"] = doc["environments"][1:]  # production only
        doc["environments"][0]["tracks"]["registry"]["credentials"] = {"username": "ci", "token_env": "REG_PASS"}
        single = tmp_path / "single.yaml"
        with single.open("w") as out:
            yaml.dump(doc, out)

        assert promote_rc(pipeline_file=str(single), return_state=True).result()["action"] == "not-applicable"
        monkeypatch.delenv("REG_PASS", raising=False)
        missing = promote_production(pipeline_file=str(single), return_state=True)
        assert missing.is_failed() and "environment variable REG_PASS is not set" in str(missing.message)

        monkeypatch.setenv("REG_PASS", "s3cret-registry-pass")
        prod = promote_production(pipeline_file=str(single), return_state=True)
        assert prod.is_completed(), prod.message
        assert prod.result()["version"] == "1.3.0"  # 1.x.x: the rc is not a candidate
        assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.3.0"
        assert "s3cret-registry-pass" not in str(prod.result())


def test_branch_promotes_again_after_a_promotion_and_after_a_rollback(world: SandboxWorld) -> None:
    """This tool's own merges and rollbacks on main are not divergence; and promoting a fix after a rolled
    back promotion brings back the rolled-back changes too (a plain merge would leave them out)."""
    app = ready(world, "br-again", "branch", approval=False)
    pipeline = str(app.pipeline_file)
    app.release_image("1.0.1")
    assert promote_rc(pipeline_file=pipeline, return_state=True).is_completed()
    assert promote_production(pipeline_file=pipeline, return_state=True).is_completed()
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.1"

    production = app.env("production")
    production.failure, production.failure_ref = "stalled", "1.0.2"
    app.release_image("1.0.2")
    app.commit_change("feature: wishlist")  # ships with 1.0.2, and is rolled back with it
    assert promote_rc(pipeline_file=pipeline, return_state=True).is_completed()
    failed = promote_production(pipeline_file=pipeline, return_state=True)
    assert failed.is_failed() and "ROLLED BACK" in str(failed.message)
    assert "wishlist" not in git(app.origin, "show", "main:src/CHANGELOG.md")

    production.failure = None
    app.release_image("1.0.3")  # the fix, on top of the rolled-back release
    assert promote_rc(pipeline_file=pipeline, return_state=True).is_completed()
    fixed = promote_production(pipeline_file=pipeline, return_state=True)
    assert fixed.is_completed(), fixed.message
    assert "wishlist" in git(app.origin, "show", "main:src/CHANGELOG.md")  # the rolled-back change is back
    assert running_image(world, app, "production") == f"registry.sandbox.local/{app.name}:1.0.3"
    assert git(app.origin, "diff", "staging", "main") == ""


def test_overlay_crash_after_write_back_then_a_failing_rerun_still_rolls_back(world: SandboxWorld) -> None:
    """The re-run finds the new value already written; it must still know what ran before it."""
    import os
    import subprocess
    import sys

    from tests.support.flowruns import CRASH_SCRIPT, ROOT

    app = ready(world, "ovl-crash", "overlay", approval=False)
    app.release_image("1.0.8")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "1.0.8"  # 1.0.8 will not come up in production
    env = {**os.environ, "PROMOTE_CRASH_AT": "after-write-back", "PYTHONPATH": str(ROOT)}
    script = CRASH_SCRIPT.format(module="promote_production", flow="promote_production")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(app.pipeline_file)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 86, proc.stdout + proc.stderr
    assert "newTag: 1.0.8" in git(app.origin, "show", "main:overlays/production/kustomization.yaml")
    rerun = promote_production(pipeline_file=str(app.pipeline_file), return_state=True)
    assert rerun.is_failed()
    assert "ROLLED BACK to 1.0.0" in str(rerun.message)
    assert "newTag: 1.0.0" in git(app.origin, "show", "main:overlays/production/kustomization.yaml")


def test_nightly_promotes_every_strategy_side_by_side(world: SandboxWorld, tmp_path: Any) -> None:
    from flows.nightly import nightly
    from tests.support.registry import push_image, run_registry

    with run_registry(tmp_path / "registry") as registry:
        world.registry_url = registry.url
        apps = {
            kind: ready(world, f"night-{kind}", kind, approval=False)
            for kind in ("tag", "overlay", "branch", "image-policy")
        }
        apps["tag"].commit_change("feature: nightly")
        apps["overlay"].release_image("1.0.1")
        apps["branch"].release_image("1.0.1")
        push_image(registry.url, f"sandbox/{apps['image-policy'].name}", ["1.0.0", "1.0.1", "1.1.0-rc.1"])
        pipelines = tmp_path / "pipelines"
        pipelines.mkdir()
        for app in apps.values():
            (pipelines / app.pipeline_file.name).write_text(app.pipeline_file.read_text())
        state = nightly(pipelines_dir=str(pipelines), return_state=True)
        assert state.is_completed(), state.message
        images = {kind: running_image(world, app, "production").rsplit(":", 1)[1] for kind, app in apps.items()}
        # Image policy: staging took the rc (its range allows release candidates); production's 1.x.x allows
        # none of the tags staging verified, so it stays at 1.0.0 (a clear no-op, not a failure).
        assert images == {"tag": "1.0.1", "overlay": "1.0.1", "branch": "1.0.1", "image-policy": "1.0.0"}
        assert running_image(world, apps["image-policy"], "staging").endswith(":1.1.0-rc.1")


def test_promoting_the_value_a_rollback_restored_does_not_aim_back_at_the_failed_one(world: SandboxWorld) -> None:
    """After 1.0.9 failed and production went back to 1.0.0, promoting 1.0.0 (already running) must treat
    1.0.0 as what ran before, not 1.0.9 (the rollback commit's parent)."""
    from pipeline.load import load_pipeline
    from tasks.connections import Connections, open_repository
    from tasks.strategies import strategy_for

    app = ready(world, "ovl-again", "overlay", approval=False)
    production = app.env("production")
    production.failure, production.failure_ref = "degraded", "1.0.9"
    app.release_image("1.0.9")
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    assert promote_production(pipeline_file=str(app.pipeline_file), return_state=True).is_failed()
    app.release_image("1.0.0")  # staging back to what production runs
    assert promote_rc(pipeline_file=str(app.pipeline_file), return_state=True).is_completed()
    pipeline = load_pipeline(app.pipeline_file)
    repo = open_repository(pipeline)
    repo.fetch()
    production_env = pipeline.environment("production")
    cand = strategy_for(production_env).candidate(Connections(pipeline, repo, print), production_env, None)
    assert (cand.value, cand.previous) == ("1.0.0", "1.0.0")
