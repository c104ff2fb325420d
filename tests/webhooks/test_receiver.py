"""The push receiver (webhooks/receiver.py): signatures and tokens as each sender makes them, the payload shapes
they document, routing to pipelines, bursts, and the real HTTP server, up to a real docker-registry posting its
notifications to it and the event arriving at the real Prefect server."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks.evidence import PROMOTE_TRAILER
from tasks.repourls import normalize_repository
from webhooks import receiver
from webhooks.receiver import Debouncer, Push, Receiver, Route, authentic, match, parse, serve

SECRET = "s3cret-webhook-value"
BODY = b'{"ref": "refs/heads/main"}'

# --- who may call: each sender's own scheme ---------------------------------------------------------------


def _hex(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("source", "good", "bad"),
    [
        # GitHub: X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body> (docs: "Validating webhook deliveries")
        ("github", {"X-Hub-Signature-256": f"sha256={_hex(BODY)}"}, {"X-Hub-Signature-256": f"sha256={_hex(b'x')}"}),
        # Gitea: X-Gitea-Signature: <hex HMAC-SHA256> (modules/webhook deliver.go), no prefix
        ("gitea", {"X-Gitea-Signature": _hex(BODY)}, {"X-Gitea-Signature": _hex(BODY, "other")}),
        # GitLab: X-Gitlab-Token: the secret token itself (docs: "Webhooks", secret token)
        ("gitlab", {"X-Gitlab-Token": SECRET}, {"X-Gitlab-Token": SECRET + "x"}),
        # distribution: notifications.endpoints[].headers, here Authorization: Bearer <token>
        ("registry", {"Authorization": f"Bearer {SECRET}"}, {"Authorization": "Bearer nope"}),
    ],
)
def test_signatures_and_tokens(source: receiver.Source, good: dict[str, str], bad: dict[str, str]) -> None:
    assert authentic(source, good, BODY, SECRET)
    assert not authentic(source, bad, BODY, SECRET)
    assert not authentic(source, {}, BODY, SECRET)
    assert not authentic(source, good, BODY, "")  # no secret configured: nobody gets in
    lower = {key.lower(): value for key, value in good.items()}  # header names are case-insensitive
    assert authentic(source, lower, BODY, SECRET)


# --- what was pushed --------------------------------------------------------------------------------------

REGISTRY_ENVELOPE = {  # distribution's notifications, docs/notifications.md ("Events" example), trimmed
    "events": [
        {
            "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
            "timestamp": "2016-03-09T14:44:26.402973972-08:00",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": 708,
                "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
                "length": 708,
                "repository": "team/app",
                "url": "http://example.com/v2/team/app/manifests/sha256:fea8...",
                "tag": "1.4.0",
            },
            "request": {"id": "6df24a34", "addr": "192.168.64.11:42961", "host": "192.168.100.227:5000"},
            "actor": {"name": "ci"},
            "source": {"addr": "xtal.local:5000", "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"},
        },
        {  # a layer upload: no tag, not a manifest
            "action": "push",
            "target": {"mediaType": "application/octet-stream", "repository": "team/app", "digest": "sha256:aa"},
        },
        {"action": "pull", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "tag": "1.3.0"}},
    ]
}


def _github_push(**changes: Any) -> dict[str, Any]:
    """GitHub's push event (docs: webhook events and payloads, "push"), the fields the receiver reads."""
    body: dict[str, Any] = {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "76ae82c7b1a177c8d03f9e96e0adf2466113728f",
        "repository": {
            "full_name": "team/gitops",
            "clone_url": "https://github.com/Team/GitOps.git",
            "ssh_url": "git@github.com:Team/GitOps.git",
        },
        "pusher": {"name": "alice", "email": "alice@example.org"},
        "commits": [{"id": "76ae82c7", "message": "feat: faster checkout"}],
    }
    body.update(changes)
    return body


def test_registry_notifications_give_one_push_per_pushed_tag() -> None:
    pushes = parse("registry", {}, json.dumps(REGISTRY_ENVELOPE).encode())
    assert pushes == [
        Push(
            "registry",
            "team/app",
            "1.4.0",
            "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "ci",
        )
    ]


