"""Exact translation of an hposdk space to ClearML's parameter ranges, and back (pure functions).

ClearML's four range classes (``clearml/automation/parameters.py``) disagree with hposdk in ways that
would silently change a study, so each parameter is expressed by the range whose *both* code paths
(``get_value()`` for random sampling, ``to_list()`` for grid search) give exactly the hposdk support:

* ``Uniform(lo, hi)`` -> ``UniformParameterRange(lo, hi)``; refused under grid search
  (``to_list()`` would silently invent 101 points).
* ``Uniform(lo, hi, step)`` -> ``DiscreteParameterRange(<exact grid values>)``: ClearML's stepped
  range never samples ``hi`` (``randrange(0, round(steps))``), and its ``to_list()`` floors the step
  count, appends ``hi`` even off the grid, and drifts (``0.1 + 2*0.2``).
* ``LogUniform(lo, hi, base)`` -> ``LogUniformParameterRange(log_b(lo), log_b(hi), base)``: ClearML's
  bounds are *exponents* (``get_value()`` returns ``base**v``).
* ``LogUniform(lo, hi, base, step)`` -> ``DiscreteParameterRange(<exact grid values>)``: the same
  ``randrange`` defect on the exponent, and ``2**9.0`` is a float, not ``512``.
* ``Integer(lo, hi, step)`` -> ``UniformIntegerParameterRange(lo, hi, step, include_max_value=True)``.
* ``Integer(lo, hi, log=True)`` -> ``LogUniformParameterRange(ln(lo-0.5), ln(hi+0.5), base=e)``,
  rounded back by :func:`decode` (ClearML has no log-integer range); under grid search a
  ``DiscreteParameterRange`` of the ints.
* ``Discrete(choices)`` -> ``DiscreteParameterRange(choices)`` (values kept as Python objects).

Names become ``<section>/<name>`` (``Args/lr`` by default). Whatever ClearML hands back (a float with
drift, ``e**ln(x)``, a string read from a task) goes through :func:`decode` or :func:`decode_string`,
which snap it to the exact hposdk value with the parameter's own ``canonicalize``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ...exceptions import UnsupportedError
from ...spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform, point_key
from ...spaces._params import _log

__all__ = [
    "check_task_strings",
    "clearml_name",
    "decode",
    "decode_string",
    "encode",
    "params_key",
    "task_string",
    "to_clearml",
]

DEFAULT_SECTION = "Args"


def clearml_name(name: str, section: str | None, names: Mapping[str, str] | None = None) -> str:
    """The ClearML parameter name of hposdk parameter ``name``.

    ``names`` renames single parameters (``{"num_calibration_samples": "Args/num_samples"}``); the
    others go to ``<section>/<name>`` (bare names with no section).

    Example:
        >>> clearml_name("lr", "Args"), clearml_name("n", "Args", {"n": "Args/num_samples"})
        ('Args/lr', 'Args/num_samples')
    """
    if names and name in names:
        return names[name]
    return f"{section.strip('/')}/{name}" if section else name


def to_clearml(space: SearchSpace, *, optimizer: str, section: str | None = DEFAULT_SECTION,
               names: Mapping[str, str] | None = None) -> list[Any]:
    """ClearML parameter ranges that give exactly the hposdk support under ``optimizer``.

    Args:
        space: the hposdk search space.
        optimizer: ``grid``, ``random``, ``tpe`` or ``bohb`` (grid refuses continuous ranges).
        section: the ClearML hyperparameter section the names go to (``Args``); None: bare names.
        names: full ClearML names of single parameters (see :func:`clearml_name`).

    Returns:
        One ``clearml.automation`` parameter object per hposdk parameter, in declaration order.

    Raises:
        UnsupportedError: a continuous parameter under grid search (ClearML would silently make
            101 points of it).

    Example:
        >>> from hposdk import SearchSpace, Uniform
        >>> [p.to_dict() for p in to_clearml(SearchSpace({"x": Uniform(0.1, 0.7, step=0.2)}), optimizer="grid")]
        [{'type': 'DiscreteParameterRange', 'name': 'Args/x', 'values': [0.1, 0.3, 0.5, 0.7]}]
    """
    from clearml.automation.parameters import (
        DiscreteParameterRange,
        LogUniformParameterRange,
        UniformIntegerParameterRange,
        UniformParameterRange,
    )

    out: list[Any] = []
    for name, p in space.items():
        cname = clearml_name(name, section, names)
        if optimizer == "grid" and not p.is_finite:
            raise UnsupportedError(
                f"backend 'clearml': parameter {name!r} ({p!r}) is continuous, and ClearML's grid search "
                "would silently enumerate 101 points of it (UniformParameterRange.to_list). Fix: give it "
                "a `step`, or use optimizer='random' or 'tpe'."
            )
        if isinstance(p, Uniform):
            if p.step is None:
                out.append(UniformParameterRange(cname, min_value=float(p.low), max_value=float(p.high)))
            else:
                out.append(DiscreteParameterRange(cname, values=list(p.grid())))
        elif isinstance(p, LogUniform):
            if p.step is None:
                base = float(p.base)
                out.append(LogUniformParameterRange(
                    cname, min_value=_log(float(p.low), base), max_value=_log(float(p.high), base), base=p.base))
            else:
                out.append(DiscreteParameterRange(cname, values=list(p.grid())))
        elif isinstance(p, Integer):
            if p.log and optimizer == "grid":
                out.append(DiscreteParameterRange(cname, values=list(p.grid())))
            elif p.log:
                # The same draw as Integer.sample: log-uniform on [low-0.5, high+0.5], rounded by decode().
                out.append(LogUniformParameterRange(
                    cname, min_value=math.log(p.low - 0.5), max_value=math.log(p.high + 0.5), base=math.e))
            else:
                out.append(UniformIntegerParameterRange(
                    cname, min_value=p.low, max_value=p.high, step_size=p.step, include_max_value=True))
        elif isinstance(p, Discrete):
            out.append(DiscreteParameterRange(cname, values=list(p.choices)))
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown parameter type {type(p).__name__}")
    return out


def decode(space: SearchSpace, values: Mapping[str, Any], section: str | None = DEFAULT_SECTION,
           names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ClearML's values (keyed by ClearML names, or by hposdk names) -> exact hposdk values.

    Raises:
        ValueError: a value is outside its parameter's support (the translation is broken).

    Example:
        >>> from hposdk import SearchSpace, Uniform
        >>> decode(SearchSpace({"x": Uniform(0.0, 0.3, step=0.1)}), {"Args/x": 0.30000000000000004})
        {'x': 0.3}
    """
    out: dict[str, Any] = {}
    for name, p in space.items():
        cname = clearml_name(name, section, names)
        v = values[cname] if cname in values else values[name]
        if isinstance(p, Integer) and p.log and isinstance(v, float):
            v = min(max(round(v), p.low), p.high)
        out[name] = p.canonicalize(v)
    return out


