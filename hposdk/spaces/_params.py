"""The four parameter types and the one definition of what each of them means.

Every backend adapter translates *these* semantics; none may reinterpret them.

| type        | support                                                         | value type        |
|-------------|-----------------------------------------------------------------|-------------------|
| Uniform     | ``[low, high]``; with ``step``: ``low + k*step`` up to ``high``  | float             |
| LogUniform  | ``[low, high]`` log-uniformly (bounds are values); with ``step``: | float (int when   |
|             | ``base**(log_base(low) + k*step)`` up to ``high``                | both bounds are   |
|             |                                                                 | ints and stepped) |
| Integer     | ``low + k*step`` up to ``high`` (both bounds inclusive);        | int               |
|             | ``log=True`` samples log-uniformly (``step`` must be 1)          |                   |
| Discrete    | the listed choices, order kept                                  | the choice's type |

Both bounds are always inclusive, and a stepped range must contain its upper bound (the step has to
divide the range), so "the upper bound is reachable" holds everywhere.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..exceptions import SpaceError
from ._errors import as_space_error, short_repr, skip_init_in_validation

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Discrete", "Integer", "LogUniform", "Parameter", "Uniform", "Value"]

#: The JSON scalar types a :class:`Discrete` choice may take (portable to every engine and storage).
Value = Union[None, StrictBool, StrictInt, StrictFloat, StrictStr]

# Values further apart than this (relative) are different points of a grid.
_REL_TOL = 1e-9
# Grids larger than this are treated as "continuous" for enumeration purposes.
MAX_GRID = 10_000_000
# Discrete int choices must fit in an int64 (numpy, databases, JSON readers in other languages).
_MAX_INT64 = 2**63 - 1
# An int-valued LogUniform grid is checked point by point; more points than this is refused.
_MAX_INT_LOG_GRID = 100_000


def _dec(x: float | int) -> Decimal:
    # repr() gives the shortest string that round-trips, so Decimal(repr(0.1)) is exactly 0.1:
    # k*step arithmetic in Decimal has no binary drift (0.1 + 0.2 comes back as 0.3).
    return Decimal(x) if isinstance(x, int) else Decimal(repr(float(x)))


def _log(x: float, base: float) -> float:
    # log2/log10 are exact on exact powers; math.log(512, 2) is not (9.000000000000002).
    if base == 2:
        return math.log2(x)
    if base == 10:
        return math.log10(x)
    return math.log(x) / math.log(base)


def _frac(x: float | int) -> Fraction:
    # Exact rational arithmetic on the decimal values users wrote: divisibility and step counts
    # must not depend on Decimal's 28-digit context (0..1 in steps of 3e-30 is not a grid ending at 1).
    return Fraction(_dec(x))


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) <= _REL_TOL * max(1.0, abs(x))


def _fmt(x: Any) -> str:
    return repr(x)


class _Param(BaseModel):
    """Shared behaviour of the parameter types (not public)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str]

    @skip_init_in_validation
    def __init__(self, **kwargs: Any) -> None:
        # Subclasses declare the positional form users write (``Uniform(0.01, 0.1, step=0.01)``);
        # here pydantic's ValidationError becomes a SpaceError naming the rule and the fix.
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            from ._errors import flatten, format_details

            details = flatten(exc)
            raise SpaceError(format_details(details, prefix=type(self).__name__), details) from None

    # Validating plain data (a YAML/JSON mapping) refuses with a SpaceError too, never pydantic's error.
    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with as_space_error(cls.__name__):
            return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        with as_space_error(cls.__name__):
            return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        with as_space_error(cls.__name__):
            return super().model_validate_strings(obj, **kwargs)

    # --- the interface every parameter implements -------------------------------------------
    @property
    def is_finite(self) -> bool:
        """Whether the support is a finite set (so it can be enumerated by grid search)."""
        return self.cardinality is not None

    @property
    def cardinality(self) -> int | None:
        """Number of distinct values, or None for a continuous range."""
        raise NotImplementedError

    def grid(self) -> tuple[Any, ...]:
        """All values in ascending (or declared) order; refuses continuous parameters."""
        raise NotImplementedError

    def sample(self, rng: random.Random) -> Any:
        """Draw one value with this parameter's distribution."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the support (and has the right type)."""
        try:
            self.canonicalize(value)
        except (TypeError, ValueError):
            return False
        return True

    def canonicalize(self, value: Any) -> Any:
        """Map a value an engine returned to the exact hposdk value, or raise ValueError.

        Engines hand back ``0.30000000000000004`` for ``0.3`` or ``numpy.int64(3)`` for ``3``;
        adapters call this so that objectives always see exact Python natives.
        """
        raise NotImplementedError

    def _too_big(self) -> SpaceError:
        return SpaceError(f"{self!r} has more than {MAX_GRID} values; it cannot be enumerated")


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, but got {short_repr(value)}")
    try:
        finite = math.isfinite(value)  # an int beyond the float range raises OverflowError here
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"`{name}` must be finite (within the float range), but got {short_repr(value)}")


