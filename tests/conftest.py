"""Shared fixtures: a real kube-apiserver + etcd for the whole session, a fresh namespace per test.

Prefect is pointed at a throwaway home before anything can import it (none of the imports below does):
tests never read or write ~/.prefect, never send analytics, and never talk to a Prefect server or
Prefect Cloud configured in the environment of whoever runs them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.config import new_client_from_config

from sandbox.apiserver import (
    RBAC_DIR,
    KubeBinaries,
    KubeBinariesUnavailableError,
    LocalKubeAPI,
    TokenUser,
    apply_manifests,
    delete_namespace,
    install_crds,
)
from sandbox.cluster import ARGOCD_NAMESPACE, ClusterBinaries, ClusterBinariesUnavailableError, RealCluster
from sandbox.gitea import Gitea
from sandbox.prefect_server import PrefectServer, free_port
from sandbox.world import SandboxWorld
from tasks import informer

_PREFECT_HOME = tempfile.mkdtemp(prefix="promote-tests-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
for _inherited in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
    os.environ.pop(_inherited, None)
# Prefect reads its settings once, at import, and threads do not see temporary_settings(): the session's
# server gets its port now, so every thread of every test talks to it (never to an ephemeral server).
_PREFECT_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PREFECT_PORT}/api"
os.environ["PREFECT_UI_URL"] = f"http://127.0.0.1:{_PREFECT_PORT}"

VERIFIER_USER = "verifier"  # a token user with no groups and no bindings: tests grant it what they test


_SERVERS = pytest.StashKey[dict[str, object]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Find (or build, minutes, once per machine) kube-apiserver and etcd, then start the session's API server
    and Prefect server side by side, before the first test runs.

    Here rather than in the fixtures: a first build, or a start on a busy machine (minutes at a load of 15),
    outlasts the per-test timeout, and its progress should reach the terminal. Each start waits as long as
    the server makes progress (sandbox/patience.py). A failure is kept and reported by the fixture as a
    failure of each test that needs it.
    """
    uses = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if session.config.option.collectonly or not uses & {"kube_api", "prefect_api", "real_cluster", "gitea"}:
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    servers: dict[str, object] = {}
    session.config.stash[_SERVERS] = servers
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():

        def say(line: str) -> None:
            print(f"\n==> {line}", file=sys.stderr, flush=True)

        starts: list[threading.Thread] = []
        if "kube_api" in uses:
            try:
                binaries: KubeBinaries | KubeBinariesUnavailableError = LocalKubeAPI.ensure_binaries()
            except KubeBinariesUnavailableError as exc:
                binaries = exc
            starts.append(threading.Thread(target=_start_kube, args=(servers, binaries)))
        if "real_cluster" in uses:
            try:
                cluster_binaries: ClusterBinaries | ClusterBinariesUnavailableError = ClusterBinaries.ensure(
                    argocd=True
                )
            except ClusterBinariesUnavailableError as exc:
                cluster_binaries = exc
            starts.append(threading.Thread(target=_start_real_cluster, args=(servers, cluster_binaries, say)))
        if "prefect_api" in uses:
            starts.append(threading.Thread(target=_start_prefect, args=(servers, say)))
        if "gitea" in uses:
            starts.append(threading.Thread(target=_start_gitea, args=(servers, say)))
        for thread in starts:
            thread.start()
        for thread in starts:
            thread.join()


def _start_kube(servers: dict[str, object], binaries: KubeBinaries | KubeBinariesUnavailableError) -> None:
    if isinstance(binaries, KubeBinariesUnavailableError):
        servers["kube_api"] = f"the kube tests need kube-apiserver and etcd: {binaries}"
        return
    # No watch cache: watches are served from etcd, so compacting etcd makes an old resourceVersion
    # answer 410 Gone on demand (test_verify's watch-expiry test); the cache would hide it for minutes.
    api = LocalKubeAPI(
        users=[TokenUser.generate(VERIFIER_USER)], binaries=binaries, extra_apiserver_args=["--watch-cache=false"]
    )
    try:
        api.start()
        admin = new_client_from_config(config_file=str(api.kubeconfig))
        try:
            install_crds(admin, timeout=300)
        finally:
            _close(admin)
    except Exception as exc:  # reported by the fixture, test by test
        api.stop()
        servers["kube_api"] = f"the session's kube-apiserver did not start: {exc}"
        return
    servers["kube_api"] = api


