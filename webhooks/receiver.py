"""``promote receive``: an HTTP receiver that turns Docker-registry notifications and Gitea/GitHub/GitLab push
webhooks into Prefect events (``promote.source.pushed``), which a deployment trigger in prefect.yaml turns into
promote-rc runs.

* **Who may call it**: forge webhooks carry an HMAC-SHA256 of the body (GitHub ``X-Hub-Signature-256``, Gitea
  ``X-Gitea-Signature``) or the shared token (GitLab ``X-Gitlab-Token``); registry notifications carry
  ``Authorization: Bearer <token>`` (the registry's ``notifications.endpoints[].headers``). Secrets come by
  reference (environment variables), compared in constant time; a refusal is logged with the source address
  and the reason, never the payload.
* **Which pipelines**: a registry push goes to the image-policy pipelines whose registry repository it is; a
  Git push to the pipelines whose repository and branch it is. Pushes made only of this tool's own commits
  (the ``Promoted-By: gitops-promote`` trailer) are ignored: a promotion's write-back must not start another.
* **Bursts**: pushes to one pipeline within ``debounce`` seconds of each other give one event (the last push's
  ref and commit), so a CI job pushing five tags starts one run.
* **Bounds**: bodies over 1 MiB are refused before they are read; the server answers each request on its own
  thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from rules.errors import RefusedError
from tasks.evidence import PROMOTE_TRAILER
from tasks.repourls import normalize_repository

Source = Literal["registry", "github", "gitea", "gitlab"]
SOURCES: tuple[Source, ...] = ("registry", "github", "gitea", "gitlab")
EVENT = "promote.source.pushed"
MAX_BODY = 1 << 20
_SOCKET_SECONDS = 10.0
_REQUEST_SECONDS = 10.0  # a whole request (line, headers, body) must arrive within this, however it trickles
_MAX_CONCURRENT = 32
_MAX_PER_CLIENT = 16  # connections from one address at once (forges send from few; floods come from one)
_EVICTABLE_AFTER = 1.0  # a connection still sending its request after this long may make room for a new one
_MANIFEST_TYPES = ("manifest", "image.index")  # OCI/Docker manifest and index media types contain one of these
_ZERO = re.compile(r"^0+$")

log = logging.getLogger("promote.receiver")


class ReceiverError(RefusedError, ValueError):
    """A request the receiver cannot use; the message is short and never repeats the payload."""


@dataclass(frozen=True)
class Push:
    source: Source
    repository: str  # registry: the repository (team/app); forges: host/owner/name, normalized
    ref: str  # registry: the tag; forges: refs/heads/<branch>
    revision: str  # registry: the manifest digest; forges: the new head commit
    by: str = ""
    aliases: tuple[str, ...] = ()  # forges: the repository's other URLs, normalized


@dataclass(frozen=True)
class PullRequestDecided:
    """A forge says pull request ``number`` was merged or closed: runs waiting for it are resumed (they ask the
    forge themselves; this is only the nudge)."""

    source: Source
    repositories: tuple[str, ...]  # every URL the forge gave for the repository, normalized
    number: int
    merged: bool


@dataclass(frozen=True)
class Route:
    pipeline: str
    pipeline_file: str
    registry_repository: str | None = None  # image-policy pipelines: the registry repository
    git_repository: str | None = None  # normalized host/owner/name of the GitOps repository
    branch: str | None = None


# --- who may call -----------------------------------------------------------------------------------------


def authentic(source: Source, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the request carries the right signature or token for ``source``."""
    if not secret:
        return False
    get = {k.lower(): v for k, v in headers.items()}.get
    if source == "registry":
        given = get("authorization", "")
        return given.startswith("Bearer ") and _same(given[7:].strip(), secret)
    if source == "gitlab":
        return _same(get("x-gitlab-token", ""), secret)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if source == "github":
        given = get("x-hub-signature-256", "")
        return given.startswith("sha256=") and _same(given[7:].lower(), expected)
    given = get("x-gitea-signature", "") or get("x-hub-signature-256", "").removeprefix("sha256=")
    return bool(given) and _same(given.lower(), expected)


