"""The registry client against Debian's docker-registry (distribution 2.8) in three auth modes, and against a
small paging server of the test's own for what distribution 2.8 never does (pagination, throttling)."""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from sandbox.httpserve import serve_http
from tasks.registry import RegistryClient, RegistryError, TransientRegistryError
from tests.support.registry import (
    ISSUER,
    SERVICE,
    LocalRegistry,
    TokenService,
    bcrypt_hash,
    free_port,
    paging_registry,
    push_image,
    run_registry,
    token_service,
)
from tests.support.slowhttp import Big, Fixed, Trickle, serve_big, serve_fixed, serve_trickle

TAGS = ["1.0.0", "1.1.0", "1.2.0-rc.1", "v2.0.0", "latest"]
PASSWORD = "s3cret-Registry-pw"  # distinctive, so a leak into a message would be found


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.logs: list[str] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture(scope="module")
def anonymous_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with run_registry(tmp_path_factory.mktemp("registry-anonymous")) as registry:
        push_image(registry.url, "team/app", TAGS)
        yield registry


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    workdir = tmp_path_factory.mktemp("registry-basic")
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt_hash(PASSWORD)}\n")
    with run_registry(workdir, auth={"htpasswd": {"realm": "promote-test", "path": str(htpasswd)}}) as registry:
        basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        push_image(registry.url, "app", TAGS, headers={"Authorization": basic})
        yield registry


@contextmanager
def _token_registry(workdir: Path, realm_host: str = "127.0.0.1") -> Iterator[tuple[LocalRegistry, TokenService]]:
    """A registry that sends clients to a token service (Docker's token protocol) whose realm names
    ``realm_host``; public/app and private/app hold TAGS."""
    with token_service({"bob": PASSWORD}, public={"public/app"}) as service:
        bundle = workdir / "token-root.pem"
        bundle.write_bytes(service.certificate_pem())
        realm = service.realm.replace("127.0.0.1", realm_host)
        auth = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)}}
        with run_registry(workdir, auth=auth) as registry:
            for repository in ("public/app", "private/app"):
                access = [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
                push_image(
                    registry.url, repository, TAGS, headers={"Authorization": f"Bearer {service.mint('bob', access)}"}
                )
            yield registry, service


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenService]]:
    with _token_registry(tmp_path_factory.mktemp("registry-token")) as found:
        yield found


@pytest.fixture(scope="module")
def registry_with_token_service_elsewhere(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalRegistry, TokenService]]:
    """A registry on 127.0.0.1 whose 401 names a token service on another host name (``localhost``), as
    Docker Hub's registry-1.docker.io names auth.docker.io."""
    with _token_registry(tmp_path_factory.mktemp("registry-token-elsewhere"), realm_host="localhost") as found:
        yield found


# --- docker-registry ------------------------------------------------------------------------------------


def test_registry_starts_quickly(anonymous_registry: LocalRegistry) -> None:
    assert anonymous_registry.start_seconds < 5


def test_lists_tags_anonymously(anonymous_registry: LocalRegistry) -> None:
    recorder = Recorder()
    tags = RegistryClient(anonymous_registry.url, log=recorder.log).list_tags("team/app")
    assert sorted(tags) == sorted(TAGS)
    assert recorder.logs == [f"registry {anonymous_registry.url}: team/app: page 1, {len(TAGS)} tag(s) so far"]


def test_unknown_repository_is_named(anonymous_registry: LocalRegistry) -> None:
    with pytest.raises(RegistryError, match=rf"repository team/nope not found at {anonymous_registry.url}"):
        RegistryClient(anonymous_registry.url).list_tags("team/nope")


def test_invalid_input_is_refused_before_any_request() -> None:
    with pytest.raises(RegistryError, match="not a repository name"):
        RegistryClient("http://127.0.0.1:9").list_tags("Team/App:1.0")
    with pytest.raises(RegistryError, match="must not hold credentials"):
        RegistryClient(f"http://alice:{PASSWORD}@127.0.0.1:9")
    with pytest.raises(RegistryError, match="both a username and a password"):
        RegistryClient("http://127.0.0.1:9", username="alice")


def test_basic_auth(basic_registry: LocalRegistry) -> None:
    client = RegistryClient(basic_registry.url, username="alice", password=PASSWORD)
    assert sorted(client.list_tags("app")) == sorted(TAGS)