def test_git_pushes_from_each_forge() -> None:
    github = parse("github", {"X-GitHub-Event": "push"}, json.dumps(_github_push()).encode())
    assert github == [Push("github", "github.com/team/gitops", "refs/heads/main", _github_push()["after"], "alice")]
    gitea = {  # Gitea's push payload (modules/structs/hook.go PushPayload): GitHub's shape, pusher.login
        "ref": "refs/heads/main",
        "after": "a" * 40,
        "repository": {"clone_url": "http://gitea.local:3000/team/gitops.git"},
        "pusher": {"login": "bob"},
        "commits": [{"message": "fix: typo"}],
    }
    assert parse("gitea", {"X-Gitea-Event": "push"}, json.dumps(gitea).encode()) == [
        Push("gitea", "gitea.local/team/gitops", "refs/heads/main", "a" * 40, "bob")
    ]
    gitlab = {  # GitLab's "Push Hook" (docs: webhook events, push events)
        "object_kind": "push",
        "ref": "refs/heads/main",
        "checkout_sha": "b" * 40,
        "after": "b" * 40,
        "user_username": "carol",
        "project": {"git_http_url": "https://gitlab.example.com/team/gitops.git"},
        "commits": [{"message": "chore: bump"}],
    }
    assert parse("gitlab", {"X-Gitlab-Event": "Push Hook"}, json.dumps(gitlab).encode()) == [
        Push("gitlab", "gitlab.example.com/team/gitops", "refs/heads/main", "b" * 40, "carol")
    ]


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-GitHub-Event": "ping"}, _github_push()),  # not a push
        ({"X-GitHub-Event": "push"}, _github_push(ref="refs/tags/v1.0.0")),  # a tag push
        ({"X-GitHub-Event": "push"}, _github_push(after="0" * 40)),  # a deleted branch
        # only this tool's own write-back commits: a promotion must not start another
        ({"X-GitHub-Event": "push"}, _github_push(commits=[{"message": f"promote(shop)\n\n{PROMOTE_TRAILER}"}])),
    ],
)
def test_pushes_that_start_nothing(headers: dict[str, str], body: dict[str, Any]) -> None:
    assert parse("github", headers, json.dumps(body).encode()) == []


def test_unusable_bodies_are_named_without_repeating_them() -> None:
    with pytest.raises(receiver.ReceiverError, match="not JSON"):
        parse("github", {"X-GitHub-Event": "push"}, b"<html>" + b"x" * 5000)
    with pytest.raises(receiver.ReceiverError, match="names its repository"):
        parse("github", {"X-GitHub-Event": "push"}, json.dumps(_github_push(repository="x" * 5000)).encode())
    with pytest.raises(receiver.ReceiverError, match="events list"):
        parse("registry", {}, b"{}")


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://GitHub.com/Team/GitOps.git", "github.com/team/gitops"),
        ("https://x-access-token:abc@github.com/team/gitops/", "github.com/team/gitops"),
        ("git@github.com:team/gitops.git", "github.com/team/gitops"),
        ("ssh://git@github.com:22/team/gitops", "github.com/team/gitops"),
        ("http://gitea.local:3000/team/gitops", "gitea.local/team/gitops"),
        ("not a url", None),
    ],
)
def test_repository_urls_are_compared_normalized(url: str, normalized: str | None) -> None:
    assert normalize_repository(url) == normalized


def test_routing_by_registry_repository_or_repository_and_branch() -> None:
    routes = [
        Route("shop", "shop.yaml", registry_repository="team/app"),
        Route("gitops", "gitops.yaml", git_repository="github.com/team/gitops", branch="main"),
    ]
    assert [r.pipeline for r in match(Push("registry", "team/app", "1.0", "d"), routes)] == ["shop"]
    assert match(Push("registry", "team/other", "1.0", "d"), routes) == []
    git = Push("github", "github.com/team/gitops", "refs/heads/main", "c")
    assert [r.pipeline for r in match(git, routes)] == ["gitops"]
    assert match(Push("github", "github.com/team/gitops", "refs/heads/dev", "c"), routes) == []


