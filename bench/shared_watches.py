"""Many waits at once: one shared watch per (kind, namespace) against a watch per wait, side by side.

A large nightly verifies many environments from one process. Each round creates N Argo CD Applications
synced to an old commit, starts N concurrent waits (one thread each, as the nightly's pipelines are), then
a "controller" writes the final status of each at random moments. Per mode it prints what the API server
counted (its /metrics: LIST, GET and WATCH requests, the most watches open at once) and the detection
latency (status write sent -> wait returned), p50 and p95. Modes alternate within a round so both see the
same machine noise.

Run: .venv/bin/python bench/shared_watches.py [--waiters 10,100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client as k8s
from kubernetes.config import new_client_from_config

from bench.verify_latency import GROUP, X, create_application, judge, pct, status
from sandbox.apimetrics import resource_requests
from sandbox.apiserver import LocalKubeAPI, install_crds
from tasks import informer
from tasks.kube import APPLICATION, KubeClient, ObjectRef


def make_apps(api: k8s.ApiClient, namespace: str, count: int) -> list[str]:
    custom = k8s.CustomObjectsApi(api)
    k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    names = [f"app-{i:03d}" for i in range(count)]
    for name in names:
        create_application(custom, namespace, name)
    return names


def one_round(server: LocalKubeAPI, admin: k8s.ApiClient, mode: str, namespace: str, count: int) -> dict[str, Any]:
    names = make_apps(admin, namespace, count)
    waiter_api = new_client_from_config(config_file=str(server.kubeconfig))  # the nightly's one shared client
    kube = KubeClient(waiter_api, shared_watches=mode == "shared")
    returned: dict[str, float] = {}
    errors: list[BaseException] = []
    peak_watches = 0.0
    before = resource_requests(admin, "argoproj.io", "applications")

    def wait(name: str) -> None:
        try:
            kube.wait_for(ObjectRef(APPLICATION, namespace, name), judge, timeout=300, what=name)
            returned[name] = time.perf_counter()
        except BaseException as exc:  # reported below: a bench that hides a failure measures nothing
            errors.append(exc)

    threads = [threading.Thread(target=wait, args=(name,), daemon=True) for name in names]
    for thread in threads:
        thread.start()
    time.sleep(2.0)  # every wait is in: it has listed/watched and judged the old status
    peak_watches = (resource_requests(admin, "argoproj.io", "applications") - before).open_watches
    custom = k8s.CustomObjectsApi(admin)
    written: dict[str, float] = {}
    rng = random.Random(11)
    for name in rng.sample(names, len(names)):
        time.sleep(rng.uniform(0.0, 0.04))
        # From the start of the write request: the conservative end of "when the write landed".
        written[name] = time.perf_counter()
        custom.patch_namespaced_custom_object(*GROUP, namespace, "applications", name, {"status": status(X)})
    for thread in threads:
        thread.join(timeout=120)
    after = resource_requests(admin, "argoproj.io", "applications") - before
    informer.stop_all(waiter_api)
    closer: Any = waiter_api
    closer.close()
    if errors or len(returned) != len(names):
        missing = len(names) - len(returned)
        raise SystemExit(f"{mode}: {len(errors)} waits failed, {missing} did not return: {errors[:1]}")
    latencies = [(returned[n] - written[n]) * 1000 for n in names]
    return {
        "latencies": latencies,
        "LIST": after.count("LIST"),
        "GET": after.count("GET"),
        "WATCH": after.watches_opened,
        "open": peak_watches,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", default="10,100", help="comma-separated numbers of concurrent waits")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.waiters.split(",")]
    modes = ("shared", "per-wait")
    results: dict[tuple[str, int], list[dict[str, Any]]] = {(m, n): [] for m in modes for n in counts}
    with LocalKubeAPI(binaries=LocalKubeAPI.ensure_binaries()) as server:
        admin = new_client_from_config(config_file=str(server.kubeconfig))
        install_crds(admin)
        for round_number in range(args.rounds):
            for count in counts:
                order = modes if round_number % 2 == 0 else modes[::-1]
                for mode in order:
                    namespace = f"bench-{mode}-{count}-{round_number}"
                    results[mode, count].append(one_round(server, admin, mode, namespace, count))
    print(f"concurrent waits in one namespace, {args.rounds} rounds each; requests as the API server counted them")
    heading = ("mode", "waits", "LIST", "GET", "WATCH", "open", "p50 ms", "p95 ms")
    print(f"{heading[0]:<9} " + " ".join(f"{h:>5}" for h in heading[1:6]) + f" {heading[6]:>8} {heading[7]:>8}")
    summary: dict[tuple[str, int], tuple[int, float, float]] = {}
    for (mode, count), rounds in results.items():
        for r in rounds:
            print(
                f"{mode:<9} {count:>5} {r['LIST']:>5} {r['GET']:>5} {r['WATCH']:>5} {r['open']:>5.0f} "
                f"{pct(r['latencies'], 0.5):8.1f} {pct(r['latencies'], 0.95):8.1f}"
            )
        latencies = [value for r in rounds for value in r["latencies"]]
        requests = max(r["LIST"] + r["GET"] + r["WATCH"] for r in rounds)
        summary[mode, count] = (requests, pct(latencies, 0.5), pct(latencies, 0.95))
    for count in counts:
        shared, alone = summary["shared", count], summary["per-wait", count]
        print(
            f"{count} waits, per-wait/shared: requests {alone[0] / max(1, shared[0]):.0f}x,"
            f" p50 {alone[1] / shared[1]:.2f}x, p95 {alone[2] / shared[2]:.2f}x"
        )
    shared_requests = {summary["shared", n][0] for n in counts}
    ok = len(shared_requests) == 1 and max(summary["shared", n][2] for n in counts) < 100
    print(f"targets (shared: the same requests for every number of waits, p95 < 100 ms): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