def encode(space: SearchSpace, params: Mapping[str, Any], section: str | None = DEFAULT_SECTION,
           names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """hposdk values -> a ClearML ``parameter_override`` (the same exact values, ClearML names)."""
    return {clearml_name(name, section, names): params[name] for name in space.names}


#: A type-aware identity of a point (defined once, in the space model).
params_key = point_key


# --- values as a ClearML task sees them: strings ------------------------------------------------


def task_string(value: Any) -> str:
    """The string ClearML stores for a parameter value (``Task._set_parameters``: None -> '')."""
    return "" if value is None else str(value)


def check_task_strings(space: SearchSpace, names: Iterable[str] | None = None) -> None:
    """Refuse Discrete choices that a ClearML task could not tell apart once stringified.

    A task on the fleet receives every value as a string (``True`` -> ``'True'``, ``1`` and ``'1'``
    both -> ``'1'``, ``None`` and ``''`` both -> ``''``), and a cloned task keeps the *base* task's
    type for each parameter, so the type cannot be recovered from ClearML either.

    Raises:
        UnsupportedError: naming the parameter and the colliding choices.
    """
    for name, p in space.items():
        if names is not None and name not in names:
            continue
        if not isinstance(p, Discrete):
            continue
        seen: dict[str, Any] = {}
        for c in p.choices:
            s = task_string(c)
            if s in seen:
                raise UnsupportedError(
                    f"backend 'clearml' (executor='remote'): the choices {seen[s]!r} and {c!r} of parameter "
                    f"{name!r} both reach a ClearML task as the string {s!r}, so the task cannot tell them "
                    "apart. Fix: use choices whose str() differ (e.g. only strings), or executor='local'."
                )
            seen[s] = c


def decode_string(param: Any, text: str) -> Any:
    """The exact hposdk value of a parameter read back from a ClearML task as a string.

    Example:
        >>> from hposdk import Discrete, LogUniform
        >>> decode_string(Discrete([True, "a", None]), "True")
        True
        >>> decode_string(LogUniform(512, 2048, base=2, step=1), "1024")
        1024
    """
    if not isinstance(text, str):  # a value cast by ClearML (connect() casts to the default's type)
        return param.canonicalize(text)
    if isinstance(param, Discrete):
        for c in param.choices:
            if task_string(c) == text:
                return c
        raise ValueError(f"{text!r} is not one of the choices {list(param.choices)!r}")
    s = text.strip()
    try:
        number: float | int = int(s)
    except ValueError:
        try:
            number = float(s)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if isinstance(param, Integer) and param.log and isinstance(number, float):
        number = min(max(round(number), param.low), param.high)
    if isinstance(param, (Uniform, LogUniform)) and not (isinstance(param, LogUniform) and param.is_int):
        number = float(number)
    return param.canonicalize(number)


# --- BOHB: an hposdk space as a ConfigSpace (ClearML's own conversion is broken, see _bohb.py) ----


def to_configspace(space: SearchSpace, seed: int = 0) -> Any:
    """A ConfigSpace 1.x space whose samples :func:`decode_configspace` maps to exact hposdk values.

    ClearML's ``OptimizerBOHB._convert_hyper_parameters_to_cs`` passes ``q=`` (removed in ConfigSpace
    1.0), samples a LogUniformParameterRange's *exponent* linearly and hands that exponent to the task,
    and keeps numpy scalars. Here every grid (stepped ranges, stepped integers, log grids) is an
    ordinal index ``0..n``, a Discrete is a categorical over choice *indices*, and a continuous
    log-uniform is sampled on its values with ``log=True``.
    """
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=seed)
    hps: list[Any] = []
    for name, p in space.items():
        if isinstance(p, Discrete):
            hps.append(CS.CategoricalHyperparameter(name, choices=list(range(len(p.choices)))))
        elif isinstance(p, Integer) and p.step == 1:
            hps.append(CS.UniformIntegerHyperparameter(name, lower=p.low, upper=p.high, log=p.log))
        elif p.is_finite:
            hps.append(CS.UniformIntegerHyperparameter(name, lower=0, upper=(p.cardinality or 1) - 1))
        else:
            hps.append(CS.UniformFloatHyperparameter(name, lower=float(p.low), upper=float(p.high),
                                                     log=isinstance(p, LogUniform)))
    cs.add(hps)
    return cs


def decode_configspace(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """A :func:`to_configspace` sample (numpy scalars and indices) -> exact hposdk values."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = config[name]
        v = v.item() if hasattr(v, "item") else v
        if isinstance(p, Discrete):
            out[name] = p.choices[int(v)]
        elif isinstance(p, Integer) and p.step == 1:
            out[name] = p.canonicalize(int(v))
        elif p.is_finite:
            out[name] = p.low + int(v) * p.step if isinstance(p, Integer) else p.value_at(int(v))
        else:
            out[name] = p.canonicalize(float(v))
    return out
