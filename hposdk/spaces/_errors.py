"""Turn pydantic's ValidationError into one readable message per problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

# Parts of a pydantic location that only name union members ("uniform", "float") or validators.
_TAGS = {"uniform", "loguniform", "integer", "discrete"}
_SCALAR_TAGS = {"float", "int", "bool", "str", "none"}
_FIELDS = {"low", "high", "step", "base", "log"}

#: (location, message, error type, input) of one problem.
Detail = tuple[tuple[Any, ...], str, str, Any]


def _clean_loc(loc: Sequence[Any]) -> tuple[Any, ...]:
    parts: list[Any] = []
    for p in loc:
        if isinstance(p, str) and (p in _TAGS or p.startswith("function-")):
            continue
        if isinstance(p, str) and p in _SCALAR_TAGS and parts and parts[-1] in _FIELDS:
            continue  # `low: StrictFloat | StrictInt` reports each member; the field is enough
        parts.append(p)
    return tuple(parts)


def flatten(exc: ValidationError) -> list[Detail]:
    """Every problem with its full location, looking through errors raised by nested models."""
    out: list[Detail] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        inner = (err.get("ctx") or {}).get("error")
        details = getattr(inner, "details", None)
        if details:
            out.extend((loc + d[0], d[1], d[2], d[3]) for d in details)
            continue
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append((loc, msg, str(err.get("type", "")), err.get("input")))
    return out


def loc_to_path(loc: Sequence[Any]) -> str:
    """Render a location such as ``('space', 'lr', 'low')`` as ``space.lr.low``."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in _clean_loc(loc)).replace(".[", "[")


def format_details(
    details: list[Detail], prefix: str = "", line_of: Callable[[tuple[Any, ...]], int | None] | None = None
) -> str:
    """One line per problem: ``[line N: ]<where>: <what> (got <value>)``, each path once."""
    lines: dict[str, None] = {}
    seen_paths: set[str] = set()
    for loc, msg, kind, value in details:
        path = loc_to_path(loc)
        if kind in {"float_type", "int_type", "float_parsing", "int_parsing"} and path in seen_paths:
            continue  # the same field failed as float and as int: one line says it
        seen_paths.add(path)
        where = f"{prefix}.{path}" if prefix and path else (prefix or path or "value")
        if line_of is not None:
            line = line_of(_clean_loc(loc))
            if line is not None:
                where = f"line {line}: {where}"
        if kind == "extra_forbidden":
            msg = "unknown field; check its spelling"
        elif kind in {"float_type", "int_type", "float_parsing", "int_parsing"}:
            msg = "Input should be a number"
        got = "" if kind in {"value_error", "missing", ""} else f" (got {value!r})"
        lines[f"{where}: {msg}{got}"] = None
    return "\n".join(lines)


def format_validation_error(
    exc: ValidationError,
    prefix: str = "",
    line_of: Callable[[tuple[Any, ...]], int | None] | None = None,
) -> str:
    """Format a pydantic error for people (see :func:`format_details`)."""
    return format_details(flatten(exc), prefix, line_of)
