"""ClearML's search strategies, subclassed so that they keep hposdk's semantics.

The same classes serve both executors: on the fleet, ``HyperParameterOptimizer`` drives them
(``process_step``/``start``) and they create real ``ClearmlJob`` clones; on this machine, hposdk's
driver calls their sampling methods directly (``hposdk_next``) and runs the trials itself, so a study
tried locally proposes what the fleet would. What each subclass changes, and why:

* every proposal is decoded to exact hposdk values before it becomes a ``parameter_override``
  (ClearML would send ``0.30000000000000004``, a rounded-off log integer as ``37.2``, ``e**ln(x)``);
* finished trials of an interrupted study are marked taken, so a resumed study does not repeat them
  (ClearML cannot pause or resume, clearml/clearml#738), and trials that never finished are proposed
  again first, with their params;
* random search is seeded per proposal, not through ClearML's one global ``Random(1337)``;
* grid and random search can prune: ClearML prunes only inside OptimizerOptuna, so here a shadow
  Optuna study with the study's pruner sees every trial's reports (``monitor_job`` on the fleet,
  the local driver's reports here) and a pruned trial task is aborted;
* the pruner watches the study's ``pruning_metric`` (its own scalar on the fleet), which need not
  be the first objective. With several objectives, or a pruning metric that is not the first
  objective, TPE prunes through the same shadow study: Optuna cannot prune a multi-objective study
  (optuna/optuna#3450), and ClearML's ``OptunaObjective`` reports only the first objective to its
  pruner (and none with several).

``hposdk_offline=True`` skips ``_validate_base_task`` (a server query) for local use.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from clearml.automation.optimization import GridSearch, RandomSearch

from ...spaces import SearchSpace
from .._optuna import PRUNERS, PrunerPlan
from ._translate import DEFAULT_SECTION, decode, encode, params_key


def make_pruner(name: str | None, options: Mapping[str, Any]) -> Any:
    """An Optuna pruner by hposdk name (``median``...), or Optuna's ``NopPruner`` for None.

    ``options`` are complete: the budget protocol's defaults were added by the backend
    (:class:`~hposdk.backends._optuna.PrunerPlan`), which the kwargs carry as plain data.
    """
    return PrunerPlan(name, dict(options), None).make()


__all__ = ["PRUNERS", "HposdkGridSearch", "HposdkRandomSearch", "HposdkStrategy", "clearml_random", "make_pruner"]


@contextmanager
def clearml_random(material: str) -> Iterator[None]:
    """Seed ClearML's process-wide parameter RNG (``RandomSeed._random``) for one block.

    ClearML draws every ``get_value()`` from one class-level ``Random(1337)``; swapping it for the
    duration of a proposal makes proposal ``k`` of seed ``s`` the same in every process and run.
    """
    from clearml.automation.parameters import RandomSeed

    previous = RandomSeed._random
    RandomSeed._random = random.Random(material)
    try:
        yield
    finally:
        RandomSeed._random = previous


class HposdkStrategy:
    """Mixin for ClearML ``SearchStrategy`` subclasses: exact values, resume, offline use.

    Keyword args (all plain data, so they survive being stored as ClearML optimizer kwargs):
        hposdk_space: ``SearchSpace.to_dict()`` of the searched parameters.
        hposdk_section: the ClearML section of the names (``Args``); None for bare names.
        hposdk_names: full ClearML names of single parameters (``{"n": "Args/num_samples"}``).
        hposdk_seed: the study seed.
        hposdk_study_name: the hposdk study's name, given to the Optuna studies made here, as the
            local backend does: Optuna's HyperbandPruner puts a trial in a bracket by a hash of the
            study name and the trial number, so an unnamed study (a random name) would prune other
            trials on every run, and not the ones the local backend prunes.
        hposdk_taken: params (hposdk names) of trials that finished already: never proposed again.
        hposdk_rerun: params of trials that started but never finished: proposed first.
        hposdk_offline: skip the base-task check (no server; hposdk runs the trials itself).
        hposdk_pruner / hposdk_pruner_options: an Optuna pruner by hposdk name, and its options.
        hposdk_history: finished trials (``params``, ``state``, ``values`` (one per objective, or
            None), ``prune_value`` (the pruning metric's final value), ``reports`` as
            ``[step, pruning metric value]``), for the pruner (and TPE) to know them; their params
            are taken. Entries with only ``value`` (written before several objectives) still work.
        hposdk_objectives: the objectives in order, ``{name: 'min' | 'max'}`` (default: the ClearML
            objective's signs).
        hposdk_pruning: what the pruner watches: ``metric``, ``mode`` (``min``/``max``) and, on the
            fleet, the ClearML scalar ``title``/``series`` (default: the first objective).
    """

    _hyper_parameters: Sequence[Any]

    def __init__(
        self,
        *args: Any,
        hposdk_space: Mapping[str, Any],
        hposdk_section: str | None = DEFAULT_SECTION,
        hposdk_names: Mapping[str, str] | None = None,
        hposdk_seed: int = 0,
        hposdk_study_name: str | None = None,
        hposdk_taken: Sequence[Mapping[str, Any]] = (),
        hposdk_rerun: Sequence[Mapping[str, Any]] = (),
        hposdk_offline: bool = False,
        hposdk_pruner: str | None = None,
        hposdk_pruner_options: Mapping[str, Any] | None = None,
        hposdk_history: Sequence[Mapping[str, Any]] = (),
        hposdk_objectives: Mapping[str, str] | None = None,
        hposdk_pruning: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.hposdk_pruner = hposdk_pruner
        self.hposdk_pruner_options = dict(hposdk_pruner_options or {})
        self.hposdk_history = [dict(h) for h in hposdk_history]
        self.hposdk_objectives = dict(hposdk_objectives or {})
        self.hposdk_pruning = dict(hposdk_pruning or {})
        hposdk_taken = [h["params"] for h in self.hposdk_history] + list(hposdk_taken)
        self.hposdk_space = SearchSpace.from_dict(hposdk_space)
        self.hposdk_section = hposdk_section
        self.hposdk_names = dict(hposdk_names or {})
        self.hposdk_seed = hposdk_seed
        self.hposdk_study_name = hposdk_study_name
        self.hposdk_taken: set[str] = {params_key(self.hposdk_space.validate_params(p)) for p in hposdk_taken}
        self.hposdk_rerun: deque[dict[str, Any]] = deque(self.hposdk_space.validate_params(p) for p in hposdk_rerun)
        self.hposdk_offline = hposdk_offline
        self.hposdk_proposals = len(hposdk_taken) + len(hposdk_rerun)
        self._hposdk_mirror: Any = None
        self._hposdk_watch: dict[str, list[Any]] = {}  # task id -> [optuna trial, last iteration]
        self._hposdk_lock_shadow = threading.Lock()  # TPE on the fleet polls from n_jobs threads
        self._hposdk_prune_scalar: Any = None
        super().__init__(*args, **kwargs)

    def _validate_base_task(self) -> None:
        if self.hposdk_offline:
            self._base_task_name = "hposdk"  # read by helper_create_job for job names
            return
        super()._validate_base_task()  # type: ignore[misc]

    # --- values ----------------------------------------------------------------------------------
    def hposdk_decode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """ClearML values (ClearML names) -> exact hposdk params."""
        return decode(self.hposdk_space, values, self.hposdk_section, self.hposdk_names)

    def hposdk_override(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """hposdk params -> the ``parameter_override`` of a ClearML job."""
        return encode(self.hposdk_space, params, self.hposdk_section, self.hposdk_names)

    def hposdk_claim(self, params: Mapping[str, Any]) -> bool:
        """Mark a point taken; False when it was taken already."""
        key = params_key(params)
        if key in self.hposdk_taken:
            return False
        self.hposdk_taken.add(key)
        return True

    def hposdk_next(self) -> dict[str, Any] | None:
        """The next point to run (hposdk names and values), or None when the strategy is done."""
        if self.hposdk_rerun:
            params = self.hposdk_rerun.popleft()
            self.hposdk_taken.add(params_key(params))
            return params
        return self._hposdk_propose()

    def _hposdk_propose(self) -> dict[str, Any] | None:
        raise NotImplementedError

    # --- an Optuna study of the trials (TPE's own; the pruner's shadow for grid and random) -----------
    def hposdk_directions(self) -> list[str]:
        """``minimize``/``maximize`` per objective, in order."""
        if self.hposdk_objectives:
            return ["minimize" if m == "min" else "maximize" for m in self.hposdk_objectives.values()]
        sign = self._objective_metric.get_objective_sign()  # type: ignore[attr-defined]
        return ["minimize" if s < 0 else "maximize" for s in (sign if isinstance(sign, list) else [sign])]

    def hposdk_prunes_apart(self) -> bool:
        """Whether TPE prunes through the shadow study rather than its own (with a pruner, when the
        study has several objectives or prunes on another metric than its objective). Grid and
        random search always prune through the shadow study."""
        if self.hposdk_pruner is None:
            return False
        if len(self.hposdk_directions()) > 1:
            return True
        metric = self.hposdk_pruning.get("metric")
        return metric is not None and bool(self.hposdk_objectives) and metric != next(iter(self.hposdk_objectives))

    def hposdk_study(self, sampler: Any, pruning: bool = False) -> Any:
        """A new in-memory Optuna study knowing ``hposdk_history``.

        The optimizer's study has one direction per objective and holds the pruner unless it prunes
        apart (:meth:`hposdk_prunes_apart`); ``pruning=True`` gives the pruner's shadow study: one
        direction, the pruning metric's, fed its reports.
        """
        import optuna

        from .. import _optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions: list[Any] = self.hposdk_directions()
        with_pruner = pruning or not self.hposdk_prunes_apart()
        if pruning:
            mode = self.hposdk_pruning.get("mode")
            directions = [directions[0] if mode is None else ("minimize" if mode == "min" else "maximize")]
        study = optuna.create_study(study_name=self.hposdk_study_name, directions=directions, sampler=sampler,
                                    pruner=make_pruner(self.hposdk_pruner if with_pruner else None,
                                                       self.hposdk_pruner_options))
        dists = _optuna.to_optuna(self.hposdk_space)
        ts = optuna.trial.TrialState
        for h in self.hposdk_history:
            state = {"COMPLETE": ts.COMPLETE, "PRUNED": ts.PRUNED}.get(str(h.get("state")), ts.FAIL)
            values = _history_values(h, pruning)
            if state == ts.COMPLETE and (values is None or len(values) != len(directions)):
                state = ts.FAIL  # e.g. a trial of the record without every objective
            study.add_trial(optuna.trial.create_trial(
                params=_optuna.encode(self.hposdk_space, self.hposdk_space.validate_params(h["params"])),
                distributions=dists,
                values=values if state == ts.COMPLETE else None,
                state=state,
                intermediate_values=({int(s): float(v) for s, v in h.get("reports", ())} if with_pruner else {}),
            ))
        return study

    def hposdk_shadow_trial(self, params: Mapping[str, Any]) -> Any:
        """An Optuna trial of the pruner's shadow study for ``params`` (None without a pruner)."""
        if self.hposdk_pruner is None:
            return None
        import optuna

        from .. import _optuna

        with self._hposdk_lock_shadow:  # enqueue + ask must pair up
            if self._hposdk_mirror is None or self._hposdk_mirror is False:
                self._hposdk_mirror = self.hposdk_study(optuna.samplers.RandomSampler(seed=self.hposdk_seed),
                                                        pruning=True)
            self._hposdk_mirror.enqueue_trial(_optuna.encode(self.hposdk_space, dict(params)))
            return self._hposdk_mirror.ask(_optuna.to_optuna(self.hposdk_space))

    def hposdk_prune_scalar(self) -> Any:
        """The ClearML objective of the scalar the pruner watches (``hposdk_pruning`` title/series).

        One of the optimizer's own objectives when it is one (the first by default), else a ClearML
        ``Objective`` of its own.
        """
        if self._hposdk_prune_scalar is None:
            metric = self._objective_metric  # type: ignore[attr-defined]
            objectives = list(getattr(metric, "objectives", None) or [metric])
            found = objectives[0]
            title, series = self.hposdk_pruning.get("title"), self.hposdk_pruning.get("series")
            if title is not None:
                same = [o for o in objectives if (getattr(o, "title", None), getattr(o, "series", None))
                        == (title, series)]
                if same:
                    found = same[0]
                else:
                    from clearml.automation.optimization import Objective

                    found = Objective(title=str(title), series=str(series),
                                      order=self.hposdk_pruning.get("mode") or "min")
            self._hposdk_prune_scalar = found
        return self._hposdk_prune_scalar

    def monitor_job(self, job: Any) -> bool:
        """ClearML's hook, called every poll: report the pruning scalar to the pruner, abort if pruned."""
        if self.hposdk_pruner is None or self._hposdk_mirror is False:
            return bool(super().monitor_job(job))  # type: ignore[misc]
        import optuna

        tid = str(job.task_id())
        with self._hposdk_lock_shadow:
            entry = self._hposdk_watch.get(tid)
        if entry is None:
            override = self._created_jobs_ids.get(tid, (None, None))[1]  # type: ignore[attr-defined]
            if override is None:
                return bool(super().monitor_job(job))  # type: ignore[misc]
            entry = [self.hposdk_shadow_trial(self.hposdk_decode(override)), -1]
            with self._hposdk_lock_shadow:
                self._hposdk_watch[tid] = entry
        otrial = entry[0]
        if otrial is None:  # told already
            return bool(super().monitor_job(job))  # type: ignore[misc]
        scalar = self.hposdk_prune_scalar()
        point = _first(scalar.get_current_raw_objective(job))
        if point is not None and point[0] is not None and point[1] is not None and int(point[0]) > entry[1]:
            entry[1] = int(point[0])
            otrial.report(float(point[1]), int(point[0]))
            floor = getattr(self, "min_iteration_per_job", None)
            if otrial.should_prune() and (not floor or int(point[0]) >= floor):
                job.abort()
                self._hposdk_mirror.tell(otrial, state=optuna.trial.TrialState.PRUNED)
                entry[0] = None
                self._hposdk_on_pruned(job)
                return False
        alive = bool(super().monitor_job(job))  # type: ignore[misc]
        if not alive:
            value = _first(scalar.get_objective(job))
            if value is None:
                self._hposdk_mirror.tell(otrial, state=optuna.trial.TrialState.FAIL)
            else:
                self._hposdk_mirror.tell(otrial, float(value))
            entry[0] = None
        return alive

    def _hposdk_on_pruned(self, job: Any) -> None:
        """The shadow pruner stopped ``job`` (TPE then marks its Optuna trial pruned)."""

    def create_job(self) -> Any:
        """ClearML's hook (``process_step``): a job for :meth:`hposdk_next`, or None when done."""
        params = self.hposdk_next()
        if params is None:
            return None
        return self.helper_create_job(  # type: ignore[attr-defined]
            base_task_id=self._base_task_id,  # type: ignore[attr-defined]
            parameter_override=self.hposdk_override(params),
        )


class HposdkGridSearch(HposdkStrategy, GridSearch):  # type: ignore[misc]
    """ClearML's ``GridSearch`` (``product`` of every ``to_list()``), in ClearML's order.

    Example:
        >>> from hposdk import SearchSpace, Uniform
        >>> from hposdk.backends.clearml._translate import to_clearml
        >>> space = SearchSpace({"x": Uniform(0.1, 0.7, step=0.2)})
        >>> grid = HposdkGridSearch(base_task_id="local", hyper_parameters=to_clearml(space, optimizer="grid"),
        ...     objective_metric=None, execution_queue="", num_concurrent_workers=1,
        ...     hposdk_space=space.to_dict(), hposdk_offline=True)
        >>> [grid.hposdk_next() for _ in range(5)]
        [{'x': 0.1}, {'x': 0.3}, {'x': 0.5}, {'x': 0.7}, None]
    """

    def _hposdk_propose(self) -> dict[str, Any] | None:
        while True:
            try:
                raw = self._next_configuration()  # ClearML's own iterator over to_list()
            except StopIteration:
                return None
            params = self.hposdk_decode(raw)
            if self.hposdk_claim(params):
                return params


class HposdkRandomSearch(HposdkStrategy, RandomSearch):  # type: ignore[misc]
    """ClearML's ``RandomSearch``: every parameter's ``get_value()``, up to 42 tries for a new point.

    Proposal ``k`` draws from ``Random("hposdk-clearml:<seed>:<k>")`` instead of ClearML's global RNG,
    so the same seed gives the same trials here, on the fleet, and after a resume.
    """

    def _hposdk_propose(self) -> dict[str, Any] | None:
        k = self.hposdk_proposals
        self.hposdk_proposals += 1
        with clearml_random(f"hposdk-clearml:{self.hposdk_seed}:{k}"):
            # ClearML's rule (RandomSearch.create_job): _hp_space_cover_samples tries, then "covered".
            for _ in range(self._hp_space_cover_samples):
                raw: dict[str, Any] = {}
                for p in self._hyper_parameters:
                    raw.update(p.get_value())
                params = self.hposdk_decode(raw)
                if self.hposdk_claim(params):
                    return params
        return None


def _first(value: Any) -> Any:
    # ClearML's MultiObjective answers with a list (one entry per objective), Objective with one value.
    return value[0] if isinstance(value, list) and value else (None if isinstance(value, list) else value)


def _history_values(entry: Mapping[str, Any], pruning: bool) -> list[float] | None:
    if pruning:
        value = entry.get("prune_value", entry.get("value"))
        return None if value is None else [float(value)]
    # An entry written before several objectives has only "value".
    values = entry["values"] if "values" in entry else (None if entry.get("value") is None else [entry["value"]])
    return None if values is None else [float(v) for v in values]
