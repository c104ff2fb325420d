"""What the sandbox demo waits for before its first promotion, side by side in one run (issue: fast demo):

  F. a Prefect server on a fresh home: migrates an empty database and registers every block type;
  T. the same from the cached migrated-database snapshot (sandbox/prefect_server.py);
  K. kube-apiserver + etcd;
  S. kube-apiserver and a snapshot-started Prefect server side by side, as the demo now starts them;
  Q. the two one after the other, as the demo started them before.

Rounds interleave the variants (order alternated) so a noisy machine slows all alike; the table gives the
median of each and the ratios F/T and Q/S. Every server gets a home (and a snapshot cache) of its own.

Run: .venv/bin/python bench/demo_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.apiserver import KubeBinaries, LocalKubeAPI
from sandbox.prefect_server import PrefectServer, template_dir


def _server(root: Path, use_template: bool, *, priming: bool = False) -> float:
    os.environ["PROMOTE_PREFECT_DB_TEMPLATE"] = "1" if use_template else "0"
    server = PrefectServer(home=Path(tempfile.mkdtemp(dir=root)) / "home")
    started = time.monotonic()
    try:
        server.start()
        if use_template and not priming and not server.from_template:
            raise SystemExit("the snapshot was not used")
        return time.monotonic() - started
    finally:
        server.stop()


def _kube(binaries: KubeBinaries) -> float:
    started = time.monotonic()
    with LocalKubeAPI(binaries=binaries):
        return time.monotonic() - started


def _side_by_side(root: Path, binaries: KubeBinaries) -> float:
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        prefect = pool.submit(_server, root, True)
        _kube(binaries)
        prefect.result()
    return time.monotonic() - started


def _one_after_the_other(root: Path, binaries: KubeBinaries) -> float:
    started = time.monotonic()
    _kube(binaries)
    _server(root, True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="promote-bench-startup-"))
    binaries = LocalKubeAPI.ensure_binaries()  # from the usual cache, before the cache moves below
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")  # a database snapshot of this bench's own
    try:
        _server(root, True, priming=True)  # a fresh start that saves the snapshot
        template = template_dir()
        assert template is not None and template.exists()
        variants: dict[str, Callable[[], float]] = {
            "F fresh home": lambda: _server(root, False),
            "T from snapshot": lambda: _server(root, True),
            "K kube-apiserver": lambda: _kube(binaries),
            "S side by side": lambda: _side_by_side(root, binaries),
            "Q one after the other": lambda: _one_after_the_other(root, binaries),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                times[name].append(variants[name]())
                print(f"round {round_ + 1}: {name}: {times[name][-1]:.1f}s", file=sys.stderr)
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"\n{'variant':<24}{'median':>8}   all (s)")
        for name, values in times.items():
            print(f"{name:<24}{median[name]:>7.1f}s   {' '.join(f'{v:.1f}' for v in values)}")
        print(f"\nF/T  fresh home / snapshot:           {median['F fresh home'] / median['T from snapshot']:.2f}x")
        print(
            f"Q/S  sequential / side by side:       {median['Q one after the other'] / median['S side by side']:.2f}x"
        )
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
