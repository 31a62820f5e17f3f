"""backend='clearml': ClearML's HyperParameterOptimizer, on a ClearML fleet or on this machine.

ClearML's own search strategies choose the trials (``GridSearch``, ``RandomSearch``,
``OptimizerOptuna`` for ``tpe``, ``OptimizerBOHB`` for ``bohb``), subclassed so that a study means
what it means on every other backend (see ``_translate.py`` for the space, ``_strategies.py``,
``_optuna_strategy.py`` and ``_bohb.py`` for the defects handled). Where the trials run:

* ``executor='local'`` (the default when no ClearML server is configured): no server; hposdk runs
  the trials on this machine, in-process or in worker processes (how a ClearML study is tried before
  it is sent to the fleet).
* ``executor='remote'``: ``HyperParameterOptimizer`` clones a base task per trial and enqueues it for
  ClearML agents: either an existing task or pipeline (``base_task_id``; values as ``Args/<name>``,
  objective as a scalar title/series) or a base task hposdk creates that runs the study's objective
  on the agent. Every trial is also recorded in the hposdk study record, so an interrupted study is
  resumed without repeating finished trials.

Several objectives (``objectives={...}``) work with ``grid``, ``random`` and ``tpe`` on both executors,
through ClearML's list-of-metrics mode (one scalar title/series per objective; ``tpe`` becomes
Optuna's multi-objective TPE); ``bohb`` optimises one objective. Composites are computed inside each
trial (on an agent too), constraints keep infeasible trials from ``best`` and the Pareto front, and
pruners watch ``pruning_metric`` (see ``_local.py`` and ``_strategies.py``).

Example:
    >>> from hposdk import Study, SearchSpace, Uniform
    >>> def objective(trial):
    ...     return (trial.params["x"] - 0.3) ** 2
    >>> result = Study(objective, SearchSpace({"x": Uniform(0.0, 1.0, step=0.1)}), metric="loss",
    ...                backend="clearml", optimizer="grid", backend_options={"executor": "local"},
    ...                storage=str(getfixture("tmp_path")), progress=False).optimize()
    >>> result.best.params
    {'x': 0.3}
"""

from __future__ import annotations

import pickle
from typing import Any

from ..._imports import require

require("clearml", "clearml", "backend='clearml'")

from ...exceptions import ConfigError, UnsupportedError  # noqa: E402 - after the dependency check
from .._base import Backend, Capabilities, RunSession, StudySpec, check_options  # noqa: E402
from ._options import ClearMLOptions, objective_scalars, resolve_executor  # noqa: E402
from ._translate import check_task_strings, clearml_name, to_clearml  # noqa: E402

__all__ = ["BOHB_OPTIONS", "ClearMLBackend", "ClearMLOptions"]

#: optimizer_options of optimizer='bohb' (OptimizerBOHB's ``verified_bohb_kwargs`` less the budgets,
#: which come from the study's ``budget``).
BOHB_OPTIONS = ("min_points_in_model", "top_n_percent", "num_samples", "random_fraction", "bandwidth_factor",
                "min_bandwidth")