class _Range(_Param):
    """Common validation of the stepped range types."""

    def _validate_bounds(self, low: float, high: float) -> None:
        _check_number("low", low)
        _check_number("high", high)
        if not low < high:
            raise ValueError(
                f"`low < high` must hold, but got (low={low!r}, high={high!r}). "
                "Fix: swap the bounds, or use Discrete([value]) for a single value."
            )


class Uniform(_Range):
    """A float drawn uniformly from ``[low, high]`` (both inclusive).

    With ``step`` the support is the grid ``low + k*step`` for ``k = 0..(high-low)/step``; the step
    must divide the range so that ``high`` is on the grid (and therefore reachable).

    Example:
        >>> Uniform(0.1, 0.3, step=0.1).grid()
        (0.1, 0.2, 0.3)
    """

    type: Literal["uniform"] = "uniform"
    low: StrictFloat | StrictInt
    high: StrictFloat | StrictInt
    step: StrictFloat | StrictInt | None = None
    kind: ClassVar[str] = "uniform"

    @skip_init_in_validation
    def __init__(self, low: float, high: float, step: float | None = None, **data: Any) -> None:
        _Param.__init__(self, low=low, high=high, step=step, **data)

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        self._validate_bounds(self.low, self.high)
        if self.step is not None:
            _check_number("step", self.step)
            _check_step(self.low, self.high, self.step)
            resolution = 64 * math.ulp(max(abs(float(self.low)), abs(float(self.high))))
            if float(self.step) < resolution:
                raise ValueError(
                    f"`step` must be coarser than the float resolution at these bounds ({resolution:g}), but "
                    f"got step={self.step!r} for [{self.low!r}, {self.high!r}]: the grid values would not be "
                    "distinct floats. Fix: use a larger step, or shift the range towards 0."
                )
        return self

    @property
    def n_steps(self) -> int | None:
        """Number of steps between low and high (None without a step)."""
        if self.step is None:
            return None
        return int((_frac(self.high) - _frac(self.low)) / _frac(self.step))

    @property
    def cardinality(self) -> int | None:
        return None if self.n_steps is None else self.n_steps + 1

    def value_at(self, k: int) -> float:
        """The k-th grid value, computed without float drift."""
        assert self.step is not None
        return float(_dec(self.low) + k * _dec(self.step))

    def grid(self) -> tuple[float, ...]:
        if self.n_steps is None:
            raise SpaceError(
                f"Uniform({self.low!r}, {self.high!r}) is continuous and has no grid. "
                "Fix: give it a `step`, or use random/tpe search."
            )
        if self.n_steps >= MAX_GRID:
            raise self._too_big()
        return tuple(self.value_at(k) for k in range(self.n_steps + 1))

    def sample(self, rng: random.Random) -> float:
        if self.n_steps is None:
            lo, hi = float(self.low), float(self.high)
            if math.isfinite(hi - lo):
                return rng.uniform(lo, hi)
            # The width overflows a float (-1e308..1e308): lo + (hi - lo)*u would be inf.
            u = rng.random()
            return min(max(lo * (1 - u) + hi * u, lo), hi)
        return self.value_at(rng.randint(0, self.n_steps))

    def canonicalize(self, value: Any) -> float:
        if type(value) is float and self.step is None and self.low <= value <= self.high:
            return value  # already a point of the support: what an engine samples, once per trial
        value = _native(value)  # numpy.int64(3) is not an int subclass
        _check_number("value", value)
        v = float(value)
        lo, hi = float(self.low), float(self.high)
        tol = _REL_TOL * max(1.0, abs(lo), abs(hi))
        if not lo - tol <= v <= hi + tol:
            raise ValueError(f"{value!r} is outside [{lo!r}, {hi!r}]")
        if self.step is None:
            return min(max(v, lo), hi)
        step = float(self.step)
        # Exact arithmetic: (v - lo) overflows for the widest ranges.
        k = min(max(round((_frac(v) - _frac(lo)) / _frac(step)), 0), self.n_steps or 0)
        exact = self.value_at(k)
        # Off the grid by more than a tiny fraction of the distance from low (what engines' float
        # arithmetic drifts by) or a few float spacings (far from 0, 1e8 + 0.1 is not exact).
        tol = max(_REL_TOL * step * max(1, k), 8 * math.ulp(max(abs(v), abs(exact))))
        if abs(v - exact) > tol:
            raise ValueError(f"{value!r} is not on the grid {lo!r} + k*{self.step!r}")
        return exact


