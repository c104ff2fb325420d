"""The README's first command: a whole nightly promotion on a local sandbox, then a summary, then cleanup.

It starts a real kube-apiserver + etcd, a real Prefect server, a sandbox Git origin per app, the controllers that
deploy it (by default the real Argo CD or Flux, per strategy, with the real controller-manager and a KWOK node:
sandbox/realworld.py; with ``--controllers simulated`` or ``--write pull-request`` the simulator sandbox/agent.py)
and a health endpoint; pushes a developer change; runs the ``nightly`` flow,
which cuts an rc, verifies staging, pauses for approval, and promotes production. The demo approves on
your behalf (and says so) through the same API call as ``promote approve``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sandbox.scenarios import REAL_STRATEGIES, SCENARIOS, STRATEGIES, scenario
from sandbox.world import Strategy

if TYPE_CHECKING:
    from sandbox.world import SandboxApp, SandboxWorld

BANNER = "=" * 78


def say(text: str = "") -> None:
    print(text, flush=True)


def _approve_paused_runs(api_url: str, stop: threading.Event, approved: list[str]) -> None:
    """Stand in for the person at the approval gate: approve every run that waits, printing that we did."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from tasks.approval import resume_run

    while not stop.wait(0.5):
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
        for run in runs:
            if str(run.id) in approved:
                continue
            say(f"\n{BANNER}\nAPPROVAL: run {run.name} waits for a person's approval to go to production.")
            say("The sandbox demo approves ON YOUR BEHALF (approver 'sandbox-demo'), as `promote approve` would:")
            say(f"  promote approve {run.id} --approver sandbox-demo --reason 'sandbox demo'\n{BANNER}")
            try:
                resume_run(
                    api_url,
                    str(run.id),
                    {
                        "approve": True,
                        "approver": "sandbox-demo",
                        "reason": "approved by the sandbox demo on your behalf",
                    },
                )
                approved.append(str(run.id))
            except Exception as exc:  # the run may have been resumed meanwhile; try again next round
                say(f"(approval attempt failed: {exc}; retrying)")


def _merge_open_pull_requests(forge: Any, apps: list[SandboxApp], stop: threading.Event, merged: list[str]) -> None:
    """Stand in for the reviewer: merge every pull request the promotions open, printing that we did."""
    from sandbox.gitea import ADMIN

    while not stop.wait(0.5):
        for app in apps:
            try:
                pulls = forge.api("GET", f"/repos/{ADMIN}/{app.name}/pulls?state=open")
            except Exception as exc:  # Gitea busy: try again next round
                say(f"(could not list pull requests: {exc}; retrying)")
                continue
            for pull in pulls:
                key = f"{app.name}#{pull['number']}"
                if key in merged:
                    continue
                say(f"\n{BANNER}\nPULL REQUEST: {pull['title']}\n  {pull['html_url']}")
                say("The sandbox demo MERGES IT ON YOUR BEHALF, as a reviewer would in Gitea.\n" + BANNER)
                try:
                    forge.api("POST", f"/repos/{ADMIN}/{app.name}/pulls/{pull['number']}/merge", {"Do": "merge"})
                    merged.append(key)
                except Exception as exc:  # not mergeable yet (Gitea still checking): next round
                    say(f"(merge attempt failed: {exc}; retrying)")


