"""Exact translation of an hposdk space to Ray Tune domains (and to BOHB's ConfigSpace), and back.

Ray's own primitives disagree with hposdk on several points (see ``ray/tune/search/sample.py``):
``randint`` and ``lograndint`` exclude the upper bound; ``quniform``/``qrandint`` put the grid on
multiples of ``q`` from zero, and ``quniform`` rounds a uniform draw so both ends of the grid get
half the probability of the inner points; ``qloguniform`` rounds the *value*, not the exponent;
``lograndint`` floors a log-uniform draw where hposdk rounds one. Where Ray has an exact primitive
we use it (the values Ray records are then the real values); elsewhere the domain is an *index*
into the hposdk grid, which is exact by construction, keeps the order of the grid for Ray's
model-based searchers and costs nothing for huge grids (a ``tune.choice`` of a million floats
would be a million-element list in every trial's config).

| hposdk                                  | Ray Tune domain                   | decoded by                     |
|-----------------------------------------|-----------------------------------|--------------------------------|
| Uniform(lo, hi)                         | ``uniform(lo, hi)``               | clamp to [lo, hi]              |
| Uniform(lo, hi, step)                   | ``randint(0, n + 1)`` (index)     | ``lo + k*step`` (no drift)     |
| LogUniform(lo, hi)                      | ``loguniform(lo, hi)``            | clamp to [lo, hi]              |
| LogUniform(lo, hi, base, step)          | ``randint(0, n + 1)`` (index)     | ``base**(log lo + k*step)``    |
| Integer(lo, hi)                         | ``randint(lo, hi + 1)``           | int                            |
| Integer(lo, hi, step), lo % step == 0   | ``qrandint(lo, hi, step)``        | int                            |
| Integer(lo, hi, step), otherwise        | ``randint(0, n + 1)`` (index)     | ``lo + k*step``                |
| Integer(lo, hi, log=True)               | ``loguniform(lo - .5, hi + .5)``  | round, clamp (hposdk's rule)   |
| Discrete(choices)                       | ``choice(choices)``               | the choice (types kept)        |
| Discrete with choices equal in Python   | ``choice(range(n))`` (index)      | ``choices[k]``                 |
| (1 and True, 1 and 1.0)                 |                                   |                                |

Ray samples a ``Categorical`` by index, so ``True`` stays a bool; but its ``is_valid`` and its
searcher converters use ``==``, under which ``1 == True``, hence the index form for such spaces.
What Ray cannot hold (integers beyond int64, a float range whose width overflows) is refused
with :class:`~hposdk.exceptions.UnsupportedError` naming the parameter.
"""

from __future__ import annotations

import math
from typing import Any

from ..._imports import require
from ...exceptions import UnsupportedError
from ...spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from ...spaces._params import _native