def test_a_burst_gives_one_emission_with_the_last_push() -> None:
    emitted: list[tuple[str, str, int]] = []
    done = threading.Event()

    def emit(route: Route, push: Push, count: int) -> None:
        emitted.append((route.pipeline, push.ref, count))
        done.set()

    debouncer = Debouncer(emit, seconds=0.5)
    route = Route("shop", "shop.yaml", registry_repository="team/app")
    for tag in ("1.0.0", "1.0.1", "1.0.2"):
        debouncer.push(route, Push("registry", "team/app", tag, "d"))
    assert done.wait(60), "the burst was never emitted"
    assert emitted == [("shop", "1.0.2", 3)]
    assert debouncer._pending == {}  # nothing else is waiting to be sent


# --- the server -----------------------------------------------------------------------------------------------


@pytest.fixture
def running() -> Iterator[tuple[Receiver, list[tuple[Route, Push, int]], str]]:
    emitted: list[tuple[Route, Push, int]] = []
    routes = [Route("shop", "shop.yaml", registry_repository="team/app")]
    debouncer = Debouncer(lambda route, push, count: emitted.append((route, push, count)), seconds=0.2)
    rx = Receiver(lambda: routes, {"registry": SECRET, "github": SECRET}, debouncer)
    server = serve(rx, "127.0.0.1", 0)
    try:
        yield rx, emitted, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_bad_signature_is_refused_and_logged_without_the_payload(
    running: tuple[Receiver, list[Any], str], caplog: pytest.LogCaptureFixture
) -> None:
    rx, emitted, url = running
    caplog.set_level(logging.INFO)
    body = json.dumps({**REGISTRY_ENVELOPE, "marker": "PAYLOAD-MARKER-4711"}).encode()
    refused = httpx.post(f"{url}/registry", content=body, headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert refused.status_code == 401
    assert rx.refused and "bad signature or token" in rx.refused[0]
    assert "PAYLOAD-MARKER-4711" not in caplog.text and "wrong" not in caplog.text
    unsigned = httpx.post(f"{url}/gitlab", content=body, headers={"X-Gitlab-Token": SECRET}, timeout=30)
    assert unsigned.status_code == 401 and "no secret configured" in rx.refused[-1]  # gitlab has none here
    assert emitted == []


def test_accepted_pushes_are_routed(running: tuple[Receiver, list[Any], str]) -> None:
    _rx, emitted, url = running
    body = json.dumps(REGISTRY_ENVELOPE).encode()
    answer = httpx.post(f"{url}/registry", content=body, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)
    assert answer.status_code == 202 and answer.json() == {"pushes": 1, "pipelines": ["shop"]}
    deadline = time.monotonic() + 60
    while not emitted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(route.pipeline, push.ref) for route, push, _count in emitted] == [("shop", "1.4.0")]


def test_oversized_and_unknown_requests(running: tuple[Receiver, list[Any], str]) -> None:
    _rx, _emitted, url = running
    big = httpx.post(f"{url}/registry", content=b"x" * ((1 << 20) + 1), timeout=30)
    assert big.status_code == 413
    assert httpx.post(f"{url}/elsewhere", content=b"{}", timeout=30).status_code == 404
    assert httpx.get(f"{url}/healthz", timeout=30).json() == {"ok": True}


def test_without_any_secret_the_receiver_does_not_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMOTE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("PROMOTE_REGISTRY_WEBHOOK_TOKEN", raising=False)
    with pytest.raises(receiver.ReceiverError, match="a receiver that checks nothing"):
        receiver.secrets_from_env("PROMOTE_WEBHOOK_SECRET", "PROMOTE_REGISTRY_WEBHOOK_TOKEN")
    assert os.environ.get("PROMOTE_WEBHOOK_SECRET") is None


# --- hostile requests (each was an empty reply or a stuck thread) ------------------------------------------


