"""Container registries for the tests.

* :func:`run_registry`: Debian's ``docker-registry`` (CNCF distribution 2.8) on 127.0.0.1, anonymous, with
  htpasswd basic auth, or with token auth against :func:`token_service`, a token service of the test's own
  (an ``http.server`` thread issuing ES256 JWTs signed with a key generated per run; the registry trusts it
  through a self-signed certificate in ``rootcertbundle``).
* :func:`push_image`: pushes a small image under some tags through the registry API alone (blob uploads and
  manifest PUTs, no Docker).
* :func:`paging_registry`: a small HTTP server of the test's own that lists tags the way large registries
  do (``n``/``last``, ``Link: <...>; rel="next"``) and can answer 429/5xx first: distribution 2.8 ignores
  ``n`` and never sends Link headers, so pagination and throttling cannot be seen against it.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sandbox import registry as sandbox_registry
from sandbox.httpserve import serve_http
from sandbox.prefect_server import free_port
from sandbox.registry import OCI_MANIFEST, LocalRegistry, RegistryUnavailableError, push_image
from tests.support.tls import self_signed_certificate

__all__ = ["OCI_MANIFEST", "LocalRegistry", "free_port", "push_image", "registry_binary", "run_registry"]

SERVICE = "promote-test-registry"
ISSUER = "promote-test-token-service"


def registry_binary() -> str:
    """The docker-registry binary; a missing one fails the test (CI installs it: .ci/run)."""
    try:
        return sandbox_registry.registry_binary()
    except RegistryUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd file (distribution only accepts bcrypt there).

    Made by the system's libcrypt (libxcrypt, which every glibc system ships for login), so the tests need no
    extra Python package. Cost 5, the lowest worth using, keeps the registry's check fast.
    """
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        pytest.fail(f"cannot load libcrypt ({name}) to make a bcrypt hash for the htpasswd registry", pytrace=False)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)  # NULL random bytes: libxcrypt reads the OS's randomness
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        pytest.fail("the system's libcrypt cannot make bcrypt hashes (needs libxcrypt)", pytrace=False)
    return str(hashed.decode())


# --- the token service ------------------------------------------------------------------------------


@dataclass
class TokenRequest:
    user: str | None  # None: anonymous
    service: str | None
    scope: str | None
    status: int


@dataclass
class TokenService:
    """Docker's token protocol: GET /token?service=..&scope=repository:NAME:ACTIONS, optional basic auth."""

    url: str = ""
    users: dict[str, str] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)  # repositories anyone may pull
    answer_field: str = "token"  # or "access_token", as some services answer
    requests: list[TokenRequest] = field(default_factory=list)
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def certificate_pem(self) -> bytes:
        cert = self_signed_certificate(self.key, "promote test token service")
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_id(self) -> str:
        """The libtrust key ID distribution 2.8 looks a token's ``kid`` up by: SHA-256 of the DER public key,
        first 240 bits, base32, in groups of four separated by ':'."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
        return ":".join(text[i : i + 4] for i in range(0, len(text), 4))

    def mint(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id()}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS wants r || s, 32 bytes each, not DER
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def answer(self, authorization: str | None, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        user: str | None = None
        if authorization:
            scheme, _, encoded = authorization.partition(" ")
            name, _, password = base64.b64decode(encoded).decode().partition(":") if scheme == "Basic" else ("", "", "")
            if self.users.get(name) != password or not name:
                self.requests.append(TokenRequest(name or "?", None, None, 401))
                return 401, {"details": "invalid credentials"}
            user = name
        service = query["service"][0] if "service" in query else None
        scope = query["scope"][0] if "scope" in query else None
        access = []
        if scope:
            kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a == "pull" and (user is not None or repository in self.public)]
            if user is not None and "push" in actions.split(","):
                granted.append("push")
            access.append({"type": kind, "name": repository, "actions": granted})
        self.requests.append(TokenRequest(user, service, scope, 200))
        token = self.mint(user or "", access)
        return 200, {self.answer_field: token, "expires_in": 300}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@contextmanager
def token_service(users: dict[str, str], public: set[str] | None = None) -> Iterator[TokenService]:
    service = TokenService(users=dict(users), public=set(public or ()))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/token":
                self.send_error(404)
                return
            status, body = service.answer(self.headers.get("Authorization"), parse_qs(parts.query))
            _send_json(self, status, body)

    with _serve(Handler) as url:
        service.url = url
        yield service


# --- the registry (sandbox/registry.py; a missing binary fails the test with what to install) ---------


@contextmanager
def run_registry(
    workdir: Path, *, auth: dict[str, Any] | None = None, notifications: dict[str, Any] | None = None
) -> Iterator[LocalRegistry]:
    try:
        with sandbox_registry.run_registry(workdir, auth=auth, notifications=notifications) as registry:
            yield registry
    except RegistryUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


# --- a paging registry of our own -------------------------------------------------------------------


@dataclass
class PagingRegistry:
    """Lists ``tags`` (sorted) ``n`` at a time with Link headers; answers ``before`` first, one per request."""

    tags: list[str]
    default_page: int = 2
    link: str = "relative"  # "relative", "absolute", or "other-host"
    before: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        self.requests.append(path)
        if self.before:
            status, scripted = self.before.pop(0)
            return status, scripted, {"errors": [{"code": "UNAVAILABLE", "message": f"scripted {status}"}]}
        parts = urlsplit(path)
        segments = parts.path.split("/")
        if len(segments) < 5 or segments[1] != "v2" or segments[-2:] != ["tags", "list"]:
            return 404, {}, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}
        repository = "/".join(segments[2:-2])
        query = parse_qs(parts.query)
        n = int(query.get("n", [str(self.default_page)])[0])
        last = query["last"][0] if "last" in query else None
        ordered = sorted(self.tags)
        rest = [t for t in ordered if last is None or t > last]
        page, more = rest[:n], rest[n:]
        headers: dict[str, str] = {}
        if more:
            target = f"/v2/{repository}/tags/list?n={n}&last={page[-1]}"
            if self.link == "absolute":
                target = f"{self.url}{target}"
            elif self.link == "other-host":
                target = f"http://registry.invalid:{urlsplit(self.url).port}{target}"
            headers["Link"] = f'<{target}>; rel="next"'
        return 200, headers, {"name": repository, "tags": page}


@contextmanager
def paging_registry(tags: list[str], **options: Any) -> Iterator[PagingRegistry]:
    registry = PagingRegistry(tags=list(tags), **options)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            status, headers, body = registry.answer(self.path)
            _send_json(self, status, body, headers)

    with _serve(Handler) as url:
        registry.url = url
        yield registry


# --- plumbing -----------------------------------------------------------------------------------------


def _send_json(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _serve(handler: type[BaseHTTPRequestHandler]) -> AbstractContextManager[str]:
    return serve_http(handler, poll_interval=0.05)  # quick shutdown: tests start many of these