def _stale(body: bytes, window: float) -> str | None:
    """Why a signed GitHub push is too old to act on (``repository.pushed_at``, inside the signed body), or None:
    a captured delivery replayed after the replay window has been forgotten must not start a promotion."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    repository = data.get("repository") if isinstance(data, dict) else None
    pushed = repository.get("pushed_at") if isinstance(repository, dict) else None
    if isinstance(pushed, int) and not isinstance(pushed, bool):
        age = time.time() - pushed
        if age > window:
            return f"the push is {age / 3600:.0f} hours old (repository.pushed_at): a replayed delivery"
    return None


def _same(given: str, expected: str) -> bool:
    """Constant-time equality of any two strings (compare_digest refuses non-ASCII str: compare bytes)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


# --- what was pushed ----------------------------------------------------------------------------------------


def parse(source: Source, headers: Mapping[str, str], body: bytes) -> list[Push]:
    """The pushes in a request (a registry notification can carry many); [] for events that are not pushes."""
    try:
        data = json.loads(body)
    except ValueError:
        raise ReceiverError("the body is not JSON") from None
    except RecursionError:
        raise ReceiverError("the body is JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ReceiverError("the body is not a JSON object")
    if source == "registry":
        return _registry_pushes(data)
    kind = {k.lower(): v for k, v in headers.items()}.get(f"x-{source}-event", "")
    if kind.lower() not in ("push", "push hook"):
        return []  # a ping, a tag event, an issue comment: nothing to promote
    return _git_push(source, data)


_PULL_REQUEST_EVENTS = {"github": "pull_request", "gitea": "pull_request", "gitlab": "merge request hook"}


def parse_pull_request(source: Source, headers: Mapping[str, str], body: bytes) -> PullRequestDecided | None:
    """A merged or closed pull request in a forge's webhook, or None for anything else (opened, edited, a push)."""
    if source == "registry":
        return None
    kind = {k.lower(): v for k, v in headers.items()}.get(f"x-{source}-event", "")
    if kind.lower() != _PULL_REQUEST_EVENTS[source]:
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ReceiverError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ReceiverError("the body is not a JSON object")
    if source == "gitlab":
        attributes = _object(data.get("object_attributes"))
        action, number = attributes.get("action"), attributes.get("iid")
        if action not in ("merge", "close"):
            return None
        merged, project = action == "merge", _object(data.get("project"))
    else:
        pull = _object(data.get("pull_request"))
        if data.get("action") != "closed":
            return None
        number, merged, project = (
            pull.get("number", data.get("number")),
            bool(pull.get("merged")),
            _object(data.get("repository")),
        )
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ReceiverError(f"a {source} pull request event names its number")
    urls = [project.get(key) for key in ("clone_url", "git_http_url", "html_url", "web_url", "ssh_url", "git_ssh_url")]
    names = tuple(dict.fromkeys(n for u in urls if isinstance(u, str) and (n := normalize_repository(u[:1000]))))
    if not names:
        raise ReceiverError(f"a {source} pull request event names no repository URL")
    return PullRequestDecided(source, names[:4], number, merged)


def resume_waiting_runs(event: PullRequestDecided) -> None:
    """Resume the runs waiting for the pull request (on a thread of its own: the forge gets its answer at once)."""
    from tasks.merges import resume_for

    def work() -> None:
        try:
            resumed = resume_for(event.repositories, event.number)
        except Exception as exc:  # the sweeper resumes them later; say why this did not
            log.warning(f"could not resume the runs waiting for pull request #{event.number}: {type(exc).__name__}")
            return
        verb = "merged" if event.merged else "closed"
        log.info(f"pull request #{event.number} of {event.repositories[0]} {verb}: resumed {len(resumed)} run(s)")

    threading.Thread(target=work, name=f"resume-pr-{event.number}", daemon=True).start()


def _registry_pushes(data: dict[str, Any]) -> list[Push]:
    events = data.get("events")
    if not isinstance(events, list):
        raise ReceiverError("a registry notification has an events list")
    pushes = []
    for event in events[:1000]:
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = _object(event.get("target"))
        media = str(target.get("mediaType", ""))
        tag, repository = target.get("tag"), target.get("repository")
        if not (isinstance(tag, str) and tag and isinstance(repository, str) and repository):
            continue  # a blob upload, or a push by digest: no tag to promote
        if not any(kind in media for kind in _MANIFEST_TYPES):
            continue
        actor = _object(event.get("actor"))
        pushes.append(
            Push(
                "registry",
                repository[:255],
                tag[:128],
                str(target.get("digest", ""))[:100],
                str(actor.get("name", ""))[:100],
            )
        )
    return pushes


def _git_push(source: Source, data: dict[str, Any]) -> list[Push]:
    ref, after = data.get("ref"), data.get("after") or data.get("checkout_sha")
    if not isinstance(ref, str) or not isinstance(after, str):
        raise ReceiverError(f"a {source} push names its ref and the new commit (ref, after)")
    if _ZERO.match(after) or not ref.startswith("refs/heads/"):
        return []  # a deleted branch, or a tag push
    project = data.get("project") if source == "gitlab" else data.get("repository")
    if not isinstance(project, dict):
        raise ReceiverError(f"a {source} push names its repository")
    urls = [project.get(key) for key in ("clone_url", "git_http_url", "html_url", "web_url", "ssh_url", "git_ssh_url")]
    # Every URL the forge gives: a pipeline may name the repository by any of them (HTTP, SSH, the web URL).
    names = list(dict.fromkeys(n for u in urls if isinstance(u, str) and (n := normalize_repository(u[:1000]))))
    if not names:
        raise ReceiverError(f"a {source} push names no repository URL")
    normalized, aliases = names[0], tuple(names[1:4])
    listed = data.get("commits")
    commits = listed if isinstance(listed, list) else []
    messages = [str(c.get("message", "")) for c in commits if isinstance(c, dict)]
    if messages and all(PROMOTE_TRAILER in message for message in messages):
        return []  # only this tool's own write-back commits
    pusher = data.get("pusher") or data.get("user_username") or data.get("sender") or {}
    who = _object(pusher)
    by = pusher if isinstance(pusher, str) else str(who.get("login") or who.get("name") or who.get("username") or "")
    return [Push(source, normalized, ref[:255], after[:64], by[:100], aliases)]


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- which pipelines ------------------------------------------------------------------------------------------


def routes_from(directory: str | Path) -> list[Route]:
    """The routes of every valid pipeline file in ``directory`` (invalid ones are logged and skipped)."""
    from pipeline.load import PipelineError, discover_pipelines, load_pipeline

    routes = []
    for path in discover_pipelines(directory):
        try:
            pipeline = load_pipeline(str(path))
        except PipelineError as exc:
            log.warning(f"skipping {path.name}: {str(exc).splitlines()[0][:200]}")
            continue
        except Exception as exc:  # one odd file must not stop the receiver (or take it down at start)
            log.warning(f"skipping {path.name}: could not read it ({type(exc).__name__})")
            continue
        git = normalize_repository(pipeline.repository.url)
        # Whatever tracking reads a registry (today: image-policy) names it in its model.
        registries = (getattr(env.tracks, "registry", None) for env in pipeline.environments)
        registry = next((r.repository for r in registries if r is not None), None)
        routes.append(Route(pipeline.name, str(path), registry, git, pipeline.repository.branch))
    return routes


def match(push: Push, routes: list[Route]) -> list[Route]:
    if push.source == "registry":
        return [r for r in routes if r.registry_repository == push.repository]
    branch = push.ref.removeprefix("refs/heads/")
    names = {push.repository, *push.aliases}
    return [r for r in routes if r.git_repository in names and r.branch == branch]


# --- bursts ------------------------------------------------------------------------------------------------


@dataclass
class Debouncer:
    """One call of ``emit`` per pipeline per burst: the last push wins, ``seconds`` after the burst's last push."""

    emit: Callable[[Route, Push, int], None]
    seconds: float = 10.0
    _pending: dict[str, tuple[threading.Timer, Route, Push, int]] = field(default_factory=dict)
    _generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, route: Route, push: Push) -> None:
        with self._lock:
            previous = self._pending.pop(route.pipeline, None)
            count = 1
            if previous is not None:
                previous[0].cancel()
                count += previous[3]
            timer = threading.Timer(self.seconds, self._fire, args=(route.pipeline,))
            timer.daemon = True
            self._pending[route.pipeline] = (timer, route, push, count)
            timer.start()

    def _fire(self, pipeline: str) -> None:
        me = threading.current_thread()
        with self._lock:
            entry = self._pending.get(pipeline)
            if entry is None or entry[0] is not me:
                return  # a timer cancelled too late: the burst now belongs to a newer one
            del self._pending[pipeline]
        if entry is not None:
            _timer, route, push, count = entry
            self.emit(route, push, count)

    def flush(self) -> None:
        """Emit what is pending now (shutdown)."""
        with self._lock:
            entries = list(self._pending.values())
            self._pending.clear()
        for timer, route, push, count in entries:
            timer.cancel()
            self.emit(route, push, count)


