"""SIMULATOR. The promoted application's HTTP endpoints for the sandbox: ``/<app>/<environment>/version`` serves
the version the environment's Deployment runs (its image tag, read through the Kubernetes API), so a health
check that expects the promoted version passes only once the rollout really happened."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.httpserve import serve_http


@contextmanager
def serve_health(api: client.ApiClient, deployments: dict[str, tuple[str, str]]) -> Iterator[str]:
    """``deployments`` maps ``app/environment`` to the (namespace, name) of the Deployment it runs; it may
    grow while the server runs."""
    custom = client.CustomObjectsApi(api)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            *where, endpoint = self.path.strip("/").split("/")
            key = "/".join(where)
            if key not in deployments or endpoint not in ("version", "healthz"):
                self._send(404, {"error": "unknown path"})
                return
            namespace, name = deployments[key]
            try:
                deployment = custom.get_namespaced_custom_object("apps", "v1", namespace, "deployments", name)
            except ApiException as exc:
                self._send(503, {"error": f"deployment unavailable: {exc.status}"})
                return
            image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
            version = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else "unknown"
            self._send(200, {"version": version, "image": image} if endpoint == "version" else {"status": "ok"})

        def _send(self, status: int, payload: dict[str, str]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_http(Handler, thread_name="sandbox-health") as url:
        yield url
