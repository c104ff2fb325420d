"""Contract tests of GitHub App installation tokens (tasks/forges/githubapp.py): the JWT signed with the app's key
is exchanged through ``apps/create-installation-access-token`` on the contract server built from GitHub's published
description (tests/support/githubcontract.py), which verifies the JWT's RS256 signature with the app's public key,
its issuer and its lifetime as GitHub does, and accepts the minted tokens on the other operations until they expire."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.model import GitCredentials, GitHubApp, Repository, SecretRef
from tasks.connections import repository_auth
from tasks.forges.base import ForgeAuthError, ForgeRefusedError
from tasks.forges.github import GitHubForge
from tasks.forges.githubapp import JWT_LIFETIME, REFRESH_BEFORE, InstallationTokens
from tests.support.githubcontract import OWNER, REPO, FakeGitHub, serve_github
from tests.support.openapi import ContractServer

APP_ID, INSTALLATION = "424242", 7001


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    encoded = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return encoded.decode()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def github(key: rsa.RSAPrivateKey) -> Iterator[tuple[FakeGitHub, ContractServer]]:
    with serve_github("ghp_" + "p" * 36) as (fake, server):
        fake.app = (APP_ID, INSTALLATION, key.public_key())
        yield fake, server
        assert server.violations == [], server.violations


def holder(fake: FakeGitHub, private_key: str, *, installation: int = INSTALLATION) -> InstallationTokens:
    return InstallationTokens(
        fake.url, f"{OWNER}/{REPO}", APP_ID, installation, lambda: private_key, hint="environment variable GH_APP_KEY"
    )


def test_contract_an_installation_token_from_the_app_s_jwt_opens_the_api(
    github: tuple[FakeGitHub, ContractServer], key: rsa.RSAPrivateKey
) -> None:
    fake, server = github
    tokens = holder(fake, pem(key))
    first = tokens()
    assert first.startswith("ghs_") and fake.accepts(first)
    assert tokens() == first  # an hour-long token is handed out again, not asked for again
    assert len(fake.jwt_claims) == 1
    claims = fake.jwt_claims[0]
    assert claims["iss"] == APP_ID and claims["exp"] - claims["iat"] == JWT_LIFETIME + 60
    # The forge client with the holder as its token: GitHub accepts the installation token.
    forge = GitHubForge(fake.url, f"{OWNER}/{REPO}", tokens, token_hint="the installation token")
    number = fake.add_pull("promote/web")
    assert forge.pull_request(number).number == number
    assert "apps/create-installation-access-token" in server.calls


def test_contract_a_token_about_to_expire_is_replaced_before_it_is_handed_out(
    github: tuple[FakeGitHub, ContractServer], key: rsa.RSAPrivateKey
) -> None:
    fake, _ = github
    fake.token_seconds = REFRESH_BEFORE - 30  # every token GitHub gives is already inside the refresh margin
    tokens = holder(fake, pem(key))
    first, second = tokens(), tokens()
    assert first != second and len(fake.jwt_claims) == 2
    assert tokens.handed_out == [first, second]  # what Git's messages are scrubbed of


def test_contract_a_key_that_is_not_the_app_s_is_refused_with_the_reference_not_the_key(
    github: tuple[FakeGitHub, ContractServer],
) -> None:
    fake, _ = github
    other = pem(new_key())
    with pytest.raises(ForgeAuthError, match=r"refused the app's JWT.*GH_APP_KEY.*clock") as raised:
        holder(fake, other)()
    assert "PRIVATE KEY" not in str(raised.value) and other[40:80] not in str(raised.value)
    with pytest.raises(ForgeAuthError, match=r"GH_APP_KEY does not hold a usable GitHub App private key"):
        holder(fake, "not a key")()


def test_contract_an_installation_the_app_does_not_have_is_named(
    github: tuple[FakeGitHub, ContractServer], key: rsa.RSAPrivateKey
) -> None:
    fake, _ = github
    with pytest.raises(ForgeRefusedError, match=r"GitHub has no GitHub App 424242, installation 9.*install the app"):
        holder(fake, pem(key), installation=9)()


def test_git_gets_the_installation_token_as_x_access_token(
    github: tuple[FakeGitHub, ContractServer], key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _ = github
    monkeypatch.setenv("PROMOTE_TEST_APP_KEY", pem(key))
    app = GitHubApp(app_id=APP_ID, installation_id=INSTALLATION, private_key=SecretRef(env="PROMOTE_TEST_APP_KEY"))
    credentials = GitCredentials(github_app=app.model_copy(update={"api_url": fake.url}))
    auth = repository_auth(Repository(url=f"https://github.example/{OWNER}/{REPO}.git", credentials=credentials))
    assert auth is not None and auth.username == "x-access-token"
    token = auth.current()
    assert fake.accepts(token) and token in auth.secrets()
    assert token not in repr(auth)
