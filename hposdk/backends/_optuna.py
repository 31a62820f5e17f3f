"""Exact translation of an hposdk space to Optuna distributions, and back.

| hposdk                          | Optuna                                   | why                           |
|---------------------------------|------------------------------------------|-------------------------------|
| Uniform(lo, hi)                 | FloatDistribution(lo, hi)                | same                          |
| Uniform(lo, hi, step)           | FloatDistribution(lo, hi, step=step)     | both are ``lo + k*step``      |
| LogUniform(lo, hi) (any base)   | FloatDistribution(lo, hi, log=True)      | log-uniform is base-free      |
| LogUniform(lo, hi, base, step)  | IntDistribution(0, n) over the grid index | Optuna refuses log+step       |
| Integer(lo, hi, step, log)      | IntDistribution(lo, hi, step, log)       | both inclusive                |
| Discrete(choices)               | CategoricalDistribution(choices)         | index-encoded when two choices |
|                                 |                                          | compare equal (1 and True)    |

Values coming back are snapped to the exact hposdk value (``0.30000000000000004`` -> ``0.3``).
"""

from __future__ import annotations

import math
from typing import Any

from ..exceptions import UnsupportedError
from ..spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform

__all__ = ["decode", "encode", "to_optuna"]


def _index_encoded(p: Any) -> bool:
    return (isinstance(p, LogUniform) and p.step is not None) or (
        isinstance(p, Discrete) and p.has_ambiguous_choices
    )


def to_optuna(space: SearchSpace) -> dict[str, Any]:
    """The Optuna distribution of every parameter (pure; imports optuna lazily)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, p in space.items():
        if isinstance(p, Uniform):
            if not math.isfinite(float(p.high) - float(p.low)):
                # Optuna's samplers compute high - low (TPE raises OverflowError mid-study).
                raise UnsupportedError(
                    f"parameter {name!r}: Optuna cannot sample Uniform({p.low}, {p.high}): its width "
                    f"overflows a float. Fix: narrow the range, or use LogUniform for ranges spanning magnitudes"
                )
            out[name] = FloatDistribution(float(p.low), float(p.high),
                                          step=float(p.step) if p.step is not None else None)
        elif isinstance(p, LogUniform):
            if p.step is None:
                out[name] = FloatDistribution(float(p.low), float(p.high), log=True)
            else:
                out[name] = IntDistribution(0, p.n_steps or 0)
        elif isinstance(p, Integer):
            out[name] = IntDistribution(p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, Discrete):
            if p.has_ambiguous_choices:
                out[name] = CategoricalDistribution(list(range(len(p.choices))))
            else:
                out[name] = CategoricalDistribution(list(p.choices))
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown parameter type {type(p).__name__}")
    return out


def decode(space: SearchSpace, optuna_params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's values -> exact hposdk values."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = optuna_params[name]
        if isinstance(p, LogUniform) and p.step is not None:
            out[name] = p.value_at(int(v))
        elif isinstance(p, Discrete) and p.has_ambiguous_choices:
            out[name] = p.choices[int(v)]
        else:
            out[name] = p.canonicalize(v)
    return out


def encode(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """hposdk values -> the values Optuna stores for them (inverse of :func:`decode`)."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        v = params[name]
        if isinstance(p, LogUniform) and p.step is not None:
            grid = p.grid()
            out[name] = min(range(len(grid)), key=lambda k: abs(float(grid[k]) - float(v)))
        elif isinstance(p, Discrete) and p.has_ambiguous_choices:
            out[name] = p.index(v)
        else:
            out[name] = v
    return out


def tell(study: Any, trial: Any, values: Any = None, state: Any = None) -> None:
    """``study.tell(trial, values, state=state)`` without building its return value.

    ``Study.tell`` returns a deep copy of the finished trial, which hposdk never reads; the copy is
    about a tenth of TPE's whole per-trial cost on small studies. This calls the function that
    ``Study.tell`` and ``Study.optimize`` both use (same validation, warnings and sampler
    callbacks), and falls back to the public method if a future Optuna moves it.
    """
    fn = _tell_function()
    if fn is None:
        study.tell(trial, values, state=state)
    else:
        fn(study=study, trial=trial, value_or_values=values, state=state)


def _tell_function() -> Any:
    global _TELL
    if _TELL is False:
        try:
            from optuna.study._tell import _tell_with_warning
        except ImportError:  # pragma: no cover - a future Optuna
            _TELL = None
        else:
            _TELL = _tell_with_warning
    return _TELL


_TELL: Any = False


#: Optuna pruners by hposdk name (the local backend and ClearML's TPE both use Optuna's).
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}


class PrunerPlan:
    """One meaning of an Optuna pruner under the budget protocol, for every backend that uses one.

    With a study ``budget``, the successive-halving pruners (``successive_halving``, ``hyperband``)
    take their rungs from it (``min_resource=min_budget``, ``reduction_factor=eta`` and, for
    hyperband, ``max_resource=max_budget``; ``pruner_options`` override them) and see the *number of
    reports so far* as the step, as Ray's ASHA counts ``training_iteration``: a rung of 3 is the
    third report whatever steps the objective reports (``trial.report(epoch)`` with a 0- or 1-based
    epoch). Other pruners, and pruners without a budget, see the objective's own steps.

    Args:
        pruner: the hposdk pruner name (None: no pruner).
        options: the study's ``pruner_options``.
        budget: the study's budget (a ``Budget``), or None.
    """

    def __init__(self, pruner: str | None, options: dict[str, Any], budget: Any) -> None:
        self.pruner = pruner
        #: Whether the pruner's step is the report count (see the class docstring).
        self.counts_reports = budget is not None and pruner in ("successive_halving", "hyperband")
        self.options = dict(options)
        if self.counts_reports:
            defaults: dict[str, Any] = {"min_resource": max(1, int(budget.min_budget)),
                                        "reduction_factor": max(2, round(budget.eta))}
            if pruner == "hyperband":
                defaults["max_resource"] = max(1, int(budget.max_budget))
            self.options = {**defaults, **self.options}

    @classmethod
    def of(cls, spec: Any) -> PrunerPlan:
        """The plan of a study (a ``StudySpec``): its pruner, ``pruner_options`` and ``budget``."""
        return cls(spec.pruner, dict(spec.pruner_options), spec.budget)

    def make(self) -> Any:
        """A new Optuna pruner (Optuna's ``NopPruner`` without one: its own default would be a median)."""
        import optuna

        if self.pruner is None:
            return optuna.pruners.NopPruner()
        return getattr(optuna.pruners, PRUNERS[self.pruner])(**self.options)

    def steps(self, reports: Any) -> list[int]:
        """The pruner's step of each report in ``reports`` (records with ``.step``), in order."""
        return list(range(1, len(reports) + 1)) if self.counts_reports else [int(r.step) for r in reports]

    def step(self, count: int, step: int) -> int:
        """The pruner's step of a trial's ``count``-th report (1-based), reported at ``step``."""
        return count if self.counts_reports else step
