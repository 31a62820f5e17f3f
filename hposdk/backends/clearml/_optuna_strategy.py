"""ClearML's ``OptimizerOptuna``, with what its bridge loses put back.

Defects of ``clearml/automation/optuna/optuna.py`` (2.1.12) handled here:

* ``**optuna_kwargs`` are filtered against an empty allow-list (``verified_optuna_kwargs = []``), and
  ``optuna_sampler``/``optuna_pruner`` must be live objects, which ``HyperParameterOptimizer`` does not
  record on its task. Here the TPE sampler and the pruner are built from plain data
  (``hposdk_sampler_options``, ``hposdk_pruner``, ``hposdk_pruner_options``) with the study seed.
* ``_convert_hyper_parameters_to_optuna`` drops the step of a ``LogUniformParameterRange``
  (``step=None``) and its ``include_max``; suggestions here come from hposdk's exact Optuna translation
  (``hposdk.backends._optuna``), and the values a job receives are the exact hposdk values.
* ``continue_previous_study`` is overwritten in ``start()``; a study here is warm-started from the
  finished trials of the hposdk record (``hposdk_history``).
* ``study.optimize(n_trials=total_max_jobs)`` counts the trials it prunes as duplicates, so fewer jobs
  than asked run, and with ``n_jobs > 1`` more can be launched than the budget (clearml/clearml#873);
  here exactly ``total_max_jobs`` jobs are launched and a space that only yields duplicates ends the
  study.
* With several objectives ``OptunaObjective`` returns a list and skips pruning altogether ("trial
  pruning based on intermediate values not supported when using multi-objective"): the study is
  created here with one direction per objective (TPE is then MOTPE), warm-started with every
  objective's value, and pruning runs on a shadow single-objective study watching the
  ``pruning_metric`` scalar (:meth:`~._strategies.HposdkStrategy.monitor_job`, polled by
  ``OptunaObjective``); a trial the shadow prunes is aborted and told to the TPE study as pruned,
  as ClearML does for its own pruning. The same holds for one objective pruned on another metric.
* Constraints are not told to Optuna (``set_constraint``): on the fleet the trial's metrics reach
  hposdk's record, not ClearML's objective loop, so the sampler would see them locally only. Both
  executors therefore propose alike, and the selection (``best``, the Pareto front) excludes
  infeasible trials.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import optuna
from clearml.automation.optuna import OptimizerOptuna
from clearml.automation.optuna.optuna import OptunaObjective

from .. import _optuna
from ._strategies import PRUNERS, HposdkStrategy, make_pruner

__all__ = ["PRUNERS", "HposdkOptuna", "make_pruner", "make_sampler"]

#: Duplicate proposals in a row after which the space counts as exhausted.
MAX_DUPLICATES = 100


def make_sampler(seed: int, options: Mapping[str, Any]) -> Any:
    """The TPE sampler of ``optimizer='tpe'`` (``optimizer_options`` are its keyword arguments)."""
    return optuna.samplers.TPESampler(seed=seed, **dict(options))


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    # Public suggest_* calls (not Trial._suggest), so enqueued params and samplers behave as documented.
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_categorical(name, dist.choices)


def _enqueued(trial: Any) -> bool:
    # enqueue_trial() stores the fixed params as a system attribute; such a trial is a deliberate
    # re-run, not a duplicate proposal.
    return "fixed_params" in trial.storage.get_trial_system_attrs(trial._trial_id)


class HposdkOptuna(HposdkStrategy, OptimizerOptuna):  # type: ignore[misc]
    """``OptimizerOptuna`` with the sampler/pruner passed through, exact values, resume and a hard budget.

    Extra keyword arg (plain data): ``hposdk_sampler_options`` (TPESampler kwargs); the pruner and
    the warm-start history are :class:`~._strategies.HposdkStrategy`'s.
    """

    _study: Any
    _objective: Any
    _objective_metric: Any

    def __init__(
        self,
        *args: Any,
        hposdk_sampler_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.hposdk_sampler_options = dict(hposdk_sampler_options or {})
        self._hposdk_lock = threading.Lock()
        self._hposdk_launched = 0
        self._hposdk_duplicates = 0
        super().__init__(*args, **kwargs)
        self._hposdk_mirror = False  # decided in make_study()
        self.hposdk_dists = _optuna.to_optuna(self.hposdk_space)

    # --- the study ---------------------------------------------------------------------------------
    def make_study(self) -> optuna.Study:
        """A new in-memory study with the TPE sampler (one direction per objective) and the pruner,
        warm-started with ``hposdk_history``.

        When the pruner watches something else than the single objective (see
        :meth:`~._strategies.HposdkStrategy.hposdk_prunes_apart`), the study has no pruner and the
        trials are pruned through the shadow study instead.
        """
        # None: the shadow study is made on first use; False: OptunaObjective reports and prunes
        # through the TPE study itself.
        self._hposdk_mirror = None if self.hposdk_prunes_apart() else False
        return self.hposdk_study(make_sampler(self.hposdk_seed, self.hposdk_sampler_options))  # type: ignore[no-any-return]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Exact hposdk params for an Optuna trial (enqueued params come back unchanged)."""
        raw = {name: _suggest(trial, name, dist) for name, dist in self.hposdk_dists.items()}
        return _optuna.decode(self.hposdk_space, raw)

    def enqueue(self, params: Mapping[str, Any]) -> None:
        """Make the next trial of the study use ``params`` (a trial to run again)."""
        self._study.enqueue_trial(_optuna.encode(self.hposdk_space, dict(params)))

    def ask(self) -> tuple[Any, dict[str, Any]] | None:
        """The next Optuna trial and its params, skipping duplicates as ClearML's bridge does.

        Returns None once :data:`MAX_DUPLICATES` proposals in a row were points already taken.
        """
        for _ in range(MAX_DUPLICATES):
            trial = self._study.ask()
            params = self.suggest(trial)
            if _enqueued(trial) or self.hposdk_claim(params):
                return trial, params
            # ClearML's OptunaObjective prunes a repeated point without running it.
            self._study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return None

    # --- the fleet: ClearML's own objective loop, with exact values and a hard budget ---------------
    def start(self) -> None:
        """Run ClearML's Optuna loop (``OptunaObjective``: launch, poll, report, prune) to the budget."""
        self._study = self.make_study()
        for params in self.hposdk_rerun:
            self.enqueue(params)
        self.hposdk_rerun.clear()
        self._objective = _HposdkOptunaObjective(
            base_task_id=self._base_task_id,
            queue_name=self._execution_queue,
            optimizer=self,
            max_iteration_per_job=self.max_iteration_per_job,  # type: ignore[arg-type]
            min_iteration_per_job=self.min_iteration_per_job,
            sleep_interval=int(self.pool_period_minutes * 60),
            # OptunaObjective calls getattr(trial, func)(name=name, **kwargs) per entry: see below.
            config_space={name: ("_hposdk_value", {}) for name in self.hposdk_override(
                {n: None for n in self.hposdk_space.names})},
        )
        if self.total_max_jobs is not None and self.total_max_jobs <= 0:
            return
        self._study.optimize(self._objective.objective, n_trials=None, n_jobs=self._num_concurrent_workers)

    def _hposdk_on_pruned(self, job: Any) -> None:
        # Called from OptunaObjective's poll (monitor_job): the trial ends as PRUNED for Optuna, as
        # ClearML's own pruning does, instead of being told the aborted task's last values.
        if job in self._current_jobs:
            self._current_jobs.remove(job)  # type: ignore[attr-defined]
        raise optuna.TrialPruned(f"hposdk: pruned on {self.hposdk_pruning.get('metric') or 'the objective'}")

    def helper_create_job(self, *args: Any, **kwargs: Any) -> Any:
        # The budget is checked and taken under a lock, right before a job exists: with n_jobs
        # threads, ClearML's n_trials count lets more jobs start than asked (clearml/clearml#873).
        with self._hposdk_lock:
            if self.total_max_jobs is not None and self._hposdk_launched >= self.total_max_jobs:
                self._study.stop()
                raise optuna.TrialPruned("hposdk: the study's n_trials jobs were launched")
            self._hposdk_launched += 1
        return super().helper_create_job(*args, **kwargs)


