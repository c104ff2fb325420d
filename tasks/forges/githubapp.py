"""GitHub App installation tokens: what an organisation that forbids personal tokens gives its automation.

The app's private key (PEM, by reference: an environment variable or a Prefect Secret block) signs a short JWT
(RS256; ``iss`` the App ID or Client ID, ``iat`` a minute in the past for clock drift, ``exp`` nine minutes ahead:
GitHub refuses more than ten), which GitHub exchanges for an installation token
(``apps/create-installation-access-token``: ``POST /app/installations/{installation_id}/access_tokens``), limited
to the pipeline's repository. The token lasts an hour; :class:`InstallationTokens` hands out the one it holds
until five minutes before it expires, then asks for a new one, so a promotion that waits for hours (an approval, a
pull request) pushes and calls the API with a valid token. Git uses it as the password of ``x-access-token``, the
forge client as its Bearer token; one holder per app, installation and repository in a process, so both share one
token.

Neither the key nor a token appears in a message, an argument or a file: the key is parsed in memory, the tokens
stay in this object (Git gets them through the credential helper's environment, tasks/gitrepo.py).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

from tasks.forges.base import ForgeAuthError, ForgeError, ForgeRefusedError

JWT_LIFETIME = 540  # seconds ahead of now; GitHub accepts at most 600
JWT_BACKDATE = 60  # seconds behind now, for a clock a little ahead of GitHub's
REFRESH_BEFORE = 300  # a token this close to its expiry is replaced before it is handed out
KEEP_HANDED_OUT = 48  # tokens remembered for scrubbing messages (two days of hourly ones)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key_pem: str, now: float, *, hint: str) -> str:
    """The JWT that authenticates as the app (RFC 7519, RS256), valid from a minute ago for nine minutes."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ForgeAuthError(
            f"{hint} does not hold a usable GitHub App private key: store the app's .pem file as it was downloaded "
            "(-----BEGIN RSA PRIVATE KEY-----), unencrypted"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ForgeAuthError(f"{hint} holds a private key that is not RSA; GitHub App keys are RSA (.pem)")
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"iat": int(now) - JWT_BACKDATE, "exp": int(now) + JWT_LIFETIME, "iss": app_id}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


class InstallationTokens:
    """The installation token of one app on one repository, refreshed before it expires (thread-safe)."""

    def __init__(
        self,
        api_url: str,
        repository: str,
        app_id: str,
        installation_id: int,
        private_key: Callable[[], str],
        *,
        hint: str,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``private_key()`` reads the PEM (asked only when a token is needed); ``hint`` names where the key comes
        from, for messages."""
        self.api_url = api_url.rstrip("/")
        self.repository = repository
        self.app_id = app_id
        self.installation_id = installation_id
        self._private_key = private_key
        self.hint = hint
        self._timeout = timeout
        self._clock = clock
        self._token = ""
        self._expires = 0.0
        self.handed_out: list[str] = []  # every token given so far, for scrubbing messages
        self._lock = threading.Lock()

    def __call__(self) -> str:
        """A token valid for at least :data:`REFRESH_BEFORE` more seconds."""
        with self._lock:
            if not self._token or self._expires - self._clock() < REFRESH_BEFORE:
                self._token, self._expires = self._exchange()
                # A long-lived worker gets one a hour: the recent ones are what a message could still hold.
                self.handed_out[:] = [*self.handed_out[-(KEEP_HANDED_OUT - 1) :], self._token]
            return self._token

    def _exchange(self) -> tuple[str, float]:
        from tasks.forges.github import GitHubForge

        where = f"GitHub App {self.app_id[:20]}, installation {self.installation_id}"
        jwt = app_jwt(self.app_id, self._private_key(), self._clock(), hint=self.hint)
        # The app speaks to the same API as the forge client, with the JWT as its Bearer token.
        client = GitHubForge(self.api_url, self.repository, jwt, token_hint=self.hint, timeout=self._timeout)
        try:
            answer = client.create_installation_token(self.installation_id)
        except ForgeAuthError:
            raise ForgeAuthError(
                f"GitHub refused the app's JWT for {where} (HTTP 401/403): check that {self.hint} holds the private "
                f"key of app {self.app_id[:20]} (not revoked), and that this machine's clock is right"
            ) from None
        except ForgeRefusedError as exc:
            if "HTTP 404" in str(exc):
                raise ForgeRefusedError(
                    f"GitHub has no {where}: install the app on {self.repository} (or its organisation) and set "
                    "installation_id to the number in the installation's settings URL"
                ) from None
            if "HTTP 422" in str(exc):
                raise ForgeRefusedError(
                    f"{where} cannot reach {self.repository}: give the installation access to that repository"
                ) from None
            raise
        what = f"the installation token of {where}"
        token = answer.get("token") if isinstance(answer, dict) else None
        expires = answer.get("expires_at") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or not isinstance(expires, str):
            raise ForgeError(f"GitHub answered without {what} and its expiry")
        try:
            expiry = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ForgeError(f"GitHub answered {what} with an expiry that is not a time") from None
        return token, expiry


_HOLDERS: dict[tuple[str, str, str, int], InstallationTokens] = {}
_HOLDERS_LOCK = threading.Lock()


def installation_tokens(
    api_url: str,
    repository: str,
    app_id: str,
    installation_id: int,
    private_key: Callable[[], str],
    *,
    hint: str,
) -> InstallationTokens:
    """The process's one holder for this app, installation and repository (Git and the forge share its token)."""
    key = (api_url.rstrip("/"), repository, app_id, installation_id)
    with _HOLDERS_LOCK:
        holder = _HOLDERS.get(key)
        if holder is None:
            holder = InstallationTokens(api_url, repository, app_id, installation_id, private_key, hint=hint)
            _HOLDERS[key] = holder
        return holder
