"""Detection latency of verification: watch-based wait vs a simple 1 s poll loop, side by side in one run.

For each trial an Argo CD Application starts synced to the previous commit; after a random delay (0.5-3 s) a
"controller" writes the final status. Latency = from the moment that write was sent to the moment the wait
returned. Also counts API requests per wait. Run: .venv/bin/python bench/verify_latency.py [--trials 30]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client as k8s
from kubernetes.config import new_client_from_config

from rules.readiness import judge_application
from sandbox.apiserver import LocalKubeAPI, install_crds
from tasks.kube import APPLICATION, KubeClient, ObjectRef, RequestStats

X, OLD = "1" * 40, "0" * 40
GROUP = ("argoproj.io", "v1alpha1")


def status(revision: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {
        "sync": {"status": "Synced", "revision": revision},
        "health": {"status": "Healthy"},
        "operationState": {
            "phase": "Succeeded",
            "finishedAt": "2026-01-01T00:00:00Z",
            "syncResult": {"revision": revision},
        },
        "reconciledAt": now,
    }


def judge(app: dict[str, Any]) -> Any:
    return judge_application(app, X, health_grace_seconds=0)


def poll_until_ready(kube: KubeClient, ref: ObjectRef, stats: RequestStats, interval: float = 1.0) -> None:
    while True:
        if judge(kube.get(ref, stats)).state == "ready":
            return
        time.sleep(interval)


def create_application(custom: k8s.CustomObjectsApi, namespace: str, name: str) -> None:
    """An Application synced to the previous commit (OLD), as each wait of the benches starts."""
    custom.create_namespaced_custom_object(
        *GROUP,
        namespace,
        "applications",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name},
            "spec": {"project": "default", "source": {"repoURL": "x", "targetRevision": "v1"}},
            "status": status(OLD),
        },
    )


def trial(api: k8s.ApiClient, kube: KubeClient, ns: str, name: str, mode: str, delay: float) -> tuple[float, int]:
    custom = k8s.CustomObjectsApi(api)
    create_application(custom, ns, name)
    ref = ObjectRef(APPLICATION, ns, name)
    stats = RequestStats()
    returned: list[float] = []

    def wait() -> None:
        if mode == "watch":
            kube.wait_for(ref, judge, timeout=60, what=name, stats=stats)
        else:
            poll_until_ready(kube, ref, stats)
        returned.append(time.perf_counter())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(delay)
    # Timed from the start of the write request: the watch event can reach the waiter before the PATCH
    # response reaches the writer, so this is the conservative end of "when the write landed".
    written = time.perf_counter()
    custom.patch_namespaced_custom_object(*GROUP, ns, "applications", name, {"status": status(X)})
    thread.join(timeout=60)
    return returned[0] - written, stats.requests


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(7)
    with LocalKubeAPI(binaries=LocalKubeAPI.ensure_binaries()) as server:
        api = new_client_from_config(config_file=str(server.kubeconfig))
        install_crds(api)
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="bench")))
        kube = KubeClient(api)
        results: dict[str, tuple[list[float], list[int]]] = {"watch": ([], []), "poll-1s": ([], [])}
        for i in range(args.trials):
            delay = rng.uniform(0.5, 3.0)
            for mode in ("watch", "poll-1s"):  # interleaved: both see the same machine noise
                latency, requests = trial(api, kube, "bench", f"{mode}-{i}", mode, delay)
                results[mode][0].append(latency * 1000)
                results[mode][1].append(requests)
        print(f"verification detection latency, {args.trials} trials each, status written 0.5-3 s into the wait")
        print(f"{'mode':<8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'req/wait min..max':>18}")
        for mode, (lat, req) in results.items():
            print(f"{mode:<8} {pct(lat, 0.5):8.1f} {pct(lat, 0.95):8.1f} {max(lat):8.1f} {min(req):>8}..{max(req):<9}")
        w, p = results["watch"][0], results["poll-1s"][0]
        print(f"ratio poll/watch: p50 {pct(p, 0.5) / pct(w, 0.5):.1f}x, p95 {pct(p, 0.95) / pct(w, 0.95):.1f}x")
        ok = pct(w, 0.5) < 100 and pct(w, 0.95) < 500 and max(results["watch"][1]) <= 3
        print(f"targets (p50 < 100 ms, p95 < 500 ms, constant requests): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
