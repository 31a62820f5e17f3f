"""SearchSpace: a named, ordered set of parameters with grid, sampling and (de)serialisation."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, ConfigDict, RootModel, ValidationError, field_validator

from ..exceptions import ConfigError, SpaceError
from ._errors import as_space_error, flatten, format_details, short_repr, skip_init_in_validation
from ._params import MAX_GRID, Parameter, _native

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["GridCursor", "SearchSpace", "point_key"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"parameter name {name!r} is not allowed: use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_' (sections such as 'Args/' are added by backends)"
        )
    return name


# Checked as a key (not after the whole mapping), so that one error lists bad names and bad
# parameters together.
_Name = Annotated[str, AfterValidator(_check_name)]


class SearchSpace(RootModel[dict[_Name, Parameter]]):
    """An ordered mapping of parameter names to parameters.

    Examples:
        >>> from hposdk import SearchSpace, Uniform, Discrete
        >>> space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5), "opt": Discrete(["sgd", "adam"])})
        >>> space.grid()[:2]
        [{'x': 0.0, 'opt': 'sgd'}, {'x': 0.0, 'opt': 'adam'}]
        >>> SearchSpace.from_yaml(space.to_yaml()) == space
        True
    """

    model_config = ConfigDict(frozen=True)

    @skip_init_in_validation
    def __init__(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise SpaceError(
                f"a search space must be a mapping of names to parameters, got {type(params).__name__}: "
                f"{short_repr(params)}"
            )
        data = dict(params or {})
        data.update(kwargs)
        try:
            super().__init__(data)
        except ValidationError as exc:
            details = flatten(exc)
            raise SpaceError(format_details(details, prefix="space"), details) from None

    # Validating plain data (a YAML/JSON mapping) refuses with a SpaceError too, never pydantic's error.
    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with as_space_error("space"):
            return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        with as_space_error("space"):
            return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        with as_space_error("space"):
            return super().model_validate_strings(obj, **kwargs)

    @field_validator("root")
    @classmethod
    def _check_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("a search space needs at least one parameter")
        return value

    # --- mapping protocol ------------------------------------------------------------------
    def __getitem__(self, name: str) -> Parameter:
        return self.root[name]

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)

    def __contains__(self, name: object) -> bool:
        return name in self.root

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in declaration order."""
        return tuple(self.root)

    def items(self) -> Iterator[tuple[str, Parameter]]:
        """(name, parameter) pairs in declaration order."""
        return iter(self.root.items())

    # --- semantics ---------------------------------------------------------------------------
    @property
    def size(self) -> int | None:
        """Number of distinct points, or None when any parameter is continuous."""
        total = 1
        for p in self.root.values():
            if p.cardinality is None:
                return None
            total *= p.cardinality
        return total

    def grid(self) -> list[dict[str, Any]]:
        """Every point of a finite space, in row-major order of the declared parameters.

        Raises:
            SpaceError: a parameter is continuous (give it a ``step``) or the grid is too large.
        """
        continuous = [n for n, p in self.root.items() if p.cardinality is None]
        if continuous:
            raise SpaceError(
                f"grid search needs a finite space, but {', '.join(map(repr, continuous))} "
                "is continuous. Fix: give it a `step`, or use optimizer='random' or 'tpe'."
            )
        if (self.size or 0) > MAX_GRID:
            raise SpaceError(f"the grid has {self.size} points, more than {MAX_GRID}; use random search")
        names = list(self.root)
        values = [self.root[n].grid() for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def sample(self, rng: random.Random | int | str | None = None) -> dict[str, Any]:
        """Draw one point. ``rng`` may be a ``random.Random`` or a seed."""
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        return {name: p.sample(rng) for name, p in self.root.items()}

    def sample_for_trial(self, seed: int, number: int) -> dict[str, Any]:
        """The point that seeded random search gives trial ``number``.

        Seeded per trial number, not per sequence: a resumed study, another backend or another
        process draws the same point for the same (seed, number).
        """
        return self.sample(random.Random(f"hposdk:{seed}:{number}"))

    def contains(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` has exactly these keys and every value is in its support."""
        try:
            self.validate_params(params)
        except SpaceError:
            return False
        return True

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a point and return it with exact, Python-native values.

        Raises:
            SpaceError: naming each missing, unknown or out-of-support key.
        """
        problems = []
        missing = [n for n in self.root if n not in params]
        extra = [n for n in params if n not in self.root]
        if missing:
            problems.append(f"missing parameters: {missing}")
        if extra:
            problems.append(f"unknown parameters: {extra}")
        out: dict[str, Any] = {}
        for name, p in self.root.items():
            if name not in params:
                continue
            value = params[name]
            try:
                canonical = p.canonicalize(value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{name}={value!r}: {exc}")
                continue
            if p.kind in ("uniform", "loguniform") and isinstance(_native(value), bool):
                problems.append(f"{name}={value!r}: a bool is not a number here")
            out[name] = canonical
        if problems:
            raise SpaceError("; ".join(problems))
        return out

    # --- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain data (JSON/YAML-ready); ``SearchSpace.from_dict`` reverses it exactly."""
        return {n: p.model_dump(exclude_defaults=False) for n, p in self.root.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from plain data such as ``{"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}``."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"a search space must be a mapping of names to parameters, got {type(data).__name__}")
        return cls(data)

    def to_json(self, **kwargs: Any) -> str:
        """JSON text; value types survive (``True`` stays a bool, ``1`` an int, ``1.0`` a float)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> SearchSpace:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise SpaceError(f"a search space's JSON text is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        """YAML text (safe dumper, key order kept)."""
        import yaml

        from .._yaml import dumper

        return yaml.dump(self.to_dict(), Dumper=dumper(), sort_keys=False)

    @classmethod
    def from_yaml(cls, source: str | Path) -> SearchSpace:
        """Parse YAML text, or read a ``.yaml``/``.yml`` file when given a path."""
        from .._yaml import load_yaml

        try:
            data, _ = load_yaml(source)
        except ConfigError as exc:  # the YAML itself is unreadable: still a bad search space
            raise SpaceError(str(exc)) from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n!r}: {p!r}" for n, p in self.root.items())
        return f"SearchSpace({{{inner}}})"


def point_key(params: Mapping[str, Any]) -> str:
    """A type-aware identity of a point (``1``, ``True`` and ``"1"`` are three different points)."""
    return repr(sorted((k, type(v).__name__, v) for k, v in params.items()))


class GridCursor:
    """A finite space's grid in declared order, skipping points already taken.

    Backends running grid search mark finished, running and re-run points with :meth:`take`, so a
    resumed study never proposes a point twice.
    """

    def __init__(self, space: SearchSpace, taken: Iterable[Mapping[str, Any]] = ()) -> None:
        self._space = space
        self._points: list[dict[str, Any]] | None = None  # enumerated on first use
        self._next = 0
        self.taken: set[str] = {point_key(p) for p in taken}

    def take(self, params: Mapping[str, Any]) -> None:
        """Mark a point as taken (it will not be proposed)."""
        self.taken.add(point_key(params))

    def _grid(self) -> list[dict[str, Any]]:
        if self._points is None:
            self._points = self._space.grid()
        return self._points

    def at(self, index: int) -> dict[str, Any] | None:
        """The grid's point at ``index`` in declared order (None past its end); ignores ``taken``.

        Drivers sharing one record take points by trial number, which is unique across them.
        """
        points = self._grid()
        return points[index] if index < len(points) else None

    def next(self) -> dict[str, Any] | None:
        """The next point not yet taken (marking it taken), or None when the grid is exhausted."""
        self._points = self._grid()
        while self._next < len(self._points):
            point = self._points[self._next]
            self._next += 1
            key = point_key(point)
            if key not in self.taken:
                self.taken.add(key)
                return point
        return None
