"""A contract server: a loopback HTTP server built from a forge's published OpenAPI 3.0 description, for forges
that have no local server (GitHub, GitLab).

Every request is matched to an operation of the description by method and path template and checked against
it: path parameters, query parameters (an undeclared one is a violation too), required headers and the JSON body
against the operation's request schema. A handler (a small, stateful stand-in for the forge's behaviour) answers,
and its answer is checked against the operation's declared responses and their schemas before it is sent, so the
stand-in cannot drift from the description either. Violations are answered 400 and kept in ``violations``; a
contract test asserts there were none.

OpenAPI 3.0 schemas are JSON Schema with differences; the two that matter here are handled: ``nullable: true``
(null allowed) and ``$ref`` to ``#/components/...`` (resolved in the whole document).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from sandbox.httpserve import serve_http

BASE = "urn:openapi-description"


def _allow_null(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema, and every local ``$ref`` made absolute, in place."""
    if isinstance(node, dict):
        for value in node.values():
            _allow_null(value)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            node["$ref"] = BASE + ref
        if node.get("nullable") is True:
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]
            elif kind is None and "$ref" not in node:
                node.setdefault("anyOf", [{}])
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"].append(None)
            if "$ref" in node or ("allOf" in node and kind is None):
                node["anyOf"] = [{"type": "null"}, {k: v for k, v in node.items() if k != "nullable"}]
                for key in [k for k in node if k not in ("anyOf", "nullable")]:
                    del node[key]
    elif isinstance(node, list):
        for item in node:
            _allow_null(item)
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]
    names: tuple[str, ...]  # the path parameters, in order

    @property
    def id(self) -> str:
        return str(self.spec.get("operationId", f"{self.method} {self.template}"))


class Description:
    """One OpenAPI 3.0 document: its operations, and validation of values against its schemas."""

    def __init__(self, path: Path) -> None:
        self.document: dict[str, Any] = _allow_null(json.loads(path.read_text()))
        self.registry: Registry[Any] = Registry().with_resource(
            BASE, Resource.from_contents(self.document, default_specification=DRAFT7)
        )
        self.operations: list[Operation] = []
        for template, item in self.document["paths"].items():
            pieces = re.split(r"\{([^}]+)\}", template)  # literal, name, literal, name, ..., literal
            regex = "".join(re.escape(p) if i % 2 == 0 else "([^/]+)" for i, p in enumerate(pieces))
            for method, spec in item.items():
                if method in ("get", "put", "post", "patch", "delete", "head"):
                    op = Operation(method.upper(), template, re.compile(f"^{regex}$"), spec, tuple(pieces[1::2]))
                    self.operations.append(op)

    def resolve(self, node: Any) -> Any:
        """``node`` with a top-level ``$ref`` followed (parameters, responses, examples)."""
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            pointer = node["$ref"].removeprefix(BASE + "#/").split("/")
            target: Any = self.document
            for part in pointer:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        matches = []
        for op in self.operations:
            if op.method != method:
                continue
            found = op.pattern.match(path)
            if found:
                matches.append((op, dict(zip(op.names, found.groups(), strict=True))))
        # A literal segment beats a parameter (/pulls/comments vs /pulls/{pull_number}): fewest parameters first.
        matches.sort(key=lambda m: m[0].template.count("{"))
        return matches[0] if matches else None

    def errors(self, schema: Any, value: Any) -> list[str]:
        validator = Draft7Validator(schema, registry=self.registry)
        found = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in found[:5]]

    def parameters(self, op: Operation) -> list[dict[str, Any]]:
        item = self.document["paths"][op.template]
        listed = [*item.get("parameters", []), *op.spec.get("parameters", [])]
        return [self.resolve(p) for p in listed]

    def example(self, operation_id: str, status: str) -> Any:
        """The first example value of an operation's JSON answer with ``status`` (a schema-valid template): a
        fresh copy each time, for the caller to fill in."""
        return copy.deepcopy(self._example(operation_id, status))

    @cache  # noqa: B019 - one Description per test session
    def _example(self, operation_id: str, status: str) -> Any:
        op = next(o for o in self.operations if o.id == operation_id)
        response = self.resolve(op.spec["responses"][status])
        content = response["content"]["application/json"]
        examples = content.get("examples") or {}
        return self.resolve(next(iter(examples.values())))["value"]


def _typed(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "integer":
        return int(raw) if re.fullmatch(r"-?\d+", raw) else raw
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    return raw


@dataclass
class Request:
    operation: Operation
    path: dict[str, Any]
    query: dict[str, Any]
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Answer]


@dataclass
class ContractServer:
    """What the server saw: every request's operation id, and every violation of the description."""

    description: Description
    url: str = ""
    calls: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def violate(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)


