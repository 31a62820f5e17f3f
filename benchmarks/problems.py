"""The regret suite's problems: a search space, an hposdk objective and the exact minimum of each.

Objectives are module-level functions of a ``Trial`` (Ray pickles them by reference, so this module
must be importable by the Ray workers: ``benchmarks/run.py`` puts the repository on ``PYTHONPATH``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hposdk import Discrete, Integer, LogUniform, SearchSpace, Uniform

from .functions import (
    BRANIN_MIN,
    HARTMANN6_MIN,
    MIXED_CHOICES,
    MIXED_MIN,
    branin,
    hartmann6,
    hartmann6_mf,
    mixed,
)

__all__ = ["MF_BUDGET", "PROBLEMS", "Problem"]

#: Fidelity of the multi-fidelity problem: epochs 1..27, eta 3 (one unit = one 27-epoch evaluation).
MF_MIN, MF_MAX, MF_ETA = 1, 27, 3
MF_BUDGET = {"min_budget": MF_MIN, "max_budget": MF_MAX, "eta": MF_ETA}
H6 = [f"x{i}" for i in range(6)]


@dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    Attributes:
        name: short name used in tables.
        space: the hposdk search space.
        objective: the hposdk objective (a module-level function of a Trial).
        value: the exact (full-fidelity, noise-free) value of a point.
        minimum: the global minimum of ``value``.
        n_trials: the evaluation budget (single-fidelity problems).
        units: the budget in full evaluations (multi-fidelity problem), else None.
        description: one line for the report.
    """

    name: str
    space: SearchSpace
    objective: Callable[[Any], Any]
    value: Callable[[dict[str, Any]], float]
    minimum: float
    n_trials: int
    units: float | None = None
    description: str = ""

    @property
    def multi_fidelity(self) -> bool:
        return self.units is not None

    def regret(self, params: dict[str, Any]) -> float:
        return max(self.value(params) - self.minimum, 0.0)


def branin_objective(trial: Any) -> float:
    return branin(trial.params["x1"], trial.params["x2"])


def hartmann6_objective(trial: Any) -> float:
    return hartmann6([trial.params[d] for d in H6])


def mixed_objective(trial: Any) -> float:
    return mixed_value(trial.params)


def mixed_value(p: Any) -> float:
    return mixed(p["optimizer"], p["lr"], p["x"], p["layers"], p["batchnorm"])


def hartmann6_mf_objective(trial: Any) -> dict[str, float]:
    """Trains ``trial.budget`` epochs; epoch e reports the function at budget e (pruners see it)."""
    x = [trial.params[d] for d in H6]
    seed = int(trial.params.get("bench_seed", 0))
    loss = math.nan
    for epoch in range(1, round(trial.budget) + 1):
        loss = hartmann6_mf(x, epoch, MF_MIN, MF_MAX, seed)
        trial.report(epoch, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


def _h6_value(p: dict[str, Any]) -> float:
    return hartmann6([p[d] for d in H6])


PROBLEMS: dict[str, Problem] = {
    "branin": Problem(
        "branin", SearchSpace({"x1": Uniform(-5.0, 10.0), "x2": Uniform(0.0, 15.0)}), branin_objective,
        lambda p: branin(p["x1"], p["x2"]), BRANIN_MIN, 100, description="Branin, 2 continuous, 100 evaluations"),
    "hartmann6": Problem(
        "hartmann6", SearchSpace({d: Uniform(0.0, 1.0) for d in H6}), hartmann6_objective, _h6_value,
        HARTMANN6_MIN, 100, description="Hartmann-6, 6 continuous, 100 evaluations"),
    "mixed": Problem(
        "mixed",
        SearchSpace({
            "optimizer": Discrete(list(MIXED_CHOICES)),
            "lr": LogUniform(1e-5, 1e-1),
            "x": Uniform(0.0, 1.0),
            "layers": Integer(1, 32),
            "batchnorm": Discrete([True, False]),
        }),
        mixed_objective, mixed_value, MIXED_MIN, 100,
        description="mixed: 4-way categorical, boolean, integer, log-float, float; 100 evaluations"),
    "hartmann6_mf": Problem(
        "hartmann6_mf", SearchSpace({d: Uniform(0.0, 1.0) for d in H6}), hartmann6_mf_objective, _h6_value,
        HARTMANN6_MIN, 100, units=100.0,
        description="multi-fidelity Hartmann-6 (epochs 1..27, eta 3; biased and noisy below 27), "
                    "100 full-evaluation units"),
}