def _raw(url: str, data: bytes, wait: float = 30) -> bytes:
    """Send ``data`` as it is over a socket and read the answer (what httpx would refuse to send)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /registry HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xb2\r\n\r\n",  # a digit Python calls one
        b"POST /registry HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9t\xe9\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: \xff\xfe\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["superscript-length", "non-ascii-bearer", "non-ascii-token"],
)
def test_hostile_headers_get_an_answer(running: tuple[Receiver, list[Any], str], request_bytes: bytes) -> None:
    _rx, _emitted, url = running
    answer = _raw(url, request_bytes)
    assert answer.startswith(b"HTTP/1.") and (b" 411 " in answer or b" 401 " in answer), answer[:200]


def test_a_signed_odd_payload_is_a_400_not_a_crash(running: tuple[Receiver, list[Any], str]) -> None:
    _rx, _emitted, url = running
    for body in (
        json.dumps(_github_push(pusher=5)).encode(),
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python's parser recurses
    ):
        signature = {"X-Hub-Signature-256": f"sha256={_hex(body)}", "X-GitHub-Event": "push"}
        answer = httpx.post(f"{url}/github", content=body, headers=signature, timeout=30)
        assert answer.status_code in (202, 400), answer.text[:200]


def test_a_client_that_stops_sending_is_cut_off(running: tuple[Receiver, list[Any], str]) -> None:
    """Was: a POST announcing 100 bytes and sending none held its thread forever."""
    _rx, _emitted, url = running
    started = time.monotonic()
    answer = _raw(url, b"POST /registry HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", wait=120)
    assert answer == b"" or answer.startswith(b"HTTP/1.")
    assert time.monotonic() - started < 60, "the receiver kept an idle connection open"


def test_a_timer_cancelled_too_late_does_not_send_the_next_burst() -> None:
    emitted: list[str] = []
    debouncer = Debouncer(lambda route, push, count: emitted.append(push.ref), seconds=3600)
    route = Route("shop", "shop.yaml", registry_repository="team/app")
    debouncer.push(route, Push("registry", "team/app", "1.0.0", "d"))
    late = threading.Thread(target=debouncer._fire, args=("shop",))  # not the pending timer: as if cancelled late
    late.start()
    late.join()
    assert emitted == [] and "shop" in debouncer._pending
    debouncer.flush()
    assert emitted == ["1.0.0"]


def test_a_push_matches_a_pipeline_by_any_of_the_repository_s_urls() -> None:
    body = _github_push(
        repository={"clone_url": "https://github.com/team/gitops.git", "ssh_url": "git@gh.internal:team/gitops"}
    )
    [push] = parse("github", {"X-GitHub-Event": "push"}, json.dumps(body).encode())
    routes = [Route("gitops", "gitops.yaml", git_repository="gh.internal/team/gitops", branch="main")]
    assert [r.pipeline for r in match(push, routes)] == ["gitops"]


# --- starving the receiver: slow clients must not keep signed pushes out -----------------------------------


class Trickler:
    """A client that opens a request and then sends one byte every ``pause`` seconds (never finishing in time)."""

    def __init__(self, url: str, pause: float) -> None:
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        self.pause = pause
        self.closed_at: float | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        data = b"POST /github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
        try:
            for index in range(len(data)):
                self.sock.sendall(data[index : index + 1])
                time.sleep(self.pause)
        except OSError:
            pass
        self.closed_at = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def test_slow_clients_do_not_starve_signed_pushes(running: tuple[Receiver, list[Any], str]) -> None:
    """Was: 40 unauthenticated connections trickling a byte every 5 s made 12 of 13 signed pushes get 503 over
    40 s (32 slots, and a 10 s timeout per read, not per request). Now the oldest trickler makes room for each
    new request, and every request must arrive whole within 10 s."""
    _rx, _emitted, url = running
    tricklers = [Trickler(url, pause=5.0) for _ in range(40)]
    try:
        time.sleep(2.0)  # they hold every slot (and more) before the pushes come
        answers = []
        for index in range(13):  # thirteen different pushes (the same one again would be a replay)
            body = json.dumps(_github_push(after=f"{index:040x}")).encode()
            signature = {"X-Hub-Signature-256": f"sha256={_hex(body)}", "X-GitHub-Event": "push"}
            answers.append(httpx.post(f"{url}/github", content=body, headers=signature, timeout=30).status_code)
            time.sleep(1.0)
        assert answers == [202] * 13, answers
    finally:
        for trickler in tricklers:
            trickler.close()


def test_a_request_that_trickles_is_cut_after_the_request_deadline(running: tuple[Receiver, list[Any], str]) -> None:
    """A byte every 2 s never trips a per-read timeout; the whole request has 10 s."""
    _rx, _emitted, url = running
    slow = Trickler(url, pause=2.0)
    deadline = time.monotonic() + 60
    while slow.closed_at is None and time.monotonic() < deadline:
        time.sleep(0.2)
    slow.close()
    assert slow.closed_at is not None, "the receiver kept a trickling request for a minute"
    assert slow.closed_at - slow.started < 20


def test_a_pipeline_file_nested_too_deeply_is_skipped_not_fatal(tmp_path: Path) -> None:
    """One pipeline's message template nested ~330 deep once took the receiver down at start."""
    deep = "{{" + "(" * 330 + ".Updated" + ")" * 330 + "}}"
    (tmp_path / "deep.yaml").write_text(
        "name: deep\nrepository: {url: /srv/git/x.git}\nenvironments:\n  - name: staging\n    tracks:\n"
        "      kind: image-policy\n      path: apps\n      policy: flux-system:web\n"
        "      registry: {url: 'http://127.0.0.1:5000', repository: team/web, image: registry.local/web}\n"
        f"      choose: {{semver: 1.x.x}}\n      message_template: '{deep}'\n"
    )
    (tmp_path / "ok.yaml").write_text(
        "name: ok\nrepository: {url: /srv/git/y.git}\nenvironments:\n  - name: staging\n    tracks:\n"
        "      kind: tag\n      application_file: apps/staging.yaml\n"
    )
    assert [route.pipeline for route in receiver.routes_from(tmp_path)] == ["ok"]


