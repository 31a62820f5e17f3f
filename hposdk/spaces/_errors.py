"""Turn pydantic's ValidationError into one readable message per problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

# Pydantic lists a failed union member per tag; these parts of a location add nothing for a user.
_NOISE = {"uniform", "loguniform", "integer", "discrete", "function-after[_check(), Uniform]"}


def loc_to_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic location such as ``('space', 'lr', 'low')`` as ``space.lr.low``."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, str) and (p in _NOISE or p.startswith("function-")):
            continue
        parts.append(f"[{p}]" if isinstance(p, int) else str(p))
    return ".".join(parts).replace(".[", "[")


def format_validation_error(
    exc: ValidationError,
    prefix: str = "",
    line_of: Callable[[tuple[Any, ...]], int | None] | None = None,
) -> str:
    """One line per error: ``<where>: <what> (got <value>)``.

    Args:
        exc: the pydantic error.
        prefix: what was being validated (e.g. ``Uniform`` or ``search space``).
        line_of: maps a location to a source line number (YAML files), if known.
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        path = loc_to_path(loc)
        msg = str(err.get("msg", "invalid"))
        msg = msg.removeprefix("Value error, ")
        where = f"{prefix}.{path}" if prefix and path else (prefix or path or "value")
        if line_of is not None:
            line = line_of(loc)
            if line is not None:
                where = f"line {line}: {where}"
        got = ""
        if err.get("type") not in {"value_error", "missing"} and "input" in err:
            got = f" (got {err['input']!r})"
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; check its spelling"
        lines.append(f"{where}: {msg}{got}")
    # A union error repeats for every member that did not match; keep each line once.
    seen: dict[str, None] = dict.fromkeys(lines)
    return "\n".join(seen)
