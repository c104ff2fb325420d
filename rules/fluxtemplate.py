"""Flux ImageUpdateAutomation commit messages: the subset of Go's text/template that Flux users write.

The data is Flux's ``TemplateData`` (image-automation-controller), with its field names:

* ``.AutomationObject``: namespace/name (``{{ .AutomationObject }}`` prints ``namespace/name``).
* ``.Updated`` (the v1beta1/v1beta2 ``update.Result``; the default template uses it): ``.Files``
  (file -> ``.Objects``), ``.Objects`` (object -> images), ``.Images`` (image refs, printing as
  ``name:tag``; ``.Identifier``, ``.Repository``, ``.Registry``, ``.Name``, ``.Policy``). Flux's newest
  controller removed it in favour of ``.Changed``; both are rendered here.
* ``.Changed``: ``.FileChanges`` (file -> object -> changes), ``.Objects`` (object -> changes),
  ``.Changes`` (each change once); a change has ``.OldValue``, ``.NewValue``, ``.Setter``.
* Objects have ``.APIVersion``, ``.Kind``, ``.Name``, ``.Namespace``; ``.Values`` is a string map.

File names are relative to the update path, as in Flux. Maps are ranged in sorted key order, as Go does
(objects by apiVersion, kind, name, namespace: Go sorts struct keys field by field). Where Flux's order is
Go's random map order (``.Images``, ``.Changes``) ours is files, then objects, sorted.

Supported syntax: text, ``{{- ``/`` -}}`` trim markers, comments, ``{{ pipeline }}``, ``if``/``else if``/
``else``, ``range`` (with ``$k, $v :=``), ``with``/``else with``, ``end``; fields, ``$``, range variables,
string/integer/bool literals, parentheses, ``|``; functions ``print``, ``println``, ``printf`` (``%s``
``%v`` ``%d`` ``%%``), ``len``, ``not``, ``eq``, ``ne``, ``and``, ``or``. :func:`check` types the whole
template against the data's shape and rejects anything else (other keywords, Sprig functions, unknown
fields, values that have no agreed printed form) with the line and column, so a template is refused when
the pipeline is validated instead of rendering differently from Flux.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.imageupdates import ObjectRef, UpdateResult

__all__ = ["TemplateData", "TemplateError", "check", "render", "render_update"]

_SPACE = " \t\r\n"
_FUNCTIONS = ("print", "println", "printf", "len", "not", "eq", "ne", "and", "or")
_UNSUPPORTED_KEYWORDS = ("define", "template", "block", "break", "continue")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")


class TemplateError(ValueError):
    """A message template outside the supported subset (or failing on the data); says what and where."""

    def __init__(self, problem: str, template: str = "", offset: int | None = None) -> None:
        self.problem = problem
        self.offset = offset
        if offset is None:
            self.line = self.column = None
            super().__init__(f"message template: {problem}")
            return
        self.line = template.count("\n", 0, offset) + 1
        self.column = offset - (template.rfind("\n", 0, offset) + 1) + 1
        super().__init__(f"message template, line {self.line} column {self.column} (offset {offset}): {problem}")


# --- the data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateData:
    """What a template sees: the automation's namespace/name, the results of the update (one per policy
    written in this commit), and optional string values."""

    automation_namespace: str
    automation_name: str
    results: Sequence[UpdateResult]
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Named:
    namespace: str
    name: str


@dataclass(frozen=True)
class _Image:
    ref: str  # as written, name:tag (Go's String())
    policy: _Named


@dataclass(frozen=True)
class _Change:
    old: str
    new: str
    setter: str


class _NoValue:
    """A missing map key: Go prints ``<no value>``."""


_NO_VALUE = _NoValue()


@dataclass(frozen=True)
class _Root:
    automation: _Named
    updated: dict[str, dict[ObjectRef, list[_Image]]]
    changed: dict[str, dict[ObjectRef, list[_Change]]]
    values: dict[str, str]


def _root(data: TemplateData) -> _Root:
    updated: dict[str, dict[ObjectRef, list[_Image]]] = {}
    changed: dict[str, dict[ObjectRef, list[_Change]]] = {}
    for result in data.results:
        namespace, _, name = result.policy.partition(":")
        image = _Image(result.image_ref, _Named(namespace, name))
        prefix = "" if result.path in ("", ".") else result.path.rstrip("/") + "/"
        for change in result.changes:
            # Flux names files relative to the automation's update path.
            file = change.file[len(prefix) :] if change.file.startswith(prefix) else change.file
            images = updated.setdefault(file, {}).setdefault(change.object, [])
            if image not in images:
                images.append(image)
            changed.setdefault(file, {}).setdefault(change.object, []).append(
                _Change(change.old_value, change.new_value, change.setter)
            )
    return _Root(_Named(data.automation_namespace, data.automation_name), updated, changed, dict(data.values))


def _image_parts(image: _Image) -> tuple[str, str, str]:
    """(registry, repository, identifier) as go-containerregistry reads an explicit-registry reference."""
    name, _, tag = image.ref.rpartition(":")
    host, _, path = name.partition("/")
    explicit = "." in host or ":" in host or host == "localhost"
    if not path or not explicit or host in ("docker.io", "index.docker.io"):
        # Docker Hub defaults (index.docker.io, library/) are where renderings would drift: refuse instead.
        raise TemplateError(
            f"image {image.ref!r} names no registry host, so its .Registry/.Repository/.Name are not rendered; "
            "use the image with its registry (registry.example/app) or print the image itself"
        )
    return host, path, tag


# --- types: the shape of the data, used to check a template before any data exists -----------------------


@dataclass(eq=False)
class _Type:
    name: str
    kind: str  # string, int, bool, struct, slice, map, any
    elem: _Type | None = None
    key: _Type | None = None
    members: dict[str, tuple[_Type, Callable[[Any], Any]]] = field(default_factory=dict)
    printer: Callable[[Any], str] | None = None
    sort_key: Callable[[Any], Any] | None = None


def _slice(elem: _Type) -> _Type:
    printer = None
    if elem.printer is not None:
        elem_printer = elem.printer
        printer = lambda v: "[" + " ".join(elem_printer(e) for e in v) + "]"  # noqa: E731
    return _Type(f"[]{elem.name}", "slice", elem=elem, printer=printer)


def _map(key: _Type, elem: _Type) -> _Type:
    printer = None
    if key.printer is not None and elem.printer is not None and key.sort_key is not None:
        kp, ep, sk = key.printer, elem.printer, key.sort_key
        printer = lambda m: "map[" + " ".join(f"{kp(k)}:{ep(m[k])}" for k in sorted(m, key=sk)) + "]"  # noqa: E731
    return _Type(f"map[{key.name}]{elem.name}", "map", elem=elem, key=key, printer=printer)


_STRING = _Type("string", "string", printer=str, sort_key=lambda k: k)
_INT = _Type("int", "int", printer=str)
_BOOL = _Type("bool", "bool", printer=lambda b: "true" if b else "false")
_ANY = _Type("the result of and/or over different types", "any")
_NAMESPACED = _Type(
    "types.NamespacedName",
    "struct",
    members={"Name": (_STRING, lambda v: v.name), "Namespace": (_STRING, lambda v: v.namespace)},
    printer=lambda v: f"{v.namespace}/{v.name}",
)
_IMAGE = _Type(
    "update.ImageRef",
    "struct",
    members={
        "String": (_STRING, lambda v: v.ref),
        "Identifier": (_STRING, lambda v: v.ref.rpartition(":")[2]),
        "Registry": (_STRING, lambda v: _image_parts(v)[0]),
        "Repository": (_STRING, lambda v: _image_parts(v)[1]),
        "Name": (_STRING, lambda v: "{}/{}:{}".format(*_image_parts(v))),
        "Policy": (_NAMESPACED, lambda v: v.policy),
    },
    printer=lambda v: v.ref,
)
_OBJECT = _Type(
    "update.ObjectIdentifier",
    "struct",
    members={
        "APIVersion": (_STRING, lambda v: v.api_version),
        "Kind": (_STRING, lambda v: v.kind),
        "Name": (_STRING, lambda v: v.name),
        "Namespace": (_STRING, lambda v: v.namespace),
    },
    sort_key=lambda v: (v.api_version, v.kind, v.name, v.namespace),
)
_CHANGE = _Type(
    "update.Change",
    "struct",
    members={
        "OldValue": (_STRING, lambda v: v.old),
        "NewValue": (_STRING, lambda v: v.new),
        "Setter": (_STRING, lambda v: v.setter),
    },
    printer=lambda v: f"{{{v.old} {v.new} {v.setter}}}",  # Go's %v of a struct: fields in braces
)
_IMAGES = _slice(_IMAGE)
_CHANGES = _slice(_CHANGE)
_OBJECT_IMAGES = _map(_OBJECT, _IMAGES)
_OBJECT_CHANGES = _map(_OBJECT, _CHANGES)
_FILE_RESULT = _Type("update.FileResult", "struct", members={"Objects": (_OBJECT_IMAGES, lambda v: v)})


def _all_images(files: dict[str, dict[ObjectRef, list[_Image]]]) -> list[_Image]:
    seen: list[_Image] = []
    for file in sorted(files):
        for obj in sorted(files[file]):
            seen.extend(i for i in files[file][obj] if i not in seen)
    return seen


def _merged_objects(files: dict[str, dict[ObjectRef, list[Any]]], *, append: bool) -> dict[ObjectRef, list[Any]]:
    merged: dict[ObjectRef, list[Any]] = {}
    for file in sorted(files):
        for obj, items in files[file].items():
            # Flux's Updated.Objects appends across files; Changed.Objects keeps the last file's list.
            merged[obj] = [*merged.get(obj, []), *items] if append else list(items)
    return merged


def _all_changes(files: dict[str, dict[ObjectRef, list[_Change]]]) -> list[_Change]:
    seen: list[_Change] = []
    for file in sorted(files):
        for obj in sorted(files[file]):
            seen.extend(c for c in files[file][obj] if c not in seen)
    return seen


_UPDATED = _Type(
    "update.Result (.Updated)",
    "struct",
    members={
        "Files": (_map(_STRING, _FILE_RESULT), lambda v: v),
        "Images": (_IMAGES, _all_images),
        "Objects": (_OBJECT_IMAGES, lambda v: _merged_objects(v, append=True)),
    },
)
_CHANGED = _Type(
    "update.Result (.Changed)",
    "struct",
    members={
        "FileChanges": (_map(_STRING, _OBJECT_CHANGES), lambda v: v),
        "Changes": (_CHANGES, _all_changes),
        "Objects": (_OBJECT_CHANGES, lambda v: _merged_objects(v, append=False)),
    },
)
_DATA = _Type(
    "TemplateData",
    "struct",
    members={
        "AutomationObject": (_NAMESPACED, lambda v: v.automation),
        "Updated": (_UPDATED, lambda v: v.updated),
        "Changed": (_CHANGED, lambda v: v.changed),
        "Values": (_map(_STRING, _STRING), lambda v: v.values),
    },
)


# --- lexing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # ident field var dot string number bool nil pipe lparen rparen declare assign comma
    text: str
    value: Any
    pos: int
    spaced: bool  # whitespace (or the action's start) before it


@dataclass(frozen=True)
class _Action:
    tokens: list[_Tok]
    pos: int  # offset of "{{"
    end: int  # offset after "}}"


_Item = str | _Action


def _lex(src: str) -> list[_Item]:
    items: list[_Item] = []
    i = 0
    trim_next = False
    while True:
        start = src.find("{{", i)
        text = src[i:] if start < 0 else src[i:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            items.append(text)
            return items
        k = start + 2
        if src.startswith("-", k) and k + 1 < len(src) and src[k + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            k += 2
        items.append(text)
        if src.startswith("/*", k):
            i, trim_next = _lex_comment(src, start, k)
            continue
        tokens, i, trim_next = _lex_action(src, start, k)
        items.append(_Action(tokens, start, i))


def _right_delim(src: str, p: int) -> tuple[int, bool] | None:
    """(offset after the delimiter, trim) when a right delimiter starts at ``p``."""
    if p + 1 < len(src) and src[p] in _SPACE and src[p + 1] == "-" and src.startswith("}}", p + 2):
        return p + 4, True
    if src.startswith("}}", p):
        return p + 2, False
    return None


def _lex_comment(src: str, start: int, k: int) -> tuple[int, bool]:
    close = src.find("*/", k + 2)
    if close < 0:
        raise TemplateError("unclosed comment", src, start)
    delim = _right_delim(src, close + 2)
    if delim is None:
        raise TemplateError("a comment must end right before the closing }}", src, close)
    return delim


def _lex_action(src: str, start: int, p: int) -> tuple[list[_Tok], int, bool]:
    tokens: list[_Tok] = []
    spaced = True
    while True:
        delim = _right_delim(src, p)
        if delim is not None:
            return tokens, delim[0], delim[1]
        if p >= len(src):
            raise TemplateError("unclosed action: no closing }}", src, start)
        ch = src[p]
        if ch in _SPACE:
            p += 1
            spaced = True
            continue
        tok, p = _lex_token(src, p, spaced)
        tokens.append(tok)
        spaced = False


def _lex_token(src: str, p: int, spaced: bool) -> tuple[_Tok, int]:
    ch = src[p]
    simple = {"|": "pipe", "(": "lparen", ")": "rparen", ",": "comma"}
    if ch in simple:
        return _Tok(simple[ch], ch, None, p, spaced), p + 1
    if src.startswith(":=", p):
        return _Tok("declare", ":=", None, p, spaced), p + 2
    if ch == "=":
        return _Tok("assign", "=", None, p, spaced), p + 1
    if ch == '"':
        value, end = _lex_string(src, p)
        return _Tok("string", src[p:end], value, p, spaced), end
    if ch == "`":
        end = src.find("`", p + 1)
        if end < 0:
            raise TemplateError("unterminated raw string", src, p)
        return _Tok("string", src[p : end + 1], src[p + 1 : end], p, spaced), end + 1
    if ch == "'":
        raise TemplateError("character constants are not supported; use a string in double quotes", src, p)
    if ch == "$":
        match = re.compile(r"\$[A-Za-z0-9_]*").match(src, p)
        assert match is not None
        return _Tok("var", match.group(), match.group()[1:], p, spaced), match.end()
    if ch == ".":
        name = _NAME_RE.match(src, p + 1)
        if name is not None:
            return _Tok("field", "." + name.group(), name.group(), p, spaced), name.end()
        if p + 1 < len(src) and src[p + 1].isdigit():
            raise TemplateError("only integer numbers are supported", src, p)
        return _Tok("dot", ".", None, p, spaced), p + 1
    if ch.isdigit() or (ch in "+-" and p + 1 < len(src) and src[p + 1].isdigit()):
        match = re.compile(r"[+-]?[0-9A-Za-z_.]+").match(src, p)
        assert match is not None
        if not _INT_RE.fullmatch(match.group()):
            raise TemplateError(f"number {match.group()!r} is not supported: only decimal integers are", src, p)
        return _Tok("number", match.group(), int(match.group()), p, spaced), match.end()
    name = _NAME_RE.match(src, p)
    if name is not None:
        word = name.group()
        if word in ("true", "false"):
            return _Tok("bool", word, word == "true", p, spaced), name.end()
        return _Tok("nil" if word == "nil" else "ident", word, None, p, spaced), name.end()
    raise TemplateError(f"unexpected {ch!r} in action", src, p)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def _lex_string(src: str, p: int) -> tuple[str, int]:
    """A Go interpreted string literal starting at ``p`` (the opening quote): its value and its end."""
    out: list[str] = []
    i = p + 1
    while i < len(src):
        ch = src[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\n":
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = src[i + 1 : i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        hex_len = {"x": 2, "u": 4, "U": 8}.get(nxt)
        digits = src[i + 2 : i + 2 + hex_len] if hex_len else ""
        if hex_len and re.fullmatch(rf"[0-9A-Fa-f]{{{hex_len}}}", digits):
            out.append(chr(int(digits, 16)))
            i += 2 + hex_len
            continue
        raise TemplateError(f"unsupported escape sequence \\{nxt} in string", src, i)
    raise TemplateError("unterminated string", src, p)


# --- parsing into a tree ---------------------------------------------------------------------------------


@dataclass
class _Operand:
    kind: str  # dot field var literal call pipe
    pos: int
    names: list[str] = field(default_factory=list)  # field chain after the receiver
    var: str = ""
    value: Any = None  # literal value, or the function name of a call
    pipe: _Pipe | None = None


@dataclass
class _Command:
    args: list[_Operand]
    pos: int


@dataclass
class _Pipe:
    decls: list[tuple[str, int]]
    commands: list[_Command]
    pos: int


@dataclass
class _Node:
    kind: str  # text output if range with
    pos: int
    text: str = ""
    pipe: _Pipe | None = None
    body: list[_Node] = field(default_factory=list)
    else_body: list[_Node] | None = None
    chained: bool = False  # an "else if"/"else with" closed by its parent's {{end}}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src

    def error(self, problem: str, pos: int) -> TemplateError:
        return TemplateError(problem, self.src, pos)

    def parse(self) -> list[_Node]:
        root: list[_Node] = []
        stack: list[_Node] = []  # open if/with/range nodes, innermost last

        def current() -> list[_Node]:
            if not stack:
                return root
            top = stack[-1]
            return top.else_body if top.else_body is not None else top.body

        for item in _lex(self.src):
            target = current()
            if isinstance(item, str):
                if item:
                    target.append(_Node("text", 0, text=item))
                continue
            toks = item.tokens
            if not toks:
                raise self.error("empty action {{ }}", item.pos)
            head = toks[0]
            word = head.text if head.kind == "ident" else ""
            if word in _UNSUPPORTED_KEYWORDS:
                raise self.error(f"{{{{{word}}}}} is not supported (no named templates, break or continue)", head.pos)
            if word in ("if", "with", "range"):
                node = _Node(word, head.pos, pipe=self.pipeline(toks[1:], head, allow_decl=word == "range"))
                target.append(node)
                stack.append(node)
            elif word == "else":
                self.parse_else(toks, head, stack)
            elif word == "end":
                if len(toks) > 1:
                    raise self.error("unexpected words after {{end}}", toks[1].pos)
                if not stack:
                    raise self.error("{{end}} without a matching {{if}}, {{range}} or {{with}}", head.pos)
                while stack.pop().chained:
                    pass
            else:
                target.append(_Node("output", head.pos, pipe=self.pipeline(toks, None, allow_decl=False)))
        if stack:
            opened = next(n for n in reversed(stack) if not n.chained)
            raise self.error(f"{{{{{opened.kind}}}}} is never closed with {{{{end}}}}", opened.pos)
        return root

    def parse_else(self, toks: list[_Tok], head: _Tok, stack: list[_Node]) -> None:
        if not stack:
            raise self.error("{{else}} outside {{if}}, {{range}} or {{with}}", head.pos)
        top = stack[-1]
        if top.else_body is not None:
            raise self.error(f"a second {{{{else}}}} in the same {{{{{top.kind}}}}}", head.pos)
        if len(toks) == 1:
            top.else_body = []
            return
        chained_word = toks[1].text if toks[1].kind == "ident" else ""
        if chained_word not in ("if", "with") or chained_word != top.kind:
            raise self.error(f"{{{{else {toks[1].text}}}}} is not supported inside {{{{{top.kind}}}}}", toks[1].pos)
        nested = _Node(chained_word, toks[1].pos, pipe=self.pipeline(toks[2:], toks[1], allow_decl=False))
        nested.chained = True
        top.else_body = [nested]
        stack.append(nested)

    def pipeline(self, toks: list[_Tok], keyword: _Tok | None, *, allow_decl: bool) -> _Pipe:
        pos = toks[0].pos if toks else (keyword.pos if keyword else 0)
        if not toks:
            raise self.error(f"missing value for {{{{{keyword.text if keyword else ''}}}}}", pos)
        decls: list[tuple[str, int]] = []
        declare_at = next((i for i, t in enumerate(toks) if t.kind in ("declare", "assign")), None)
        if declare_at is not None:
            tok = toks[declare_at]
            if tok.kind == "assign" or not allow_decl:
                raise self.error("variable declarations and assignments are only supported in {{range}}", tok.pos)
            names = toks[:declare_at]
            shape = [t.kind for t in names]
            if shape not in (["var"], ["var", "comma", "var"]):
                raise self.error("a range declares $value or $key, $value before :=", tok.pos)
            decls = [(t.value, t.pos) for t in names if t.kind == "var"]
            toks = toks[declare_at + 1 :]
            if not toks:
                raise self.error("missing value after :=", tok.pos)
        commands: list[_Command] = []
        current: list[_Tok] = []
        depth = 0
        for tok in toks:
            depth += {"lparen": 1, "rparen": -1}.get(tok.kind, 0)
            if tok.kind == "pipe" and depth == 0:
                commands.append(self.command(current, tok.pos))
                current = []
            else:
                current.append(tok)
        commands.append(self.command(current, toks[-1].pos))
        return _Pipe(decls, commands, pos)

    def command(self, toks: list[_Tok], pos: int) -> _Command:
        if not toks:
            raise self.error("missing command around '|'", pos)
        args: list[_Operand] = []
        i = 0
        while i < len(toks):
            tok = toks[i]
            if args and not tok.spaced and tok.kind != "rparen":
                raise self.error(f"missing space before {tok.text!r}", tok.pos)
            operand, i = self.operand(toks, i, first=not args)
            args.append(operand)
        return _Command(args, toks[0].pos)

    def operand(self, toks: list[_Tok], i: int, *, first: bool) -> tuple[_Operand, int]:
        tok = toks[i]
        i += 1
        if tok.kind == "ident":
            if tok.text in ("if", "else", "end", "range", "with", *_UNSUPPORTED_KEYWORDS):
                raise self.error(f"{tok.text!r} cannot be used here", tok.pos)
            if tok.text not in _FUNCTIONS:
                raise self.error(
                    f"function {tok.text!r} is not supported (Sprig and other functions are not); supported: "
                    + ", ".join(_FUNCTIONS),
                    tok.pos,
                )
            if not first:
                raise self.error(f"function {tok.text!r} as an argument needs parentheses: ({tok.text} ...)", tok.pos)
            operand = _Operand("call", tok.pos, value=tok.text)
        elif tok.kind == "field":
            operand = _Operand("field", tok.pos, names=[tok.value])
        elif tok.kind == "dot":
            operand = _Operand("dot", tok.pos)
        elif tok.kind == "var":
            operand = _Operand("var", tok.pos, var=tok.value)
        elif tok.kind in ("string", "number", "bool"):
            operand = _Operand("literal", tok.pos, value=tok.value)
        elif tok.kind == "lparen":
            depth, j = 1, i
            while j < len(toks) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(toks[j].kind, 0)
                j += 1
            if depth:
                raise self.error("unclosed '('", tok.pos)
            operand = _Operand("pipe", tok.pos, pipe=self.pipeline(toks[i : j - 1], tok, allow_decl=False))
            i = j
        elif tok.kind == "nil":
            raise self.error("nil is not supported", tok.pos)
        else:
            raise self.error(f"unexpected {tok.text!r}", tok.pos)
        while i < len(toks) and toks[i].kind == "field" and not toks[i].spaced:
            if operand.kind not in ("field", "var"):
                raise self.error(f"field {toks[i].text} cannot follow {tok.text!r} here", toks[i].pos)
            operand.names.append(toks[i].value)
            i += 1
        return operand, i


# --- checking and compiling against the data's types -----------------------------------------------------


@dataclass
class _Ctx:
    dot: Any
    vars: dict[str, Any]


_Eval = Callable[[_Ctx], Any]
_Emit = Callable[[_Ctx, list[str]], None]
_Scope = dict[str, _Type]


class _Compiler:
    def __init__(self, src: str) -> None:
        self.src = src

    def error(self, problem: str, pos: int) -> TemplateError:
        return TemplateError(problem, self.src, pos)

    def nodes(self, nodes: list[_Node], dot: _Type, scope: _Scope) -> _Emit:
        parts = [self.node(n, dot, scope) for n in nodes]

        def emit(ctx: _Ctx, out: list[str]) -> None:
            for part in parts:
                part(ctx, out)

        return emit

    def node(self, node: _Node, dot: _Type, scope: _Scope) -> _Emit:
        if node.kind == "text":
            text = node.text
            return lambda _ctx, out: out.append(text)
        assert node.pipe is not None
        kind, fn = self.pipe(node.pipe, dot, scope)
        if node.kind == "output":
            printer = self.printer(kind, node.pos)
            return lambda ctx, out: out.append(_print_value(fn(ctx), printer))
        otherwise = self.nodes(node.else_body, dot, scope) if node.else_body is not None else None
        if node.kind == "if":
            body = self.nodes(node.body, dot, scope)
            return lambda ctx, out: (body if _truthy(fn(ctx)) else otherwise or _nothing)(ctx, out)
        if node.kind == "with":
            body = self.nodes(node.body, kind, scope)

            def emit_with(ctx: _Ctx, out: list[str]) -> None:
                value = fn(ctx)
                if _truthy(value):
                    body(_Ctx(value, ctx.vars), out)
                elif otherwise is not None:
                    otherwise(ctx, out)

            return emit_with
        return self.range(node, kind, fn, dot, scope, otherwise)

    def range(self, node: _Node, kind: _Type, fn: _Eval, dot: _Type, scope: _Scope, otherwise: _Emit | None) -> _Emit:
        assert node.pipe is not None
        if kind.kind not in ("slice", "map") or kind.elem is None:
            raise self.error(f"range over {kind.name} is not supported: range over a list or a map", node.pos)
        key_type = _INT if kind.kind == "slice" else kind.key
        assert key_type is not None
        decls = node.pipe.decls
        inner = dict(scope)
        if len(decls) == 1:
            inner[decls[0][0]] = kind.elem
        elif len(decls) == 2:
            inner[decls[0][0]] = key_type
            inner[decls[1][0]] = kind.elem
        body = self.nodes(node.body, kind.elem, inner)
        names = [name for name, _ in decls]
        sort_key = key_type.sort_key

        def emit_range(ctx: _Ctx, out: list[str]) -> None:
            value = fn(ctx)
            if kind.kind == "slice":
                pairs: list[tuple[Any, Any]] = list(enumerate(value))
            else:
                pairs = [(k, value[k]) for k in sorted(value, key=sort_key)]
            if not pairs:
                if otherwise is not None:
                    otherwise(ctx, out)
                return
            for key, elem in pairs:
                bound = dict(ctx.vars)
                if len(names) == 1:
                    bound[names[0]] = elem
                elif len(names) == 2:
                    bound[names[0]], bound[names[1]] = key, elem
                body(_Ctx(elem, bound), out)

        return emit_range

    def printer(self, kind: _Type, pos: int) -> Callable[[Any], str]:
        if kind.printer is None:
            hint = f"; print its fields ({', '.join('.' + m for m in kind.members)})" if kind.members else ""
            raise self.error(f"a value of type {kind.name} has no supported printed form{hint}", pos)
        return kind.printer

    def pipe(self, pipe: _Pipe, dot: _Type, scope: _Scope) -> tuple[_Type, _Eval]:
        kind, fn = self.command(pipe.commands[0], dot, scope, None)
        for command in pipe.commands[1:]:
            if command.args[0].kind != "call":
                raise self.error("after '|' a function must follow, e.g. | printf \"%s\"", command.pos)
            kind, fn = self.command(command, dot, scope, (kind, fn))
        return kind, fn

    def command(
        self, command: _Command, dot: _Type, scope: _Scope, piped: tuple[_Type, _Eval] | None
    ) -> tuple[_Type, _Eval]:
        first = command.args[0]
        if first.kind != "call":
            if len(command.args) > 1:
                raise self.error("only functions take arguments", command.args[1].pos)
            return self.operand(first, dot, scope)
        if first.value == "printf" and (len(command.args) < 2 or command.args[1].kind != "literal"):
            # The format is checked here, before any data exists, so it must be written out.
            raise self.error('printf needs a literal format string first, e.g. printf "%s" .Name', first.pos)
        args = [self.operand(a, dot, scope) for a in command.args[1:]]
        if piped is not None:
            args.append(piped)
        return self.call(first.value, args, first.pos)

    def operand(self, operand: _Operand, dot: _Type, scope: _Scope) -> tuple[_Type, _Eval]:
        if operand.kind == "literal":
            value = operand.value
            kind = _BOOL if isinstance(value, bool) else _INT if isinstance(value, int) else _STRING
            return kind, lambda _ctx: value
        if operand.kind == "pipe":
            assert operand.pipe is not None
            return self.pipe(operand.pipe, dot, scope)
        if operand.kind == "var":
            name = operand.var
            if name == "":
                kind, fn = _DATA, (lambda ctx: ctx.vars[""])
            elif name in scope:
                kind, fn = scope[name], (lambda ctx: ctx.vars[name])
            else:
                raise self.error(f"undefined variable ${name}", operand.pos)
        else:  # dot, or a field chain on the dot
            kind, fn = dot, (lambda ctx: ctx.dot)
        for field_name in operand.names:
            kind, fn = self.member(kind, fn, field_name, operand.pos)
        return kind, fn

    def member(self, kind: _Type, fn: _Eval, name: str, pos: int) -> tuple[_Type, _Eval]:
        if kind.kind == "struct" and name in kind.members:
            member_type, getter = kind.members[name]
            return member_type, lambda ctx: getter(fn(ctx))
        if kind.kind == "map" and kind.key is _STRING and kind.elem is _STRING:
            return _STRING, lambda ctx: fn(ctx).get(name, _NO_VALUE)
        available = f"; it has: {', '.join('.' + m for m in kind.members)}" if kind.members else ""
        raise self.error(f"unknown field .{name} of {kind.name}{available}", pos)

    def call(self, name: str, args: list[tuple[_Type, _Eval]], pos: int) -> tuple[_Type, _Eval]:
        fns = [fn for _, fn in args]
        kinds = [kind for kind, _ in args]
        if name in ("print", "println"):
            printers = [self.printer(k, pos) for k in kinds]
            strings = [k.kind == "string" for k in kinds]
            if name == "println":
                return _STRING, lambda ctx: " ".join(_printed(fns, printers, ctx)) + "\n"
            return _STRING, lambda ctx: _sprint(_printed(fns, printers, ctx), strings)
        if name == "printf":
            return self.printf(args, pos)
        if name == "len":
            if len(args) != 1 or kinds[0].kind not in ("string", "slice", "map"):
                raise self.error("len takes one list, map or string", pos)
            fn = fns[0]
            return _INT, lambda ctx: len(_str_bytes(v) if isinstance(v := _given(fn(ctx)), str) else v)
        if name == "not":
            if len(args) != 1:
                raise self.error("not takes one argument", pos)
            fn = fns[0]
            return _BOOL, lambda ctx: not _truthy(_given(fn(ctx)))
        if name in ("eq", "ne"):
            if len(args) < 2 or (name == "ne" and len(args) != 2):
                raise self.error(f"{name} takes {'two' if name == 'ne' else 'two or more'} arguments", pos)
            if any(k.kind not in ("string", "int", "bool") or k is not kinds[0] for k in kinds):
                raise self.error(f"{name} compares strings, integers or booleans of one type", pos)
            if name == "ne":
                return _BOOL, lambda ctx: _given(fns[0](ctx)) != _given(fns[1](ctx))
            return _BOOL, lambda ctx: any(_given(fns[0](ctx)) == _given(f(ctx)) for f in fns[1:])
        # and / or: Go returns the first argument that decides, evaluating no further.
        if not args:
            raise self.error(f"{name} takes at least one argument", pos)
        result = kinds[0] if all(k is kinds[0] for k in kinds) else _ANY
        stop_when = name == "or"

        def decide(ctx: _Ctx) -> Any:
            value = None
            for f in fns:
                value = _given(f(ctx))  # Go fails on a missing key passed to a function
                if _truthy(value) == stop_when:
                    return value
            return value

        return result, decide

    def printf(self, args: list[tuple[_Type, _Eval]], pos: int) -> tuple[_Type, _Eval]:
        fmt_text = args[0][1](_Ctx(None, {}))  # a literal (checked by the caller)
        if not isinstance(fmt_text, str):
            raise self.error('printf needs a format string first, e.g. printf "%s" .Name', pos)
        pieces = re.findall(r"%.?|[^%]+", fmt_text, re.DOTALL)
        verbs = [p for p in pieces if p.startswith("%") and p != "%%"]
        if any(v not in ("%s", "%v", "%d") for v in verbs):
            raise self.error("printf supports only %s, %v, %d and %% (no widths or flags)", pos)
        values = args[1:]
        if len(verbs) != len(values):
            raise self.error(f"printf format has {len(verbs)} verb(s) for {len(values)} argument(s)", pos)
        printers: list[Callable[[Any], str]] = []
        for verb, (kind, _) in zip(verbs, values, strict=True):
            if verb == "%d" and kind is not _INT:
                raise self.error(f"printf %d needs an integer, not {kind.name}", pos)
            printers.append(self.printer(kind, pos))
        fns = [fn for _, fn in values]

        def format_(ctx: _Ctx) -> str:
            printed = iter(_printed(fns, printers, ctx))
            return "".join("%" if p == "%%" else next(printed) if p.startswith("%") else p for p in pieces)

        return _STRING, format_


def _nothing(_ctx: _Ctx, _out: list[str]) -> None:
    return None


def _given(value: Any) -> Any:
    if value is _NO_VALUE:
        raise TemplateError("a key of .Values passed to a function is not set (Go fails the template there)")
    return value


def _printed(fns: list[_Eval], printers: list[Callable[[Any], str]], ctx: _Ctx) -> list[str]:
    return [printer(_given(fn(ctx))) for fn, printer in zip(fns, printers, strict=True)]


def _sprint(printed: list[str], strings: list[bool]) -> str:
    """Go's fmt.Sprint: a space between two operands when neither is a string."""
    out = ""
    for i, text in enumerate(printed):
        if i and not strings[i] and not strings[i - 1]:
            out += " "
        out += text
    return out