def _start_real_cluster(
    servers: dict[str, object],
    binaries: ClusterBinaries | ClusterBinariesUnavailableError,
    say: Callable[[str], None],
) -> None:
    if isinstance(binaries, ClusterBinariesUnavailableError):
        servers["real_cluster"] = f"the real-controller tests need their binaries: {binaries}"
        return
    cluster = RealCluster(
        binaries=binaries,
        users=[TokenUser.generate(VERIFIER_USER)],
        argocd=True,
        progress=lambda line: say(f"real cluster: {line}"),
    )
    try:
        cluster.start()
        admin = cluster.api.api_client()
        try:
            apply_manifests(admin, RBAC_DIR / "verifier-role.yaml")
            # The Applications live in Argo CD's namespace: the verifier reads them there, as it would in production.
            apply_manifests(admin, [_verifier_binding(ARGOCD_NAMESPACE)])
        finally:
            _close(admin)
    except Exception as exc:  # reported by the fixture, test by test
        cluster.stop()
        servers["real_cluster"] = (
            f"the real cluster (API server, controller-manager, scheduler, KWOK, Flux) did not start: {exc}"
        )
        return
    servers["real_cluster"] = cluster


def _start_prefect(servers: dict[str, object], say: Callable[[str], None]) -> None:
    server = PrefectServer(home=Path(_PREFECT_HOME) / "server", port=_PREFECT_PORT, progress=say)
    try:
        server.start()
    except Exception as exc:  # reported by the fixture, test by test
        servers["prefect_api"] = f"the session's Prefect server did not start: {exc}"
        return
    servers["prefect_api"] = server


def _start_gitea(servers: dict[str, object], say: Callable[[str], None]) -> None:
    forge = Gitea(Path(tempfile.mkdtemp(prefix="promote-tests-gitea-")), progress=lambda line: say(f"gitea: {line}"))
    try:
        forge.start()  # builds Gitea first when this machine has not (minutes, once; progress on stderr)
    except Exception as exc:  # reported by the fixture, test by test
        servers["gitea"] = f"the pull-request tests need a real Gitea: {exc}"
        return
    servers["gitea"] = forge


def pytest_sessionfinish(session: pytest.Session) -> None:
    if "prefect" in sys.modules:  # flush what tests logged and emitted while the server is still up
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)
    for server in session.config.stash.get(_SERVERS, {}).values():
        if isinstance(server, LocalKubeAPI | PrefectServer | RealCluster | Gitea):
            server.stop()


def _started(config: pytest.Config, name: str) -> Any:
    found = config.stash.get(_SERVERS, {}).get(name)
    if found is None:
        pytest.fail(f"{name} was not started at collection (run the tests through pytest)", pytrace=False)
    if isinstance(found, str):
        pytest.fail(found, pytrace=False)
    return found


def _close(api_client: k8s.ApiClient) -> None:
    informer.stop_all(api_client)  # a shared watch lingers after its last wait (tasks/informer.py)
    closer: Any = api_client  # ApiClient.close() exists; the typed stubs do not list it
    closer.close()


@pytest.fixture(scope="session")
def kube_api(pytestconfig: pytest.Config) -> LocalKubeAPI:
    """etcd + kube-apiserver for the session, with the Argo CD and Flux CRDs installed (no controllers run).

    Never skips: without the binaries (and without Go to build them) every test using it fails, saying so.
    """
    api: LocalKubeAPI = _started(pytestconfig, "kube_api")
    return api


@pytest.fixture
def kube_client(kube_api: LocalKubeAPI) -> Iterator[k8s.ApiClient]:
    """An admin (``system:masters``) ``ApiClient`` built from the sandbox's kubeconfig file."""
    api_client = new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield api_client
    _close(api_client)


@pytest.fixture(scope="session")
def verifier_user() -> str:
    """The name of the token user behind ``verifier_client`` (for RoleBinding subjects)."""
    return VERIFIER_USER


