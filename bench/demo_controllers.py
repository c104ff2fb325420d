"""The sandbox demo on the real controllers against the simulator, side by side in one run.

  R. `hack/sandbox --controllers real`: the real Argo CD or Flux, controller-manager, scheduler and a KWOK node;
  S. `hack/sandbox --controllers simulated`: the bare kube-apiserver and the simulated controllers.

Rounds interleave the two (order alternated) so a noisy machine slows both alike; the table gives each one's median
"total time" (the demo's own clock, from its start to the summary) and wall time (Python's start and the cleanup
too), and the ratio R/S. The real controllers' binaries must be built (hack/build-cluster-binaries).

Run: .venv/bin/python bench/demo_controllers.py [--strategy tag] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(controllers: str, strategy: str) -> tuple[float, float]:
    """One demo run: (its total time, wall time), in seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "--strategy", strategy, "--controllers", controllers],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.monotonic() - began
    total = re.search(r"total time: ([\d.]+)s", done.stdout)
    if done.returncode != 0 or total is None:
        raise SystemExit(
            f"the {controllers} demo failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    return float(total.group(1)), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategy", default="tag")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"real": [], "simulated": []}
    for round_ in range(args.rounds):
        order = ["real", "simulated"] if round_ % 2 == 0 else ["simulated", "real"]
        for controllers in order:
            results[controllers].append(run(controllers, args.strategy))
            total, wall = results[controllers][-1]
            print(f"round {round_ + 1}: {controllers:<9} total {total:5.1f} s, wall {wall:5.1f} s", flush=True)
    medians = {k: (statistics.median(t for t, _ in v), statistics.median(w for _, w in v)) for k, v in results.items()}
    print(f"\n--strategy {args.strategy}, {args.rounds} rounds, medians")
    print("| controllers | total | wall |\n|---|---|---|")
    for controllers, (total, wall) in medians.items():
        print(f"| {controllers} | {total:.1f} s | {wall:.1f} s |")
    real, simulated = medians["real"], medians["simulated"]
    print(f"| ratio real/simulated | {real[0] / simulated[0]:.2f}x | {real[1] / simulated[1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
