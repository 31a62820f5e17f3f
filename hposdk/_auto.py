"""``optimizer="auto"``: pick an optimizer from the space, the budget and what is installed.

The choice is a pure function of the study's shape, so it is testable without running anything and
the same study always gets the same optimizer. The rules come from ``benchmarks/`` (see
``docs/benchmarks.md``: simple regret on Branin, Hartmann-6, a mixed-type function and a
multi-fidelity Hartmann-6, 10 seeds, 100 evaluations or 100 full-evaluation units), first match wins:

1. **A finite space no larger than the trial budget** -> ``grid``: every point is tried, so the
   optimum is found with certainty.
2. **Several objectives** -> ``tpe`` (multivariate MOTPE) below 1000 trials, else ``nsga2``;
   ``random`` where neither is offered.
3. **Fewer than 10 trials** -> ``random`` (model-based samplers start with 10 random trials).
4. **At most** :data:`GP_MAX_TRIALS` **trials and** :data:`GP_MAX_DIMS` **parameters**, the backend
   offers ``gp`` and torch and scipy are installed -> ``gp``, Optuna's Gaussian-process sampler. It
   had the lowest median regret on every problem of the suite, by two to four orders of magnitude
   over TPE, BOHB and random search, the multi-fidelity one included: there, 100 full-budget GP
   trials beat TPE with Hyperband pruning, BOHB and Hyperband spending the same total budget. Its
   cost per trial grows with the number of finished trials, hence the cap.
5. **A fidelity** (a study ``budget``) -> ``tpe`` with Hyperband-style pruning on the objective's
   reports (``hyperband``, whose rungs the local backend takes from the budget; ``asha`` on Ray),
   better than BOHB and Hyperband on the multi-fidelity problem; ``bohb`` where the backend has no
   pruner, else ``random`` with the pruner.
6. Otherwise ``tpe`` (multivariate, Optuna's default), else ``random``.

Example:
    >>> from hposdk import SearchSpace, Uniform
    >>> from hposdk.backends.local import LocalBackend
    >>> space = SearchSpace({"x": Uniform(0.0, 1.0)})
    >>> choose(space, n_trials=500, capabilities=LocalBackend.capabilities, installed=frozenset()).optimizer
    'tpe'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .spaces import Discrete, SearchSpace

if TYPE_CHECKING:
    from .backends._base import Budget, Capabilities

__all__ = ["GP_MAX_DIMS", "GP_MAX_TRIALS", "Choice", "choose", "installed_engines", "resolve_config"]

#: Above this many trials ``auto`` prefers TPE to the GP sampler, whose per-trial cost grows with
#: the number of finished trials (25 ms per trial on average over the first 100 on the benchmark
#: machine, against 1 ms for TPE; the GP fit is cubic in the trials).
GP_MAX_TRIALS = 200
#: Above this many parameters ``auto`` prefers TPE (a GP with one length scale per dimension
#: needs many more trials than 200 to learn them all).
GP_MAX_DIMS = 20
#: Below this many trials every model-based sampler is still in its random start-up phase.
MIN_MODEL_TRIALS = 10
#: Modules whose presence changes the choice (looked up, never imported).
ENGINE_MODULES = ("torch", "scipy", "hpbandster", "ConfigSpace")


@dataclass(frozen=True)
class Choice:
    """What ``optimizer="auto"`` resolved to, and why.

    Attributes:
        optimizer: the concrete optimizer name (one the backend offers).
        optimizer_options: its options.
        pruner: the pruner to add, or None (keep the study's own, if any).
        pruner_options: the pruner's options.
        reason: one sentence a user can read in the study record and in ``hposdk run``'s output.
    """

    optimizer: str
    reason: str
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str | None = None
    pruner_options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what the study record keeps)."""
        return {"optimizer": self.optimizer, "optimizer_options": dict(self.optimizer_options),
                "pruner": self.pruner, "pruner_options": dict(self.pruner_options), "reason": self.reason}

    def describe(self) -> str:
        """``'tpe + hyperband pruning (...)'``: one line for logs and the CLI."""
        opts = f" {dict(self.optimizer_options)}" if self.optimizer_options else ""
        pruning = f" + {self.pruner} pruning" if self.pruner else ""
        return f"{self.optimizer}{opts}{pruning}: {self.reason}"


def installed_engines() -> frozenset[str]:
    """Which of :data:`ENGINE_MODULES` can be imported here (found, not imported)."""
    return frozenset(m for m in ENGINE_MODULES if importlib.util.find_spec(m) is not None)


def choose(
    space: SearchSpace,
    *,
    n_trials: int | None,
    capabilities: Capabilities,
    installed: frozenset[str],
    budget: Budget | None = None,
    objectives_count: int = 1,
    max_concurrent: int = 1,
    backend: str = "local",
    pruner: str | None = None,
) -> Choice:
    """The optimizer ``optimizer="auto"`` runs for a study of this shape (pure: nothing is imported).

    Args:
        space: the search space.
        n_trials: the trial budget (None: only a finite space can be searched, exhaustively).
        capabilities: what the backend offers (``Backend.capabilities``).
        installed: importable engine modules (:func:`installed_engines`).
        budget: the study's fidelity range, when the objective reads ``trial.budget`` or reports
            per step.
        objectives_count: how many objectives the study optimises.
        max_concurrent: trials run at once.
        backend: the backend's name (its pruner names differ: Ray's Hyperband-style one is ``asha``).
        pruner: a pruner the study already sets (then it is kept and BOHB/Hyperband are not chosen).

    Returns:
        The :class:`Choice`; its optimizer is always one of ``capabilities.optimizers``.
    """
    offered = set(capabilities.optimizers)
    dims = len(space)
    size = space.size
    n_cat = sum(isinstance(p, Discrete) for _, p in space.items())
    shape = f"{dims} parameter(s), {n_trials} trials" + (", finite" if size is not None else "")

    if size is not None and "grid" in offered and (n_trials is None or size <= n_trials) and objectives_count == 1:
        return Choice("grid", f"the space has {size} points, no more than the trial budget: grid search tries "
                              "them all")
    if n_trials is None:
        # Study reports n_trials as required; a choice is still returned so that the message is its.
        return Choice("random", f"{shape}: no trial budget to plan for")

    if objectives_count > 1:
        multi = set(getattr(capabilities, "multi_objective", ()) or offered)
        if n_trials >= 1000 and "nsga2" in offered & multi:
            return Choice("nsga2", f"{objectives_count} objectives and {n_trials} trials: NSGA-II's generations "
                                   "have room to evolve")
        if "tpe" in offered & multi:
            return Choice("tpe", f"{objectives_count} objectives, {n_trials} trials: multi-objective TPE",
                          {"multivariate": True})
        return Choice("random", f"{objectives_count} objectives: no model-based multi-objective optimizer on "
                                f"backend {backend!r}")

    if n_trials < MIN_MODEL_TRIALS:
        return Choice("random", f"{n_trials} trials: fewer than a model-based sampler's {MIN_MODEL_TRIALS} random "
                                "start-up trials")

    gp_ok = "gp" in offered and {"torch", "scipy"} <= installed
    if gp_ok and n_trials <= GP_MAX_TRIALS and dims <= GP_MAX_DIMS:
        kinds = f", {n_cat} categorical" if n_cat else ""
        if budget is None:
            return Choice("gp", f"{shape}{kinds}: a Gaussian process is the most sample-efficient here (at most "
                                f"{GP_MAX_TRIALS} trials and {GP_MAX_DIMS} parameters)")
        return Choice("gp", f"{shape}{kinds}, budget {budget.min_budget:g}..{budget.max_budget:g}: with at most "
                            f"{GP_MAX_TRIALS} trials a Gaussian process on full-budget trials beat the multi-fidelity "
                            "methods (BOHB, Hyperband, TPE with pruning) on the benchmark; every trial gets "
                            "max_budget")

    pruners = set(capabilities.pruners)
    if budget is not None:
        hb = "asha" if backend == "ray" and "asha" in pruners else ("hyperband" if "hyperband" in pruners else None)
        chosen_pruner = pruner if pruner is not None else hb
        what = f"{shape}, budget {budget.min_budget:g}..{budget.max_budget:g} (eta {budget.eta:g})"
        if chosen_pruner is not None and "tpe" in offered:
            return Choice("tpe", f"{what}: TPE proposes, {chosen_pruner} pruning stops poor trials early on "
                                 "their reports (better than BOHB and Hyperband on the multi-fidelity benchmark)",
                          pruner=chosen_pruner if pruner is None else None)
        budget_opts = set(capabilities.budget_optimizers) & offered
        if pruner is None and "bohb" in budget_opts and {"hpbandster", "ConfigSpace"} <= installed:
            return Choice("bohb", f"{what}: BOHB runs the budgets (no pruner with TPE on backend {backend!r})")
        if chosen_pruner is not None and "random" in offered:
            return Choice("random", f"{what}: random search with {chosen_pruner} pruning (no TPE on backend "
                                    f"{backend!r})", pruner=chosen_pruner if pruner is None else None)

    if "tpe" in offered:
        why = ("more trials than " f"{GP_MAX_TRIALS}" if n_trials > GP_MAX_TRIALS else
               f"more than {GP_MAX_DIMS} parameters" if dims > GP_MAX_DIMS else
               "no GP sampler " + ("on this backend" if "gp" not in offered else "installed (pip install hposdk[gp])"))
        return Choice("tpe", f"{shape}: TPE ({why})")
    if "random" in offered:
        return Choice("random", f"{shape}: random search (no model-based optimizer on backend {backend!r})")
    return Choice(sorted(offered)[0], f"backend {backend!r} offers only {sorted(offered)}")



def resolve_config(config: Any, objectives_count: int, recorded: Mapping[str, Any] | None = None) -> tuple[Any, Choice]:
    """A :class:`~hposdk.StudyConfig` with ``optimizer='auto'`` made concrete, and the choice.

    Args:
        config: the study's configuration, with ``optimizer='auto'``.
        objectives_count: how many objectives the study has.
        recorded: the choice a resumed study's record holds (``Choice.to_dict()``): a study keeps
            the optimizer it started with, as it keeps its seed, even when ``n_trials`` has grown
            (which could change the choice: the record would say one optimizer while another ran).

    Raises:
        ConfigError: ``optimizer_options`` were given with ``auto`` (they belong to one optimizer).
    """
    from .backends._registry import get_backend
    from .exceptions import ConfigError

    if config.optimizer_options:
        raise ConfigError(
            f"optimizer='auto' chooses the optimizer and its options, but optimizer_options="
            f"{dict(config.optimizer_options)} were given. Fix: name the optimizer they belong to "
            "(e.g. optimizer='tpe'), or drop them"
        )
    if recorded is not None:
        choice = Choice(optimizer=recorded["optimizer"], reason=recorded.get("reason", ""),
                        optimizer_options=dict(recorded.get("optimizer_options") or {}),
                        pruner=recorded.get("pruner"), pruner_options=dict(recorded.get("pruner_options") or {}))
        return _apply(config, choice), choice
    backend = get_backend(config.backend)
    choice = choose(config.space, n_trials=config.n_trials, capabilities=backend.capabilities,
                    installed=installed_engines(), budget=config.budget, objectives_count=objectives_count,
                    max_concurrent=config.max_concurrent, backend=config.backend, pruner=config.pruner)
    return _apply(config, choice), choice


def _apply(config: Any, choice: Choice) -> Any:
    update: dict[str, Any] = {"optimizer": choice.optimizer, "optimizer_options": dict(choice.optimizer_options)}
    if choice.pruner is not None:
        update.update(pruner=choice.pruner, pruner_options={**choice.pruner_options, **config.pruner_options})
    return config.model_copy(update=update)
