"""Validation shared by job specs (:mod:`landslide_dask.jobs.spec`) and cluster definitions
(:mod:`landslide_dask.clusters.definitions`): one place, below both, so neither imports the other.

Both are pydantic models derived from :class:`Strict` (unknown keys refused, no type coercion,
immutable). :func:`problems_of` turns a pydantic ``ValidationError`` into the ``(dotted path,
message)`` pairs of :class:`~landslide_dask.errors.SpecError`, every problem at once:

* the path names the field as the user wrote it: ``options.walltime``, ``area.bbox[2]`` (the
  ``kind`` tag pydantic puts into the location of a discriminated union is left out);
* the message says what is wrong in plain words ("got 'two' (str), not a whole number", "150 is
  out of range (must be <= 100)"), then what is expected and an example, taken from the field's
  ``Field(description=..., examples=[...])``: ``. Expected a percentage 0-100, or null, e.g.
  `max_cloud: 80```;
* an unknown key gets "did you mean 'x'?" (difflib) and the known keys, as the model worded by
  :meth:`Strict.unknown_key` says.

A validator reports a problem by raising ``ValueError(message)`` (at the field it validates) or
through :func:`fail` / :func:`fail_all` (at one or more places below the model or field it
validates, e.g. ``area.country`` from the area's own check, several at once).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from ..errors import SpecError

__all__ = ["SpecLoader", "Strict", "fail", "fail_all", "problems_of", "read_yaml", "show", "suggest", "unknown"]

_PROBLEMS = "spec_problems"


class Strict(BaseModel):
    """Base of every model read from YAML: unknown keys are errors, ``"20"`` is not a number, and
    a validated spec cannot be changed (``model_copy(update=...)`` makes a changed copy)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @classmethod
    def unknown_key(cls, key: str, where: str) -> str:
        """The message for an unknown ``key`` of this model at dotted path ``where`` ("" = top)."""
        known = list(cls.model_fields)
        return (
            f"unknown key {key!r}{suggest(key, known)} "
            f"(known keys{' of ' + where if where else ''}: {', '.join(known)})"
        )


def fail(message: str, *at: str | int, expect: bool = True) -> NoReturn:
    """Report one problem at ``at`` (keys/indices below what is being validated; none: right there).

    ``expect=False`` leaves out the field's "Expected ..., e.g. ..." (the message already says it)."""
    fail_all([(at, message)], expect=expect)


def fail_all(problems: Sequence[tuple[Sequence[str | int], str]], expect: bool = True) -> NoReturn:
    """Report several problems at once, each ``(location below here, message)``."""
    items = tuple((tuple(at), msg) for at, msg in problems)
    raise PydanticCustomError(
        _PROBLEMS, "{summary}", {"summary": "; ".join(m for _, m in items), "problems": items, "expect": expect}
    )


def show(x: Any) -> str:
    """A value as a message shows it: ``'two' (str)``, ``null``, shortened when long."""
    if x is None:
        return "null"
    text = repr(x)
    return (text[:60] + "...") if len(text) > 63 else text + f" ({type(x).__name__})"


def unknown(key: Any, known: Sequence[str], noun: str = "key", of: str = "", expected: str | None = None) -> str:
    """``unknown option 'x' for kind k; did you mean 'y'? Expected one of ...`` (``expected``: instead
    of the list of ``known``)."""
    did = suggest(key, known)
    listed = expected or "one of " + ", ".join(known)
    return f"unknown {noun} {key!r}{of}{did}{' Expected' if did else '; expected'} {listed}"


