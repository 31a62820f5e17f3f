"""Backend names -> lazily imported classes (``"module:Class"``), extensible by entry points.

Nothing is imported until a backend is asked for by name, so ``import hposdk`` stays cheap and
never loads an engine. Third-party packages add backends through the ``hposdk.backends`` entry
point group.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..exceptions import BackendNotFoundError, MissingExtraError

if TYPE_CHECKING:
    from ._base import Backend

__all__ = ["BackendEntry", "available_backends", "get_backend", "register_backend"]


@dataclass(frozen=True)
class BackendEntry:
    """Where a backend lives and which pip extra installs its engine."""

    name: str
    target: str  # "module:Class"
    extra: str | None
    engine: str | None  # the top-level module of its engine, to tell whether it is installed
    description: str


_BUILTIN = {
    "local": BackendEntry("local", "hposdk.backends.local:LocalBackend", None, "optuna",
                          "this machine: in-process or worker processes (Optuna engine)"),
    "ray": BackendEntry("ray", "hposdk.backends.ray:RayBackend", "ray", "ray",
                        "Ray Tune, on a local Ray runtime or a Ray cluster"),
    "clearml": BackendEntry("clearml", "hposdk.backends.clearml:ClearMLBackend", "clearml", "clearml",
                            "ClearML HyperParameterOptimizer, on a ClearML fleet or locally"),
}
_EXTRA: dict[str, BackendEntry] = {}


def register_backend(entry: BackendEntry) -> None:
    """Register a backend by name (used by plugins and tests)."""
    _EXTRA[entry.name] = entry


def _entries() -> dict[str, BackendEntry]:
    found = dict(_BUILTIN)
    for ep in entry_points(group="hposdk.backends"):
        found.setdefault(ep.name, BackendEntry(ep.name, ep.value, None, None, f"plugin ({ep.value})"))
    found.update(_EXTRA)
    return found


def available_backends() -> dict[str, BackendEntry]:
    """Every known backend (installed or not), by name."""
    return _entries()


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        BackendNotFoundError: unknown name (the message lists known ones and a close match).
        MissingExtraError: the backend's engine is not installed (the message names the extra).
    """
    # Registered and built-in names first: scanning the installed packages' entry points costs
    # ~8 ms, as much as a hundred random-search trials, so it is paid only for a plugin's name.
    entry = _EXTRA.get(name) or _BUILTIN.get(name) or _entries().get(name)
    if entry is None:
        entries = _entries()  # scanned again, on the error path only, to list every known name
        close = difflib.get_close_matches(name, list(entries), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BackendNotFoundError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(entries))}.{hint}"
        )
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if entry.engine and exc.name and exc.name.split(".")[0] == entry.engine:
            raise MissingExtraError(
                f"Using backend={name!r}, but the '{entry.engine}' package is not installed. "
                f"Make sure to install hposdk using `pip install hposdk[{entry.extra}]`."
            ) from exc
        if exc.name == module_name:
            raise BackendNotFoundError(
                f"backend {name!r} is registered as {entry.target!r}, but that module does not exist "
                "in this version of hposdk"
            ) from exc
        raise
    return getattr(module, attr)  # type: ignore[no-any-return]