@pytest.fixture
def verifier_client(kube_api: LocalKubeAPI) -> Iterator[k8s.ApiClient]:
    """An ``ApiClient`` for the ``verifier`` token user, who has no groups and no bindings of its own."""
    api_client = new_client_from_config(config_file=str(kube_api.kubeconfig_for(VERIFIER_USER)))
    yield api_client
    _close(api_client)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client: k8s.ApiClient) -> Iterator[str]:
    """A namespace of its own for each test, deleted afterwards with everything in it."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:48].strip("-")
    name = f"t-{slug}-{secrets.token_hex(3)}"
    k8s.CoreV1Api(kube_client).create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"gitops-promote.test/pytest": "true"}))
    )
    yield name
    delete_namespace(kube_client, name)


@pytest.fixture(scope="session")
def prefect_api(pytestconfig: pytest.Config) -> str:
    """A real ``prefect server start`` for the session on the port PREFECT_API_URL already names."""
    server: PrefectServer = _started(pytestconfig, "prefect_api")
    assert os.environ["PREFECT_API_URL"] == server.api_url
    return server.api_url


@pytest.fixture(scope="session")
def gitea(pytestconfig: pytest.Config) -> Gitea:
    """A real Gitea for the session (sandbox/gitea.py), with an admin user and its token; tests make their own
    repositories in it."""
    forge: Gitea = _started(pytestconfig, "gitea")
    return forge


@pytest.fixture
def world(
    kube_api: LocalKubeAPI, kube_client: k8s.ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SandboxWorld]:
    """A running sandbox (simulated Argo CD + health endpoint) on the session's API server; apps made with
    ``world.create_app(unique_name)`` get their own Git origin, namespaces and pipeline file."""
    monkeypatch.setenv("PROMOTE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROMOTE_LOCK_TTL_SECONDS", "3")
    (tmp_path / "world").mkdir()
    sandbox = SandboxWorld(root=tmp_path / "world", api=kube_client, kubeconfig=kube_api.kubeconfig)
    with sandbox.running():
        agent = sandbox.agent
        yield sandbox
    assert agent is not None and not agent.errors, f"the simulated controller hit errors: {agent and agent.errors}"


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


# --- the real cluster: kube-controller-manager, kube-scheduler, KWOK and Flux (sandbox/cluster.py) -------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def real_cluster(pytestconfig: pytest.Config) -> RealCluster:
    """kube-apiserver + etcd with the real controller-manager, scheduler, KWOK (one fake node), Flux's source- and
    kustomize-controller and Argo CD's application controller and repo server, for the session. Built on first
    use (hack/build-cluster-binaries)."""
    cluster: RealCluster = _started(pytestconfig, "real_cluster")
    return cluster


@pytest.fixture
def real_admin(real_cluster: RealCluster) -> Iterator[k8s.ApiClient]:
    """An admin (``system:masters``) client of the real cluster."""
    api_client = real_cluster.api.api_client()
    yield api_client
    _close(api_client)


def _verifier_binding(namespace: str) -> dict[str, Any]:
    """The verifier user bound to manifests/rbac/verifier-role.yaml in ``namespace``, nothing more."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "gitops-promote-verifier", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gitops-promote-verifier"},
        "subjects": [{"kind": "User", "name": VERIFIER_USER, "apiGroup": "rbac.authorization.k8s.io"}],
    }


@contextlib.contextmanager
def make_real_namespace(
    request: pytest.FixtureRequest, cluster: RealCluster, admin: k8s.ApiClient, name: str, *, show_logs: bool = True
) -> Iterator[str]:
    """A namespace of the real cluster where the verifier user may do what manifests/rbac/verifier-role.yaml
    grants (a RoleBinding), nothing more. When the test fails, the last lines of every component's log are
    printed (shown in the report) unless ``show_logs`` is off (another namespace of the test shows them). Deleted
    afterwards: the real namespace controller empties it."""
    core = k8s.CoreV1Api(admin)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    apply_manifests(admin, [_verifier_binding(name)])
    try:
        yield name
    finally:
        if show_logs and request.node.stash.get(_CALL_FAILED, False):
            print(f"\n=== the real cluster's logs (namespace {name}) ===\n{cluster.log_tails()}")
        with contextlib.suppress(k8s.ApiException):
            core.delete_namespace(name)


@pytest.fixture
def real_namespace(
    request: pytest.FixtureRequest, real_cluster: RealCluster, real_admin: k8s.ApiClient
) -> Iterator[str]:
    """A namespace of the real cluster for one test, with the verifier bound to its role (make_real_namespace)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    with make_real_namespace(request, real_cluster, real_admin, f"r-{slug}-{secrets.token_hex(3)}") as name:
        yield name


@pytest.fixture
def real_verifier(real_cluster: RealCluster) -> Iterator[k8s.ApiClient]:
    """A client of the real cluster as the ``verifier`` token user (least privilege: see ``real_namespace``)."""
    api_client = real_cluster.api.api_client(VERIFIER_USER)
    yield api_client
    _close(api_client)