def test_a_replayed_delivery_starts_nothing_again(running: tuple[Receiver, list[Any], str]) -> None:
    """Was: a captured signed push could be sent again without limit. The same signed content within the replay
    window is answered 200 (a forge's own redelivery gets no error) and starts nothing; an old GitHub push
    (repository.pushed_at, inside the signed body) is refused after the window."""
    _rx, emitted, url = running
    body = json.dumps(REGISTRY_ENVELOPE).encode()
    bearer = {"Authorization": f"Bearer {SECRET}"}
    first = httpx.post(f"{url}/registry", content=body, headers=bearer, timeout=30)
    again = httpx.post(f"{url}/registry", content=body, headers={**bearer, "X-Delivery": "new-id"}, timeout=30)
    assert (first.status_code, again.status_code, again.json()) == (202, 200, {"duplicate": True})
    deadline = time.monotonic() + 60
    while not emitted and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # past the debounce: a second emission would be here by now
    assert len(emitted) == 1
    repository = {**_github_push()["repository"], "pushed_at": 1_600_000_000}
    old = json.dumps(_github_push(repository=repository)).encode()
    signature = {"X-Hub-Signature-256": f"sha256={_hex(old)}", "X-GitHub-Event": "push"}
    stale = httpx.post(f"{url}/github", content=old, headers=signature, timeout=30)
    assert stale.status_code == 409 and "replayed delivery" in stale.json()["error"]