def _check_step(low: float, high: float, step: float) -> None:
    if step <= 0:
        raise ValueError(f"`step > 0` must hold, but got step={step!r}")
    span = _frac(high) - _frac(low)
    if _frac(step) > span:
        raise ValueError(
            f"`step <= high - low` must hold, but got step={step!r} for the range "
            f"[{low!r}, {high!r}]. Fix: use a smaller step."
        )
    n = span / _frac(step)
    if n.denominator != 1:
        fitted = _frac(low) + int(n) * _frac(step)
        raise ValueError(
            f"`step` must divide `high - low` so that `high` is on the grid, but "
            f"({high!r} - {low!r}) / {step!r} = {float(n):g} steps. "
            f"Fix: use high={float(fitted)!r} or a step that divides the range."
        )


class LogUniform(_Range):
    """A positive number drawn log-uniformly from ``[low, high]``; the bounds are *values*.

    With ``step`` the support is a grid on the exponent in ``base``:
    ``base**(log_base(low) + k*step)``, so ``LogUniform(512, 2048, base=2, step=1)`` is exactly
    ``{512, 1024, 2048}``. When both bounds are ints and a step is given, the values are ints.
    Without a step ``base`` does not change the distribution (log-uniform is base-free).

    Example:
        >>> LogUniform(512, 2048, base=2, step=1).grid()
        (512, 1024, 2048)
    """

    type: Literal["loguniform"] = "loguniform"
    low: StrictFloat | StrictInt
    high: StrictFloat | StrictInt
    base: StrictFloat | StrictInt = 10
    step: StrictFloat | StrictInt | None = None
    kind: ClassVar[str] = "loguniform"

    @skip_init_in_validation
    def __init__(self, low: float, high: float, base: float = 10, step: float | None = None, **data: Any) -> None:
        _Param.__init__(self, low=low, high=high, base=base, step=step, **data)

    @model_validator(mode="after")
    def _check(self) -> LogUniform:
        self._validate_bounds(self.low, self.high)
        if self.low <= 0:
            raise ValueError(
                f"`low > 0` must hold for a log scale, but got low={self.low!r}. "
                "Fix: use a positive lower bound (the bounds are values, not exponents)."
            )
        _check_number("base", self.base)
        if self.base <= 1:
            raise ValueError(f"`base > 1` must hold, but got base={self.base!r}")
        if self.step is not None:
            _check_number("step", self.step)
            if self.step <= 0:
                raise ValueError(f"`step > 0` must hold, but got step={self.step!r}")
            if self.step * math.log(self.base) < 1e-9:
                # Grid values are kept to 12 significant digits (see _value): neighbours must differ.
                raise ValueError(
                    f"`step` (on the exponent) is too small: base**step = {float(self.base) ** self.step!r}, so "
                    f"neighbouring grid values would be equal. Fix: use step >= {1e-9 / math.log(self.base):.3g}."
                )
            span = self._exp(self.high) - self._exp(self.low)
            n = span / self.step
            if self.step > span * (1 + _REL_TOL):
                raise ValueError(
                    f"`step` (on the exponent) must not exceed log_{self.base}(high/low) = "
                    f"{span:g}, but got step={self.step!r}. Fix: use a smaller step."
                )
            if not _is_whole(n):
                raise ValueError(
                    f"`step` applies to the exponent in base {self.base!r} and must divide "
                    f"log_{self.base}(high) - log_{self.base}(low) = {span:g}, but that is "
                    f"{n:g} steps of {self.step!r}. Fix: choose bounds that are powers of the base "
                    f"{self.step!r} apart, e.g. high={self._value(self._exp(self.low) + math.floor(n) * self.step)!r}."
                )
            if self.is_int:
                if (self.n_steps or 0) > min(_MAX_INT_LOG_GRID, int(self.high) - int(self.low)):
                    raise ValueError(
                        f"integer bounds make the values ints, but {self.n_steps} exponent steps cannot all be "
                        f"distinct ints in [{self.low!r}, {self.high!r}] (at most {_MAX_INT_LOG_GRID} points). "
                        "Fix: use a larger step, or give the bounds as floats (e.g. 1.0) for float values."
                    )
                for k in range(self.n_steps + 1 if self.n_steps is not None else 0):
                    v = self._raw(k)
                    if not _is_whole(v):
                        raise ValueError(
                            f"integer bounds make the values ints, but grid point {v!r} is not "
                            "whole. Fix: give the bounds as floats (e.g. 1.0) for float values."
                        )
        return self

    def _exp(self, v: float) -> float:
        return _log(float(v), float(self.base))

    def _value(self, e: float) -> float:
        return float(f"{float(self.base) ** e:.12g}")

    @property
    def is_int(self) -> bool:
        """Whether values are ints (both bounds given as ints, and a step)."""
        return isinstance(self.low, int) and isinstance(self.high, int) and self.step is not None

    @property
    def n_steps(self) -> int | None:
        """Number of exponent steps between low and high (None without a step)."""
        if self.step is None:
            return None
        return round((self._exp(self.high) - self._exp(self.low)) / self.step)

    @property
    def cardinality(self) -> int | None:
        return None if self.n_steps is None else self.n_steps + 1

    def _raw(self, k: int) -> float:
        n = self.n_steps or 0
        if k == 0:
            return float(self.low)
        if k == n:
            return float(self.high)
        assert self.step is not None
        # 12 significant digits remove the drift of base**x without merging distinct points.
        return self._value(self._exp(self.low) + k * self.step)

    def value_at(self, k: int) -> float | int:
        """The k-th grid value (exact at both ends, drift-free inside)."""
        v = self._raw(k)
        return round(v) if self.is_int else v

    def grid(self) -> tuple[float | int, ...]:
        if self.n_steps is None:
            raise SpaceError(
                f"LogUniform({self.low!r}, {self.high!r}) is continuous and has no grid. "
                "Fix: give it a `step` (on the exponent), or use random/tpe search."
            )
        if self.n_steps >= MAX_GRID:
            raise self._too_big()
        return tuple(self.value_at(k) for k in range(self.n_steps + 1))

    def sample(self, rng: random.Random) -> float | int:
        if self.n_steps is None:
            lo, hi = math.log(self.low), math.log(self.high)
            return min(max(math.exp(rng.uniform(lo, hi)), float(self.low)), float(self.high))
        return self.value_at(rng.randint(0, self.n_steps))

    def canonicalize(self, value: Any) -> float | int:
        value = _native(value)  # numpy.int64(3) is not an int subclass
        _check_number("value", value)
        v = float(value)
        lo, hi = float(self.low), float(self.high)
        if not lo * (1 - _REL_TOL) <= v <= hi * (1 + _REL_TOL):
            raise ValueError(f"{value!r} is outside [{lo!r}, {hi!r}]")
        if self.step is None:
            return min(max(v, lo), hi)
        k = round((self._exp(v) - self._exp(self.low)) / self.step)
        exact = self.value_at(k)
        if not math.isclose(v, exact, rel_tol=1e-7):
            raise ValueError(f"{value!r} is not on the exponent grid of {self!r}")
        return exact