def check_request(
    description: Description, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes, prefix: str
) -> tuple[Request | None, list[str]]:
    """The request as the description reads it, or the reasons it breaks the contract."""
    parts = urlsplit(raw_path)
    path = parts.path.removeprefix(prefix) or "/"
    found = description.find(method, path)
    if found is None:
        return None, [f"{method} {path[:200]}: no such operation in the description"]
    op, path_values = found
    problems: list[str] = []
    declared = {(p["in"], p["name"]): p for p in description.parameters(op)}
    path_args: dict[str, Any] = {}
    for name, raw in path_values.items():
        spec = declared.get(("path", name), {})
        value = _typed(raw, spec.get("schema", {}))
        problems += [f"path parameter {name}: {e}" for e in description.errors(spec.get("schema", {}), value)]
        path_args[name] = value
    query: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        declared_spec = declared.get(("query", name))
        if declared_spec is None:
            problems.append(f"query parameter {name[:50]!r} is not declared for {op.id}")
            continue
        spec = declared_spec
        value = _typed(values[-1], spec.get("schema", {}))
        problems += [f"query parameter {name}: {e}" for e in description.errors(spec.get("schema", {}), value)]
        query[name] = value
    for (where, name), spec in declared.items():
        if where == "query" and spec.get("required") and name not in query:
            problems.append(f"required query parameter {name} is missing")
    body: Any = None
    request_body = description.resolve(op.spec.get("requestBody")) or {}
    if raw_body:
        if "application/json" not in headers.get("content-type", ""):
            problems.append(f"body sent as {headers.get('content-type', '(no content type)')[:60]}, not JSON")
        try:
            body = json.loads(raw_body)
        except ValueError:
            problems.append("the body is not JSON")
        schema = ((request_body.get("content") or {}).get("application/json") or {}).get("schema")
        if schema is None:
            problems.append(f"{op.id} takes no JSON body")
        elif body is not None:
            problems += [f"body {e}" for e in description.errors(schema, body)]
    elif request_body.get("required"):
        problems.append(f"{op.id} requires a body")
    return Request(op, path_args, query, headers, body), problems


def check_answer(
    description: Description, op: Operation, answer: Answer, global_answers: dict[int, Any] | None = None
) -> list[str]:
    """Why ``answer`` breaks what ``op`` declares. ``global_answers``: status -> schema of answers the forge
    documents for every operation (rate limits, refused tokens) but the description declares for few."""
    responses = op.spec.get("responses") or {}
    declared = responses.get(str(answer.status)) or responses.get("default")
    if declared is None and answer.status in (global_answers or {}):
        schema = _allow_null(copy.deepcopy((global_answers or {})[answer.status]))
        return [f"answer {answer.status} {e}" for e in description.errors(schema, answer.body)]
    if declared is None:
        return [f"{op.id} declares no {answer.status} answer (it declares {', '.join(responses)})"]
    declared = description.resolve(declared)
    schema = ((declared.get("content") or {}).get("application/json") or {}).get("schema")
    if schema is None or answer.body is None:
        return []
    return [f"answer {answer.status} {e}" for e in description.errors(schema, answer.body)]


@contextmanager
def serve_contract(
    description: Description,
    handle: Handler,
    *,
    prefix: str = "",
    required_headers: dict[str, Callable[[str], bool]] | None = None,
    global_answers: dict[int, Any] | None = None,
    beside: dict[tuple[str, str], Callable[[dict[str, str], bytes, ContractServer], Answer]] | None = None,
) -> Iterator[ContractServer]:
    """Serve ``description`` at ``http://127.0.0.1:PORT{prefix}``, answering through ``handle``. ``beside``:
    (method, path) -> a handler for an endpoint the description does not cover (GitHub's GraphQL), which checks
    requests against its own contract and records violations on the server."""
    server = ContractServer(description)
    needed = required_headers or {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            other = (beside or {}).get((self.command, urlsplit(self.path).path))
            if other is not None:
                self._send(other(headers, raw, server))
                return
            request, problems = check_request(description, self.command, self.path, headers, raw, prefix)
            for name, ok in needed.items():
                if not ok(headers.get(name.lower(), "")):
                    problems.append(f"header {name} missing or wrong")
            if request is not None:
                with server.lock:
                    server.calls.append(request.operation.id)
            if problems or request is None:
                for problem in problems:
                    server.violate(f"{self.command} {self.path[:200]}: {problem}")
                self._send(Answer(400, {"message": "contract violation: " + "; ".join(problems)[:1000]}))
                return
            answer = handle(request)
            for problem in check_answer(description, request.operation, answer, global_answers):
                server.violate(f"the stand-in's answer to {request.operation.id}: {problem}")
            self._send(answer)

        def _send(self, answer: Answer) -> None:
            payload = b"" if answer.body is None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            if answer.body is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve  # noqa: N815
        do_POST = _serve  # noqa: N815
        do_PUT = _serve  # noqa: N815
        do_PATCH = _serve  # noqa: N815
        do_DELETE = _serve  # noqa: N815

    with serve_http(Handler) as url:
        server.url = url + prefix
        yield server