def emit_prefect_event(route: Route, push: Push, count: int) -> None:
    from prefect.events import emit_event

    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"promote.pipeline.{route.pipeline}",
            "prefect.resource.name": route.pipeline,
            "promote.pipeline": route.pipeline,
        },
        payload={
            "pipeline_file": route.pipeline_file,
            "source": push.source,
            "repository": push.repository,
            "ref": push.ref,
            "revision": push.revision,
            "by": push.by or "anonymous",
            "pushes": count,
        },
    )
    log.info(f"{route.pipeline}: {push.source} push of {push.ref} ({count} in the burst) -> {EVENT}")


# --- the server ------------------------------------------------------------------------------------------------


REPLAY_SECONDS = 24 * 3600.0  # a delivery seen again within this is answered, and starts nothing
_REPLAY_ENTRIES = 10_000


@dataclass
class Receiver:
    routes: Callable[[], list[Route]]
    secrets: Mapping[Source, str]  # source -> its secret or token; a source without one is refused
    debouncer: Debouncer
    refused: list[str] = field(default_factory=list)  # reasons, for tests and the log
    replay_seconds: float = REPLAY_SECONDS
    on_pull_request: Callable[[PullRequestDecided], None] = resume_waiting_runs
    # What was delivered, by the hash of its signed content (a replayed request carries the same body and
    # signature; the delivery id headers are not signed, so they cannot tell a replay apart): hash -> when.
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _seen_lock: threading.Lock = field(default_factory=threading.Lock)

    def _replayed(self, source: Source, body: bytes) -> bool:
        key = hashlib.sha256(source.encode() + b"\0" + body).hexdigest()
        now = time.monotonic()
        with self._seen_lock:
            while self._seen and (
                len(self._seen) > _REPLAY_ENTRIES or now - next(iter(self._seen.values())) > self.replay_seconds
            ):
                self._seen.popitem(last=False)
            if key in self._seen:
                return True
            self._seen[key] = now
            return False

    def handle(
        self, source: Source, headers: Mapping[str, str], body: bytes, client: str
    ) -> tuple[int, dict[str, Any]]:
        if not authentic(source, headers, body, self.secrets.get(source, "")):
            reason = f"refused a {source} request from {client}: " + (
                "no secret configured for it" if not self.secrets.get(source) else "bad signature or token"
            )
            self.refused.append(reason)
            log.warning(reason)
            return 401, {"error": "bad signature or token"}
        try:
            decided = parse_pull_request(source, headers, body)
            pushes = parse(source, headers, body) if decided is None else []
        except ReceiverError as exc:
            log.warning(f"a {source} request from {client} was not usable: {exc}")
            return 400, {"error": str(exc)}
        # Pushes only: a pull request event carries the repository's last push time, which may be old for one
        # closed unmerged; the replay check below covers it, and a resume decides nothing anyway.
        stale = _stale(body, self.replay_seconds) if decided is None else None
        if stale:
            log.warning(f"refused a {source} delivery from {client}: {stale}")
            return 409, {"error": stale}
        if self._replayed(source, body):
            log.warning(f"a {source} delivery from {client} was already received: not acted on again")
            return 200, {"duplicate": True}
        if decided is not None:
            self.on_pull_request(decided)
            return 202, {"pull_request": decided.number, "merged": decided.merged}
        routes = self.routes()
        matched: list[str] = []
        for push in pushes:
            for route in match(push, routes):
                self.debouncer.push(route, push)
                matched.append(route.pipeline)
        return 202, {"pushes": len(pushes), "pipelines": sorted(set(matched))}