def _print_value(value: Any, printer: Callable[[Any], str]) -> str:
    return "<no value>" if value is _NO_VALUE else printer(value)


def _str_bytes(text: str) -> bytes:
    return text.encode("utf-8")  # Go's len of a string counts bytes


def _truthy(value: Any) -> bool:
    """Go's template truth: false, 0, and empty strings, lists and maps are false; structs are true."""
    if value is _NO_VALUE or value is None:
        return False
    if isinstance(value, bool | int | str | list | dict):
        return bool(value)
    return True


# --- public surface ---------------------------------------------------------------------------------------


def _compile(template: str) -> _Emit:
    try:
        tree = _Parser(template).parse()
        return _Compiler(template).nodes(tree, _DATA, {"": _DATA})
    except RecursionError:
        # A parenthesised pipeline a few hundred deep exhausts Python's stack: an error, not a crash (it once
        # took `promote receive` down at start, reading the pipeline files).
        raise TemplateError("nested too deeply (parentheses or blocks); flatten it") from None


def check(template: str) -> None:
    """Raise :class:`TemplateError` if ``template`` uses anything :func:`render` does not render as Flux."""
    _compile(template)


def render(template: str, data: TemplateData) -> str:
    """The commit message ``template`` gives for ``data``, as Flux's controller would write it."""
    emit = _compile(template)
    root = _root(data)
    out: list[str] = []
    emit(_Ctx(root, {"": root}), out)
    return "".join(out)


def render_update(
    template: str, update: UpdateResult, *, automation: str, values: Mapping[str, str] | None = None
) -> str:
    """:func:`render` for one update. ``automation`` is ``namespace/name`` or a bare name, which then takes
    the namespace of the update's policy (``flux-system:app`` -> ``flux-system/<name>``)."""
    namespace, _, name = automation.rpartition("/")
    if not namespace:
        namespace = update.policy.partition(":")[0]
    return render(template, TemplateData(namespace, name, (update,), dict(values or {})))