__all__ = ["decode", "encode", "encoding", "to_configspace", "to_ray"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Above this magnitude a float cannot represent every integer, so Ray's quantization (which
# divides bounds by q in floating point) could land off the grid.
_EXACT_FLOAT_INT = 2**53


def encoding(param: Any) -> str:
    """How a parameter is carried through Ray: ``"value"``, ``"index"`` or ``"rounded"``.

    ``"index"`` means the Ray domain draws the position in :meth:`param.grid` order;
    ``"rounded"`` means a float that hposdk's rounding rule turns into the int.
    """
    if isinstance(param, Uniform):
        return "value" if param.step is None else "index"
    if isinstance(param, LogUniform):
        return "value" if param.step is None else "index"
    if isinstance(param, Integer):
        if param.log:
            return "rounded"
        if param.step == 1 or (param.low % param.step == 0 and max(abs(param.low), abs(param.high)) < _EXACT_FLOAT_INT):
            return "value"
        return "index"
    if isinstance(param, Discrete):
        return "index" if param.has_ambiguous_choices else "value"
    raise UnsupportedError(f"backend 'ray': unknown parameter type {type(param).__name__}")


def _refuse(name: str, param: Any, why: str) -> UnsupportedError:
    return UnsupportedError(f"backend 'ray' cannot express parameter {name!r} ({param!r}) exactly: {why}")


def _check_int64(name: str, param: Any, low: int, high_exclusive: int) -> None:
    if low < _INT64_MIN or high_exclusive > _INT64_MAX:
        raise _refuse(name, param, "Ray samples integers with numpy's int64; use bounds within +-9.2e18")


def to_ray(space: SearchSpace) -> dict[str, Any]:
    """The Ray Tune domain of every parameter (pure; imports ``ray.tune`` lazily).

    Args:
        space: the hposdk search space.

    Returns:
        ``{name: ray.tune.search.sample.Domain}``; draws decode with :func:`decode` to exactly the
        hposdk distribution of each parameter.

    Raises:
        UnsupportedError: a parameter Ray cannot hold exactly (the message names it).
        MissingExtraError: Ray is not installed.

    Example:
        >>> from hposdk import SearchSpace, Integer
        >>> domain = to_ray(SearchSpace({"n": Integer(1, 4)}))["n"]
        >>> (domain.lower, domain.upper)  # Ray's randint excludes its upper bound
        (1, 5)
    """
    tune = require("ray.tune", "ray", "backend='ray'")
    out: dict[str, Any] = {}
    for name, p in space.items():
        how = encoding(p)
        if isinstance(p, Uniform):
            if how == "index":
                n = p.n_steps or 0
                _check_int64(name, p, 0, n + 1)
                out[name] = tune.randint(0, n + 1)
            else:
                if not math.isfinite(float(p.high) - float(p.low)):
                    raise _refuse(name, p, "the width high - low overflows a float64, so a uniform draw is inf")
                out[name] = tune.uniform(float(p.low), float(p.high))
        elif isinstance(p, LogUniform):
            if how == "index":
                out[name] = tune.randint(0, (p.n_steps or 0) + 1)
            else:
                out[name] = tune.loguniform(float(p.low), float(p.high))
        elif isinstance(p, Integer):
            if how == "rounded":
                out[name] = tune.loguniform(p.low - 0.5, p.high + 0.5)
            elif how == "index":
                _check_int64(name, p, 0, p.cardinality)
                out[name] = tune.randint(0, p.cardinality)
            elif p.step == 1:
                _check_int64(name, p, p.low, p.high + 1)
                out[name] = tune.randint(p.low, p.high + 1)
            else:
                _check_int64(name, p, p.low, p.high + 1)
                out[name] = tune.qrandint(p.low, p.high, p.step)
        elif isinstance(p, Discrete):
            out[name] = tune.choice(list(range(len(p.choices))) if how == "index" else list(p.choices))
        else:  # pragma: no cover - the union is closed
            raise _refuse(name, p, f"unknown parameter type {type(p).__name__}")
    return out


def _decode_one(p: Any, value: Any) -> Any:
    how = encoding(p)
    value = _native(value)
    if how == "index":
        k = int(value)
        if isinstance(p, Discrete):
            return p.choices[k]
        if isinstance(p, Integer):
            if not 0 <= k < p.cardinality:
                raise ValueError(f"index {k} is outside the grid of {p!r}")
            return p.low + k * p.step
        if not 0 <= k <= (p.n_steps or 0):
            raise ValueError(f"index {k} is outside the grid of {p!r}")
        return p.value_at(k)
    if how == "rounded":
        return min(max(round(float(value)), p.low), p.high)
    return p.canonicalize(value)


def decode(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """Values drawn from :func:`to_ray`'s domains -> exact hposdk values (Python natives).

    Example:
        >>> from hposdk import SearchSpace, Uniform
        >>> decode(SearchSpace({"x": Uniform(0.1, 0.7, step=0.2)}), {"x": 3})
        {'x': 0.7}
    """
    return {name: _decode_one(p, config[name]) for name, p in space.items()}


def encode(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """hposdk values -> the values :func:`to_ray`'s domains hold for them (inverse of :func:`decode`)."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = p.canonicalize(params[name])
        how = encoding(p)
        if how == "index":
            if isinstance(p, Discrete):
                out[name] = p.index(v)
            elif isinstance(p, Integer):
                out[name] = (v - p.low) // p.step
            else:
                out[name] = _grid_index(p, v)
        else:
            out[name] = v
    return out


def _grid_index(p: Uniform | LogUniform, value: float | int) -> int:
    if isinstance(p, Uniform):
        return round((float(value) - float(p.low)) / float(p.step or 1))
    return round((p._exp(float(value)) - p._exp(float(p.low))) / float(p.step or 1))


# --- BOHB: ConfigSpace ---------------------------------------------------------------------------


def to_configspace(space: SearchSpace, seed: int | None = None) -> Any:
    """The ConfigSpace of Ray's ``TuneBOHB`` for ``space`` (exact through index encodings).

    Ray's own converter (``TuneBOHB.convert_search_space``) drops quantization with a warning;
    here every stepped parameter and every categorical is an integer index, so BOHB can only
    propose points of the hposdk support. Continuous parameters stay floats (log-scaled ones with
    ``log=True``) and ``Integer`` stays an integer (``log`` kept).

    Raises:
        MissingExtraError: ConfigSpace is not installed (``pip install hposdk[bohb]``).
    """
    cs = require("ConfigSpace", "bohb", "optimizer='bohb' on backend='ray'")
    config_space = cs.ConfigurationSpace(seed=seed)
    hps = []
    for name, p in space.items():
        if isinstance(p, Uniform) and p.step is None:
            hps.append(cs.UniformFloatHyperparameter(name, lower=float(p.low), upper=float(p.high)))
        elif isinstance(p, LogUniform) and p.step is None:
            hps.append(cs.UniformFloatHyperparameter(name, lower=float(p.low), upper=float(p.high), log=True))
        elif isinstance(p, Integer) and p.step == 1:
            hps.append(cs.UniformIntegerHyperparameter(name, lower=p.low, upper=p.high, log=p.log))
        elif isinstance(p, Discrete):
            hps.append(cs.CategoricalHyperparameter(name, choices=list(range(len(p.choices)))))
        else:
            hps.append(cs.UniformIntegerHyperparameter(name, lower=0, upper=(p.cardinality or 1) - 1))
    config_space.add(hps)
    return config_space


def decode_configspace(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """A :func:`to_configspace` configuration -> exact hposdk values."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = _native(config[name])
        if isinstance(p, Discrete):
            out[name] = p.choices[int(v)]
        elif (isinstance(p, (Uniform, LogUniform)) and p.step is None) or (isinstance(p, Integer) and p.step == 1):
            out[name] = p.canonicalize(v)
        else:
            out[name] = p.low + int(v) * p.step if isinstance(p, Integer) else p.value_at(int(v))
    return out


def encode_configspace(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """hposdk values -> a :func:`to_configspace` configuration (inverse of :func:`decode_configspace`)."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = p.canonicalize(params[name])
        if isinstance(p, Discrete):
            out[name] = p.index(v)
        elif (isinstance(p, (Uniform, LogUniform)) and p.step is None) or (isinstance(p, Integer) and p.step == 1):
            out[name] = v
        elif isinstance(p, Integer):
            out[name] = (v - p.low) // p.step
        else:
            out[name] = _grid_index(p, v)
    return out
