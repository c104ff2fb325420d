"""Flux image-automation-controller's own setter code as an oracle (hack/build-cluster-binaries flux-setters, built
on first use): run a directory of files through it with some image policies' latest refs, as the controller does."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.apiserver import BUILD_SCRIPT, REPO_ROOT, run_forwarding_stderr

FLUX_VERSION = "v1.2.0"


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    image: str
    tag: str
    digest: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}:{self.name}"


@dataclass(frozen=True)
class FluxSetters:
    binary: Path

    @classmethod
    def ensure(cls) -> FluxSetters:
        """The oracle, built if this machine has not (seconds with a warm Go cache, about 35 s cold)."""
        code, out, tail = run_forwarding_stderr(["bash", str(BUILD_SCRIPT), "flux-setters"], cwd=REPO_ROOT)
        if code != 0:
            raise RuntimeError(
                f"could not build Flux's setter code (hack/build-cluster-binaries flux-setters, exit {code}); it "
                "needs Go 1.26+ (Debian: apt-get install golang-go) and the Go module proxy:\n" + "\n".join(tail)
            )
        return cls(Path(out.strip().splitlines()[-1]) / "flux-setters")

    def update(self, source: Path, out: Path, policies: list[Policy]) -> dict[str, Any]:
        """Flux's update of ``source`` (left unchanged): the files it rewrote land in ``out``; its result."""
        spec = out.parent / f"{out.name}-policies.json"
        spec.write_text(json.dumps([p.__dict__ for p in policies]))
        out.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary), str(source), str(out), str(spec)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise FluxRefusedError(done.stderr.strip()[:2000])
        result: dict[str, Any] = json.loads(done.stdout)
        return result


class FluxRefusedError(RuntimeError):
    """Flux's code ended with an error (it wrote nothing usable)."""
