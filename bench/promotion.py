"""A whole tag-based promotion on the sandbox with instant externals, side by side in one run:

  A. the flows (promote-rc + promote-production, no approval gate) through a real Prefect server;
  B. the same external operations called directly, without Prefect (tag, write-back, verify, checks, notes);
  C. Prefect's fixed per-flow cost: two empty flow runs;
  and the nightly flow over 1 pipeline vs 20 pipelines.

Overhead = A - B: everything Prefect adds, its fixed per-flow cost included (target: under 3 s beyond that
fixed cost; C is printed for reference: much of it overlaps with the external work in A, so A - B - C
would understate). Nightly ratio = T(20) / T(1) (target < 4).
Run: .venv/bin/python bench/promotion.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(tempfile.mkdtemp(prefix="promote-bench-"))

from sandbox.prefect_server import PrefectServer, prefect_env  # noqa: E402

SERVER = PrefectServer(home=ROOT / "prefect")
os.environ.update(prefect_env(SERVER.home, SERVER.api_url))
os.environ["PROMOTE_CACHE_DIR"] = str(ROOT / "cache")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

from kubernetes.config import new_client_from_config  # noqa: E402
from prefect import flow  # noqa: E402

from flows.nightly import nightly  # noqa: E402
from flows.promote_production import promote_production  # noqa: E402
from flows.promote_rc import promote_rc  # noqa: E402
from promote.pipeline import load_pipeline  # noqa: E402
from sandbox.apiserver import LocalKubeAPI, install_crds  # noqa: E402
from sandbox.world import SandboxApp, SandboxWorld  # noqa: E402
from tasks import evidence, release, targets  # noqa: E402
from tasks.connections import connect  # noqa: E402
from tasks.health import run_check  # noqa: E402
from tasks.verification import verify_environment  # noqa: E402


@flow
def empty() -> None:
    return None


def settle(app: SandboxApp) -> None:
    while any(env.applied is None for env in app.envs):
        time.sleep(0.05)
    app.commit_change("feature")


def direct(app: SandboxApp) -> None:
    """B: the external operations of promote-rc + promote-production, without Prefect."""
    conn = connect(str(app.pipeline_file), lambda _m: None)
    pipeline, repo = conn.pipeline, conn.repo
    staging, production = pipeline.environments
    repo.fetch()
    decision = release.decide_rc(repo, pipeline)
    assert decision.tag is not None
    values = {"version": decision.tag[1:], "tag": decision.tag, "commit": decision.commit}
    repo.create_tag(decision.tag, decision.commit, "rc")
    targets.point_environment(repo, pipeline.repository.branch, pipeline.name, staging, decision.tag)
    verify_environment(conn.kube(staging), staging, decision.commit, values)
    for check in staging.health_checks:
        assert run_check(check, values).passed
    release.record(repo, evidence.Record("verified", pipeline.name, "staging", decision.tag, decision.commit))
    repo.fetch()
    rc_tag, commit = release.verified_rc(repo, pipeline, staging, None)
    stable = release.stable_tag_for(pipeline.versioning.scheme, rc_tag)
    values = {"version": stable[1:], "tag": stable, "commit": commit}
    repo.create_tag(stable, commit, "stable")
    targets.point_environment(repo, pipeline.repository.branch, pipeline.name, production, stable)
    verify_environment(conn.kube(production), production, commit, values)
    for check in production.health_checks:
        assert run_check(check, values).passed
    release.record(repo, evidence.Record("promoted", pipeline.name, "production", stable, commit))


def timed(fn: object, *args: object) -> float:
    started = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> int:
    with LocalKubeAPI(binaries=LocalKubeAPI.ensure_binaries()) as api, SERVER:
        admin = new_client_from_config(config_file=str(api.kubeconfig))
        install_crds(admin)
        (ROOT / "world").mkdir()
        world = SandboxWorld(root=ROOT / "world", api=admin, kubeconfig=api.kubeconfig)
        with world.running():
            assert world.agent is not None
            world.agent.poll_seconds = 0.02
            empty()  # warm-up: the first flow run pays imports and client setup
            rounds = 3
            flows_s, direct_s, empty_s = [], [], []
            for i in range(rounds):  # interleaved so both see the same machine noise
                a = world.create_app(f"flows-{i}", approval=False, delay_seconds=0)
                b = world.create_app(f"direct-{i}", approval=False, delay_seconds=0)
                settle(a)
                settle(b)
                flows_s.append(
                    timed(
                        lambda f=str(a.pipeline_file): (
                            promote_rc(pipeline_file=f),
                            promote_production(pipeline_file=f),
                        )
                    )
                )
                direct_s.append(timed(direct, b))
                empty_s.append(timed(lambda: (empty(), empty())))
            med = sorted
            fa, db, ec = med(flows_s)[1], med(direct_s)[1], med(empty_s)[1]
            print(f"tag-based promotion (rc -> staging -> production), medians of {rounds}:")
            print(f"  A flows through Prefect        {fa:6.2f} s")
            print(f"  B same operations, no Prefect   {db:6.2f} s")
            print(f"  C two empty flow runs          {ec:6.2f} s  (Prefect's fixed per-flow cost)")
            print(f"  overhead A-B                   {fa - db:6.2f} s  (target < 3 s beyond C)")

            one = ROOT / "one"
            many = ROOT / "many"
            one.mkdir()
            many.mkdir()
            app = world.create_app("night-0", approval=False, delay_seconds=0)
            settle(app)
            shutil.copy(app.pipeline_file, one / app.pipeline_file.name)
            for i in range(20):
                app = world.create_app(f"nights-{i}", approval=False, delay_seconds=0)
                settle(app)
                shutil.copy(app.pipeline_file, many / app.pipeline_file.name)
            t1 = timed(lambda: nightly(pipelines_dir=str(one)))
            t20 = timed(lambda: nightly(pipelines_dir=str(many), max_parallel=20))
            for path in many.iterdir():
                load_pipeline(path)
            print(f"nightly: 1 pipeline {t1:.2f} s, 20 pipelines {t20:.2f} s, ratio {t20 / t1:.2f}x (target < 4x)")
    shutil.rmtree(ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