def test_basic_auth_without_or_with_wrong_credentials(basic_registry: LocalRegistry) -> None:
    with pytest.raises(RegistryError, match="requires credentials to list the tags of app") as missing:
        RegistryClient(basic_registry.url).list_tags("app")
    hint = "environment variable REGISTRY_TOKEN"
    client = RegistryClient(basic_registry.url, username="alice", password="wrong-" + PASSWORD, credentials_hint=hint)
    with pytest.raises(
        RegistryError, match=r"refused access .* \(HTTP 401\) for user 'alice': check environment"
    ) as bad:
        client.list_tags("app")
    for error in (missing.value, bad.value):
        assert PASSWORD not in str(error)


def test_token_auth_anonymous_pull_of_a_public_repository(token_registry: tuple[LocalRegistry, TokenService]) -> None:
    registry, service = token_registry
    service.requests.clear()
    assert sorted(RegistryClient(registry.url).list_tags("public/app")) == sorted(TAGS)
    assert [(r.user, r.service, r.scope) for r in service.requests] == [(None, SERVICE, "repository:public/app:pull")]


def test_token_auth_with_credentials_caches_the_token(token_registry: tuple[LocalRegistry, TokenService]) -> None:
    registry, service = token_registry
    service.requests.clear()
    client = RegistryClient(registry.url, username="bob", password=PASSWORD)
    assert sorted(client.list_tags("private/app")) == sorted(TAGS)
    assert sorted(client.list_tags("private/app")) == sorted(TAGS)
    assert [(r.user, r.scope) for r in service.requests] == [("bob", "repository:private/app:pull")]


def test_token_auth_renews_a_token_the_registry_no_longer_takes(
    token_registry: tuple[LocalRegistry, TokenService],
) -> None:
    registry, service = token_registry
    client = RegistryClient(registry.url, username="bob", password=PASSWORD)
    client.list_tags("private/app")
    service.requests.clear()
    # What an expired token looks like to the client: the registry answers 401 again. Sign one with a key
    # the registry does not trust and put it where the client caches its token.
    stranger = TokenService()
    client._tokens = {scope: stranger.mint("bob", []) for scope in client._tokens}
    assert sorted(client.list_tags("private/app")) == sorted(TAGS)
    assert len(service.requests) == 1


def test_token_auth_access_token_field(token_registry: tuple[LocalRegistry, TokenService]) -> None:
    registry, service = token_registry
    service.answer_field = "access_token"
    try:
        assert sorted(
            RegistryClient(registry.url, username="bob", password=PASSWORD).list_tags("private/app")
        ) == sorted(TAGS)
    finally:
        service.answer_field = "token"


def test_token_auth_refusals_name_what_to_check(token_registry: tuple[LocalRegistry, TokenService]) -> None:
    registry, _service = token_registry
    with pytest.raises(RegistryError, match=r"requires credentials .* private/app \(HTTP 401 for anonymous") as anon:
        RegistryClient(registry.url).list_tags("private/app")
    client = RegistryClient(registry.url, username="bob", password="wrong-" + PASSWORD)
    with pytest.raises(RegistryError, match=r"token service .* refused a token for private/app as 'bob'") as bad:
        client.list_tags("private/app")
    for error in (anon.value, bad.value):
        assert PASSWORD not in str(error)


# --- a paging server of our own -------------------------------------------------------------------------
# Distribution 2.8 (Debian's docker-registry) ignores `n=` and never sends Link headers, so pagination,
# 429/Retry-After and 5xx retries are exercised against a small server that behaves like large registries.

PAGED = [f"1.0.{i}" for i in range(7)]


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_follows_next_links(link: str) -> None:
    """Own paging server (distribution 2.8 does not paginate): n/last pages and Link rel="next"."""
    recorder = Recorder()
    with paging_registry(PAGED, link=link) as server:
        tags = RegistryClient(server.url, page_size=3, log=recorder.log).list_tags("team/app")
    assert tags == sorted(PAGED)
    assert server.requests == [
        "/v2/team/app/tags/list?n=3",
        "/v2/team/app/tags/list?n=3&last=1.0.2",
        "/v2/team/app/tags/list?n=3&last=1.0.5",
    ]
    assert [log.rsplit(": ", 1)[1] for log in recorder.logs] == [
        "page 1, 3 tag(s) so far",
        "page 2, 6 tag(s) so far",
        "page 3, 7 tag(s) so far",
    ]


def test_refuses_a_next_link_to_another_host() -> None:
    """Own paging server (distribution 2.8 does not paginate): a Link to another host is not followed."""
    with paging_registry(PAGED, link="other-host") as server:
        with pytest.raises(RegistryError, match=r"pagination link for team/app to another host .*registry\.invalid"):
            RegistryClient(server.url, page_size=3).list_tags("team/app")
        assert len(server.requests) == 1


