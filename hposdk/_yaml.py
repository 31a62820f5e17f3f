"""Safe YAML loading that keeps line numbers, for errors that point at the offending line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads ``1e-4`` as a float (PyYAML follows YAML 1.1 and reads a
        string there, a classic trap for learning rates)."""

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for ch in "-+0123456789.":
        Loader.yaml_implicit_resolvers[ch] = [
            (tag, rx) for tag, rx in Loader.yaml_implicit_resolvers.get(ch, []) if tag != "tag:yaml.org,2002:float"
        ]
        Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list(ch))
    return Loader


def dumper() -> type:
    """SafeDumper that quotes what :func:`_loader` would read back as another type.

    PyYAML's dumper decides quoting with its own (YAML 1.1) resolvers, so the string ``"1e5"`` was
    written bare and read back by our loader as the float ``100000.0``.
    """
    import yaml

    loader: Any = _loader()

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in loader.yaml_implicit_resolvers.items()}
    return Dumper


def _is_path(source: str | Path) -> bool:
    return isinstance(source, Path) or (
        isinstance(source, str) and source.endswith((".yaml", ".yml")) and "\n" not in source
    )


def source_name(source: str | Path) -> str:
    """How errors name ``source``: its path, or ``<string>`` for YAML text (never the whole text)."""
    return str(source) if _is_path(source) else "<string>"


def load_yaml(source: str | Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML with a safe loader; return the data and a map from key paths to line numbers.

    ``source`` is a path (``Path`` or a string ending in .yaml/.yml) or YAML text.
    """
    import yaml

    text: str
    name = "<string>"
    if _is_path(source):
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"{path}: file not found")
        try:
            text, name = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, a binary file
            raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    else:
        text = str(source)
    loader_cls = _loader()
    try:
        node = yaml.compose(text, Loader=loader_cls)
        data = yaml.load(text, Loader=loader_cls)  # noqa: S506 - loader_cls derives from SafeLoader
    except RecursionError:
        raise ConfigError(f"{name}: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an int of more than 4300 digits (sys.get_int_max_str_digits)
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}, line {mark.line + 1}" if mark is not None else name
        context = getattr(exc, "context_mark", None)
        started = ""
        if context is not None and (mark is None or context.line != mark.line):
            started = f" ({getattr(exc, 'context', 'the construct')} started on line {context.line + 1})"
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}{started}") from None
    lines: dict[tuple[Any, ...], int] = {}
    seen: set[int] = set()

    def walk(n: Any, path: tuple[Any, ...]) -> None:
        if n is None:
            return
        lines[path] = n.start_mark.line + 1
        # An alias (*a) repeats a node: visiting it once keeps "a billion laughs" linear and a
        # recursive document (&a [*a]) finite; errors point at its first place.
        if id(n) in seen:
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else f"<{k.tag}>"
                lines[(*path, key)] = k.start_mark.line + 1
                walk(v, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    try:
        walk(node, ())
    except RecursionError:
        raise ConfigError(f"{name}: not valid YAML: nested too deeply") from None
    return data, lines


def line_lookup(lines: dict[tuple[Any, ...], int]):  # type: ignore[no-untyped-def]
    """A function mapping a pydantic error location to the closest known YAML line."""

    def line_of(loc: tuple[Any, ...]) -> int | None:
        # Pydantic adds union tags ("uniform") to locations; drop parts the YAML does not have.
        path: tuple[Any, ...] = ()
        best = lines.get(())
        for part in loc:
            candidate = (*path, part)
            if candidate in lines:
                path = candidate
                best = lines[path]
        return best

    return line_of
