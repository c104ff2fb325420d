"""Bounded HTTP: a request with an overall deadline that holds and a cap on the body it reads.

httpx's timeouts are per socket operation: a server that trickles one byte every 2 s never trips a 5 s read
timeout, and ``response.read()`` takes whatever size the server sends. Every HTTP client of this tool (health
checks, the registry, notifications, the Prefect API for ``trigger`` and ``approve``) sends its requests through
:func:`request` on a client from :func:`client`, so that:

* every socket operation of the request (connect, TLS handshake, each write and each read) waits at most until
  the request's :class:`Deadline`: the client's network backend clips each operation's timeout to what is left,
  so a trickling server is cut off when the deadline passes, in the headers as well as in the body;
* the body is streamed, and reading stops past ``max_bytes`` (a declared Content-Length over it is refused
  before anything is read);
* errors say which limit ran out and never the URL (a webhook URL is a secret).

Not covered: the DNS lookup before a connect (the system resolver has its own timeouts).
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import json as jsonlib
import os
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

__all__ = [
    "BoundsError",
    "Deadline",
    "DeadlineExceededError",
    "JSONTooDeepError",
    "Response",
    "ResponseTooLargeError",
    "client",
    "has_control_chars",
    "is_loopback",
    "request",
    "scrub",
    "shown_url",
]

_WRITE_CHUNK = 64 * 1024  # each write of a request body waits at most until the deadline, chunk by chunk


class Deadline:
    """A point in time (monotonic clock) a piece of work must end by; ``seconds`` is the budget it was given."""

    __slots__ = ("at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, float(seconds))
        self.at = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def within(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, or this one if it comes first."""
        inner = Deadline(seconds)
        return self if self.at <= inner.at else inner


class BoundsError(Exception):
    """A bounded request ran out of time or read too much; the text names the limit, never the URL."""


class DeadlineExceededError(BoundsError):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__(f"no complete response within {deadline.seconds:.1f}s")
        self.deadline = deadline


class ResponseTooLargeError(BoundsError):
    def __init__(self, limit: int, status_code: int) -> None:
        super().__init__(f"response body over the {_size(limit)} limit (HTTP {status_code})")
        self.limit = limit
        self.status_code = status_code


class JSONTooDeepError(ValueError):
    """The body is JSON nested deeper than Python's parser recurses (a ValueError, as any unreadable JSON)."""


@dataclass(frozen=True)
class Response:
    """What a bounded request read: the status, the headers and the (capped) body."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    charset: str | None = None

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not JSON, :class:`JSONTooDeepError` if nested too deeply to read."""
        try:
            return jsonlib.loads(self.content)
        except RecursionError:
            raise JSONTooDeepError("JSON nested too deeply to read") from None


# --- the deadline, as the network backend sees it -----------------------------------------------------

_ACTIVE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("httpbounds_deadline", default=None)


def _clip(timeout: float | None, error: type[Exception]) -> float | None:
    deadline = _ACTIVE.get()
    if deadline is None:
        return timeout
    remaining = deadline.remaining()
    if remaining <= 0:
        raise error("the request's overall deadline passed")
    return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_CHUNK):
            self._inner.write(buffer[start : start + _WRITE_CHUNK], _clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _clip(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _clip(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _clip(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _bind(transport: httpx.BaseTransport | None) -> None:
    """Route ``transport``'s connections through the deadline backend (direct and proxy pools alike).

    httpx has no public hook for the network backend: this reaches into ``HTTPTransport._pool`` (httpx 0.28,
    pinned in pyproject.toml); tests/tasks/test_httpbounds.py fails if that stops working."""
    if not isinstance(transport, httpx.HTTPTransport):
        return  # another transport (a test's own): the deadline is still checked between body chunks
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if isinstance(backend, httpcore.NetworkBackend) and not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)


@functools.lru_cache(maxsize=8)
def _ssl_context(verify: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One TLS context per trust setting, shared by every client: building one (loading the CA bundle) cost
    about as much CPU as the health check it served. Keyed by the variables httpx reads, so a changed
    SSL_CERT_FILE is honoured; the arguments only key the cache."""
    return httpx.create_ssl_context(verify=verify)


def client(
    *,
    timeout: float = 30.0,
    verify: bool = True,
    headers: Mapping[str, str] | None = None,
    base_url: str = "",
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client whose requests through :func:`request` hold their deadline; redirects are not followed
    (a redirect would carry our headers to wherever it points)."""
    http = httpx.Client(
        timeout=timeout,
        verify=_ssl_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        headers=dict(headers or {}),
        base_url=base_url,
        transport=transport,
        follow_redirects=False,
    )
    for mounted in (http._transport, *http._mounts.values()):
        _bind(mounted)
    return http


def request(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    deadline: Deadline,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
) -> Response:
    """Send one request and read its body, all before ``deadline`` and at most ``max_bytes`` of body.

    Raises :class:`DeadlineExceededError`, :class:`ResponseTooLargeError`, or httpx's own errors (a refused connection,
    a per-operation timeout that came before the deadline)."""
    if deadline.expired():
        raise DeadlineExceededError(deadline)
    outer = _ACTIVE.get()
    token = _ACTIVE.set(deadline if outer is None or deadline.at <= outer.at else outer)
    try:
        timeout = _timeout(http.timeout, deadline.remaining())
        with http.stream(method, url, headers=headers, json=json, timeout=timeout) as response:
            body = _read(response, max_bytes, deadline)
            return Response(response.status_code, response.headers, body, response.charset_encoding)
    except httpx.TransportError:
        if deadline.expired():
            raise DeadlineExceededError(deadline) from None
        raise
    finally:
        _ACTIVE.reset(token)


def _timeout(configured: httpx.Timeout, remaining: float) -> httpx.Timeout:
    def clip(value: float | None) -> float:
        return max(0.001, remaining if value is None else min(value, remaining))

    return httpx.Timeout(
        connect=clip(configured.connect),
        read=clip(configured.read),
        write=clip(configured.write),
        pool=clip(configured.pool),
    )


def _read(response: httpx.Response, max_bytes: int, deadline: Deadline) -> bytes:
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLargeError(max_bytes, response.status_code)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLargeError(max_bytes, response.status_code)
        chunks.append(chunk)
        if deadline.expired():
            raise DeadlineExceededError(deadline)
    return b"".join(chunks)


def _size(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


# --- text that reaches people ---------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(value: str) -> bool:
    """Whether ``value`` holds a line break or another control character (a header value must not)."""
    return _CONTROL.search(value) is not None


def scrub(text: str, secrets: Iterable[str | None] = (), limit: int = 200) -> str:
    """``text`` (a server's error body, an exception's message) fit to show: every secret replaced, control
    characters as spaces, at most ``limit`` characters."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_url(url: str, limit: int = 80) -> str:
    """``url`` without any ``user:password@`` part, capped at ``limit`` characters, for messages."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        text = url.rpartition("@")[2]
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address literal: where plain http never leaves the machine. Names are not
    resolved: whoever controls DNS could point any other name elsewhere."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
