"""Turn pydantic's ValidationError into one readable message per problem."""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import ValidationError

from ..exceptions import SpaceError

_F = TypeVar("_F", bound=Callable[..., Any])

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 100, 100, 60

# Parts of a pydantic location that only name union members ("uniform", "float") or validators.
_TAGS = {"uniform", "loguniform", "integer", "discrete"}
_SCALAR_TAGS = {"float", "int", "bool", "str", "none"}
_FIELDS = {"low", "high", "step", "base", "log"}

#: (location, message, error type, input) of one problem.
Detail = tuple[tuple[Any, ...], str, str, Any]


def short_repr(value: Any, limit: int = 120) -> str:
    """A bounded ``repr`` that is safe and fast for any input: a 5000-digit int, a list of 10**8
    items (a YAML "billion laughs"), a recursive list. Messages must never fail or hang on a value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. a huge int nested in a list (int->str digit limit)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def skip_init_in_validation(init: _F) -> _F:
    """Mark a model's custom ``__init__`` so that pydantic does not call it while validating data.

    Pydantic calls a model's own ``__init__`` as ``cls(**data)`` when it validates nested data or runs
    ``model_validate`` (``pydantic/_internal/_model_construction.py``: ``__pydantic_custom_init__``).
    For our models that turns input into a bare ``TypeError`` ("keywords must be strings" for a key
    such as ``1``, "missing 1 required positional argument" for a missing field) instead of a field
    error. Our ``__init__``s only add the positional form and the SpaceError wrapping, which
    validation does not need, so validation skips them.
    """
    init.__pydantic_base_init__ = True  # type: ignore[attr-defined]
    return init


@contextmanager
def as_space_error(prefix: str) -> Iterator[None]:
    """Turn a pydantic ValidationError raised inside into a SpaceError naming each field."""
    try:
        yield
    except ValidationError as exc:
        details = flatten(exc)
        raise SpaceError(format_details(details, prefix=prefix), details) from None


def _is_choice(loc: Sequence[Any]) -> bool:
    """Whether ``loc`` ends at one of a Discrete's choices (``..., 'choices', 3``)."""
    return len(loc) >= 2 and loc[-2] == "choices" and isinstance(loc[-1], int)


def _clean_loc(loc: Sequence[Any]) -> tuple[Any, ...]:
    parts: list[Any] = []
    for p in loc:
        if isinstance(p, str) and (p in _TAGS or p.startswith("function-")):
            continue
        if p == "[key]":
            continue  # the key itself is the problem: its path is the key
        if isinstance(p, str) and p in _SCALAR_TAGS and parts and (parts[-1] in _FIELDS or _is_choice(parts)):
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
        if kind.endswith(("_type", "_parsing")) and path in seen_paths:
            continue  # the same field failed as each member of a union (float, int, ...): one line says it
        seen_paths.add(path)
        sep = "" if path.startswith("[") else "."
        where = f"{prefix}{sep}{path}" if prefix and path else (prefix or path or "value")
        if line_of is not None:
            line = line_of(_clean_loc(loc))
            if line is not None:
                where = f"line {line}: {where}"
        if kind == "extra_forbidden":
            msg = "unknown field; check its spelling"
        elif kind in {"float_type", "float_parsing"}:
            msg = "Input should be a number"  # `StrictFloat | StrictInt` fails as float first
        elif kind in {"int_type", "int_parsing"}:
            msg = "Input should be an integer"
        if kind == "string_type" and loc and loc[-1] == "[key]":
            msg = "keys must be strings"
        elif kind == "union_tag_not_found":
            msg = "`type` is missing: give one of 'uniform', 'loguniform', 'integer', 'discrete'"
        elif _is_choice(_clean_loc(loc)) and kind.endswith("_type"):
            # One line for the union of scalar types a choice may have, not one per member.
            msg = "a choice must be None, a bool, an int, a float or a str"
        got = "" if kind in {"value_error", "missing", ""} else f" (got {short_repr(value)})"
        lines[f"{where}: {msg}{got}"] = None
    return "\n".join(lines)


def format_validation_error(
    exc: ValidationError,
    prefix: str = "",
    line_of: Callable[[tuple[Any, ...]], int | None] | None = None,
) -> str:
    """Format a pydantic error for people (see :func:`format_details`)."""
    return format_details(flatten(exc), prefix, line_of)
