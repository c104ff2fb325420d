"""Reading pipeline files: YAML into :mod:`pipeline.model`, with ``file:line: field: what is wrong`` errors."""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from pipeline.model import PATTERN_HELP, UNION_KINDS, Pipeline
from rules.errors import RefusedError

# --- loading with precise errors -----------------------------------------------------------------------

# Bounds on hostile input: a pipeline file is a few kilobytes of hand-written YAML. Aliases share nodes, so a
# few hundred bytes can stand for billions of values (a "billion laughs" file); validating or echoing the
# expanded document is what costs, so the expansion is counted before pydantic sees it.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 20_000  # scalars, mappings and sequences after expanding aliases and merge keys
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_PROBLEMS = 50  # reported per file; the rest are counted
MAX_ECHO = 80  # characters of an offending value repeated in an error
MAX_PROBLEM_CHARS = 600  # one problem line, whatever went into it


def echo(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, for repeating user input in an error message."""
    if isinstance(value, str | bytes) and len(value) > limit:
        value = value[: limit + 1]  # never build the repr of a huge value just to cut it
    elif isinstance(value, dict | list | tuple | set):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _cap(line: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


class PipelineError(RefusedError, ValueError):
    """A pipeline file that cannot be used; ``problems`` holds one line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        source = _cap(source, 300)
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], f"... and {rest} more problem{'s' if rest > 1 else ''}"]
        problems = [_cap(p) for p in problems]
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid pipeline file\n" + "\n".join(f"  {p}" for p in problems))


