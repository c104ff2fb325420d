"""Serve an HTTP handler class on a free loopback port for the length of a ``with`` block.

The sandbox's health app and the tests' stand-in servers (webhook, Git smart HTTP, registry, app
endpoints) all start and stop a server the same way; this is that one way.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serve_http(
    handler: type[BaseHTTPRequestHandler],
    *,
    thread_name: str | None = None,
    poll_interval: float = 0.5,
    tls: ssl.SSLContext | None = None,
) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``, ``https://`` with a server-side ``tls`` context); the
    server is shut down and closed on exit. ``poll_interval`` is how often ``serve_forever`` checks for
    shutdown."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=thread_name, daemon=True
    )
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
