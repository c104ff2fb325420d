"""List an image repository's tags through the OCI Distribution API (``GET /v2/<name>/tags/list``).

What real registries do and this client follows:

* **Pagination**: ``?n=<page>`` and a ``Link: </v2/...?last=...>; rel="next"`` header (relative or
  absolute). A Link to another host is refused: following it would send our token there.
* **Auth**: a ``401`` names the scheme in ``WWW-Authenticate``. ``Bearer realm=...,service=...,scope=...``
  means "get a token from the realm" (anonymously, or with basic credentials when we have them; the answer
  holds ``token`` or ``access_token``); ``Basic realm=...`` means "send basic credentials". Tokens are
  cached per scope, so the next page (and the next call) does not ask again.
* **Where credentials go**: basic credentials travel only to the registry's own host and to the token hosts the
  pipeline file names (``registry.token_hosts``, e.g. ``auth.docker.io``); a realm on any other host gets an
  anonymous request or, when the repository needs credentials, a refusal naming the host. Nothing with a
  credential goes over plain http to a host other than loopback.
* **Bounds**: a listing, every page and token request and retry included, ends within ``overall_seconds``; a
  page's body is read up to ``max_page_bytes``.
* **Throttling and outages**: ``429`` and ``503`` honour ``Retry-After`` (seconds or an HTTP date, capped);
  other 5xx answers and transport errors are retried with jittered exponential backoff. When the attempts
  are used up the error is a :class:`TransientRegistryError`, so a Prefect task retry can try later.

Credentials and tokens never appear in messages or logs: errors name the registry, the repository and what
to check, never a value.
"""

from __future__ import annotations

import base64
import email.utils
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import httpx

from rules.errors import PromoteError, TransientError
from tasks import httpbounds
from tasks.httpbounds import Deadline, Response

__all__ = ["RegistryClient", "RegistryError", "TransientRegistryError"]

Log = Callable[[str], None]

# Repository names as the distribution spec defines them (lowercase path components, '/'-separated).
_REPOSITORY_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_RETRY_AFTER_STATUSES = (429, 503)
_MAX_PAGES = 10_000  # a registry that keeps answering "next" forever is broken, not large
_MAX_PAGE_BYTES = 8 << 20  # 1000 tags of 128 characters are 130 KiB; a page of megabytes is not a tag list


class RegistryError(PromoteError, RuntimeError):
    """The registry cannot give us the tags; the message names the registry, the repository and the fix."""


class TransientRegistryError(RegistryError, TransientError):
    """The registry was throttling or unavailable for every attempt; trying again later may succeed."""


