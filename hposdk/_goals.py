"""What a study optimises: objectives, composite metrics, constraints and the pruning metric.

Defined once here and used by every backend, so a multi-objective or constrained study means the
same thing whichever engine runs it:

* **objectives** -- one or more ``metric -> 'min' | 'max'``; with several, there is usually no
  single best trial but a Pareto front (:func:`pareto_front`).
* **composites** -- a named metric computed from others: the weighted average of its terms, each
  optionally min-max normalised and flipped when lower is better, so the composite is always
  higher-is-better. Computed in the trial (:meth:`Goals.derive`), so it reaches every engine and
  scheduler like a metric the objective returned.
* **constraints** -- ``"size_mb <= 700"`` or a callable ``metrics -> violation``; a trial is
  feasible when every violation is ``<= 0`` (Optuna's convention). Infeasible trials are recorded
  and never chosen as best.
* **pruning metric** -- which single metric pruners and schedulers watch (a multi-objective
  study has no single value to prune on).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from .exceptions import ConfigError

__all__ = ["Composite", "Constraint", "Goals", "Term", "dominates", "hypervolume_2d", "pareto_front"]

Mode = Literal["min", "max"]


class Term(BaseModel):
    """One metric of a :class:`Composite`.

    Attributes:
        weight: its weight in the average (> 0).
        mode: ``'max'`` when higher is better (default), ``'min'`` when lower is better; a
            ``'min'`` term enters as ``1 - normalised`` (or ``-value`` when not normalised).
        low: the value that normalises to 0 (give ``low`` and ``high`` together).
        high: the value that normalises to 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: PositiveFloat = 1.0
    mode: Mode = "max"
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Term:
        if (self.low is None) != (self.high is None):
            raise ValueError(f"give low and high together (got low={self.low}, high={self.high})")
        if self.low is not None and self.high is not None and (
            not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high
        ):
            raise ValueError(f"`low < high` must hold (finite), but got low={self.low}, high={self.high}")
        return self

    def score(self, value: float) -> float:
        """This term's contribution before weighting (higher is better)."""
        if self.low is not None and self.high is not None:
            n = (value - self.low) / (self.high - self.low)
            return n if self.mode == "max" else 1.0 - n
        return value if self.mode == "max" else -value