def test_429_honours_retry_after_seconds_capped() -> None:
    """Own server (distribution 2.8 never throttles): 429 with Retry-After in seconds, and a cap on it."""
    recorder = Recorder()
    before = [(429, {"Retry-After": "7"}), (429, {"Retry-After": "3600"})]
    with paging_registry(["1.0.0"], before=before) as server:
        client = RegistryClient(server.url, sleep=recorder.sleep, max_retry_after_seconds=30, log=recorder.log)
        assert client.list_tags("app") == ["1.0.0"]
    assert recorder.sleeps == [7.0, 30.0]
    assert "HTTP 429; retrying in 7.0s (attempt 2 of 5)" in recorder.logs[0]


def test_503_honours_retry_after_http_date() -> None:
    """Own server (distribution 2.8 never throttles): 503 with Retry-After as an HTTP date."""
    recorder = Recorder()
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    with paging_registry(["1.0.0"], before=[(503, {"Retry-After": when})]) as server:
        assert RegistryClient(server.url, sleep=recorder.sleep).list_tags("app") == ["1.0.0"]
    assert len(recorder.sleeps) == 1
    assert 3.0 <= recorder.sleeps[0] <= 5.0


def test_5xx_are_retried_with_jittered_backoff() -> None:
    """Own server (distribution 2.8 does not fail on cue): two 500s, then the tags."""
    recorder = Recorder()
    with paging_registry(["1.0.0"], before=[(500, {}), (502, {})]) as server:
        client = RegistryClient(server.url, sleep=recorder.sleep, backoff_seconds=0.5)
        assert client.list_tags("app") == ["1.0.0"]
        assert len(server.requests) == 3
    first, second = recorder.sleeps
    assert 0.25 <= first <= 0.75
    assert 0.5 <= second <= 1.5


def test_exhausted_retries_are_transient() -> None:
    """Own server: 503 on every attempt ends in a TransientRegistryError (Prefect may retry the task)."""
    recorder = Recorder()
    with paging_registry(["1.0.0"], before=[(503, {})] * 3) as server:
        client = RegistryClient(server.url, sleep=recorder.sleep, max_attempts=3)
        with pytest.raises(TransientRegistryError, match=r"after 3 attempt\(s\): HTTP 503; try again later"):
            client.list_tags("app")
        assert len(server.requests) == 3
    assert len(recorder.sleeps) == 2


def test_transport_errors_are_retried_then_transient() -> None:
    recorder = Recorder()
    client = RegistryClient(f"http://127.0.0.1:{free_port()}", sleep=recorder.sleep, max_attempts=2, timeout=2)
    with pytest.raises(TransientRegistryError, match="ConnectError"):
        client.list_tags("app")
    assert len(recorder.sleeps) == 1


def test_flow_steps_retry_registry_trouble_but_not_refusals() -> None:
    """Prefect retries a step on throttling or outages the client gave up on, never on a 404 or bad credentials."""
    from tasks.registry import RegistryError, TransientRegistryError
    from tasks.steps import is_transient_failure

    assert is_transient_failure(TransientRegistryError("429 Too Many Requests after 5 attempts"))
    assert not is_transient_failure(RegistryError("repository org/app not found"))


# --- where credentials go, how long a listing takes, what errors show (issue 14 items 3, 4, 9, 15) -------


def test_credentials_go_to_a_token_service_on_another_host_only_if_listed(
    registry_with_token_service_elsewhere: tuple[LocalRegistry, TokenService],
) -> None:
    """The realm is whatever the registry's 401 says: credentials follow it only to the registry's own host or a
    host in registry.token_hosts; otherwise the token is asked for anonymously."""
    registry, service = registry_with_token_service_elsewhere
    service.requests.clear()
    client = RegistryClient(registry.url, username="bob", password=PASSWORD)
    with pytest.raises(RegistryError, match=r"another host \(localhost\).*registry\.token_hosts: \[localhost\]") as e:
        client.list_tags("private/app")
    assert PASSWORD not in str(e.value)
    assert [r.user for r in service.requests] == [None]  # asked, but without the credentials

    service.requests.clear()
    assert sorted(client.list_tags("public/app")) == sorted(TAGS)  # a public image needs no credentials
    assert [r.user for r in service.requests] == [None]

    service.requests.clear()
    trusting = RegistryClient(registry.url, username="bob", password=PASSWORD, token_hosts=["localhost"])
    assert sorted(trusting.list_tags("private/app")) == sorted(TAGS)
    assert [r.user for r in service.requests] == ["bob"]


