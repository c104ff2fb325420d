"""SIMULATOR. Plays Argo CD / Flux (and the Deployment controller) for the sandbox and the tests.

Nothing in ``flows/``, ``tasks/`` or ``promote/`` imports this module. It watches what each simulated
environment tracks in a sandbox Git origin and, after a configurable delay, writes the status transitions
the real controllers would write, through the real Kubernetes API:

* Argo CD Application (no status subresource: the whole object is updated): OutOfSync -> operation
  Running -> Synced at X with a Succeeded operation -> Progressing -> Healthy, ``reconciledAt`` refreshed.
* Flux Kustomization (status subresource): echoes ``reconcile.fluxcd.io/requestedAt`` into
  ``lastHandledReconcileAt``, Ready=Unknown/Progressing -> Ready=True with ``lastAppliedRevision``.
* Deployments: the container image changes (a spec change: generation moves), then status through
  ``/status``: observedGeneration, updated/ready/available replicas, with the new ReplicaSet's Ready pods
  (:mod:`sandbox.rollouts`).

It can be told to fail an environment: ``degraded``, ``stalled``, ``stuck`` or ``progress-deadline``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from ruamel.yaml import YAML

from sandbox.rollouts import run_pods

Failure = Literal["degraded", "stalled", "stuck", "progress-deadline"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class SimDeployment:
    namespace: str
    name: str
    container: str = "app"
    image_repository: str = "registry.local/app"
    replicas: int = 2
    # Where the image tag comes from at the revision: an overlay (file + images[] name) or, when None, the
    # version of the tag the environment tracks (v1.2.3 -> registry.local/app:1.2.3).
    overlay_file: str | None = None
    overlay_image: str = "app"
    manifest_file: str | None = None  # or a plain Deployment manifest (image-policy setters write its image)
    values_file: str | None = None  # or Helm values: image.repository and image.tag (as the chart renders them)


@dataclass
class SimEnvironment:
    """One environment as its GitOps controller sees it."""

    kind: Literal["argocd", "flux"]
    name: str
    namespace: str
    branch: str = "main"
    application_file: str | None = None  # Argo CD: the Application manifest in Git holding targetRevision
    source_index: int | None = None
    deployments: list[SimDeployment] = field(default_factory=list)
    delay_seconds: float = 0.2
    failure: Failure | None = None
    failure_ref: str | None = None  # fail only when rolling out this ref or image tag ("v1.0.1"); None: always
    applied: str | None = None  # the commit last rolled out
    origin: Path | None = None  # this environment's Git origin (default: the agent's)


_git_cpu = [0.0]  # CPU-s of the agent's git processes: the bench charges them to the stand-in, not the product
_git_cpu_lock = threading.Lock()


def _git(origin: Path, *args: str) -> str:
    argv = ["git", "-C", str(origin), *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()  # small: one object or ref
        # Reaped here, not by Popen, to read what this one child used (a shared counter would mix threads').
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    with _git_cpu_lock:
        _git_cpu[0] += usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return out.strip()


def git_cpu_seconds() -> float:
    """CPU-s every agent's git processes used so far in this process."""
    with _git_cpu_lock:
        return _git_cpu[0]