class Integer(_Range):
    """An int drawn from ``low, low+step, ..., high`` (both bounds inclusive).

    ``log=True`` samples log-uniformly (as Optuna's ``suggest_int(log=True)``: a log-uniform draw in
    ``[low-0.5, high+0.5]`` rounded to the nearest int); it needs ``low >= 1`` and ``step == 1``.

    Example:
        >>> Integer(1, 4).grid()
        (1, 2, 3, 4)
    """

    type: Literal["integer"] = "integer"
    low: StrictInt
    high: StrictInt
    step: StrictInt = 1
    log: StrictBool = False
    kind: ClassVar[str] = "integer"

    @skip_init_in_validation
    def __init__(self, low: int, high: int, step: int = 1, log: bool = False, **data: Any) -> None:
        _Param.__init__(self, low=low, high=high, step=step, log=log, **data)

    @model_validator(mode="after")
    def _check(self) -> Integer:
        self._validate_bounds(self.low, self.high)  # within the float range (log=True samples in floats)
        if self.step <= 0:
            raise ValueError(f"`step > 0` must hold, but got step={self.step!r}")
        if self.step > self.high - self.low:
            raise ValueError(
                f"`step <= high - low` must hold, but got step={self.step!r} for the range "
                f"[{self.low!r}, {self.high!r}]. Fix: use a smaller step."
            )
        if (self.high - self.low) % self.step:
            fitted = self.low + (self.high - self.low) // self.step * self.step
            raise ValueError(
                f"`step` must divide `high - low` so that `high` is on the grid, but got "
                f"step={self.step!r} for [{self.low!r}, {self.high!r}]. Fix: use high={fitted!r}."
            )
        if self.log:
            if self.low < 1:
                raise ValueError(f"`low >= 1` must hold when log=True, but got low={self.low!r}")
            if self.step != 1:
                raise ValueError(
                    f"`step` must be 1 when log=True, but got step={self.step!r}. Fix: drop the "
                    "step, or use LogUniform(low, high, step=...) for a grid on the exponent."
                )
        return self

    @property
    def cardinality(self) -> int:
        return (self.high - self.low) // self.step + 1

    def grid(self) -> tuple[int, ...]:
        if self.cardinality > MAX_GRID:
            raise self._too_big()
        return tuple(range(self.low, self.high + 1, self.step))

    def sample(self, rng: random.Random) -> int:
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5)))
            return min(max(round(x), self.low), self.high)
        return self.low + self.step * rng.randint(0, self.cardinality - 1)

    def canonicalize(self, value: Any) -> int:
        value = _native(value)  # numpy.int64(3) is not an int subclass
        _check_number("value", value)
        if isinstance(value, int):
            v = value  # exact, whatever its size
        elif not _is_whole(float(value)):
            raise ValueError(f"{value!r} is not an integer")
        else:
            v = round(float(value))
        if not self.low <= v <= self.high:
            raise ValueError(f"{value!r} is outside [{self.low}, {self.high}]")
        if (v - self.low) % self.step:
            raise ValueError(f"{value!r} is not on the grid {self.low} + k*{self.step}")
        return v


