"""A real kube-apiserver and etcd on 127.0.0.1, started the way controller-runtime's envtest starts them.

Nothing runs controllers: no scheduler, no controller-manager, no Argo CD, no Flux. Objects are validated,
stored, versioned, watched and authorized exactly as in a cluster, and tests write the status a controller
would have written (through ``/status`` where the resource has that subresource). The binaries come from
``hack/build-cluster-binaries``, which builds them once into a cache outside the repository.

Tokens are generated with :mod:`secrets` and written only to owner-readable files (the static token file,
kubeconfigs). They never appear on a command line, in a log or in a ``repr``.

Also a command for people: ``python -m sandbox.apiserver`` starts one and prints the kubeconfig path.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client import ApiException
from kubernetes.config import new_client_from_config

from sandbox.patience import DEFAULT_OVERALL_SECONDS, Patience
from sandbox.patience import tail as log_tail

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-cluster-binaries"
MANIFESTS_DIR = REPO_ROOT / "manifests"
CRD_DIR = MANIFESTS_DIR / "crds"
RBAC_DIR = MANIFESTS_DIR / "rbac"

ADMIN_USER = "admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
FIELD_MANAGER = "gitops-promote-sandbox"
BINARIES_DIR_ENV = "PROMOTE_KUBE_BIN_DIR"  # a directory with `etcd` and `kube-apiserver`: skips the build script

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}$")  # nothing the token file's CSV would need to quote
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,}$")
_DISCOVERY_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_STOP_GRACE_SECONDS = 10.0
# kube-apiserver's graceful shutdown outlasted the 10 s above at the end of the sandbox demo (its clients still
# connected), so the demo's cleanup took 10 s. Its state is in etcd, which stops cleanly after it, and the
# sandbox is thrown away: it gets 2 s, then SIGKILL.
_APISERVER_STOP_GRACE_SECONDS = 2.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_T = TypeVar("_T")


class LocalKubeAPIError(RuntimeError):
    """The local API server could not be started, or did not do what was asked in time."""


class KubeBinariesUnavailableError(LocalKubeAPIError):
    """etcd / kube-apiserver are not built and could not be built here."""


@dataclass(frozen=True)
class TokenUser:
    """A user of the API server's static token file. ``repr`` hides the token."""

    name: str
    token: str = field(repr=False)
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for value, what in [(self.name, "user name"), *((g, "group") for g in self.groups)]:
            if not _NAME_RE.fullmatch(value):
                raise ValueError(f"{what} {value!r} must match {_NAME_RE.pattern} (it goes into a CSV token file)")
        if not _TOKEN_RE.fullmatch(self.token):
            raise ValueError(f"the token of user {self.name!r} must be 16+ characters of [A-Za-z0-9._~+/=-]")

    @classmethod
    def generate(cls, name: str, groups: Iterable[str] = ()) -> TokenUser:
        """A user with a fresh random token."""
        return cls(name=name, token=secrets.token_urlsafe(32), groups=tuple(groups))


@dataclass(frozen=True)
class KubeBinaries:
    etcd: Path
    kube_apiserver: Path

    @classmethod
    def in_directory(cls, directory: Path) -> KubeBinaries:
        return cls(etcd=directory / "etcd", kube_apiserver=directory / "kube-apiserver")

    def missing(self) -> list[Path]:
        return [p for p in (self.etcd, self.kube_apiserver) if not (p.is_file() and os.access(p, os.X_OK))]


