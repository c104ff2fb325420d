"""hack/system-packages, which ./hack/test runs first: on a machine that lacks the tests' Debian packages and
cannot install them (not root), one message lists every missing package with why, and nothing else runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "system-packages"


def test_missing_packages_that_cannot_be_installed_are_listed_in_one_message(tmp_path: Path) -> None:
    # A PATH with none of the tools, and an `id` that answers as an ordinary user: nothing may be installed.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: the tests need Debian packages that are not installed")
    for package in ("golang-go", "chromium", "chromium-driver", "docker-registry", "gcc", "redis-server", "npm"):
        assert any(line.startswith(f"  {package}: ") for line in lines), (package, done.stderr)
    assert lines[-2].startswith("install them, e.g.: sudo apt-get install golang-go chromium")
    assert "PROMOTE_SKIP_SYSTEM_PACKAGES=1 hack/test" in lines[-1]


def test_a_machine_with_everything_passes_silently() -> None:
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr  # this machine ran .ci/run: it has them all
