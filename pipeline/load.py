"""Reading pipeline files: YAML into :mod:`pipeline.model`, with ``file:line: field: what is wrong`` errors."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from pipeline.model import PATTERN_HELP, UNION_KINDS, Pipeline
from tasks.errors import RefusedError

# --- loading with precise errors -----------------------------------------------------------------------


class PipelineError(RefusedError, ValueError):
    """A pipeline file that cannot be used; ``problems`` holds one line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
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
        return f"{message.replace('Input should be', 'must be one of:')} (got {error['input']!r})"
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}"
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
        return f"{error['input']!r} is not allowed here: must be {PATTERN_HELP.get(pattern, 'matching ' + pattern)}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    return f"{message} (got {error.get('input')!r})"


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
    yaml = YAML(typ="rt")
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise PipelineError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(document, dict):
        raise PipelineError(source, ["the file must be a YAML mapping with name, repository and environments"])
    try:
        return Pipeline.model_validate(document)
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


def load_pipeline(path: str | Path) -> Pipeline:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    return parse_pipeline(text, source=str(path))


def discover_pipelines(directory: str | Path) -> list[Path]:
    """Pipeline files in a directory (``*.yaml``/``*.yml``), sorted by name."""
    root = Path(directory)
    return sorted(p for p in root.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