@dataclass(frozen=True)
class APIResource:
    """One resource as the server's discovery describes it (e.g. ``apps/v1 deployments``)."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    preferred: bool  # the group's preferred version

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.resource}"
        return f"{base}/{name}" if name is not None else base


class LocalKubeAPI:
    """etcd + kube-apiserver on free loopback ports, in a temporary directory. Use as a context manager.

    The admin user (group ``system:masters``) gets a generated token; ``users`` adds more token users (for
    example one with no groups, to test RBAC). Token users are fixed at start: the API server reads its token
    file once.
    """

    def __init__(
        self,
        *,
        users: Iterable[TokenUser] = (),
        binaries: KubeBinaries | None = None,
        workdir: Path | None = None,
        startup_timeout: float = DEFAULT_OVERALL_SECONDS,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        admin = TokenUser.generate(ADMIN_USER, groups=("system:masters",))
        self._users: dict[str, TokenUser] = {ADMIN_USER: admin}
        for user in users:
            if user.name in self._users:
                raise ValueError(f"token user {user.name!r} is given twice (or clashes with the built-in admin)")
            self._users[user.name] = user
        self._binaries = binaries
        self._requested_workdir = workdir
        self._workdir: Path | None = None
        self._owns_workdir = False
        self.startup_timeout = startup_timeout
        self._extra_args = tuple(extra_apiserver_args)
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []
        self._port: int | None = None
        self._etcd_url: str | None = None
        self._kubeconfig: Path | None = None
        self.started_at: datetime | None = None
        self.ready_seconds: float | None = None

    def __repr__(self) -> str:
        state = f"url={self.url!r}" if self._port is not None else "stopped"
        return f"<LocalKubeAPI {state} users={sorted(self._users)}>"

    # --- binaries -------------------------------------------------------------------------------------------

    @staticmethod
    def ensure_binaries() -> KubeBinaries:
        """Find the binaries, building them with ``hack/build-cluster-binaries kube`` if needed (minutes, once).

        ``$PROMOTE_KUBE_BIN_DIR`` names a directory that already holds them and skips the script.
        """
        override = os.environ.get(BINARIES_DIR_ENV)
        if override:
            binaries = KubeBinaries.in_directory(Path(override))
            if missing := binaries.missing():
                raise KubeBinariesUnavailableError(
                    f"${BINARIES_DIR_ENV}={override} lacks executable {', '.join(p.name for p in missing)}; "
                    f"unset it to build them with {BUILD_SCRIPT}"
                )
            return binaries
        if not BUILD_SCRIPT.is_file():
            raise KubeBinariesUnavailableError(f"{BUILD_SCRIPT} is missing: cannot build kube-apiserver and etcd")
        returncode, stdout, stderr_tail = run_forwarding_stderr(["bash", str(BUILD_SCRIPT), "kube"], cwd=REPO_ROOT)
        directory = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        built = KubeBinaries.in_directory(Path(directory)) if directory else None
        if returncode != 0 or built is None or built.missing():
            tail = "\n".join(stderr_tail) or "(no output)"
            raise KubeBinariesUnavailableError(
                "kube-apiserver and etcd are not built and could not be built "
                f"({BUILD_SCRIPT.relative_to(REPO_ROOT)} exited {returncode}). Install Go 1.25+ "
                "(https://go.dev/dl/, `go` on PATH) with access to the Go module proxy, then run "
                f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} (it caches them under ~/.cache/gitops-promote). "
                f"Its last output:\n{tail}"
            )
        return built

    # --- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start etcd and kube-apiserver and wait until ``/readyz`` answers 200. Idempotent."""
        if self._procs:
            return self
        binaries = self._binaries or self.ensure_binaries()
        if missing := binaries.missing():
            raise KubeBinariesUnavailableError(f"not executable: {', '.join(map(str, missing))}")
        self._binaries = binaries
        if self._requested_workdir is not None:
            self._workdir = self._requested_workdir
            self._workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="kube-sandbox-"))
            self._owns_workdir = True
        atexit.register(self.stop)
        self.started_at = datetime.now(UTC)
        began = time.monotonic()
        try:
            self._write_auth_files()
            for attempt in range(3):  # a free port can be taken between choosing it and binding it
                try:
                    self._launch(binaries)
                    # As long as etcd and the API server make progress (CPU, log lines), within startup_timeout.
                    patience = Patience(
                        lambda: [proc.pid for _, proc, _ in self._procs],
                        [self.etcd_log, self.apiserver_log],
                        overall_seconds=max(0.0, self.startup_timeout - (time.monotonic() - began)),
                    )
                    self._wait_until_ready(patience)
                    break
                except _PortTakenError:
                    self._stop_processes()
                    if attempt == 2:
                        raise LocalKubeAPIError("could not bind free loopback ports after 3 attempts") from None
            self.ready_seconds = time.monotonic() - began
            self._kubeconfig = self.kubeconfig_for(ADMIN_USER)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL after a grace period); remove the temp dir."""
        self._stop_processes()
        atexit.unregister(self.stop)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False
        self._port = None
        self._etcd_url = None
        self._kubeconfig = None

    # --- what callers use -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._require(self._port, 'url')}"

    @property
    def etcd_url(self) -> str:
        return self._require(self._etcd_url, "etcd_url")

    @property
    def workdir(self) -> Path:
        return self._require(self._workdir, "workdir")

    @property
    def ca_file(self) -> Path:
        """The serving certificate the API server generated for itself (leaf + its CA): trust this file."""
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group ``system:masters``)."""
        return self._require(self._kubeconfig, "kubeconfig")

    @property
    def apiserver_log(self) -> Path:
        return self.workdir / "logs" / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "logs" / "etcd.log"

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(self._users)

    def kubeconfig_for(self, user: str, token: str | None = None) -> Path:
        """Write a kubeconfig (mode 0600) for a token user; ``token`` defaults to the one the user was started with.

        A token the server does not know gives a kubeconfig that gets 401, which is handy for tests.
        """
        if token is None:
            if user not in self._users:
                raise ValueError(f"unknown token user {user!r}; this server knows {sorted(self._users)}")
            token = self._users[user].token
        known = self._users.get(user)
        suffix = "" if known is not None and secrets.compare_digest(known.token, token) else "-" + _digest(token)
        safe_user = re.sub(r"[^A-Za-z0-9._-]", "_", user)
        path = self.workdir / "kubeconfigs" / f"{safe_user}{suffix}.yaml"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sandbox", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": f"{user}@sandbox", "context": {"cluster": "sandbox", "user": user}}],
            "current-context": f"{user}@sandbox",
        }
        _write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path

    def api_client(self, user: str = ADMIN_USER) -> k8s.ApiClient:
        """A fresh ``kubernetes.client.ApiClient`` for a token user, built from that user's kubeconfig."""
        return new_client_from_config(config_file=str(self.kubeconfig_for(user)))

    # --- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise LocalKubeAPIError(f"LocalKubeAPI.{what} is only available while the server is running")
        return value

    def _write_auth_files(self) -> None:
        auth = self.workdir / "auth"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(
            auth / "service-account.key",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        )
        _write_private(
            auth / "service-account.pub",
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode(),
        )
        lines = []
        for user in self._users.values():
            row = f"{user.token},{user.name},{user.name}"
            lines.append(f'{row},"{",".join(user.groups)}"' if user.groups else row)
        _write_private(auth / "tokens.csv", "\n".join(lines) + "\n")

    def _launch(self, binaries: KubeBinaries) -> None:
        work = self.workdir
        (work / "logs").mkdir(parents=True, exist_ok=True)
        data = work / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)  # a retry after a port clash starts from scratch
        client_port, peer_port, secure_port = free_ports(3)
        self._etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=sandbox",
                f"--data-dir={data}",
                f"--listen-client-urls={self._etcd_url}",
                f"--advertise-client-urls={self._etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sandbox={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",  # throwaway data: no fsync makes every write much faster
            ],
            self.etcd_log,
            on_parent_death=signal.SIGTERM,
        )
        auth = work / "auth"
        self._port = secure_port
        self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self._etcd_url}",
                f"--secure-port={secure_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",  # else it looks for a non-loopback interface, absent offline
                # 1.37 refuses a loopback advertise address while it maintains the `kubernetes` Service's
                # endpoints; nothing here needs them.
                "--endpoint-reconciler-type=none",
                f"--cert-dir={work / 'certs'}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-key-file={auth / 'service-account.pub'}",
                f"--service-account-signing-key-file={auth / 'service-account.key'}",
                "--service-account-issuer=https://localhost",
                "--authorization-mode=RBAC",
                f"--token-auth-file={auth / 'tokens.csv'}",
                "--allow-privileged=true",
                *self._extra_args,
            ],
            self.apiserver_log,
            # SIGKILL: its graceful shutdown hangs retrying etcd, which dies at the same moment.
            on_parent_death=signal.SIGKILL,
        )

    def _spawn(self, name: str, argv: list[str], log: Path, *, on_parent_death: signal.Signals) -> None:
        env = dict(os.environ)
        for var in ("NO_PROXY", "no_proxy"):  # etcd's gRPC client honours proxy variables
            env[var] = ",".join(filter(None, [env.get(var, ""), "127.0.0.1", "localhost"]))
        log_file = log.open("ab")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them in order
                preexec_fn=die_with_parent(on_parent_death),
            )
        except BaseException:
            log_file.close()
            raise
        self._procs.append((name, proc, log_file))

    def _wait_until_ready(self, patience: Patience) -> None:
        headers = {"Authorization": f"Bearer {self._users[ADMIN_USER].token}"}
        last = "no answer yet"
        http: httpx.Client | None = None
        try:
            while True:
                for name, proc, _ in self._procs:
                    if proc.poll() is not None:
                        log = self.etcd_log if name == "etcd" else self.apiserver_log
                        tail = log_tail(log)
                        if "address already in use" in tail:
                            raise _PortTakenError(name)
                        raise LocalKubeAPIError(
                            f"{name} exited with code {proc.returncode} while starting; last lines of {log}:\n{tail}"
                        )
                if http is None and self.ca_file.is_file():
                    with contextlib.suppress(ssl.SSLError, OSError):  # the file may still be being written
                        http = httpx.Client(
                            verify=ssl.create_default_context(cafile=str(self.ca_file)), trust_env=False, timeout=5.0
                        )
                if http is not None:
                    try:
                        response = http.get(f"{self.url}/readyz", headers=headers)
                        if response.status_code == 200:
                            return
                        last = f"/readyz answered {response.status_code}: {response.text[-500:]}"
                    except httpx.HTTPError as exc:
                        last = f"/readyz: {type(exc).__name__}: {exc}"
                        http.close()  # the certificate file may have been read half-written: read it again
                        http = None
                if (reason := patience.check()) is not None:
                    tail = log_tail(self.apiserver_log)
                    settle = time.monotonic() + 3  # a very short timeout can beat the first log line: wait for it
                    while not tail and time.monotonic() < settle:
                        time.sleep(0.1)
                        tail = log_tail(self.apiserver_log)
                    raise LocalKubeAPIError(
                        f"kube-apiserver was {reason} ({last}); last lines of {self.apiserver_log}:\n{tail}"
                    )
                time.sleep(0.1)
        finally:
            if http is not None:
                http.close()

    def _stop_processes(self) -> None:
        for name, proc, log_file in reversed(self._procs):  # kube-apiserver first: it would complain about etcd
            if proc.poll() is None:
                proc.terminate()
                grace = _APISERVER_STOP_GRACE_SECONDS if name == "kube-apiserver" else _STOP_GRACE_SECONDS
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log_file.close()
        self._procs.clear()