class GitOpsAgent:
    """Run with ``start()``/``stop()`` or as a context manager; ``envs`` may be changed while running."""

    def __init__(self, api: client.ApiClient, origin: Path, envs: list[SimEnvironment], poll_seconds: float = 0.05):
        self.api = api
        self.origin = origin
        self.envs = envs
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tokens: dict[str, str] = {}
        self._stamps: dict[str, tuple[int, ...]] = {}
        self.errors: list[str] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> GitOpsAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gitops-agent", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The agent thread's id in the OS (the bench leaves its CPU out of the client's)."""
        return self._thread.native_id if self._thread is not None else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for env in list(self.envs):
                try:
                    self.step(env)
                except (ApiException, subprocess.CalledProcessError, ValueError, KeyError) as exc:
                    message = f"{env.name}: {type(exc).__name__}: {exc}"
                    if not self.errors or self.errors[-1] != message:
                        self.errors.append(message)
            self._stop.wait(self.poll_seconds)

    # --- what Git says -----------------------------------------------------------------------------

    def desired_revision(self, env: SimEnvironment) -> tuple[str, str] | None:
        """(commit, ref name) the environment should run, or None if Git does not say yet."""
        if env.application_file is not None:
            text = _git(env.origin or self.origin, "show", f"{env.branch}:{env.application_file}")
            doc = YAML(typ="safe").load(text)
            spec = doc["spec"]
            source = spec["sources"][env.source_index] if env.source_index is not None else spec["source"]
            ref = str(source["targetRevision"])
        else:
            ref = env.branch
        try:
            return _git(env.origin or self.origin, "rev-parse", "--verify", f"{ref}^{{commit}}"), ref
        except subprocess.CalledProcessError:
            return None

    def image_for(self, env: SimEnvironment, deployment: SimDeployment, commit: str, ref: str) -> str:
        if deployment.manifest_file is not None:
            doc = YAML(typ="safe").load(_git(env.origin or self.origin, "show", f"{commit}:{deployment.manifest_file}"))
            containers = doc["spec"]["template"]["spec"]["containers"]
            chosen = [c for c in containers if c.get("name") == deployment.container] or containers
            return str(chosen[0]["image"])
        if deployment.values_file is not None:
            doc = YAML(typ="safe").load(_git(env.origin or self.origin, "show", f"{commit}:{deployment.values_file}"))
            image = doc.get("image") or {}
            return f"{image.get('repository', deployment.image_repository)}:{image.get('tag', 'latest')}"
        if deployment.overlay_file is not None:
            doc = YAML(typ="safe").load(_git(env.origin or self.origin, "show", f"{commit}:{deployment.overlay_file}"))
            for image in doc.get("images") or []:
                if image.get("name") == deployment.overlay_image:
                    repo = image.get("newName") or deployment.image_repository
                    if image.get("digest"):
                        return f"{repo}@{image['digest']}"
                    return f"{repo}:{image.get('newTag', 'latest')}"
        return f"{deployment.image_repository}:{ref.removeprefix('v')}"

    # --- the controller loop -----------------------------------------------------------------------

    def _refs_stamp(self, env: SimEnvironment) -> tuple[int, ...]:
        """Changes when the origin's branch or packed refs change: Git is read only after a push."""
        origin = env.origin or self.origin
        stamps = []
        for path in (origin / "refs" / "heads" / env.branch, origin / "packed-refs"):
            try:
                stamps.append(path.stat().st_mtime_ns)
            except FileNotFoundError:
                stamps.append(0)
        return tuple(stamps)

    def step(self, env: SimEnvironment) -> None:
        if env.kind == "flux":
            self._echo_flux_reconcile(env)
        stamp = self._refs_stamp(env)
        if env.applied is not None and self._stamps.get(env.name) == stamp:
            return
        self._stamps[env.name] = stamp
        desired = self.desired_revision(env)
        if desired is None or desired[0] == env.applied:
            return
        commit, ref = desired
        previous, env.applied = env.applied, commit
        failing = env.failure if self._fails_at(env, commit, ref) else None
        try:
            if env.kind == "argocd":
                self._argocd_rollout(env, commit, ref, failing)
            else:
                self._flux_rollout(env, commit, ref, failing)
        except BaseException:
            env.applied, self._stamps[env.name] = previous, ()  # roll it out again on the next round
            raise

    def _fails_at(self, env: SimEnvironment, commit: str, ref: str) -> bool:
        if env.failure is None or env.failure_ref in (None, ref):
            return env.failure is not None
        images = [self.image_for(env, d, commit, ref) for d in env.deployments]
        return any(image.endswith(f":{env.failure_ref}") for image in images)

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def _read_modify_write(
        self, env: SimEnvironment, group: str, version: str, plural: str, mutate: Any, *, status: bool
    ) -> None:
        """Update the object (or its /status) from a fresh read, again on a 409: the verifier annotates the
        same objects meanwhile (refresh and reconcile requests)."""
        api = self._custom()
        replace = api.replace_namespaced_custom_object_status if status else api.replace_namespaced_custom_object
        for _ in range(20):
            obj = api.get_namespaced_custom_object(group, version, env.namespace, plural, env.name)
            mutate(obj)
            try:
                replace(group, version, env.namespace, plural, env.name, obj)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise ValueError(f"could not update {plural} {env.name}: conflicts")

    def _argo_update(self, env: SimEnvironment, mutate: Any) -> None:
        # Argo CD's CRD has no status subresource: the whole object is written.
        self._read_modify_write(env, "argoproj.io", "v1alpha1", "applications", mutate, status=False)

    def _argocd_rollout(self, env: SimEnvironment, commit: str, ref: str, failing: Failure | None) -> None:
        def sync_field(status: dict[str, Any], revision: str, state: str) -> None:
            previous = status.get("sync") or {}
            if env.source_index is not None:
                revisions = list(previous.get("revisions") or [])
                while len(revisions) <= env.source_index:
                    revisions.append("")
                revisions[env.source_index] = revision
                status["sync"] = {"status": state, "revisions": revisions}
            else:
                status["sync"] = {"status": state, "revision": revision}

        def out_of_sync(app: dict[str, Any]) -> None:
            status = app.setdefault("status", {})
            old = (status.get("sync") or {}).get("revision") or ""
            sync_field(status, old, "OutOfSync")
            app["operation"] = {"sync": {"revision": commit}}
            status["operationState"] = {"phase": "Running", "startedAt": _now(), "operation": {}}
            status["reconciledAt"] = _now()

        self._argo_update(env, out_of_sync)
        if self._pause(env, failing):
            return
        for deployment in env.deployments:
            self._set_image(deployment, self.image_for(env, deployment, commit, ref))

        def synced(app: dict[str, Any]) -> None:
            status = app.setdefault("status", {})
            app.pop("operation", None)
            sync_field(status, commit, "Synced")
            result: dict[str, Any] = {"revision": commit}
            if env.source_index is not None:
                result = {"revisions": status["sync"]["revisions"]}
            status["operationState"] = {
                "phase": "Succeeded",
                "startedAt": _now(),
                "finishedAt": _now(),
                "message": "successfully synced (all tasks run)",
                "syncResult": result,
            }
            status["health"] = {"status": "Progressing"}
            status["reconciledAt"] = _now()

        self._argo_update(env, synced)
        self._roll_deployments(env, failing)
        if failing == "degraded":
            time.sleep(env.delay_seconds)
            self._argo_update(
                env,
                lambda app: app["status"].update(
                    health={"status": "Degraded", "message": "Deployment app: CrashLoopBackOff (simulated)"},
                    reconciledAt=_now(),
                ),
            )
            return
        time.sleep(env.delay_seconds)
        self._argo_update(env, lambda app: app["status"].update(health={"status": "Healthy"}, reconciledAt=_now()))

    def _flux_status(self, env: SimEnvironment, mutate: Any) -> None:
        self._read_modify_write(env, "kustomize.toolkit.fluxcd.io", "v1", "kustomizations", mutate, status=True)

    def _echo_flux_reconcile(self, env: SimEnvironment) -> None:
        ks = self._custom().get_namespaced_custom_object(
            "kustomize.toolkit.fluxcd.io", "v1", env.namespace, "kustomizations", env.name
        )
        token = ((ks.get("metadata") or {}).get("annotations") or {}).get("reconcile.fluxcd.io/requestedAt")
        if token and self._tokens.get(env.name) != token and env.failure != "stuck":
            self._tokens[env.name] = token
            generation = ks["metadata"].get("generation")
            self._flux_status(
                env,
                lambda obj: obj.setdefault("status", {}).update(
                    lastHandledReconcileAt=token, observedGeneration=generation
                ),
            )

    def _flux_rollout(self, env: SimEnvironment, commit: str, ref: str, failing: Failure | None) -> None:
        revision = f"{ref}@sha1:{commit}"

        def progressing(ks: dict[str, Any]) -> None:
            status = ks.setdefault("status", {})
            status["lastAttemptedRevision"] = revision
            status["conditions"] = [
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "Progressing",
                    "message": "Reconciliation in progress",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "Reconciling",
                    "status": "True",
                    "reason": "Progressing",
                    "message": "",
                    "lastTransitionTime": _now(),
                },
            ]

        self._flux_status(env, progressing)
        if self._pause(env, failing):
            return
        if failing == "stalled":

            def stalled(ks: dict[str, Any]) -> None:
                ks["status"]["observedGeneration"] = ks["metadata"].get("generation")
                ks["status"]["conditions"] = [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "BuildFailed",
                        "message": "kustomize build failed: accumulating resources (simulated)",
                        "lastTransitionTime": _now(),
                    },
                    {
                        "type": "Stalled",
                        "status": "True",
                        "reason": "BuildFailed",
                        "message": "kustomize build failed: accumulating resources (simulated)",
                        "lastTransitionTime": _now(),
                    },
                ]

            self._flux_status(env, stalled)
            return
        for deployment in env.deployments:
            self._set_image(deployment, self.image_for(env, deployment, commit, ref))
        self._roll_deployments(env, failing)

        def ready(ks: dict[str, Any]) -> None:
            status = ks["status"]
            status["observedGeneration"] = ks["metadata"].get("generation")
            status["lastAppliedRevision"] = revision
            status["conditions"] = [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ReconciliationSucceeded",
                    "message": f"Applied revision: {revision}",
                    "lastTransitionTime": _now(),
                },
            ]

        self._flux_status(env, ready)

    def _pause(self, env: SimEnvironment, failing: Failure | None) -> bool:
        """Wait the configured delay; True if the environment is told to hang here."""
        time.sleep(env.delay_seconds)
        return failing == "stuck"

    # --- Deployments -----------------------------------------------------------------------------------

    def _set_image(self, deployment: SimDeployment, image: str) -> None:
        apps = client.AppsV1Api(self.api)
        patch = {"spec": {"template": {"spec": {"containers": [{"name": deployment.container, "image": image}]}}}}
        apps.patch_namespaced_deployment(deployment.name, deployment.namespace, patch)

    def _roll_deployments(self, env: SimEnvironment, failing: Failure | None) -> None:
        apps = client.AppsV1Api(self.api)
        for deployment in env.deployments:
            current = self._custom().get_namespaced_custom_object(
                "apps", "v1", deployment.namespace, "deployments", deployment.name
            )
            generation = current["metadata"]["generation"]
            replicas = current["spec"].get("replicas", 1)
            if failing == "progress-deadline":
                body = {
                    "status": {
                        "observedGeneration": generation,
                        "replicas": replicas + 1,
                        "updatedReplicas": 1,
                        "availableReplicas": replicas,
                        "conditions": [
                            {
                                "type": "Progressing",
                                "status": "False",
                                "reason": "ProgressDeadlineExceeded",
                                "message": f'ReplicaSet "{deployment.name}-new" has timed out progressing.',
                            }
                        ],
                    }
                }
                apps.patch_namespaced_deployment_status(deployment.name, deployment.namespace, body)
                continue
            # Surge first (old and new pods), then settle: the waiter must not pass on the first write.
            apps.patch_namespaced_deployment_status(
                deployment.name,
                deployment.namespace,
                {
                    "status": {
                        "observedGeneration": generation,
                        "replicas": replicas + 1,
                        "updatedReplicas": 1,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                    }
                },
            )
            time.sleep(env.delay_seconds / 2)
            run_pods(self.api, deployment.namespace, deployment.name)
            apps.patch_namespaced_deployment_status(
                deployment.name,
                deployment.namespace,
                {
                    "status": {
                        "observedGeneration": generation,
                        "replicas": replicas,
                        "updatedReplicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                        "conditions": [
                            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                        ],
                    }
                },
            )