def _choice_key(v: Any) -> tuple[str, Any]:
    # True == 1 == 1.0 in Python; as choices they are different values (and different JSON).
    return (type(v).__name__, v)


class Discrete(_Param):
    """One of a list of JSON scalar choices (None, bool, int, float, str), drawn uniformly.

    Types are kept exactly: ``Discrete([True, 1, "1"])`` has three distinct choices.

    Example:
        >>> Discrete([3, 4, 5, 6]).grid()
        (3, 4, 5, 6)
    """

    type: Literal["discrete"] = "discrete"
    choices: tuple[Value, ...]
    kind: ClassVar[str] = "discrete"

    @skip_init_in_validation
    def __init__(self, choices: Sequence[Any], **data: Any) -> None:
        _Param.__init__(self, choices=choices, **data)

    @field_validator("choices", mode="before")
    @classmethod
    def _ordered(cls, value: Any) -> Any:
        if isinstance(value, (set, frozenset)):
            raise ValueError(
                f"`choices` must be a list: a set has no order, so the grid and the sampled indices would "
                f"change from run to run (got {short_repr(value)}). Fix: list the values in the order you want."
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Discrete:
        if not self.choices:
            raise ValueError("`choices` must not be empty. Fix: list at least one value.")
        seen: set[tuple[str, Any]] = set()
        for c in self.choices:
            if isinstance(c, float) and not math.isfinite(c):
                raise ValueError(f"choices must be finite, but got {c!r}")
            if isinstance(c, int) and not isinstance(c, bool) and abs(c) > _MAX_INT64:
                raise ValueError(f"int choices must fit in 64 bits, but got {short_repr(c)}")
            key = _choice_key(c)
            if key in seen:
                raise ValueError(f"choices must be unique, but {c!r} appears twice. Fix: remove the duplicate.")
            seen.add(key)
        return self

    @property
    def cardinality(self) -> int:
        return len(self.choices)

    def grid(self) -> tuple[Any, ...]:
        return self.choices

    def sample(self, rng: random.Random) -> Any:
        return self.choices[rng.randrange(len(self.choices))]

    def index(self, value: Any) -> int:
        """Position of ``value`` among the choices (type-aware; raises ValueError if absent)."""
        key = _choice_key(_native(value))
        for i, c in enumerate(self.choices):
            if _choice_key(c) == key:
                return i
        raise ValueError(f"{short_repr(value)} is not one of the choices {short_repr(list(self.choices))}")

    @property
    def has_ambiguous_choices(self) -> bool:
        """Whether two choices compare equal in Python (e.g. ``1`` and ``True``)."""
        plain = list(self.choices)
        return any(plain[i] == plain[j] for i in range(len(plain)) for j in range(i + 1, len(plain)))

    def canonicalize(self, value: Any) -> Any:
        return self.choices[self.index(value)]


def _native(value: Any) -> Any:
    """Turn numpy scalars and the like into the Python native of the same kind."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        try:
            return _native(item())
        except (TypeError, ValueError):
            pass
    for t in (bool, int, float, str):
        if isinstance(value, t):
            return t(value)
    return value


#: A parameter of any of the four types; the ``type`` field is the tag (discriminated union).
Parameter = Annotated[Uniform | LogUniform | Integer | Discrete, Field(discriminator="type")]
