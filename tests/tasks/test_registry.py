"""The registry client against Debian's docker-registry (distribution 2.8) in three auth modes, and against a
small paging server of the test's own for what distribution 2.8 never does (pagination, throttling)."""

from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Iterator

import pytest

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


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, TokenService]]:
    workdir = tmp_path_factory.mktemp("registry-token")
    with token_service({"bob": PASSWORD}, public={"public/app"}) as service:
        bundle = workdir / "token-root.pem"
        bundle.write_bytes(service.certificate_pem())
        auth = {"token": {"realm": service.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)}}
        with run_registry(workdir, auth=auth) as registry:
            for repository in ("public/app", "private/app"):
                access = [{"type": "repository", "name": repository, "actions": ["pull", "push"]}]
                push_image(
                    registry.url, repository, TAGS, headers={"Authorization": f"Bearer {service.mint('bob', access)}"}
                )
            yield registry, service


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