class _RetryableError(Exception):
    """One attempt failed in a way worth repeating; ``delay`` is what the server asked for, if anything."""

    def __init__(self, problem: str, delay: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.delay = delay


class RegistryClient:
    """A read-only client of one registry (``https://registry.example:5000``)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_retry_after_seconds: float = 60.0,
        page_size: int = 1000,
        credentials_hint: str = "the registry credentials of the pipeline file (username and token)",
        sleep: Callable[[float], None] = time.sleep,
        log: Log | None = None,
        token_hosts: Iterable[str] = (),
        overall_seconds: float = 300.0,
        max_page_bytes: int = _MAX_PAGE_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"registry URL {base_url!r} is not an http(s) URL such as https://registry.example")
        if parts.username is not None or parts.password is not None:
            # Userinfo in a URL ends up in logs and error messages; credentials go through their own fields.
            raise RegistryError("the registry URL must not hold credentials; give them as username and password")
        if (username is None) != (password is None):
            raise RegistryError("registry credentials need both a username and a password (token)")
        if max_attempts < 1 or page_size < 1:
            raise RegistryError("max_attempts and page_size must be at least 1")
        for what, value in (("username", username), ("password (token)", password)):
            if value is not None and httpbounds.has_control_chars(value):
                # Retrying cannot help: the value itself is wrong (often a secret file's trailing newline pair).
                raise RegistryError(
                    f"the registry {what} holds a line break or another control character: check {credentials_hint}"
                )
        if username is not None and parts.scheme == "http" and not httpbounds.is_loopback(parts.hostname):
            raise RegistryError(
                f"registry URL {httpbounds.shown_url(base_url)} is plain http to a host other than loopback: "
                "credentials would travel in clear text; use https"
            )
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self._origin = _origin(self.base_url)
        self._basic = (username, password) if username is not None and password is not None else None
        self._transport = transport
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_retry_after = max_retry_after_seconds
        self._page_size = page_size
        self._credentials_hint = credentials_hint
        self._sleep = sleep
        self._log = log or (lambda _msg: None)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._scope_of: dict[str, str] = {}  # repository -> the scope its last challenge named
        self._use_basic: set[str] = set()  # repositories whose registry asked for basic auth
        self._withheld_from: dict[str, str] = {}  # repository -> the token host credentials were kept from
        self._token_hosts = {parts.hostname.lower(), *(h.strip().lower() for h in token_hosts)}
        self._overall = overall_seconds
        self._max_page_bytes = max_page_bytes
        self._deadline = Deadline(overall_seconds)

    # --- public surface -----------------------------------------------------------------------------

    def list_tags(self, repository: str) -> list[str]:
        """Every tag of ``repository`` (``team/app``), in the order the registry lists them."""
        if not _REPOSITORY_RE.fullmatch(repository):
            raise RegistryError(
                f"{repository!r} is not a repository name: use lowercase path components such as team/app "
                "(no registry host, tag or digest)"
            )
        tags: list[str] = []
        seen_urls: set[str] = set()
        url = f"{self.base_url}/v2/{repository}/tags/list?n={self._page_size}"
        self._deadline = Deadline(self._overall)
        with self._client() as client:
            for page in range(1, _MAX_PAGES + 1):
                seen_urls.add(url)
                response = self._get_authorized(client, url, repository)
                tags.extend(self._page_tags(response, repository))
                self._log(f"registry {self.base_url}: {repository}: page {page}, {len(tags)} tag(s) so far")
                next_url = self._next_page(response, url, repository)
                if next_url is None:
                    return tags
                if next_url in seen_urls:
                    raise RegistryError(
                        f"registry {self.base_url} sent a pagination link back to a page already read for "
                        f"{repository}; the registry's tag listing is broken"
                    )
                url = next_url
        raise RegistryError(f"registry {self.base_url} listed more than {_MAX_PAGES} pages of tags for {repository}")

    # --- one authorized GET -------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        # One connection pool per listing: nothing is left open between calls (the token cache is ours).
        return httpbounds.client(timeout=self._timeout, transport=self._transport)

    def _get_authorized(self, client: httpx.Client, url: str, repository: str) -> Response:
        fresh = False  # whether the credentials just sent were obtained for this very challenge
        while True:
            response = self._send(client, url, self._auth_headers(repository), what=f"tags of {repository}")
            if response.status_code != 401:
                return self._checked(response, repository)
            if fresh:
                break
            # No credentials yet, or cached ones the registry no longer takes (an expired token): answer the
            # challenge once; a second 401 means the credentials themselves are refused.
            self._forget(repository)
            self._answer_challenge(client, response.headers.get("www-authenticate", ""), repository)
            fresh = True
        withheld = self._withheld_from.get(repository)
        if withheld is not None:
            raise RegistryError(
                f"registry {self.base_url} refused an anonymous token for {repository} (HTTP 401): its token "
                f"service is on another host ({withheld}), and credentials are sent there only if the pipeline "
                f"file lists it: registry.token_hosts: [{withheld}]"
            )
        if self._basic is None:
            raise RegistryError(
                f"registry {self.base_url} requires credentials to list the tags of {repository} (HTTP 401 "
                f"for anonymous access): set {self._credentials_hint}"
            )
        raise RegistryError(
            f"registry {self.base_url} refused access to the tags of {repository} (HTTP 401) for user "
            f"{self._basic[0]!r}: check {self._credentials_hint}, and that they may pull {repository}"
        )

    def _answer_challenge(self, client: httpx.Client, challenge: str, repository: str) -> None:
        scheme, params = _parse_challenge(challenge)
        if scheme == "bearer":
            self._fetch_token(client, params, repository)
        elif scheme == "basic":
            if self._basic is None:
                raise RegistryError(
                    f"registry {self.base_url} requires credentials to list the tags of {repository}: "
                    f"set {self._credentials_hint}"
                )
            self._use_basic.add(repository)
        else:
            raise RegistryError(
                f"registry {self.base_url} answered 401 for {repository} with an authentication scheme this "
                f"client does not support ({challenge.split(' ', 1)[0] or 'none given'}); supported: Bearer "
                "(token service) and Basic"
            )

    def _forget(self, repository: str) -> None:
        scope = self._scope_of.pop(repository, None)
        if scope is not None:
            self._tokens.pop(scope, None)
        self._use_basic.discard(repository)

    def _auth_headers(self, repository: str) -> dict[str, str]:
        scope = self._scope_of.get(repository)
        if scope is not None and scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if repository in self._use_basic and self._basic is not None:
            return {"Authorization": _basic_header(*self._basic)}
        return {}

    def _fetch_token(self, client: httpx.Client, params: dict[str, str], repository: str) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.base_url} asked for a bearer token but named no realm to get it from")
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("http", "https") or not realm_parts.hostname:
            raise RegistryError(f"registry {self.base_url} named a token realm that is not an http(s) URL")
        realm_host = realm_parts.hostname.lower()
        basic = self._basic
        if basic is not None and realm_parts.scheme == "http" and not httpbounds.is_loopback(realm_host):
            # Never in clear text: credentials do not travel over http except on this machine.
            raise RegistryError(
                f"registry {self.base_url} sent its token realm over plain http ({realm_host}); refusing to send "
                "credentials there"
            )
        if basic is not None and realm_host not in self._token_hosts:
            # The realm is whatever the registry's 401 says: without this rule, anyone who can answer for the
            # registry collects our credentials. Ask anonymously; a 401/403 below then names the host to allow.
            self._log(
                f"registry {self.base_url}: token service {realm_host} is not the registry's host nor in "
                "registry.token_hosts: asking it for a token without credentials"
            )
            basic = None
            self._withheld_from[repository] = realm_host
        else:
            self._withheld_from.pop(repository, None)
        scope = params.get("scope", f"repository:{repository}:pull")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope)) if v}
        headers = {"Authorization": _basic_header(*basic)} if basic is not None else {}
        token_url = str(httpx.URL(realm).copy_merge_params(query))
        response = self._send(client, token_url, headers, what=f"a token for {repository}")
        if response.status_code in (401, 403):
            if basic is None and self._basic is not None:
                raise RegistryError(
                    f"registry {self.base_url} refused an anonymous token for {repository} (HTTP "
                    f"{response.status_code}): its token service is on another host ({realm_host}), and "
                    f"credentials are sent there only if the pipeline file lists it: "
                    f"registry.token_hosts: [{realm_host}]"
                )
            who = f"as {self._basic[0]!r}" if self._basic else "anonymously"
            raise RegistryError(
                f"the token service of registry {self.base_url} refused a token for {repository} {who} "
                f"(HTTP {response.status_code}): check {self._credentials_hint}"
            )
        if response.status_code != 200:
            raise RegistryError(
                f"the token service of registry {self.base_url} answered HTTP {response.status_code} for {repository}"
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"the token service of registry {self.base_url} answered without a token for {repository}"
            )
        if httpbounds.has_control_chars(token):
            raise RegistryError(
                f"the token service of registry {self.base_url} answered a token with a line break or another "
                f"control character for {repository}; refusing to send it (the token service is broken)"
            )
        self._tokens[scope] = token
        self._scope_of[repository] = scope

    def _checked(self, response: Response, repository: str) -> Response:
        status = response.status_code
        if status == 200:
            return response
        if status == 404:
            raise RegistryError(
                f"repository {repository} not found at {self.base_url} (HTTP 404): check the registry URL "
                "and the repository name in the pipeline file"
            )
        if status == 403:
            raise RegistryError(
                f"registry {self.base_url} denied access to {repository} (HTTP 403): the credentials in "
                f"{self._credentials_hint} may not pull it"
            )
        raise RegistryError(
            f"registry {self.base_url} answered HTTP {status} for the tags of {repository}: "
            f"{httpbounds.scrub(_error_text(response), self._secrets())}"
        )

    def _secrets(self) -> list[str | None]:
        """What a registry's error body must not repeat to us: our password and the tokens we hold."""
        basic = _basic_header(*self._basic) if self._basic else None  # an echoed request header is the credential
        return [
            self._basic[1] if self._basic else None,
            basic,
            basic.removeprefix("Basic ") if basic else None,
            *self._tokens.values(),
        ]

    # --- retries ------------------------------------------------------------------------------------

    def _send(self, client: httpx.Client, url: str, headers: dict[str, str], *, what: str) -> Response:
        last_problem = ""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return self._attempt(client, url, headers, what)
            except _RetryableError as retry:
                last_problem = retry.problem
                if attempt == self._max_attempts:
                    break
                delay = retry.delay if retry.delay is not None else self._backoff_delay(attempt)
                if delay >= self._deadline.remaining():
                    raise self._out_of_time(what) from None
                self._log(
                    f"registry {self.base_url}: {what}: {retry.problem}; retrying in {delay:.1f}s "
                    f"(attempt {attempt + 1} of {self._max_attempts})"
                )
                self._sleep(delay)
        raise TransientRegistryError(
            f"registry {self.base_url} did not answer for {what} after {self._max_attempts} attempt(s): "
            f"{last_problem}; try again later"
        )

    def _out_of_time(self, what: str) -> TransientRegistryError:
        return TransientRegistryError(
            f"registry {self.base_url} did not answer for {what} within the listing's {self._overall:.0f}s "
            "overall deadline; the registry is slow or unreachable: try again later"
        )

    def _attempt(self, client: httpx.Client, url: str, headers: dict[str, str], what: str) -> Response:
        try:
            response = httpbounds.request(
                client,
                "GET",
                url,
                headers={"Accept": "application/json", **headers},
                deadline=self._deadline,
                max_bytes=self._max_page_bytes,
            )
        except httpbounds.DeadlineExceededError:
            raise self._out_of_time(what) from None
        except httpbounds.ResponseTooLargeError as exc:
            raise RegistryError(f"registry {self.base_url} answered {what} with a {exc}") from None
        except httpx.TransportError as exc:
            # The exception's text names the URL at most (ours hold no secrets), never our headers.
            raise _RetryableError(httpbounds.scrub(f"{type(exc).__name__}: {exc}", self._secrets())) from None
        status = response.status_code
        if status in _RETRY_AFTER_STATUSES:
            delay = _retry_after(response.headers.get("retry-after"), self._max_retry_after)
            raise _RetryableError(f"HTTP {status}", delay)
        if status >= 500:
            raise _RetryableError(f"HTTP {status}")
        return response

    def _backoff_delay(self, attempt: int) -> float:
        # Full jitter around an exponential step: concurrent promotions do not retry in lockstep.
        step = self._backoff * 2 ** (attempt - 1)
        return float(min(self._max_retry_after, step * random.uniform(0.5, 1.5)))  # noqa: S311 - not crypto

    # --- pages --------------------------------------------------------------------------------------

    def _page_tags(self, response: Response, repository: str) -> list[str]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError(f"registry {self.base_url} answered the tag list of {repository} with no JSON object")
        tags = body.get("tags")
        if tags is None:  # a repository whose tags were all deleted lists null
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RegistryError(
                f"registry {self.base_url} answered the tag list of {repository} without a list of tags"
            )
        return list(tags)

    def _next_page(self, response: Response, url: str, repository: str) -> str | None:
        for target, rel in _links(response.headers.get_list("link")):
            if "next" not in rel:
                continue
            next_url = urljoin(url, target)
            if _origin(next_url) != self._origin:
                raise RegistryError(
                    f"registry {self.base_url} sent a pagination link for {repository} to another host "
                    f"({_origin(next_url)}); refusing to follow it with our credentials"
                )
            return next_url
        return None


# --- header parsing ---------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port)


def _basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://auth",service="registry",scope="repository:app:pull"`` -> scheme, params."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): value.replace('\\"', '"') if quoted else value for key, quoted, value in _challenge_params(rest)
    }
    return scheme.lower(), params


def _challenge_params(text: str) -> Iterator[tuple[str, bool, str]]:
    for match in re.finditer(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?', text):
        quoted = match.group(2) is not None
        yield match.group(1), quoted, match.group(2) if quoted else match.group(3)


def _links(values: list[str]) -> Iterator[tuple[str, set[str]]]:
    """``<url>; rel="next"`` entries of Link headers as (url, {rel values})."""
    for value in values:
        for match in _LINK_RE.finditer(value):
            rels: set[str] = set()
            for param in match.group(2).split(";"):
                key, _, raw = param.strip().partition("=")
                if key.strip().lower() == "rel":
                    rels.update(raw.strip().strip('"').lower().split())
            yield match.group(1).strip(), rels


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), capped; None if absent."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), cap)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, min((when - datetime.now(UTC)).total_seconds(), cap))


def _error_text(response: Response) -> str:
    """The registry's own error codes (``{"errors": [{"code": ..., "message": ...}]}``), or the body; whole, so
    that secrets are scrubbed before it is cut to length."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or "(empty body)"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}" for e in errors if isinstance(e, dict))
    return str(body)