class _PortTakenError(Exception):
    pass


# --- CRDs, manifests and namespaces through the API -----------------------------------------------------------


def flux_crds_dir() -> Path:
    """The upstream Flux CRDs (source- and kustomize-controller), as their module zips ship them: fetched once
    from the Go module proxy by ``hack/build-cluster-binaries flux-crds`` (checked against the pinned go.sum,
    nothing built) into the cache."""
    returncode, stdout, stderr_tail = run_forwarding_stderr(["bash", str(BUILD_SCRIPT), "flux-crds"], cwd=REPO_ROOT)
    directory = Path(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    if returncode != 0 or directory is None or not directory.is_dir():
        tail = "\n".join(stderr_tail) or "(no output)"
        raise KubeBinariesUnavailableError(
            f"the Flux CRDs could not be fetched ({BUILD_SCRIPT.relative_to(REPO_ROOT)} flux-crds exited "
            f"{returncode}): it needs Go (`go` on PATH) with access to the Go module proxy. Its last output:\n{tail}"
        )
    return directory


def install_crds(
    api_client: k8s.ApiClient,
    directories: Path | Sequence[Path] | None = None,
    *,
    timeout: float = 30.0,
    warm_up: bool = True,
) -> list[str]:
    """Apply every CRD in ``directories`` (server-side apply), wait until each one is Established, and warm it up.

    By default: Argo CD's (``manifests/crds``) and the upstream Flux CRDs (:func:`flux_crds_dir`).
    The first request to a new custom resource waits about a second for its watch cache to start; one list
    per CRD, all at once, pays that here instead of inside the first test that touches it (``warm_up=False``
    where a controller started next lists them anyway).
    Returns the CRD names. Safe to call again: applying the same manifests changes nothing.
    """
    if directories is None:
        directories = [CRD_DIR, flux_crds_dir()]
    sources = [directories] if isinstance(directories, Path) else list(directories)
    documents = []
    for directory in sources:
        found = load_manifests(directory)
        if not found:
            raise LocalKubeAPIError(f"no CRD manifests in {directory}")
        for doc in found:
            if doc.get("kind") != "CustomResourceDefinition":
                kind = doc.get("kind")
                raise LocalKubeAPIError(f"{directory} holds a {kind!r}; only CustomResourceDefinitions belong there")
        documents += found
    apply_manifests(api_client, documents)
    names = [str(doc["metadata"]["name"]) for doc in documents]
    wait_for_crds_established(api_client, names, timeout=timeout)
    if not warm_up:
        return names
    paths = []
    for doc in documents:
        spec = doc["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        paths.append(f"/apis/{spec['group']}/{version}/{spec['names']['plural']}")
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        list(pool.map(lambda path: _request(api_client, "GET", path), paths))
    return names


def wait_for_crds_established(api_client: k8s.ApiClient, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Watch CustomResourceDefinitions until every named one has condition ``Established=True``."""
    api = k8s.ApiextensionsV1Api(api_client)
    pending = set(names)
    deadline = time.monotonic() + timeout

    def established(crd: k8s.V1CustomResourceDefinition) -> bool:
        conditions = crd.status.conditions if crd.status is not None else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    listing = api.list_custom_resource_definition()
    pending -= {crd.metadata.name for crd in listing.items if crd.metadata is not None and established(crd)}
    resource_version = listing.metadata.resource_version if listing.metadata is not None else None
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKubeAPIError(f"CRDs not Established after {timeout:.0f}s: {', '.join(sorted(pending))}")
        stream = watch.Watch()
        for event in stream.stream(
            api.list_custom_resource_definition,
            resource_version=resource_version,
            timeout_seconds=max(1, int(remaining)),
        ):
            if event is None or event["type"] == "BOOKMARK":
                continue
            crd = event["object"]
            if crd.metadata is not None:
                resource_version = crd.metadata.resource_version
                if established(crd):
                    pending.discard(str(crd.metadata.name))
            if not pending:
                break  # leaving the generator closes the watch connection


def load_manifests(source: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file, or of every ``*.yaml``/``*.yml`` in a directory (sorted); empty ones skipped."""
    files = sorted([*source.glob("*.yaml"), *source.glob("*.yml")]) if source.is_dir() else [source]
    documents: list[dict[str, Any]] = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                raise ValueError(f"{path}: every YAML document must be a Kubernetes object with apiVersion and kind")
            documents.append(doc)
    return documents


def apply_manifests(
    api_client: k8s.ApiClient,
    manifests: Path | Iterable[Mapping[str, Any]],
    *,
    namespace: str | None = None,
    field_manager: str = FIELD_MANAGER,
) -> list[dict[str, Any]]:
    """Server-side apply (``kubectl apply --server-side --force-conflicts``) of objects, or of a file/directory.

    Namespaced objects without ``metadata.namespace`` go to ``namespace``. Returns the objects as stored.
    """
    documents = load_manifests(manifests) if isinstance(manifests, Path) else [dict(m) for m in manifests]
    resources = {(r.api_version, r.kind): r for r in discover_resources(api_client)}
    applied: list[dict[str, Any]] = []
    for doc in documents:
        meta = dict(doc.get("metadata") or {})
        name = meta.get("name")
        resource = resources.get((doc["apiVersion"], doc["kind"]))
        if resource is None:
            raise LocalKubeAPIError(f"the server does not serve {doc['apiVersion']} {doc['kind']} (object {name!r})")
        if not name:
            raise ValueError(f"a {doc['kind']} without metadata.name cannot be applied")
        target_ns = None
        if resource.namespaced:
            target_ns = meta.get("namespace") or namespace
            if not target_ns:
                raise ValueError(f"{doc['kind']} {name!r} is namespaced: give metadata.namespace or namespace=")
            meta["namespace"] = target_ns
        body = {**doc, "metadata": meta}
        applied.append(
            _request(
                api_client,
                "PATCH",
                resource.path(target_ns, name),
                query={"fieldManager": field_manager, "force": "true"},
                body=body,
                content_type="application/apply-patch+yaml",
            )
        )
    return applied


def discover_resources(api_client: k8s.ApiClient) -> list[APIResource]:
    """Every resource the server serves, from aggregated discovery (two requests), subresources left out."""
    found: list[APIResource] = []
    for root in ("/api", "/apis"):
        document = _request(api_client, "GET", root, accept=_DISCOVERY_ACCEPT)
        if document.get("kind") != "APIGroupDiscoveryList":
            raise LocalKubeAPIError(f"GET {root} did not return aggregated discovery (got {document.get('kind')!r})")
        for group in document.get("items") or []:
            group_name = (group.get("metadata") or {}).get("name", "")
            for index, version in enumerate(group.get("versions") or []):
                for res in version.get("resources") or []:
                    found.append(
                        APIResource(
                            group=group_name,
                            version=version["version"],
                            resource=res["resource"],
                            kind=(res.get("responseKind") or {}).get("kind", ""),
                            namespaced=res.get("scope") == "Namespaced",
                            verbs=frozenset(res.get("verbs") or ()),
                            preferred=index == 0,
                        )
                    )
    return found


def delete_namespace(api_client: k8s.ApiClient, name: str) -> None:
    """Delete a namespace and everything in it, doing the namespace controller's job (nothing runs it here).

    Without it a deleted namespace stays ``Terminating`` forever and its objects stay listable cluster-wide.
    Steps: mark the namespace deleted; delete every namespaced collection in it; drop finalizers that would
    wait for a controller; finalize the namespace; delete it for good.
    """
    core = k8s.CoreV1Api(api_client)
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    for resource in discover_resources(api_client):
        if not (resource.namespaced and resource.preferred and "deletecollection" in resource.verbs):
            continue
        try:
            deleted = _request(api_client, "DELETE", resource.path(name))
        except ApiException as exc:
            if exc.status in (404, 405):
                continue
            raise
        for item in (deleted or {}).get("items") or []:
            meta = item.get("metadata") or {}
            if meta.get("finalizers"):
                with contextlib.suppress(ApiException):
                    _request(
                        api_client,
                        "PATCH",
                        resource.path(name, meta["name"]),
                        body={"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json",
                    )
    try:
        namespace = _request(api_client, "GET", f"/api/v1/namespaces/{name}")
        namespace.setdefault("spec", {})["finalizers"] = []
        _request(api_client, "PUT", f"/api/v1/namespaces/{name}/finalize", body=namespace)
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _request(
    api_client: k8s.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str | None = None,
    accept: str = "application/json",
) -> Any:
    """A raw call through the client's own connection pool and credentials; JSON in, JSON out."""
    raw: Any = api_client  # the typed stubs do not describe the generator's low-level request methods
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    request = raw.param_serialize(
        method=method,
        resource_path=path,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = raw.call_api(*request)
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    return json.loads(data) if data else None


# --- small helpers ---------------------------------------------------------------------------------------------


def close_client(api_client: k8s.ApiClient) -> None:
    closer: Any = api_client  # ApiClient.close() exists; the stubs do not list it
    closer.close()


def die_with_parent(signum: signal.Signals) -> Callable[[], None] | None:
    """On Linux, started from the main thread: have the kernel signal the child when this process dies.

    That covers what no ``finally`` or ``atexit`` can: a SIGKILLed test run or a crashed interpreter would
    otherwise leave etcd and kube-apiserver running. The signal fires when the *thread* that started the
    child exits, hence main thread only (it exits with the process).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child should only call it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signum))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return set_parent_death_signal


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def run_forwarding_stderr(argv: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run a command; its stderr goes on to ours live (a first build takes minutes) and its tail is kept."""
    tail: deque[str] = deque(maxlen=20)
    try:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        return 127, "", [str(exc)]

    def forward() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip())
            sys.stderr.write(line)

    with proc:  # closes both pipes
        forwarder = threading.Thread(target=forward, daemon=True)
        forwarder.start()
        stdout = proc.stdout.read() if proc.stdout is not None else ""
        returncode = proc.wait()
        forwarder.join()
    return returncode, stdout, list(tail)


# --- python -m sandbox.apiserver ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.apiserver",
        description="Run a local kube-apiserver + etcd (no controllers) with the Argo CD and Flux CRDs until Ctrl-C.",
    )
    parser.add_argument(
        "--workdir", type=Path, help="put logs, certificates and kubeconfigs here and keep them (default: a temp dir)"
    )
    parser.add_argument(
        "--user", action="append", default=[], metavar="NAME", help="extra token user without groups (repeatable)"
    )
    parser.add_argument("--no-crds", action="store_true", help="do not install the Argo CD / Flux CRDs")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up exactly like Ctrl-C, also during startup

    signal.signal(signal.SIGTERM, interrupt)
    users = [TokenUser.generate(name) for name in args.user]
    try:
        with LocalKubeAPI(users=users, workdir=args.workdir) as api:
            if not args.no_crds:
                client = api.api_client()
                try:
                    install_crds(client)
                finally:
                    close_client(client)
            print(f"kube-apiserver {api.url} ready in {api.ready_seconds:.1f}s (logs in {api.workdir / 'logs'})")
            print(f"export KUBECONFIG={api.kubeconfig}")
            for user in users:
                print(f"kubeconfig for {user.name}: {api.kubeconfig_for(user.name)}")
            print("Ctrl-C stops it.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped.")
    except LocalKubeAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
