"""`promote validate FILE` wall time, this checkout against a baseline commit, interleaved in one run.

    .venv/bin/python bench/validate_startup.py [--baseline c51378a] [--runs 10]

The baseline is checked out into a temporary worktree and run with this checkout's .venv (same packages),
its own code first on the path. Prints each side's median and the ratio baseline / this checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = "deployments/examples/tags.yaml"


def once(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "promote.cli", "validate", "--quiet", FILE],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="c51378a", help="commit to compare with (default: before pipeline/)")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as scratch:
        base = Path(scratch) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--quiet", "--detach", str(base), args.baseline], cwd=ROOT, check=True
        )
        try:
            times: dict[str, list[float]] = {"baseline": [], "this checkout": []}
            once(base), once(ROOT)  # warm the byte-code caches of both
            for _ in range(args.runs):
                times["baseline"].append(once(base))
                times["this checkout"].append(once(ROOT))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    medians = {side: statistics.median(values) for side, values in times.items()}
    for side, median in medians.items():
        print(f"{side:>14}: median {median * 1000:.0f} ms over {args.runs} runs")
    print(f"ratio baseline / this checkout: {medians['baseline'] / medians['this checkout']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
