"""A real cluster on loopback: kube-apiserver + etcd (:mod:`sandbox.apiserver`), the real kube-controller-manager
and kube-scheduler, KWOK playing the kubelet of one fake node, Flux's source-controller and kustomize-controller
with their upstream CRDs, and (``argocd=True``) Argo CD's application controller and repo server with redis and
the upstream Application and AppProject CRDs.

Nothing here writes a status: Deployments roll out because the controller-manager makes ReplicaSets and Pods,
the scheduler binds them to the KWOK node and KWOK moves them through the stages in ``sandbox/kwok/stages.yaml``;
Flux fetches Git over HTTP and applies what it finds. Tests judge what these controllers write.

The binaries come from ``hack/build-cluster-binaries kube kwok flux flux-crds [argocd]`` (built once per machine,
into a versioned cache); redis-server from Debian. Every process logs to ``<workdir>/logs/<component>.log``;
:meth:`RealCluster.log_tails` gives the last lines of each for a failure report.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
from kubernetes import client as k8s
from kubernetes.client import ApiException

from sandbox.apiserver import (
    BUILD_SCRIPT,
    REPO_ROOT,
    KubeBinaries,
    LocalKubeAPI,
    LocalKubeAPIError,
    TokenUser,
    apply_manifests,
    close_client,
    die_with_parent,
    free_ports,
    install_crds,
    run_forwarding_stderr,
)
from sandbox.patience import DEFAULT_OVERALL_SECONDS, Patience
from sandbox.patience import tail as log_tail

KWOK_DIR = Path(__file__).resolve().parent / "kwok"
KWOK_STAGES = KWOK_DIR / "stages.yaml"
KWOK_NODE = KWOK_DIR / "node.yaml"
NODE_NAME = "kwok-node-0"
FLUX_NAMESPACE = "flux-system"
COMPONENTS = ("kube", "kwok")
FLUX_COMPONENTS = ("flux", "flux-crds")  # built only where a cluster runs Flux (about 6 minutes cold)
ARGOCD_COMPONENT = "argocd"  # built only where a cluster runs Argo CD (3-8 minutes cold)
ARGOCD_NAMESPACE = "argocd"
_ARGOCD_PROGRAMS = {"argocd-repo-server", "argocd-application-controller"}
_STOP_GRACE_SECONDS = 10.0


class ClusterBinariesUnavailableError(LocalKubeAPIError):
    """The controllers are not built and could not be built here."""


@dataclass(frozen=True)
class ClusterBinaries:
    """Where the build script put each component (see ``hack/build-cluster-binaries``)."""

    kube: Path  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler
    kwok: Path  # kwok
    flux: Path | None = None  # source-controller, kustomize-controller
    flux_crds: Path | None = None  # their upstream CRDs
    argocd: Path | None = None  # argocd-slim, kustomize, git-verify-wrapper.sh, crds/ (hack/build-cluster-binaries)

    @property
    def apiserver(self) -> KubeBinaries:
        return KubeBinaries.in_directory(self.kube)

    def program(self, name: str) -> Path:
        where = {
            "kube-controller-manager": self.kube,
            "kube-scheduler": self.kube,
            "kwok": self.kwok,
            "source-controller": self.flux,
            "kustomize-controller": self.flux,
        }.get(name)
        if name in _ARGOCD_PROGRAMS and self.argocd is not None:
            return self.argocd / "argocd-slim"  # one binary, told what to be by ARGOCD_BINARY_NAME
        if name == "redis-server":
            return Path(shutil.which("redis-server") or "/usr/bin/redis-server")
        if where is None:
            raise KeyError(name)
        return where / name

    def missing(self) -> list[Path]:
        names = ["kube-controller-manager", "kube-scheduler", "kwok"]
        if self.flux is not None:
            names += ["source-controller", "kustomize-controller"]
        if self.argocd is not None:
            names += ["argocd-repo-server", "redis-server"]
        programs = [*self.apiserver.missing(), *(self.program(n) for n in names)]
        if self.argocd is not None:
            programs += [self.argocd / "kustomize", self.argocd / "git-verify-wrapper.sh"]
        return [p for p in programs if not (p.is_file() and os.access(p, os.X_OK))]

    @classmethod
    def ensure(cls, *, flux: bool = True, argocd: bool = False) -> ClusterBinaries:
        """Find the binaries, building what is missing (minutes per component, once per machine; progress on
        stderr). ``flux``: Flux's controllers and CRDs; ``argocd``: Argo CD (and Debian's redis-server must be
        installed). A cluster that runs only one of them builds only that one."""
        components = [*COMPONENTS, *(FLUX_COMPONENTS if flux else ()), *([ARGOCD_COMPONENT] if argocd else [])]
        if argocd and shutil.which("redis-server") is None:
            raise ClusterBinariesUnavailableError(
                "Argo CD needs redis-server (Debian: apt-get install redis-server); .ci/run installs it, and so does "
                "hack/sandbox when it runs as root (or run hack/sandbox --controllers simulated)"
            )
        returncode, stdout, stderr_tail = run_forwarding_stderr(["bash", str(BUILD_SCRIPT), *components], REPO_ROOT)
        lines = stdout.strip().splitlines()
        script = BUILD_SCRIPT.relative_to(REPO_ROOT)
        if returncode != 0 or len(lines) != len(components):
            tail = "\n".join(stderr_tail) or "(no output)"
            raise ClusterBinariesUnavailableError(
                f"the real controllers are not built and could not be built ({script} {' '.join(components)} "
                f"exited {returncode}). It needs Go 1.26+ (`go` on PATH) with access to the Go module proxy, "
                f"and caches them under ~/.cache/gitops-promote. Its last output:\n{tail}"
            )
        where = dict(zip(components, (Path(line) for line in lines), strict=True))
        found = cls(
            kube=where["kube"],
            kwok=where["kwok"],
            flux=where.get("flux"),
            flux_crds=where.get("flux-crds"),
            argocd=where.get(ARGOCD_COMPONENT),
        )
        if missing := found.missing():
            raise ClusterBinariesUnavailableError(
                f"{script} finished but these are missing or not executable: {', '.join(map(str, missing))}"
            )
        return found


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    handle: IO[bytes]


class RealCluster:
    """The API server and the real controllers, started in order, stopped in reverse. Use as a context manager.

    ``users`` are extra token users of the API server (for least-privilege tests), as for :class:`LocalKubeAPI`.
    ``flux=False`` leaves Flux out (its CRDs too). ``progress`` receives one line per step of the start.
    ``repo_server_tools``: programs Argo CD's repo server finds on its PATH besides kustomize (``helm``).
    """

    def __init__(
        self,
        *,
        binaries: ClusterBinaries,
        users: Iterable[TokenUser] = (),
        flux: bool = True,
        argocd: bool = False,
        startup_timeout: float = DEFAULT_OVERALL_SECONDS,
        progress: Callable[[str], None] = lambda _line: None,
        repo_server_tools: Sequence[Path] = (),
    ) -> None:
        self.binaries = binaries
        self.repo_server_tools = list(repo_server_tools)
        self.with_flux = flux
        if argocd and binaries.argocd is None:
            raise ClusterBinariesUnavailableError("argocd=True needs ClusterBinaries.ensure(argocd=True)")
        if flux and (binaries.flux is None or binaries.flux_crds is None):
            raise ClusterBinariesUnavailableError("flux=True needs ClusterBinaries.ensure(flux=True)")
        self.with_argocd = argocd
        self.api = LocalKubeAPI(users=users, binaries=binaries.apiserver, startup_timeout=startup_timeout)
        self.startup_timeout = startup_timeout
        self._progress = progress
        self._procs: list[_Process] = []
        self._health_urls: dict[str, str] = {}
        self.flux_storage_url: str | None = None
        self.timings: dict[str, float] = {}  # seconds from the start to each step

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group ``system:masters``), which the controllers use too."""
        return self.api.kubeconfig

    @property
    def logs_dir(self) -> Path:
        return self.api.workdir / "logs"

    def start(self) -> Self:
        began = time.monotonic()

        def step(what: str) -> None:
            self.timings[what] = round(time.monotonic() - began, 1)
            self._progress(f"{what} ({self.timings[what]:.1f}s)")

        atexit.register(self.stop)
        try:
            self.api.start()
            step("kube-apiserver ready")
            self._start_kube_controllers()
            admin = self.api.api_client()
            try:
                apply_manifests(admin, KWOK_NODE)
                if self.with_flux:
                    assert self.binaries.flux_crds is not None  # checked when the cluster was made
                    install_crds(admin, self.binaries.flux_crds, timeout=300, warm_up=False)
                    namespace = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=FLUX_NAMESPACE))
                    k8s.CoreV1Api(admin).create_namespace(namespace)
                    self._start_flux()
                if self.with_argocd:
                    self._prepare_argocd(admin)
                    self._start_argocd()
                step("controllers started")
                self._wait_until_ready(admin, began)
            finally:
                close_client(admin)
            ready = [", Flux ready" if self.with_flux else "", ", Argo CD ready" if self.with_argocd else ""]
            step("node Ready, controller-manager serving" + "".join(ready))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the controllers (SIGTERM, SIGKILL after a grace period), then the API server."""
        for process in reversed(self._procs):
            if process.proc.poll() is None:
                process.proc.terminate()
        for process in reversed(self._procs):
            try:
                process.proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait()
            process.handle.close()
        self._procs.clear()
        self.api.stop()
        atexit.unregister(self.stop)

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every component's log, for a failure report."""
        parts = []
        for name, path in self.log_files().items():
            parts.append(f"--- {name} ({path}) ---\n{log_tail(path, lines)}")
        return "\n".join(parts)

    def log_files(self) -> dict[str, Path]:
        files = {"kube-apiserver": self.api.apiserver_log, "etcd": self.api.etcd_log}
        return files | {p.name: p.log for p in self._procs}

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs]

    # --- internals ----------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = self.logs_dir / f"{name}.log"
        handle = log.open("ab")
        full_env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **(env or {})}
        for var in ("NO_PROXY", "no_proxy"):  # every component talks to 127.0.0.1 only
            full_env[var] = ",".join(filter(None, [full_env.get(var, ""), "127.0.0.1", "localhost"]))
        try:
            proc = subprocess.Popen(
                [str(self.binaries.program(name)), *argv],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=self.api.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        except BaseException:
            handle.close()
            raise
        self._procs.append(_Process(name, proc, log, handle))

    def _start_kube_controllers(self) -> None:
        kubeconfig = str(self.kubeconfig)
        auth = [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}"]
        auth.append(f"--authorization-kubeconfig={kubeconfig}")
        self._spawn(
            "kube-controller-manager",
            [
                *auth,
                "--leader-elect=false",
                "--secure-port=0",
                # This controller publishes the API server's serving CA as a ClusterTrustBundle; the sandbox's
                # self-signed serving certificate is no CA, so it would retry (and log) forever.
                "--controllers=*,-kube-apiserver-serving-clustertrustbundle-publisher-controller",
                f"--service-account-private-key-file={self.api.workdir / 'auth' / 'service-account.key'}",
                f"--root-ca-file={self.api.ca_file}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=2",
                "--concurrent-replicaset-syncs=2",
            ],
        )
        self._spawn("kube-scheduler", [*auth, "--leader-elect=false", "--secure-port=0"])
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kubeconfig}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.244.0.0/16",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )

    def _start_flux(self) -> None:
        storage, metrics_source, health_source, metrics_ks, health_ks = free_ports(5)
        storage_dir = self.api.workdir / "flux-storage"
        storage_dir.mkdir(exist_ok=True)
        self.flux_storage_url = f"http://127.0.0.1:{storage}"
        self._health_urls = {
            "source-controller": f"http://127.0.0.1:{health_source}/readyz",
            "kustomize-controller": f"http://127.0.0.1:{health_ks}/readyz",
        }
        common = ["--enable-leader-election=false", "--watch-all-namespaces=true", "--events-addr=", "--log-level=info"]
        env = {"RUNTIME_NAMESPACE": FLUX_NAMESPACE}
        self._spawn(
            "source-controller",
            [
                f"--storage-path={storage_dir}",
                f"--storage-addr=127.0.0.1:{storage}",
                f"--storage-adv-addr=127.0.0.1:{storage}",
                f"--metrics-addr=127.0.0.1:{metrics_source}",
                f"--health-addr=127.0.0.1:{health_source}",
                *common,
            ],
            env,
        )
        self._spawn(
            "kustomize-controller",
            [
                f"--metrics-addr=127.0.0.1:{metrics_ks}",
                f"--health-addr=127.0.0.1:{health_ks}",
                "--no-remote-bases=true",  # a test's kustomization must not reach out of the loopback Git server
                *common,
            ],
            env,
        )

    def _prepare_argocd(self, admin: k8s.ApiClient) -> None:
        """Argo CD's upstream CRDs, its namespace, and what its controller reads at start: argocd-cm (it exits
        without it), argocd-secret and the default AppProject."""
        assert self.binaries.argocd is not None
        install_crds(admin, self.binaries.argocd / "crds", timeout=300, warm_up=False)
        k8s.CoreV1Api(admin).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ARGOCD_NAMESPACE)))
        labels = {"app.kubernetes.io/part-of": "argocd"}
        apply_manifests(
            admin,
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "argocd-cm", "labels": {**labels, "app.kubernetes.io/name": "argocd-cm"}},
                    # Argo CD's default: a change reaches an Application only when something asks for a refresh
                    # (verification does) or after this poll, as in a real installation.
                    "data": {"timeout.reconciliation": "180s"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": "argocd-secret",
                        "labels": {**labels, "app.kubernetes.io/name": "argocd-secret"},
                    },
                    "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
                },
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "AppProject",
                    "metadata": {"name": "default"},
                    "spec": {"sourceRepos": ["*"], "destinations": [{"namespace": "*", "server": "*"}]},
                },
            ],
            namespace=ARGOCD_NAMESPACE,
        )

    def _start_argocd(self) -> None:
        """redis, the repo server and the application controller, on loopback, with a private HOME and TMPDIR;
        ``https://kubernetes.default.svc`` means this API server (ARGOCD_FAKE_IN_CLUSTER + KUBECONFIG)."""
        assert self.binaries.argocd is not None
        redis, repo, repo_metrics, controller_metrics = free_ports(4)
        home = self.api.workdir / "argocd"
        for sub in ("home", "ssh", "tls", "gpg", "tmp"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "gpg").chmod(0o700)
        self._health_urls |= {
            "argocd-repo-server": f"http://127.0.0.1:{repo_metrics}/healthz",
            "argocd-application-controller": f"http://127.0.0.1:{controller_metrics}/healthz",
        }
        self._spawn("redis-server", ["--bind", "127.0.0.1", "--port", str(redis), "--save", "", "--appendonly", "no"])
        env = {
            # The repo server runs `argocd` (as GIT_ASKPASS), git-verify-wrapper.sh and kustomize from PATH.
            "PATH": os.pathsep.join(
                [
                    str(self.binaries.argocd),
                    *(str(t.parent) for t in self.repo_server_tools),
                    os.environ.get("PATH", ""),
                ]
            ),
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "HOME": str(home / "home"),
            "TMPDIR": str(home / "tmp"),
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_SSH_DATA_PATH": str(home / "ssh"),
            "ARGOCD_TLS_DATA_PATH": str(home / "tls"),
            "ARGOCD_GNUPGHOME": str(home / "gpg"),
            "ARGOCD_ASK_PASS_SOCK": str(home / "askpass.sock"),
        }
        self._spawn(
            "argocd-repo-server",
            [
                "--port", str(repo), "--address", "127.0.0.1", "--disable-tls", "--client-ca-path", "",
                "--metrics-address", "127.0.0.1", "--metrics-port", str(repo_metrics),
                "--redis", f"127.0.0.1:{redis}", "--parallelismlimit", "2", "--loglevel", "info",
            ],
            {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
        )  # fmt: skip
        self._spawn(
            "argocd-application-controller",
            [
                "--kubeconfig", str(self.kubeconfig), "--namespace", ARGOCD_NAMESPACE,
                "--repo-server", f"127.0.0.1:{repo}", "--repo-server-plaintext", "--redis", f"127.0.0.1:{redis}",
                "--metrics-port", str(controller_metrics), "--status-processors", "2", "--operation-processors", "2",
                "--app-resync", "180", "--loglevel", "info",
            ],
            {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"},
        )  # fmt: skip

    def _wait_until_ready(self, admin: k8s.ApiClient, began: float) -> None:
        core = k8s.CoreV1Api(admin)
        patience = Patience(
            self.pids,
            [p.log for p in self._procs],
            overall_seconds=max(0.0, self.startup_timeout - (time.monotonic() - began)),
        )
        pending = {"node Ready", "default ServiceAccount", *self._health_urls}
        last: dict[str, str] = {}
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            while pending:
                for process in self._procs:
                    if process.proc.poll() is not None:
                        raise LocalKubeAPIError(
                            f"{process.name} exited with code {process.proc.returncode} while the cluster started; "
                            f"last lines of {process.log}:\n{log_tail(process.log)}"
                        )
                if "node Ready" in pending:
                    last["node Ready"] = _node_state(core)
                    if last["node Ready"] == "Ready":
                        pending.discard("node Ready")
                if "default ServiceAccount" in pending:
                    # The controller-manager's serviceaccount controller creates it: proof that it runs.
                    try:
                        core.read_namespaced_service_account("default", "default")
                        pending.discard("default ServiceAccount")
                    except ApiException as exc:
                        last["default ServiceAccount"] = f"HTTP {exc.status}"
                for name, url in self._health_urls.items():
                    if name in pending:
                        try:
                            answer = http.get(url)
                            if answer.status_code == 200:
                                pending.discard(name)
                            last[name] = f"/readyz answered {answer.status_code}"
                        except httpx.HTTPError as exc:
                            last[name] = f"/readyz: {type(exc).__name__}"
                if not pending:
                    return
                if (reason := patience.check()) is not None:
                    waiting = "; ".join(f"{name}: {last.get(name, 'no answer yet')}" for name in sorted(pending))
                    raise LocalKubeAPIError(f"the real cluster was {reason}, waiting for {waiting}\n{self.log_tails()}")
                time.sleep(0.2)


def _node_state(core: k8s.CoreV1Api) -> str:
    try:
        node: Any = core.read_node(NODE_NAME)
    except ApiException as exc:
        return f"HTTP {exc.status}"
    for condition in (node.status.conditions if node.status is not None else None) or []:
        if condition.type == "Ready":
            return "Ready" if condition.status == "True" else f"Ready={condition.status} ({condition.reason})"
    return "no Ready condition yet"