@dataclass(eq=False)
class _Connection:
    client: str
    sock: Any
    started: float = field(default_factory=time.monotonic)
    receiving: bool = True  # still sending its request (nothing authenticated yet)

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class ConnectionGate:
    """Who may hold one of the receiver's request slots, so that slow or silent clients cannot starve pushes.

    At most ``limit`` requests at once, ``per_client`` from one address. When full, the connection that has been
    sending its request the longest (past ``evictable_after``) is cut to make room: a forge sends its whole push
    at once and is never the oldest sender, while a client that trickles bytes keeps being the one cut. Every
    request must also arrive whole within ``request_seconds`` (one timer, not per read). Counted in ``cut``.
    """

    def __init__(
        self,
        limit: int = _MAX_CONCURRENT,
        per_client: int = _MAX_PER_CLIENT,
        *,
        request_seconds: float = _REQUEST_SECONDS,
        evictable_after: float = _EVICTABLE_AFTER,
    ) -> None:
        self.limit, self.per_client = limit, per_client
        self.request_seconds, self.evictable_after = request_seconds, evictable_after
        self._open: list[_Connection] = []
        self._lock = threading.Lock()
        self.cut = 0
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._stop = threading.Event()
        self._reaper.start()

    def admit(self, client: str, sock: Any) -> _Connection | None:
        """A slot for a new request, or None (answer 503): nothing could be made room for."""
        with self._lock:
            now = time.monotonic()
            mine = [c for c in self._open if c.client == client]
            for crowd, bound in ((mine, self.per_client), (self._open, self.limit)):
                if len(crowd) >= bound and not self._evict(crowd, now):
                    return None
            connection = _Connection(client, sock, now)
            self._open.append(connection)
            return connection

    def _evict(self, crowd: list[_Connection], now: float) -> bool:
        slow = [c for c in crowd if c.receiving and now - c.started >= self.evictable_after]
        if not slow:
            return False
        oldest = min(slow, key=lambda c: c.started)
        oldest.cut()
        self._open.remove(oldest)
        if oldest in crowd:
            crowd.remove(oldest)
        self.cut += 1
        return True

    def received(self, connection: _Connection) -> None:
        """The whole request is in: from here on the slot is working, not waiting, and is not cut."""
        with self._lock:
            connection.receiving = False

    def release(self, connection: _Connection) -> None:
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)

    def _reap(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                now = time.monotonic()
                late = [c for c in self._open if c.receiving and now - c.started > self.request_seconds]
                for connection in late:
                    connection.cut()
                    self._open.remove(connection)
                    self.cut += 1

    def close(self) -> None:
        self._stop.set()


def serve(receiver: Receiver, host: str, port: int, gate: ConnectionGate | None = None) -> ThreadingHTTPServer:
    """A started server (``serve_forever`` on a daemon thread); ``shutdown()`` stops it, ``server_close()`` frees
    its socket."""

    slots = gate or ConnectionGate()

    class Handler(BaseHTTPRequestHandler):
        timeout = _SOCKET_SECONDS  # a client that stops sending loses its connection (and its thread)

        def log_message(self, format: str, *args: object) -> None:
            return  # the receiver logs what matters itself; request lines would carry nothing useful

        def handle_one_request(self) -> None:
            connection = slots.admit(str(self.client_address[0]), self.connection)
            if connection is None:  # unauthenticated clients must not pile up threads
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                return
            self._slot = connection
            try:
                super().handle_one_request()
            except Exception as exc:  # never a traceback on stderr with a request in it
                log.warning(f"a request from {self.client_address[0]} failed: {type(exc).__name__}")
                self.close_connection = True
            finally:
                slots.release(connection)

        def do_GET(self) -> None:
            slots.received(self._slot)
            if self.path == "/healthz":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": "POST to /registry, /github, /gitea or /gitlab"})

        def do_POST(self) -> None:
            source = self.path.strip("/").split("?")[0]
            if source not in SOURCES:
                self._answer(404, {"error": "POST to /registry, /github, /gitea or /gitlab"})
                return
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                self._answer(411, {"error": "a Content-Length is required"})
                return
            if int(length) > MAX_BODY:
                self._answer(413, {"error": f"bodies over {MAX_BODY >> 20} MiB are refused"})
                return
            body = self.rfile.read(int(length))
            if len(body) < int(length):  # cut off (the request deadline) or the client hung up
                self.close_connection = True
                return
            slots.received(self._slot)
            status, answer = receiver.handle(source, dict(self.headers.items()), body, str(self.client_address[0]))
            self._answer(status, answer)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    return server


class _CachedRoutes:
    """Pipeline files are read again at most every ``ttl`` seconds: edits are picked up without a restart."""

    def __init__(self, directory: str | Path, ttl: float = 30.0) -> None:
        self._directory, self._ttl = directory, ttl
        self._routes: list[Route] = []
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> list[Route]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                self._routes = routes_from(self._directory)
                self._read_at = time.monotonic()
            return self._routes


MIN_SECRET_LENGTH = 16


def secrets_from_env(secret_env: str, registry_token_env: str) -> dict[Source, str]:
    """Each sender's secret: ``secret_env`` is the HMAC key of GitHub and Gitea (``<secret_env>_GITHUB`` and
    ``<secret_env>_GITEA`` give each its own); GitLab sends its token in plain text, so it only ever gets its own,
    ``<secret_env>_GITLAB``, never the HMAC key; the registry's bearer token is ``registry_token_env``."""
    shared = os.environ.get(secret_env, "").strip()
    found: dict[Source, str] = {}
    names: dict[Source, str] = {}
    senders: list[tuple[Source, str]] = [
        ("github", f"{secret_env}_GITHUB"),
        ("gitea", f"{secret_env}_GITEA"),
        ("gitlab", f"{secret_env}_GITLAB"),
        ("registry", registry_token_env),
    ]
    for source, variable in senders:
        own = os.environ.get(variable, "").strip()
        value = own or (shared if source in ("github", "gitea") else "")
        if value:
            found[source], names[source] = value, variable if own else secret_env
    if not found:
        raise ReceiverError(
            f"set {secret_env} (GitHub's and Gitea's webhook secret), {secret_env}_GITLAB (GitLab's token) or "
            f"{registry_token_env} (the registry's bearer token): a receiver that checks nothing would let anyone "
            "start promotions"
        )
    for source, value in found.items():
        if len(value) < MIN_SECRET_LENGTH:
            raise ReceiverError(
                f"{names[source]} is shorter than {MIN_SECRET_LENGTH} characters: a guessable secret protects "
                "nothing (make one with: openssl rand -hex 24)"
            )
    plain = {found.get("gitlab"), found.get("registry")} - {None}
    if plain & {found.get("github"), found.get("gitea")}:
        raise ReceiverError(
            "GitLab's token and the registry's bearer token travel in plain text: neither may be the same as an "
            "HMAC secret (GitHub's, Gitea's), or whoever reads one could sign pushes; give each its own"
        )
    return found


def run_forever(
    directory: str | Path,
    *,
    host: str,
    port: int,
    debounce: float,
    secret_env: str,
    registry_token_env: str,
    stop: threading.Event | None = None,
) -> None:
    """``promote receive``: serve until interrupted (or ``stop`` is set), then send what is still pending."""
    if not Path(directory).is_dir():
        raise ReceiverError(f"{str(directory)[:200]} is not a directory of pipeline files")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    routes = _CachedRoutes(directory)
    count = len(routes())
    debouncer = Debouncer(emit_prefect_event, seconds=debounce)
    receiver = Receiver(routes, secrets_from_env(secret_env, registry_token_env), debouncer)
    server = serve(receiver, host, port)
    address = f"http://{host}:{server.server_address[1]}"
    log.info(f"listening on {address}: POST /registry, /github, /gitea, /gitlab; {count} pipeline(s) in {directory}")
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        debouncer.flush()
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)  # the events still queued reach the server before the process ends
