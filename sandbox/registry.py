"""SIMULATOR infrastructure. A real container registry on 127.0.0.1 for the sandbox and the tests: Debian's
``docker-registry`` (CNCF distribution 2.8) with filesystem storage, and image pushes through the registry
API alone (blob uploads and manifest PUTs, no Docker)."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandbox.patience import Patience, tail
from sandbox.prefect_server import free_port

REGISTRY_BINARY = "docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryUnavailableError(RuntimeError):
    """docker-registry is missing or did not start; the message says what to install or where the log is."""


@dataclass
class LocalRegistry:
    url: str
    log_path: Path
    start_seconds: float


def registry_binary() -> str:
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RegistryUnavailableError("install docker-registry (apt-get install docker-registry)")
    return binary


@contextmanager
def run_registry(
    workdir: Path, *, auth: dict[str, Any] | None = None, notifications: dict[str, Any] | None = None
) -> Iterator[LocalRegistry]:
    """docker-registry with filesystem storage under ``workdir``; ``auth`` and ``notifications`` are the config's
    maps of those names (notifications: where the registry posts its push events)."""
    binary = registry_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        **({"auth": auth} if auth else {}),
        **({"notifications": notifications} if notifications else {}),
    }
    config_path = workdir / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_path = workdir / "registry.log"
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen([binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log_path)
        yield LocalRegistry(url=url, log_path=log_path, start_seconds=time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    # As long as the registry makes progress (CPU, log lines): seconds when idle, longer on a busy machine.
    patience = Patience(lambda: [process.pid], [log_path])
    while True:
        if process.poll() is not None:
            raise RegistryUnavailableError(f"docker-registry exited with {process.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"{url}/v2/", timeout=5).status_code in (200, 401):
                return
        except httpx.TransportError:
            pass
        if (reason := patience.check()) is not None:
            raise RegistryUnavailableError(f"docker-registry on {url} {reason}:\n{tail(log_path)}")
        time.sleep(0.05)


def push_image(url: str, repository: str, tags: list[str], *, headers: dict[str, str] | None = None) -> str:
    """Push one tiny OCI image and tag it ``tags``; returns the manifest digest."""
    with httpx.Client(base_url=url, headers=headers or {}, timeout=10) as client:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        config_desc = _upload_blob(client, repository, config.encode(), "application/vnd.oci.image.config.v1+json")
        layer = secrets.token_bytes(64)  # the registry stores layers; it does not unpack them
        layer_desc = _upload_blob(client, repository, layer, "application/vnd.oci.image.layer.v1.tar+gzip")
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": [layer_desc]}
        ).encode()
        for tag in tags:
            response = client.put(
                f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            if response.status_code != 201:
                raise RuntimeError(f"PUT manifest {repository}:{tag}: {response.status_code} {response.text}")
        return f"sha256:{hashlib.sha256(manifest).hexdigest()}"


def _upload_blob(client: httpx.Client, repository: str, data: bytes, media_type: str) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    if started.status_code != 202:
        raise RuntimeError(f"start upload to {repository}: {started.status_code} {started.text}")
    location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    done = client.put(
        f"{location}{separator}digest={digest}", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    if done.status_code != 201:
        raise RuntimeError(f"finish upload to {repository}: {done.status_code} {done.text}")
    return {"mediaType": media_type, "digest": digest, "size": len(data)}