def suggest(word: Any, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ""."""
    cutoff = 0.5 if len(str(word)) <= 3 else 0.6  # "s4" -> "s3"
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def problems_of(exc: ValidationError, root: Any) -> list[tuple[str, str]]:
    """``(dotted path, message)`` for every error of ``exc``, raised validating ``root`` (a model
    class, or an annotated discriminated union of model classes)."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == _PROBLEMS:
            for at, msg in ctx["problems"]:
                path, info, _ = _locate(root, loc + tuple(at))
                out.append((path, _expected(msg, info, path) if ctx["expect"] else msg))
            continue
        path, info, parents = _locate(root, loc)
        if err["type"] == "extra_forbidden":
            where = _split(path)[0]
            owner = parents[0] if parents else Strict
            out.append((path, owner.unknown_key(str(loc[-1]), where)))
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key = str(ctx.get("discriminator", "kind")).strip("'\"")
            tags = ", ".join(t for t in (_tag(m) for m in _models(root)) if t)
            given = err["input"].get(key) if isinstance(err.get("input"), dict) else ctx.get("tag")
            got = "missing" if err["type"] == "union_tag_not_found" else f"got {show(given)}"
            out.append((_join(path, key), f"{got}. Expected one of {tags}"))
        else:
            out.append((path, _expected(_message(err, info), info, path)))
    return out


_TYPES = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list",
    "tuple_type": "a list",
    "date_type": "a date",
    "path_type": "a path",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _message(err: dict, info: FieldInfo | None) -> str:
    kind, x, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if x is None and kind not in _BOUNDS:
        return "is empty (null)"
    if kind in _TYPES:
        return f"got {show(x)}, not {_TYPES[kind]}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"{_num(x)} is out of range (must be {op} {_num(ctx.get(key))})"
    if kind == "literal_error":
        choices = _literals(info.annotation) if info is not None else []
        return f"got {show(x)}; expected one of {', '.join(map(str, choices)) or ctx.get('expected')}"
    if kind == "too_short":
        return f"got {show(x)}, needs at least {ctx.get('min_length')} item(s)"
    return f"got {show(x)}: {err['msg']}"


def _expected(msg: str, info: FieldInfo | None, path: str) -> str:
    """``msg`` with the field's "Expected ..., e.g. ..." (unless it says what is expected already)."""
    if info is None or not info.description or "expected " in msg.lower():
        return msg
    leaf = _split(path)[1].split("[", 1)[0]
    example = f", e.g. `{leaf}: {info.examples[0]}`" if info.examples else ""
    return f"{msg}. Expected {info.description}{example}"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _split(path: str) -> tuple[str, str]:
    """``"a.b[2]"`` -> ``("a", "b[2]")``; ``"a"`` -> ``("", "a")``."""
    head, _, leaf = path.rpartition(".")
    return head, leaf


def _models(tp: Any) -> list[type[BaseModel]]:
    """The model classes in an annotation (unwrapping Annotated, Optional, unions, containers)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in get_args(tp) for m in _models(arg)]


def _literals(tp: Any) -> list[Any]:
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    return [v for arg in get_args(tp) for v in _literals(arg)]


def _tag(model: type[BaseModel]) -> str | None:
    """The discriminator value of a union member: its ``kind: Literal["..."]``."""
    field = model.model_fields.get("kind")
    values = _literals(field.annotation) if field is not None else []
    return values[0] if len(values) == 1 else None


def _locate(root: Any, loc: tuple) -> tuple[str, FieldInfo | None, list[type[BaseModel]]]:
    """The dotted path of a pydantic location, the field it ends at, and the model(s) holding it."""
    models, parents, info, path = _models(root), [], None, ""
    for part in loc:
        if isinstance(part, int):
            path = _join(path, part)
            continue
        if len(models) > 1 and any(_tag(m) == part for m in models):
            models = [m for m in models if _tag(m) == part]  # a union tag, not a key
            continue
        parents = models
        info = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        path = _join(path, part)
        models = _models(info.annotation) if info is not None else []
    return path, info, parents


class SpecLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as text (validated by the models) and refuses duplicate keys."""


SpecLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping_no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def read_yaml(path: Path, error: type[SpecError], missing: str) -> Any:
    """The content of a YAML file, or ``error(path, ...)``: ``missing`` when it is not a file, else
    what is wrong with it (not UTF-8, not YAML: with line and column, a key given twice)."""
    src = str(path)
    if not path.is_file():
        raise error(src, [("", missing)])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(src, [("", "not a text (UTF-8) file: is it really YAML?")]) from None
    except OSError as exc:
        raise error(src, [("", f"cannot be read: {exc.strerror or exc}")]) from None
    try:
        return yaml.load(text, Loader=SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(src, [("", f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}")]) from None