class Composite(BaseModel):
    """A metric computed from others: ``sum(weight * score) / sum(weight)`` (higher is better).

    Example:
        >>> c = Composite(terms={"arc": 1, "mmlu": 1, "size_mb": Term(mode="min", low=0, high=1000)})
        >>> round(c.value({"arc": 0.5, "mmlu": 0.7, "size_mb": 400}), 4)
        0.6
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    terms: dict[str, Term] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _weights(cls, data: Any) -> Any:
        # {"arc": 1.0} is shorthand for {"arc": {"weight": 1.0}}.
        if isinstance(data, Mapping) and isinstance(data.get("terms"), Mapping):
            terms = {k: ({"weight": v} if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                     for k, v in data["terms"].items()}
            return {**data, "terms": terms}
        return data

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        """The composite of ``metrics``, or None when a term is missing or not a finite number."""
        total = weights = 0.0
        for name, term in self.terms.items():
            v = metrics.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
            total += term.weight * term.score(float(v))
            weights += term.weight
        return total / weights


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w./\-]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound`` (parsed from text), or a callable.

    ``violation(metrics)`` is ``<= 0`` when satisfied and the amount it is missed by otherwise.
    """

    text: str
    metric: str | None = None
    op: str | None = None
    bound: float | None = None
    fn: Callable[[Mapping[str, Any]], float] | None = None

    @classmethod
    def parse(cls, spec: str | Callable[[Mapping[str, Any]], float]) -> Constraint:
        """Build from ``"size_mb <= 700"`` or a callable ``metrics -> violation``."""
        if callable(spec):
            name = getattr(spec, "__qualname__", None) or repr(spec)
            return cls(text=f"{getattr(spec, '__module__', '')}:{name}", fn=spec)
        if not isinstance(spec, str):
            raise ConfigError(f"constraints: {spec!r} is neither a string like 'size_mb <= 700' nor a callable")
        m = _CONSTRAINT.match(spec)
        if not m:
            raise ConfigError(
                f"constraints: cannot read {spec!r}; write '<metric> <= <number>' or '<metric> >= <number>' "
                "(e.g. 'size_mb <= 700'), or pass a callable metrics -> violation (<= 0 when satisfied)"
            )
        metric, op, bound = m.group(1), m.group(2), float(m.group(3))
        return cls(text=f"{metric} {op} {bound:g}", metric=metric, op=op, bound=bound)

    def violation(self, metrics: Mapping[str, Any]) -> float:
        """How far ``metrics`` miss the constraint (``<= 0``: satisfied; inf: the metric is missing)."""
        if self.fn is not None:
            v = self.fn(metrics)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.inf
        value = metrics.get(self.metric or "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return math.inf
        assert self.bound is not None
        return float(value) - self.bound if self.op == "<=" else self.bound - float(value)


@dataclass(frozen=True)
class Goals:
    """Objectives, composites, constraints and pruning metric of one study (picklable when
    constraints are text; :meth:`portable` drops callables for worker processes)."""

    objectives: Mapping[str, Mode]
    composites: Mapping[str, Composite] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    pruning_metric: str | None = None

    @classmethod
    def single(cls, metric: str, mode: Mode = "min") -> Goals:
        return cls(objectives={metric: mode}, pruning_metric=metric)

    @property
    def primary(self) -> str:
        """The first objective (the value of ``TrialResult.value``)."""
        return next(iter(self.objectives))

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def plain(self) -> bool:
        """One objective, no composites, no constraints: a bare number is a complete score."""
        return len(self.objectives) == 1 and not self.composites and not self.constraints

    @property
    def pruning_mode(self) -> Mode:
        name = self.pruning_metric or self.primary
        if name in self.objectives:
            return self.objectives[name]
        return "max"  # a composite that is not an objective: composites are higher-is-better

    def to_dict(self) -> dict[str, Any]:
        """Plain data (study records, ClearML's study document); constraints as their text."""
        return {
            "objectives": dict(self.objectives),
            "composites": {k: v.model_dump() for k, v in self.composites.items()},
            "constraints": [c.text for c in self.constraints],
            "pruning_metric": self.pruning_metric,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Goals:
        """Read :meth:`to_dict` back (text constraints only; ``metric``/``mode`` when no objectives)."""
        objectives = dict(data.get("objectives") or {data["metric"]: data.get("mode") or "min"})
        composites = {str(k): Composite.model_validate(v) for k, v in (data.get("composites") or {}).items()}
        constraints = tuple(Constraint.parse(str(c)) for c in data.get("constraints") or ())
        return cls(objectives=objectives, composites=composites, constraints=constraints,
                   pruning_metric=data.get("pruning_metric"))

    def portable(self) -> Goals:
        """The part trials need (composites, required metrics), without constraint callables."""
        return Goals(dict(self.objectives), dict(self.composites),
                     tuple(c for c in self.constraints if c.fn is None), self.pruning_metric)

    def derive(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``metrics`` plus every composite whose terms are all present."""
        for name, comp in self.composites.items():
            if name not in metrics:
                v = comp.value(metrics)
                if v is not None:
                    metrics[name] = v
        return metrics

    def missing(self, metrics: Mapping[str, Any]) -> str | None:
        """Why ``metrics`` cannot be scored for this study's objectives and text constraints, or None."""
        for name in self.objectives:
            if name not in metrics:
                comp = self.composites.get(name)
                if comp is not None:
                    lacking = [t for t in comp.terms if t not in metrics]
                    what = f"the composite {name!r} needs {lacking}" if lacking else (
                        f"the composite {name!r} needs finite numbers for {list(comp.terms)}")
                    return f"the objective returned {sorted(metrics)}; {what}"
                return (f"the objective returned {sorted(metrics)} but not the study metric {name!r}. "
                        f"Fix: return {{'{name}': ...}} or choose the metric among {sorted(metrics)}")
        for c in self.constraints:
            if c.metric is not None and c.metric not in metrics:
                return (f"the objective returned {sorted(metrics)} but not {c.metric!r}, which the constraint "
                        f"{c.text!r} needs")
        return None

    def violations(self, metrics: Mapping[str, Any]) -> tuple[float, ...]:
        """One violation per constraint (``<= 0``: satisfied)."""
        return tuple(c.violation(metrics) for c in self.constraints)

    def values(self, metrics: Mapping[str, Any]) -> list[float] | None:
        """The objective values in order, or None when one is missing or not finite."""
        out = []
        for name in self.objectives:
            v = metrics.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
            out.append(float(v))
        return out


# --- Pareto fronts -----------------------------------------------------------------------------


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[Mode]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    strictly = False
    for x, y, m in zip(a, b, modes):
        if m == "max":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            strictly = True
    return strictly


def pareto_front(points: Sequence[Sequence[float]], modes: Sequence[Mode]) -> list[int]:
    """Indices of the non-dominated points (in input order; equal points are all kept).

    Example:
        >>> pareto_front([(1, 5), (2, 2), (3, 3), (5, 1), (2, 2)], ["min", "min"])
        [0, 1, 3, 4]
    """
    if len(modes) == 0:
        raise ValueError("pareto_front needs at least one objective")
    # Sort by the first objective (best first), so a point can only be dominated by points
    # before it or equal to it in that objective: O(n * front) instead of O(n^2).
    sign = [(-1.0 if m == "max" else 1.0) for m in modes]
    keyed = sorted(range(len(points)), key=lambda i: tuple(s * v for s, v in zip(sign, points[i])))
    front: list[int] = []
    for i in keyed:
        if not any(dominates(points[j], points[i], modes) for j in front):
            front.append(i)
    return sorted(front)


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float],
                   modes: Sequence[Mode] = ("min", "min")) -> float:
    """The area dominated by ``points`` and bounded by ``reference`` (two objectives).

    Example:
        >>> hypervolume_2d([(1, 3), (2, 2), (3, 1)], reference=(4, 4))
        6.0
    """
    if len(reference) != 2 or len(modes) != 2:
        raise ValueError("hypervolume_2d handles exactly two objectives")
    sign = [(-1.0 if m == "max" else 1.0) for m in modes]
    ref = (sign[0] * reference[0], sign[1] * reference[1])
    pts = sorted({(sign[0] * p[0], sign[1] * p[1]) for p in points if
                  sign[0] * p[0] < ref[0] and sign[1] * p[1] < ref[1]})
    area, best_y = 0.0, ref[1]
    for x, y in pts:  # ascending in the first objective
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area