def test_credentials_never_travel_over_plain_http_beyond_loopback() -> None:
    with pytest.raises(RegistryError, match="plain http to a host other than loopback"):
        RegistryClient("http://registry.example:5000", username="bob", password=PASSWORD)
    RegistryClient("http://registry.example:5000")  # anonymous: nothing to leak
    # A loopback registry whose 401 names a plain-http realm elsewhere, even a listed one: refused before any
    # request goes there (the realm's host does not resolve, so a request would fail differently).
    challenge = 'Bearer realm="http://auth.invalid/token",service="registry",scope="repository:app:pull"'
    fixed = Fixed(status=401, content_type="application/json", body=b"{}", headers={"WWW-Authenticate": challenge})
    with serve_fixed(fixed) as url:
        client = RegistryClient(url, username="bob", password=PASSWORD, token_hosts=["auth.invalid"])
        with pytest.raises(RegistryError, match=r"token realm over plain http \(auth\.invalid\); refusing"):
            client.list_tags("app")
    assert [path for _method, path in fixed.paths] == ["/v2/app/tags/list?n=1000"]


def test_secrets_in_a_registry_error_body_are_scrubbed_and_the_text_capped() -> None:
    echo = {"errors": [{"code": "DENIED", "message": f"bad credentials {PASSWORD} " + "x" * 50_000}]}
    fixed = Fixed(status=400, content_type="application/json", body=json.dumps(echo).encode())
    denied = r"HTTP 400 .*DENIED: bad credentials <redacted> x"
    with serve_fixed(fixed) as url, pytest.raises(RegistryError, match=denied) as e:
        RegistryClient(url, username="bob", password=PASSWORD).list_tags("app")
    assert PASSWORD not in str(e.value)
    assert len(str(e.value)) < 400


def test_a_token_or_password_with_a_line_break_is_refused_not_retried() -> None:
    with pytest.raises(RegistryError, match=r"password \(token\) holds a line break.*check the registry"):
        RegistryClient("http://127.0.0.1:9", username="bob", password=PASSWORD + "\r\n")
    answered: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            answered.append(self.path)
            if self.path.startswith("/token"):
                self._json(200, {"token": "abc\r\nX-Injected: 1"})
                return
            address: Any = self.server.server_address
            port = address[1]
            realm = f"http://127.0.0.1:{port}/token"
            self._json(401, {}, {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'})

        def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    recorder = Recorder()
    with serve_http(Handler, poll_interval=0.05) as url, pytest.raises(RegistryError, match="token with a line") as e:
        RegistryClient(url, sleep=recorder.sleep).list_tags("app")
    assert not isinstance(e.value, TransientRegistryError)
    assert recorder.sleeps == []  # not retried
    assert len(answered) == 2  # the tag list, the token; never a request carrying the broken token


def test_endless_pagination_ends_within_the_listing_deadline() -> None:
    """Own paging server: a registry that keeps answering "next" is cut off by time, not only by page count."""
    tags = [f"1.0.{i}" for i in range(50_000)]
    with paging_registry(tags) as server:
        client = RegistryClient(server.url, page_size=1, overall_seconds=2)
        started = time.monotonic()
        with pytest.raises(TransientRegistryError, match=r"tags of team/app within the listing's 2s"):
            client.list_tags("team/app")
        elapsed = time.monotonic() - started
    assert len(server.requests) > 1  # it did page
    assert elapsed < 10, f"the 2 s listing took {elapsed:.1f}s"


def test_a_trickling_registry_is_cut_off_at_the_listing_deadline() -> None:
    trickle = Trickle(body=json.dumps({"name": "app", "tags": ["1.0.0"] * 50}).encode(), pause_s=0.2)
    with serve_trickle(trickle) as url:
        client = RegistryClient(url, overall_seconds=2, timeout=5)
        started = time.monotonic()
        with pytest.raises(TransientRegistryError, match="within the listing's 2s"):
            client.list_tags("app")
        elapsed = time.monotonic() - started
    assert elapsed < 6, f"the 2 s listing took {elapsed:.1f}s against one byte every 0.2 s"


def test_a_huge_tag_page_is_not_read_whole() -> None:
    big = Big(size=64 << 20, declare_length=False)
    with serve_big(big) as url, pytest.raises(RegistryError, match="over the 1 MiB limit"):
        RegistryClient(url, max_page_bytes=1 << 20).list_tags("app")
    assert big.sent < 16 << 20