class _FixedSuggestions:
    """An Optuna trial whose ``_hposdk_value(name)`` returns a precomputed value (for OptunaObjective)."""

    def __init__(self, trial: Any, values: Mapping[str, Any]) -> None:
        self._trial = trial
        self._values = dict(values)

    def _hposdk_value(self, name: str) -> Any:
        return self._values[name]

    def __getattr__(self, item: str) -> Any:
        return getattr(self._trial, item)


class _HposdkOptunaObjective(OptunaObjective):  # type: ignore[misc]
    """ClearML's OptunaObjective (launch, poll, report, prune, #644-safe result), fed exact values."""

    optimizer: HposdkOptuna

    def objective(self, trial: Any) -> Any:
        opt = self.optimizer
        with opt._hposdk_lock:
            if opt.total_max_jobs is not None and opt._hposdk_launched >= opt.total_max_jobs:
                opt._study.stop()
                raise optuna.TrialPruned("hposdk: the study's n_trials jobs were launched")
        params = opt.suggest(trial)
        enqueued = _enqueued(trial)
        with opt._hposdk_lock:
            fresh = enqueued or opt.hposdk_claim(params)
            opt._hposdk_duplicates = 0 if fresh else opt._hposdk_duplicates + 1
            exhausted = opt._hposdk_duplicates >= MAX_DUPLICATES
        if not fresh:
            if exhausted:
                opt._study.stop()  # only repeats left: the space is exhausted
            raise optuna.TrialPruned("hposdk: duplicate parameters")
        proxy: Any = _FixedSuggestions(trial, opt.hposdk_override(params))
        return super().objective(proxy)