def _drain_prefect_logs() -> None:
    """Flush logs and events to the server before it stops (else they fail loudly at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _running_image(world: SandboxWorld, app: SandboxApp, env: str) -> str:
    from kubernetes import client

    deployment = client.AppsV1Api(world.api).read_namespaced_deployment(app.name, f"{app.name}-{env}")
    pod = deployment.spec.template.spec if deployment.spec else None
    return str(pod.containers[0].image) if pod else "?"


Controllers = Literal["real", "simulated"]


def run_demo(
    apps: int,
    keep: bool,
    delay: float,
    strategy: Strategy = "tag",
    write: str = "push",
    controllers: Controllers = "simulated",
) -> int:
    with contextlib.ExitStack() as stack:
        registry_url = ""
        if scenario(strategy).needs_registry:
            from sandbox.registry import push_image, run_registry

            registry_root = Path(tempfile.mkdtemp(prefix="promote-sandbox-registry-"))
            stack.callback(shutil.rmtree, registry_root, True)
            registry = stack.enter_context(run_registry(registry_root))
            registry_url = registry.url
            for index in range(apps):
                push_image(registry.url, f"sandbox/{_names(apps)[index]}", ["1.0.0", "latest", "2.0.0"])
        forge = None
        if write == "pull-request":
            from sandbox.gitea import Gitea
            from sandbox.world import FORGE_TOKEN_ENV

            forge_root = Path(tempfile.mkdtemp(prefix="promote-sandbox-gitea-"))
            if not keep:
                stack.callback(shutil.rmtree, forge_root, True)
            say("starting Gitea (built once per machine, minutes the first time) ...")
            forge = stack.enter_context(Gitea(forge_root, progress=lambda line: say(f"      {line}")))
            os.environ[FORGE_TOKEN_ENV] = forge.token
            os.environ.setdefault("PROMOTE_PULL_REQUEST_POLL_SECONDS", "1")  # the demo merges at once
        return _run(apps, keep, delay, strategy, registry_url, forge, controllers)


def _helm() -> Path:
    """The helm CLI for Argo CD's repo server (hack/build-helm: built on first use, minutes once; its progress
    goes to stderr)."""
    from sandbox.apiserver import run_forwarding_stderr

    root = Path(__file__).resolve().parent.parent
    returncode, stdout, tail = run_forwarding_stderr([str(root / "hack" / "build-helm")], root)
    if returncode != 0 or not stdout.strip():
        shown = "\n".join(tail) or "(no output)"
        raise RuntimeError(f"hack/build-helm failed (exit {returncode}); it needs Go 1.26+. Its last output:\n{shown}")
    return Path(stdout.strip().splitlines()[-1])


def _wait_for_first_rollout(made: list[SandboxApp], overall_seconds: float = 300) -> None:
    """The simulated controllers roll out v1.0.0 everywhere first: wait for that (not a fixed pause)."""
    deadline = time.monotonic() + overall_seconds
    while any(env.applied is None for app in made for env in app.envs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the simulated controllers did not roll out v1.0.0 within {overall_seconds:.0f}s")
        time.sleep(0.1)


def _names(apps: int) -> list[str]:
    return ["shop"] if apps == 1 else [f"shop-{i}" for i in range(apps)]


def _run(
    apps: int,
    keep: bool,
    delay: float,
    strategy: Strategy,
    registry_url: str,
    forge: Any = None,
    controllers: Controllers = "simulated",
) -> int:
    root = Path(tempfile.mkdtemp(prefix="promote-sandbox-"))
    ok = False
    try:
        started = time.monotonic()
        from sandbox.prefect_server import PrefectServer, prefect_env

        say(f"{BANNER}\ngitops-promote sandbox: a full promotion dev -> staging -> production, locally\n{BANNER}")
        chosen = scenario(strategy)
        say(f"strategy:  {chosen.what}")
        say(f"workspace: {root}")
        if registry_url:
            say(f"registry:  docker-registry at {registry_url}")
        if forge is not None:
            say(f"forge:     Gitea at {forge.url} (production is promoted through pull requests)")
        server = PrefectServer(home=root / "prefect")
        os.environ.update(prefect_env(server.home, server.api_url))
        os.environ["PROMOTE_CACHE_DIR"] = str(root / "cache")
        os.environ["PREFECT_UI_URL"] = server.url
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        os.environ.setdefault("PROMOTE_APPROVAL_POLL_SECONDS", "0.2")  # the demo's approval is given at once

        from kubernetes.config import new_client_from_config

        from sandbox.apiserver import LocalKubeAPI, install_crds
        from sandbox.world import SandboxWorld

        real = controllers == "real"
        what = "kube-apiserver, the real controllers" if real else "kube-apiserver + etcd"
        say(f"\n[1/4] starting {what} and a Prefect server, side by side ...")
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool, contextlib.ExitStack() as up:
            # The two starts wait on different processes: overlapping them takes the shorter off the total;
            # importing the flows (seconds of Prefect's client modules) overlaps them too.
            prefect_starting = pool.submit(server.start)
            flows_imported = pool.submit(importlib.import_module, "flows.nightly")
            up.callback(server.stop)  # also stops a server still starting if the API server failed
            world: Any
            if real:
                from sandbox.cluster import ClusterBinaries, RealCluster
                from sandbox.realworld import RealWorld

                argocd = chosen.controller == "argocd"
                say("      building the real controllers if this machine has not (minutes, once; progress below)")
                binaries = ClusterBinaries.ensure(flux=not argocd, argocd=argocd)
                cluster = up.enter_context(
                    RealCluster(
                        binaries=binaries,
                        flux=not argocd,
                        argocd=argocd,
                        progress=lambda line: say(f"      {line}"),
                        repo_server_tools=[_helm()] if chosen.needs_helm else [],
                    )
                )
                admin = new_client_from_config(config_file=str(cluster.kubeconfig))
                world = RealWorld(
                    root=root / "world", api=admin, kubeconfig=cluster.kubeconfig, registry_url=registry_url
                )
            else:
                api = up.enter_context(LocalKubeAPI(binaries=LocalKubeAPI.ensure_binaries()))
                say(f"      kube-apiserver ready in {api.ready_seconds:.1f}s at {api.url}")
                admin = new_client_from_config(config_file=str(api.kubeconfig))
                install_crds(admin)
                world = SandboxWorld(
                    root=root / "world", api=admin, kubeconfig=api.kubeconfig, registry_url=registry_url
                )
            prefect_starting.result()
            flows_imported.result()
            how = "from the cached migrated database" if server.from_template else "first start: database migrated"
            say(f"      Prefect server ready in {server.ready_seconds:.1f}s ({how}); UI at {server.url}")
            (root / "world").mkdir(exist_ok=True)
            with world.running():
                where = {"argocd": "Argo CD Applications", "flux": "Flux Kustomizations"}[chosen.controller]
                say(f"[2/4] creating sandbox GitOps repositories, {where} and Deployments ...")
                made = [
                    world.create_app(name, strategy=strategy, delay_seconds=delay, forge=forge) for name in _names(apps)
                ]
                pipelines = root / "pipelines"
                pipelines.mkdir()
                for app in made:
                    shutil.copy(app.pipeline_file, pipelines / app.pipeline_file.name)
                if real:
                    world.wait_for_first_rollout(say)
                else:
                    _wait_for_first_rollout(made)
                for app in made:
                    say(f"      {app.name}: {chosen.start_promotion(app, registry_url)}")
                say(f"[3/4] running the nightly flow over {pipelines} ...\n")
                from flows.heartbeat import runs_without_the_wait
                from flows.nightly import nightly

                stop = threading.Event()
                approved: list[str] = []
                approver = threading.Thread(
                    target=_approve_paused_runs, args=(server.api_url, stop, approved), daemon=True
                )
                approver.start()
                merged: list[str] = []
                if forge is not None:
                    merger = threading.Thread(
                        target=_merge_open_pull_requests, args=(forge, made, stop, merged), daemon=True
                    )
                    merger.start()
                try:
                    with runs_without_the_wait():
                        state = nightly(pipelines_dir=str(pipelines), return_state=True)
                finally:
                    stop.set()
                    approver.join(timeout=5)
                ok = state.is_completed()
                _drain_prefect_logs()
                say(f"\n[4/4] summary\n{BANNER}")
                for app in made:
                    from sandbox.world import git

                    tags = git(app.origin, "tag", "--list", "--sort=creatordate")
                    say(f"{app.name}:")
                    say(f"  tags in origin:      {' '.join(tags.split())}")
                    for env in app.envs:
                        short = env.name.removeprefix(f"{app.name}-")
                        say(f"  {short + ' runs:':<21}{_running_image(world, app, short)}")
                    last = git(app.origin, "log", "-1", "--format=%s", "main")
                    say(f"  last commit on main: {last}")
                    note = git(app.origin, "notes", "--ref=promote", "list")
                    say(f"  evidence notes:      {len(note.splitlines())} (git notes --ref=promote show <commit>)")
                say(f"nightly run: {state.name} ({state.message or 'ok'})")
                say(f"approvals given on your behalf: {len(approved)}")
                if forge is not None:
                    say(f"pull requests merged on your behalf: {len(merged)} ({forge.url})")
                say(
                    "artifacts (each pipeline's board, a picture and a table of what runs where; audit records, each"
                    f" with its verifications and health checks): {server.url}/artifacts"
                )
                say(f"total time: {time.monotonic() - started:.1f}s")
                if keep:
                    say(f"\n--keep: the Prefect UI stays up at {server.url} and files in {root}; Ctrl-C to stop")
                    try:
                        while True:
                            time.sleep(1)
                    except KeyboardInterrupt:
                        pass
    finally:  # also when something failed: a demo leaves nothing behind unless asked to (--keep)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            say(f"cleaned up {root}")
        say(BANNER)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/sandbox",
        description="Run a full nightly promotion on a local sandbox (kube-apiserver, Prefect server, Git, the real "
        "Argo CD or Flux or a simulated one, health endpoint) and clean up afterwards.",
    )
    parser.add_argument("--apps", type=int, default=1, help="how many applications (pipelines) to promote")
    parser.add_argument("--delay", type=float, default=0.3, help="simulated controller delay per step (seconds)")
    parser.add_argument("--keep", action="store_true", help="keep the Prefect UI and files until Ctrl-C")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="tag",
        help="how versions move: " + "; ".join(f"{name}: {each.what}" for name, each in SCENARIOS.items()),
    )
    parser.add_argument(
        "--write",
        choices=("push", "pull-request"),
        default="push",
        help="how production's change reaches its branch: pushed, or as a pull request on a local Gitea that the "
        "demo merges on your behalf",
    )
    parser.add_argument(
        "--controllers",
        choices=("real", "simulated"),
        default=None,
        help="who deploys: the real Argo CD or Flux (per strategy) with the real controller-manager and a KWOK "
        "node, built on first use; or the simulator (sandbox/agent.py), which also plays states the real "
        "controllers cannot be forced into. Default: real, simulated with --write pull-request",
    )
    args = parser.parse_args(argv)
    if args.apps < 1:
        parser.error("--apps must be at least 1")
    on_real = scenario(args.strategy).on_real_controllers
    controllers: Controllers = args.controllers or ("real" if on_real and args.write == "push" else "simulated")
    if controllers == "real" and not on_real:
        parser.error(
            f"--controllers real runs the strategies {', '.join(REAL_STRATEGIES)}; {args.strategy} runs on "
            "--controllers simulated"
        )
    if controllers == "real" and args.write != "push":
        parser.error("--write pull-request runs on --controllers simulated")
    return run_demo(args.apps, args.keep, args.delay, args.strategy, args.write, controllers)


if __name__ == "__main__":
    sys.exit(main())