def _line_of(document: Any, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node of ``loc`` that exists in the YAML document."""
    node = document
    line: int | None = None
    for key in loc:
        if isinstance(node, CommentedMap) and isinstance(key, str) and key in node:
            line = node.lc.key(key)[0] + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line = node.lc.item(key)[0] + 1
            node = node[key]
        else:
            break
    return line


def _model_at(loc: tuple[int | str, ...], document: Any) -> type[BaseModel] | None:
    """The model class that the mapping at ``loc`` is validated against (for listing its fields)."""
    model: Any = Pipeline
    node = document
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        node = node.get(part) if isinstance(node, dict) else None
        model = _concrete(field.annotation, node)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _concrete(annotation: Any, node: Any) -> Any:
    """Unwrap list[...], X | None and discriminated unions (using the document's ``kind``)."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Annotated:
        return _concrete(args[0], node)
    if get_origin(annotation) is list:
        return _concrete(args[0], node)
    if args:
        models = [_concrete(a, node) for a in args]
        kind = node.get("kind") if isinstance(node, dict) else None
        for candidate in models:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                field = candidate.model_fields.get("kind")
                if field is None or kind in get_args(field.annotation):
                    return candidate
        return None
    return annotation


def _describe(error: dict[str, Any], document: Any = None) -> str:
    kind = error["type"]
    message = str(error["msg"])
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return f"{message.replace('Input should be', 'must be one of:')} (got {echo(error['input'])})"
    if kind == "union_tag_invalid":
        return f"unknown kind {echo(ctx.get('tag'))}; allowed: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        field = next((p for p in reversed(error["loc"]) if isinstance(p, str)), "")
        allowed = ", ".join(repr(k) for k in sorted(UNION_KINDS.get(str(field), set())))
        return f"missing 'kind'; allowed: {allowed or 'see deployments/README.md'}"
    if kind == "extra_forbidden":
        model = _model_at(_without_union_tags(error["loc"])[:-1], document)
        allowed = f"; allowed: {', '.join(model.model_fields)}" if model else ""
        return f"unknown field{allowed} (see deployments/README.md)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return f"{echo(error['input'])} is not allowed here: must be {PATTERN_HELP.get(pattern, 'matching ' + pattern)}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"{message} (got {echo(error.get('input'))})"


def _without_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """pydantic puts the discriminator value into the path ("tracks.tag.file"); users wrote "tracks.file"."""
    kept: list[int | str] = []
    for index, part in enumerate(loc):
        previous = loc[index - 1] if index else None
        if isinstance(previous, str) and part in UNION_KINDS.get(previous, set()):
            continue
        kept.append(part)
    return tuple(kept)


@functools.lru_cache(maxsize=128)
def parse_pipeline(text: str, source: str = "<string>") -> Pipeline:
    """The pipeline in ``text``; cached, as the models are frozen and every flow run of a nightly reads its
    file again (errors are not cached: a fixed file is parsed anew)."""
    if len(text) > MAX_FILE_BYTES:
        raise PipelineError(source, [_too_large(len(text))])
    yaml = YAML(typ="rt")
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise PipelineError(source, [_yaml_problem(exc)]) from None
    except RecursionError:
        raise PipelineError(source, [_too_deep()]) from None
    if not isinstance(document, dict):
        raise PipelineError(source, ["the file must be a YAML mapping with name, repository and environments"])
    if not any(key in document for key in ("name", "repository", "environments")):
        # Not a pipeline file at all (a path pointed at the wrong file, or at a secret): say so without repeating
        # any of it; its keys could be a password file's lines.
        raise PipelineError(
            source,
            [
                "not a pipeline file: it has none of name, repository, environments at the top level "
                "(its content is not repeated here)"
            ],
        )
    problem = _expansion_problem(document)
    if problem is not None:
        raise PipelineError(source, [problem])
    try:
        return Pipeline.model_validate(document)
    except RecursionError:
        raise PipelineError(source, [_too_deep()]) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # Drop the discriminator tags pydantic inserts ("tracks.tag.file" -> "tracks.file").
            loc = _without_union_tags(error["loc"])
            if error["type"] == "union_tag_invalid":
                loc = (*loc, "kind")  # point at the wrong value, not at its parent
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top)"
            line = _line_of(document, loc)
            where = f"line {line}: " if line else ""
            problems.append(f"{where}{path}: {_describe(dict(error), document)}")
        raise PipelineError(source, problems) from None


def _yaml_problem(exc: YAMLError) -> str:
    """Where and what, without the snippet of the file the YAML library quotes (the file may not be a pipeline
    file at all, and the snippet is its content)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = str(getattr(exc, "problem", None) or "the YAML does not parse")
    return f"{where}not valid YAML ({_cap(problem, 120)})"


def _too_large(size: int) -> str:
    return (
        f"the file is larger than {MAX_FILE_BYTES // 1024} KiB ({size} bytes); a pipeline file describes one "
        "application: split it, one file per application"
    )


def _too_deep() -> str:
    return f"mappings and lists are nested more than {MAX_DEPTH} levels deep; a pipeline file needs a handful"


def _expansion_problem(document: Any) -> str | None:
    """Why the document is too big once aliases (``*name``) and merge keys (``<<``) are expanded, or None.

    An alias shares the anchored value, so the document is a graph; its expanded size is counted once per
    shared value (memoised by identity), which takes time in the number of distinct values, not their
    expansion."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise _TooBigError(_too_deep())
        if key in on_path:  # ruamel does not build cycles from recursive aliases today; refuse if it ever does
            raise _TooBigError("an alias refers to a mapping or list that contains it (a cycle)")
        on_path.add(key)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise _TooBigError(
                    f"the file expands to more than {MAX_NODES} values once its aliases (*name) and merge keys "
                    "(<<) are expanded; use fewer or smaller aliases (a pipeline file needs a few hundred values)"
                )
        on_path.discard(key)
        sizes[key] = total
        return total

    try:
        size(document, 0)
    except _TooBigError as refused:
        return str(refused)
    return None


class _TooBigError(Exception):
    """Ends the expansion count early with the problem to report."""


def read_pipeline_text(path: str | Path) -> str:
    """The text of a pipeline file: a regular file (after following symlinks) of at most MAX_FILE_BYTES of
    UTF-8. A FIFO, a device or a directory is refused before it is read, so reading never blocks or runs on."""
    source = str(path)
    try:
        info = Path(path).stat()  # follows symlinks: the target is what would be read
    except OSError as exc:
        raise PipelineError(source, [f"cannot read the file: {exc.strerror}"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise PipelineError(source, [f"not a regular file ({_file_type(info.st_mode)}); give the path of a YAML file"])
    if info.st_size > MAX_FILE_BYTES:
        raise PipelineError(source, [_too_large(info.st_size)])
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PipelineError(source, [f"cannot read the file: {exc.strerror}"]) from None
    with os.fdopen(fd, "rb") as stream:
        opened = os.fstat(stream.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise PipelineError(source, [f"not a regular file ({_file_type(opened.st_mode)})"])
        data = stream.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise PipelineError(source, [_too_large(len(data))])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineError(
            source,
            [
                f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file "
                "as UTF-8 (YAML files are UTF-8)"
            ],
        ) from None


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def load_pipeline(path: str | Path) -> Pipeline:
    return parse_pipeline(read_pipeline_text(path), source=str(path))


def discover_pipelines(directory: str | Path) -> list[Path]:
    """Pipeline files in a directory (``*.yaml``/``*.yml``), sorted by name."""
    root = Path(directory)
    return sorted(p for p in root.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