class ClearMLBackend(Backend):
    """ClearML's search strategies; trials on a ClearML fleet (``executor='remote'``) or here (``'local'``)."""

    name = "clearml"
    extra = "clearml"
    capabilities = Capabilities(
        optimizers=("grid", "random", "tpe", "bohb"),
        pruners=("median", "percentile", "successive_halving", "hyperband"),
        parallel=True,
        resume=True,
        budget_optimizers=("bohb",),
        # ClearML's list-of-metrics mode; OptimizerBOHB (hpbandster) takes one loss.
        multi_objective=("grid", "random", "tpe"),
        # Constraints are recorded and respected by the selection, not told to the samplers: ClearML's
        # objective loop on the fleet never sees a trial's other metrics (see _optuna_strategy.py).
        constraint_aware=(),
        notes="ClearML GridSearch/RandomSearch/OptimizerOptuna/OptimizerBOHB; executor='local' runs trials "
              "here with no server (not bohb), executor='remote' on ClearML agents; pruners with grid/random/tpe",
    )
    options_model = ClearMLOptions

    @classmethod
    def check(cls, spec: StudySpec) -> None:
        super().check(spec)
        opts = _options(spec)
        executor = resolve_executor(opts)
        if spec.pruner is not None and spec.optimizer == "bohb":
            raise UnsupportedError(
                f"backend 'clearml': optimizer='bohb' stops trials by its own budgets (successive halving); "
                f"pruner {spec.pruner!r} cannot be added. Fix: drop the pruner, or use optimizer='tpe'."
            )
        if spec.pruner is None and spec.pruner_options:
            raise ConfigError(f"pruner_options given without a pruner: {dict(spec.pruner_options)}")
        if spec.pruner is not None:
            import optuna

            from ._strategies import PRUNERS

            check_options(f"pruner_options ({spec.pruner})", spec.pruner_options,
                          getattr(optuna.pruners, PRUNERS[spec.pruner]), set())
        if spec.optimizer == "tpe":
            import optuna

            check_options("optimizer_options (tpe)", spec.optimizer_options, optuna.samplers.TPESampler, {"seed"})
        elif spec.optimizer == "bohb":
            unknown = sorted(set(spec.optimizer_options) - set(BOHB_OPTIONS))
            if unknown:
                raise ConfigError(f"optimizer_options (bohb): unknown option(s) {unknown}. Valid options: "
                                  f"{', '.join(BOHB_OPTIONS)} (budgets come from the study's `budget`)")
        elif spec.optimizer_options:
            raise ConfigError(f"optimizer {spec.optimizer!r} takes no optimizer_options, but got "
                              f"{dict(spec.optimizer_options)}")
        if spec.optimizer == "bohb":
            if executor == "local":
                raise UnsupportedError(
                    "backend 'clearml': optimizer='bohb' runs only with executor='remote': ClearML's OptimizerBOHB "
                    "drives hpbandster workers that poll ClearML tasks, which need a server. To run BOHB on this "
                    "machine use backend='local', optimizer='bohb' (hpbandster directly)."
                )
            if spec.budget is None:
                raise ConfigError("optimizer='bohb' needs a study `budget` (min_budget, max_budget, eta): ClearML's "
                                  "OptimizerBOHB measures it in reported iterations of the objective scalar")
        _check_names(spec, opts)
        objective_scalars(list(spec.objectives), opts)  # one ClearML scalar per objective
        to_clearml(spec.space, optimizer=spec.optimizer, section=opts.section)  # refuses what is inexact
        if executor == "local":
            if spec.max_concurrent > 1 or spec.trial_timeout is not None or opts.isolate:
                try:
                    pickle.dumps(spec.objective)
                except Exception as exc:  # noqa: BLE001 - any pickling failure means the same fix
                    raise ConfigError(
                        "max_concurrent > 1, trial_timeout and isolate=True run trials in worker processes, so "
                        f"the objective must be importable by name, but {spec.objective!r} cannot be pickled "
                        f"({exc}). Fix: define it at module level, or use max_concurrent=1."
                    ) from None
            return
        from ._remote import check_remote

        check_task_strings(spec.space)
        check_remote(spec, opts)

    def run(self, spec: StudySpec, session: RunSession) -> None:
        opts = _options(spec)
        if resolve_executor(opts) == "local":
            from ._local import run_local

            run_local(spec, session, opts)
        else:
            from ._remote import run_remote

            run_remote(spec, session, opts)


def _check_names(spec: StudySpec, opts: ClearMLOptions) -> None:
    unknown = sorted(k for k in opts.param_names if k not in spec.space and k not in spec.fixed)
    if unknown:
        raise ConfigError(f"backend_options.param_names: {unknown} are neither searched nor fixed; the study has "
                          f"{', '.join(spec.space.names)}")
    keys = list(spec.space.names) + [k for k in spec.fixed if k not in spec.space]
    seen: dict[str, str] = {}
    for key in keys:
        cname = clearml_name(key, opts.section, opts.param_names)
        if not cname or cname in seen:
            raise ConfigError(f"backend_options.param_names: {key!r} and {seen.get(cname)!r} would both be the "
                              f"ClearML parameter {cname!r}")
        seen[cname] = key


def _options(spec: StudySpec) -> ClearMLOptions:
    opts: Any = spec.backend_options
    if isinstance(opts, ClearMLOptions):
        return opts
    return ClearMLOptions(**opts.model_dump())