def test_each_forge_gets_its_own_secret_and_short_ones_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: one secret was GitHub's HMAC key and GitLab's plain-text token at once, and a 1-character secret
    was accepted."""
    for name in ("PROMOTE_WEBHOOK_SECRET", "PROMOTE_WEBHOOK_SECRET_GITHUB", "PROMOTE_WEBHOOK_SECRET_GITEA",
                 "PROMOTE_WEBHOOK_SECRET_GITLAB", "PROMOTE_REGISTRY_WEBHOOK_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROMOTE_WEBHOOK_SECRET", "h" * 32)
    found = receiver.secrets_from_env("PROMOTE_WEBHOOK_SECRET", "PROMOTE_REGISTRY_WEBHOOK_TOKEN")
    assert found == {"github": "h" * 32, "gitea": "h" * 32}  # GitLab never gets the HMAC key
    monkeypatch.setenv("PROMOTE_WEBHOOK_SECRET_GITLAB", "g" * 32)
    monkeypatch.setenv("PROMOTE_WEBHOOK_SECRET_GITEA", "t" * 32)
    found = receiver.secrets_from_env("PROMOTE_WEBHOOK_SECRET", "PROMOTE_REGISTRY_WEBHOOK_TOKEN")
    assert found == {"github": "h" * 32, "gitea": "t" * 32, "gitlab": "g" * 32}
    monkeypatch.setenv("PROMOTE_WEBHOOK_SECRET_GITLAB", "h" * 32)
    with pytest.raises(receiver.ReceiverError, match="plain text"):
        receiver.secrets_from_env("PROMOTE_WEBHOOK_SECRET", "PROMOTE_REGISTRY_WEBHOOK_TOKEN")
    monkeypatch.delenv("PROMOTE_WEBHOOK_SECRET_GITLAB")
    monkeypatch.setenv("PROMOTE_WEBHOOK_SECRET", "x")
    with pytest.raises(receiver.ReceiverError, match="PROMOTE_WEBHOOK_SECRET is shorter than 16 characters"):
        receiver.secrets_from_env("PROMOTE_WEBHOOK_SECRET", "PROMOTE_REGISTRY_WEBHOOK_TOKEN")


# --- pull requests decided: the runs waiting for them are resumed --------------------------------------------


@pytest.mark.parametrize(
    ("source", "headers", "body", "merged"),
    [
        # Gitea: X-Gitea-Event: pull_request, action "closed", pull_request.merged (modules/structs/hook.go)
        (
            "gitea",
            {"X-Gitea-Event": "pull_request"},
            {
                "action": "closed",
                "number": 7,
                "pull_request": {"number": 7, "merged": True},
                "repository": {
                    "clone_url": "http://git.example/Team/App.git",
                    "html_url": "http://git.example/team/app",
                },
            },
            True,
        ),
        # GitHub: X-GitHub-Event: pull_request, action "closed", pull_request.merged (webhook events and payloads)
        (
            "github",
            {"X-GitHub-Event": "pull_request"},
            {
                "action": "closed",
                "number": 7,
                "pull_request": {"number": 7, "merged": False},
                "repository": {"clone_url": "https://git.example/team/app.git"},
            },
            False,
        ),
        # GitLab: X-Gitlab-Event: Merge Request Hook, object_attributes.action "merge" / "close", iid
        (
            "gitlab",
            {"X-Gitlab-Event": "Merge Request Hook"},
            {
                "object_kind": "merge_request",
                "object_attributes": {"iid": 7, "action": "merge"},
                "project": {"git_http_url": "https://git.example/team/app.git"},
            },
            True,
        ),
    ],
)
def test_a_decided_pull_request_from_each_forge(
    source: receiver.Source, headers: dict[str, str], body: dict[str, Any], merged: bool
) -> None:
    event = receiver.parse_pull_request(source, headers, json.dumps(body).encode())
    assert event is not None
    assert (event.number, event.merged, event.repositories[0]) == (7, merged, "git.example/team/app")


@pytest.mark.parametrize(
    ("source", "headers", "body"),
    [
        ("gitea", {"X-Gitea-Event": "pull_request"}, {"action": "opened", "number": 7}),  # not decided yet
        ("gitea", {"X-Gitea-Event": "push"}, {"ref": "refs/heads/main"}),  # not a pull request event
        ("gitlab", {"X-Gitlab-Event": "Merge Request Hook"}, {"object_attributes": {"iid": 7, "action": "update"}}),
        ("registry", {}, {"events": []}),
    ],
)
def test_events_that_resume_nothing(source: receiver.Source, headers: dict[str, str], body: dict[str, Any]) -> None:
    assert receiver.parse_pull_request(source, headers, json.dumps(body).encode()) is None


def test_a_signed_merge_event_calls_the_resumer_and_a_forged_one_does_not() -> None:
    seen: list[receiver.PullRequestDecided] = []
    got = Receiver(lambda: [], {"gitea": SECRET}, Debouncer(lambda *a: None), on_pull_request=seen.append)
    body = json.dumps(
        {"action": "closed", "number": 3, "pull_request": {"merged": True}, "repository": {"clone_url": "/srv/app"}}
    ).encode()
    headers = {"X-Gitea-Event": "pull_request"}
    assert got.handle("gitea", {**headers, "X-Gitea-Signature": _hex(body, "wrong")}, body, "10.0.0.9")[0] == 401
    assert seen == []
    status, answer = got.handle("gitea", {**headers, "X-Gitea-Signature": _hex(body)}, body, "10.0.0.9")
    assert status == 202 and answer == {"pull_request": 3, "merged": True}
    assert [(e.number, e.merged) for e in seen] == [(3, True)]
    with pytest.raises(receiver.ReceiverError, match="names its number"):
        receiver.parse_pull_request("gitea", headers, b'{"action": "closed", "pull_request": {"number": "x"}}')