def create_objects(
    api: client.ApiClient, envs: list[SimEnvironment], *, initial_image: str = "registry.local/app:0.0.0"
) -> None:
    """Create the Applications / Kustomizations (+ GitRepository) and Deployments the agent will drive."""
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    namespaces = {env.namespace for env in envs} | {d.namespace for env in envs for d in env.deployments}
    for namespace in sorted(namespaces):
        with contextlib.suppress(ApiException):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    for env in envs:
        if env.kind == "argocd":
            source = {"repoURL": "file:///sandbox/origin.git", "path": ".", "targetRevision": env.branch}
            spec: dict[str, Any] = {
                "project": "default",
                "destination": {"namespace": env.namespace, "server": "https://kubernetes.default.svc"},
            }
            if env.source_index is not None:
                spec["sources"] = [dict(source) for _ in range(env.source_index + 1)]
            else:
                spec["source"] = source
            custom.create_namespaced_custom_object(
                "argoproj.io",
                "v1alpha1",
                env.namespace,
                "applications",
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {"name": env.name, "namespace": env.namespace},
                    "spec": spec,
                },
            )
        else:
            custom.create_namespaced_custom_object(
                "source.toolkit.fluxcd.io",
                "v1",
                env.namespace,
                "gitrepositories",
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "GitRepository",
                    "metadata": {"name": env.name, "namespace": env.namespace},
                    # Flux's own schema takes http(s):// and ssh:// URLs only; the agent reads env.origin itself.
                    "spec": {
                        "interval": "1m",
                        "url": "https://git.sandbox.local/origin.git",
                        "ref": {"branch": env.branch},
                    },
                },
            )
            custom.create_namespaced_custom_object(
                "kustomize.toolkit.fluxcd.io",
                "v1",
                env.namespace,
                "kustomizations",
                {
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": env.name, "namespace": env.namespace},
                    "spec": {
                        "interval": "5m",
                        "path": "./",
                        "prune": True,
                        "sourceRef": {"kind": "GitRepository", "name": env.name},
                    },
                },
            )
        for deployment in env.deployments:
            labels = {"app": deployment.name}
            custom.create_namespaced_custom_object(
                "apps",
                "v1",
                deployment.namespace,
                "deployments",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": deployment.name, "namespace": deployment.namespace},
                    "spec": {
                        "replicas": deployment.replicas,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {"containers": [{"name": deployment.container, "image": initial_image}]},
                        },
                    },
                },
            )
