"""The driver side of the Ray backend: one coordinator, seen by Ray as a searcher, a scheduler
wrapper and a callback (all three run in the driver's thread, inside ``Tuner.fit``).

* :class:`HposdkSearcher` proposes every trial. Grid and random points come from the hposdk space
  model (so they equal the local backend's), TPE and BOHB points from Ray's ``OptunaSearch`` /
  ``TuneBOHB`` wrapped inside it. It numbers trials, starts them in the hposdk record, replays
  lost trials first and enforces ``max_concurrent`` (a paused trial stops counting once Tune has
  paused it, so the next trial reuses its actor).
* :class:`SchedulerProxy` hands a Ray scheduler only the objective's reports that carry the study
  metric, and on completion the last such report (never hposdk's outcome report).
* :class:`SyncHyperBand` is Ray's ``HyperBandForBOHB`` running hpbandster's brackets (the ones
  the local backend's BOHB runs), each filled once; it schedules BOHB and the hyperband pruner.
* :class:`RecordCallback` turns Ray's events into the hposdk record: reports, retries, and the
  final :class:`~hposdk.result.TrialResult` (COMPLETE / PRUNED / FAILED).

This module imports Ray; it is imported only when a study runs on the Ray backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray.cloudpickle as cloudpickle
from ray.tune import Callback
from ray.tune.schedulers import HyperBandForBOHB, TrialScheduler
from ray.tune.search import Searcher

from ...result import ReportRecord, TrialResult, TrialState
from ...spaces import GridCursor
from .. import _optuna
from .._base import RunSession, StudySpec
from . import _space
from ._trainable import CONFIG_KEY, OUTCOME_KEY, REPORT_KEY, TIMEOUT_NOTE, TrialFailed

logger = logging.getLogger("hposdk.backends.ray")


@dataclass
class _Task:
    """One hposdk trial as it runs as a Ray trial."""

    trial_id: str
    number: int
    params: dict[str, Any]
    budget: float | None
    attempt: int
    started_at: float
    by_inner: bool  # proposed by the wrapped Ray searcher (which must then be told the result)
    reports: list[ReportRecord] = field(default_factory=list)
    outcome: dict[str, Any] | None = None
    paused: bool = False
    told: set[float] = field(default_factory=set)  # budgets at which BOHB's model has this trial
    iterations: int = 0  # Ray's training_iteration of the latest report (the budget reached)
    ray_time: float | None = None
    scheduler_result: dict[str, Any] | None = None  # the latest result a scheduler saw


class Coordinator:
    """The driver-side state of one run: hposdk session <-> Ray trials."""

    def __init__(self, spec: StudySpec, session: RunSession, inner: Any, experiment_dir: str,
                 cluster: str | None = None, numpy_seed: int | None = None, resumes: bool = False) -> None:
        self.spec = spec
        self.resumes = resumes  # the scheduler pauses trials and resumes them later (Hyperband's)
        # Whether Tune has trials that are not finished (the scheduler proxy updates it every step):
        # the search is held open for them only, whatever this side's bookkeeping says.
        self.ray_trials_unfinished = True
        # BOHB's model draws from numpy's global stream, which Ray and Tune also draw from in this
        # process: its own stream makes a seeded study reproducible (and the local backend's twin).
        self._numpy = None
        if numpy_seed is not None:
            from ..hpbandster import NumpyStream

            self._numpy = NumpyStream(numpy_seed)
        self.cluster = cluster  # the GCS address of the Ray cluster the trials run on
        self.session = session
        self.inner = inner  # OptunaSearch / TuneBOHB, or None for grid and random
        self.experiment_dir = experiment_dir
        self.tasks: dict[str, _Task] = {}
        self.budget = spec.budget.max_budget if spec.budget is not None else None
        self._grid = GridCursor(self.spec.space, [t.params for t in session.finished.values()]
                                + [s.params for s in session.rerun])
        self._names = set(spec.space.names) | set(spec.fixed)
        self._pausing: dict[str, Any] = {}  # trial id -> Ray trial that the scheduler paused

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray pickles the tuner configuration (searcher, scheduler, callbacks) into its
        # experiment directory; the live session is not picklable and not needed there (the
        # hposdk record, not Tuner.restore, is how a study resumes).
        return (_detached, ())

    # --- proposals -----------------------------------------------------------------------------
    def active(self) -> int:
        """Trials holding a slot of ``max_concurrent``: running ones, and paused ones whose actor
        is still saving (see :meth:`pausing`)."""
        return sum(1 for t in self.tasks.values() if not t.paused) + self.pauses_in_flight()

    def pausing(self, trial: Any) -> None:
        """The scheduler PAUSEd ``trial``; its slot stays taken until Tune has paused it.

        Tune pauses a trial by saving it first, on its actor, and caches that actor for reuse only
        once the save is done. A trial started meanwhile gets a new actor (a placement group, and
        often a worker process that is started and killed at once). Under BOHB every rung pauses
        trials: in a measured 368-trial run Tune requested 417 actors and threw 416 away, and
        39 worker processes were started for nothing. Holding the slot until the save is done
        makes the next trial reuse the pausing trial's actor.
        """
        self._pausing[trial.trial_id] = trial

    def pauses_in_flight(self) -> int:
        for trial_id, trial in list(self._pausing.items()):
            if trial.status != "RUNNING":  # paused (or stopped, or failed): its actor is free
                del self._pausing[trial_id]
        return len(self._pausing)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        s = self.session
        if s.stopping:
            return Searcher.FINISHED
        if s.remaining() <= 0:
            # Under a scheduler that pauses and resumes trials, the search is not over for Tune
            # while trials are live: Tune keeps a pausing trial's actor for reuse only while the
            # search goes on, so every trial the last bracket promotes would start a new worker
            # process (the run sets num_samples one higher, so Tune's own count does not end it).
            return None if self.resumes and self.tasks and self.ray_trials_unfinished else Searcher.FINISHED
        if self.active() >= self.spec.max_concurrent:
            return None
        by_inner = False
        attempt = 1
        if s.rerun:
            lost = s.rerun.pop(0)
            number, params, attempt = lost.number, dict(lost.params), lost.attempt
        elif self.spec.optimizer == "grid":
            point = self._next_grid_point()
            if point is None:
                return Searcher.FINISHED
            number, params = s.new_number(), point
        elif self.spec.optimizer == "random":
            number = s.new_number()
            params = self.spec.space.sample_for_trial(self.spec.seed, number)
        else:
            with self._model():
                config = self.inner.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config  # type: ignore[no-any-return]
            params = self._decode_inner(config)
            number, by_inner = s.new_number(), True
        task = _Task(trial_id, number, params, self.budget, attempt, time.time(), by_inner)
        self.tasks[trial_id] = task
        s.start(number, params, task.budget, attempt)
        meta = {"number": number, "budget": task.budget, "workdir": str(s.trial_dir(number).resolve())}
        return {**params, CONFIG_KEY: meta}

    def _next_grid_point(self) -> dict[str, Any] | None:
        return self._grid.next()

    def _model(self) -> contextlib.AbstractContextManager[None]:
        """Around every call into the wrapped searcher's model (BOHB: its own numpy stream)."""
        return self._numpy.active() if self._numpy is not None else contextlib.nullcontext()

    def _decode_inner(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.spec.optimizer == "tpe":
            return _optuna.decode(self.spec.space, config)
        return _space.decode_configspace(self.spec.space, config)

    def _encode_inner(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.spec.optimizer == "tpe":
            return _optuna.encode(self.spec.space, params)
        return _space.encode_configspace(self.spec.space, params)

    def restore_inner(self) -> None:
        """Tell the wrapped searcher about the trials an earlier run finished (resume)."""
        if self.spec.optimizer == "tpe":
            for t in sorted(self.session.finished.values(), key=lambda t: t.number):
                self._tell_tpe_point(t.params, t.state, t.value, t.reports, t.metrics)
        elif self.spec.optimizer == "bohb":
            for t in sorted(self.session.finished.values(), key=lambda t: t.number):
                self._tell_bohb_point(t.params, t.value, t.budget)

    def _tell_tpe_point(self, params: dict[str, Any], state: TrialState, value: float | None,
                        reports: Any, metrics: dict[str, Any] | None = None) -> None:
        goals = self.spec.goals
        if goals.multi:
            # OptunaSearch.add_evaluated_point takes one value; a multi-objective study gets the
            # trial directly (Optuna's own create_trial with all objective values).
            import optuna

            values = goals.values(metrics or {}) if state is TrialState.COMPLETE else None
            ts = optuna.trial.TrialState
            ostate = (ts.COMPLETE if values is not None else
                      ts.PRUNED if state is TrialState.PRUNED else ts.FAIL)
            self.inner._ot_study.add_trial(optuna.trial.create_trial(
                state=ostate, values=values, params=self._encode_inner(params), distributions=self.inner._space))
            return
        inter = [r.metrics[self.spec.metric] for r in reports if self.spec.metric in r.metrics]
        self.inner.add_evaluated_point(
            self._encode_inner(params),
            value if state is TrialState.COMPLETE else None,
            error=state is TrialState.FAILED,
            pruned=state is TrialState.PRUNED,
            intermediate_values=inter or None,
        )

    def _tell_bohb_point(self, params: dict[str, Any], value: float | None, budget: float | None) -> None:
        if value is None or budget is None or not math.isfinite(value):
            return
        from ray.tune.search.bohb.bohb_search import _BOHBJobWrapper

        sign = 1.0 if self.spec.mode == "min" else -1.0
        with self._model():
            self.inner.bohber.new_result(_BOHBJobWrapper(sign * value, budget, self._encode_inner(params)))

    # --- what the searcher hears -----------------------------------------------------------------
    def searcher_result(self, trial_id: str, result: dict[str, Any]) -> None:
        task = self.tasks.get(trial_id)
        if self.inner is not None and task is not None and task.by_inner and self.spec.metric in result:
            budget = (result.get("hyperband_info") or {}).get("budget")
            if budget is not None:
                task.told.add(float(budget))  # TuneBOHB hands it to its model
            with self._model():
                self.inner.on_trial_result(trial_id, result)

    def stopped_at_rung(self, trial_id: str, result: dict[str, Any]) -> None:
        """The scheduler stopped a trial on the report that closed its rung.

        Tune tells a searcher only the results of trials it does not stop (its controller's
        ``_process_trial_result``), so when successive halving stops the last trial to reach a
        rung, BOHB's model would never hear that evaluation; hpbandster's model hears every one
        (in a measured run, 31 of the 456 results below the full budget were missing: about two in
        three rung closings).
        """
        task = self.tasks.get(trial_id)
        budget = (result.get("hyperband_info") or {}).get("budget")
        if self.spec.optimizer == "bohb" and task is not None and budget is not None \
                and float(budget) not in task.told:
            self.searcher_result(trial_id, result)

    def searcher_complete(self, trial_id: str, error: bool) -> None:
        task = self.tasks.get(trial_id)
        if self.inner is None or task is None:
            return
        state, value = self._state_of(task, error)
        if not task.by_inner:
            if self.spec.optimizer == "tpe":
                self._tell_tpe_point(task.params, state, value, task.reports, (task.outcome or {}).get("metrics"))
            elif self.spec.optimizer == "bohb":
                self._tell_bohb_point(task.params, value, float(task.iterations))
            return
        if (self.spec.optimizer == "bohb" and state is TrialState.COMPLETE and self.budget is not None
                and task.iterations >= self.budget and float(task.iterations) not in task.told):
            # HyperBandForBOHB gives BOHB a result only where it decides (the rungs below the
            # full budget); hpbandster's model also learns from full-budget results.
            self._tell_bohb_point(task.params, value, float(task.iterations))
        if state is TrialState.COMPLETE and value is not None:
            metrics = (task.outcome or {}).get("metrics") or {}
            result = {name: metrics.get(name) for name in self.spec.objectives} if self.spec.goals.multi else {}
            self.inner.on_trial_complete(trial_id, result={**result, self.spec.metric: value})
        else:
            # Optuna records a result without a value as PRUNED, or FAIL when error=True.
            self.inner.on_trial_complete(trial_id, result=None, error=state is TrialState.FAILED)

    def pause(self, trial_id: str, paused: bool) -> None:
        task = self.tasks.get(trial_id)
        if task is not None:
            task.paused = paused
        if self.inner is not None and hasattr(self.inner, "on_pause"):
            (self.inner.on_pause if paused else self.inner.on_unpause)(trial_id)

    # --- what the callback hears -----------------------------------------------------------------
    def on_result(self, trial_id: str, result: dict[str, Any]) -> None:
        task = self.tasks.get(trial_id)
        if task is None:
            return
        task.ray_time = result.get("time_total_s", task.ray_time)
        raw = result.get(REPORT_KEY)
        if raw is not None:
            # Counted on the objective's reports only (the outcome report is one more iteration).
            task.iterations = int(result.get("training_iteration", task.iterations) or 0)
            step, metrics, t = json.loads(raw)
            # A trial Ray restarted without a checkpoint reports its steps again; keep the
            # latest run's reports (steps must increase within a trial's record).
            while task.reports and task.reports[-1].step >= step:
                task.reports.pop()
            record = ReportRecord(step=step, metrics=metrics, time=t)
            task.reports.append(record)
            self.session.report(task.number, record)
        outcome = result.get(OUTCOME_KEY)
        if outcome is not None:
            task.outcome = json.loads(outcome)

    def _state_of(self, task: _Task, error: bool) -> tuple[TrialState, float | None]:
        if error:
            return TrialState.FAILED, None
        if task.outcome is not None:
            state = TrialState(task.outcome["state"])
            return state, task.outcome.get("value")
        # Ray stopped the trial before the objective returned: a scheduler's decision.
        last = task.reports[-1].metrics if task.reports else {}
        return TrialState.PRUNED, last.get(self.spec.metric)

    def complete(self, trial: Any) -> None:
        """A Ray trial ended without an error (it returned, or a scheduler stopped it)."""
        task = self.tasks.pop(trial.trial_id, None)
        if task is None:
            return
        state, value = self._state_of(task, error=False)
        out = task.outcome or {}
        metrics = out.get("metrics") or {}
        if not metrics and task.reports:
            metrics = dict(task.reports[-1].metrics)
        if state is TrialState.PRUNED and value is None:
            value = metrics.get(self.spec.metric)
        accessed = set(out["accessed"]) & self._names if "accessed" in out else None
        self._finish(task, trial, state, value, metrics, out.get("error"), out.get("duration_s"),
                     accessed, bool(out.get("config_error")))

    def error(self, trial: Any) -> None:
        """A Ray trial failed for good (after Ray's own retries)."""
        task = self.tasks.pop(trial.trial_id, None)
        if task is None:
            return
        out = _failure_outcome(trial)
        metrics = out.get("metrics") or {}
        self._finish(task, trial, TrialState.FAILED, None, metrics, out.get("error"), out.get("duration_s"),
                     None, False)

    def recover(self, trial: Any) -> None:
        """Ray will retry a failed trial (``FailureConfig.max_failures``): record the failure."""
        task = self.tasks.get(trial.trial_id)
        if task is None:
            return
        error = (_failure_outcome(trial).get("error") or "").strip().splitlines()[-1:]
        s = self.session
        s.running.pop(task.number, None)
        s.journal.note(kind="retry", number=task.number, attempt=task.attempt, error=error)
        task.attempt += 1
        task.outcome = None
        task.reports = []
        task.started_at = time.time()
        s.start(task.number, task.params, task.budget, task.attempt)

    def _finish(self, task: _Task, trial: Any, state: TrialState, value: float | None, metrics: dict[str, Any],
                error: str | None, duration: float | None, accessed: set[str] | None, config_error: bool) -> None:
        budget = task.budget
        if self.spec.optimizer == "bohb" or (self.spec.budget is not None and state is TrialState.PRUNED
                                             and task.iterations > 0):
            # HyperBand-for-BOHB runs one Ray trial per configuration and stops or pauses it at
            # budgets counted in reports, and ASHA/HyperBand stop trials there: the budget a trial
            # reached is its number of reports (the same on the local backend).
            budget = float(task.iterations)
        if duration is None:
            duration = task.ray_time if task.ray_time is not None else time.time() - task.started_at
        info = {"ray_trial_id": task.trial_id, "ray_experiment_dir": self.experiment_dir}
        if self.cluster:
            info["ray_cluster"] = self.cluster
        trial_path = getattr(trial, "path", None)
        if trial_path:
            info["ray_trial_dir"] = str(trial_path)
        result = TrialResult(
            number=task.number,
            params=task.params,
            state=state,
            value=value if state is not TrialState.FAILED else None,
            metrics=metrics,
            reports=tuple(task.reports),
            error=error if state is TrialState.FAILED else None,
            budget=budget,
            attempt=task.attempt,
            started_at=task.started_at,
            duration_s=duration,
            info=info,
        )
        self.session.finish(result, accessed, config_error)


def _detached() -> None:
    return None


def _failure_outcome(trial: Any) -> dict[str, Any]:
    """The hposdk outcome a failed Ray trial raised, or Ray's own error text (e.g. a dead actor)."""
    workdir = (getattr(trial, "config", None) or {}).get(CONFIG_KEY, {}).get("workdir")
    note = os.path.join(workdir, TIMEOUT_NOTE) if workdir else None
    if note and os.path.exists(note):
        # The trial's watchdog ended its worker (trial_timeout, objective blocked in a C call).
        try:
            with open(note, encoding="utf-8") as fh:
                return dict(json.load(fh))
        except (OSError, ValueError):
            pass
    exc = _pickled_error(trial)
    seen = 0
    cur: Any = exc
    while cur is not None and seen < 8:
        for candidate in (cur, getattr(cur, "cause", None)):
            if isinstance(candidate, TrialFailed) and type(candidate) is TrialFailed:
                return candidate.outcome
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
        seen += 1
    if exc is not None:
        return {"error": str(exc)}
    text = None
    path = getattr(trial, "error_file", None)
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            text = None
    return {"error": text or f"Ray trial {trial.trial_id} failed (no error details were recorded)"}


def _pickled_error(trial: Any) -> BaseException | None:
    path = getattr(trial, "pickled_error_file", None)
    if path:
        try:
            with open(path, "rb") as fh:
                return cloudpickle.load(fh)  # type: ignore[no-any-return]
        except Exception:  # noqa: BLE001, S110 - an unreadable file: try Ray's accessor, then the text
            pass
    try:
        return trial.get_pickled_error()  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001
        return None


class HposdkSearcher(Searcher):  # type: ignore[misc]
    """A Ray ``Searcher`` that proposes hposdk trials (see :class:`Coordinator`)."""

    def __init__(self, coordinator: Coordinator) -> None:
        # metric stays None: Ray's strict result check (TuneController._validate_result_metrics)
        # would otherwise reject hposdk's outcome report and reports lacking the metric, which
        # hposdk interprets itself.
        super().__init__(metric=None, mode=None)
        self.coordinator = coordinator

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        # Searcher.FINISHED (a str) is part of Ray's protocol, though its annotation omits it.
        return self.coordinator.suggest(trial_id)  # type: ignore[return-value]

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.coordinator.searcher_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.coordinator.searcher_complete(trial_id, error)

    # HyperBandForBOHB calls these on ``tune_controller.search_alg.searcher`` (hb_bohb.py).
    def on_pause(self, trial_id: str) -> None:
        self.coordinator.pause(trial_id, True)

    def on_unpause(self, trial_id: str) -> None:
        self.coordinator.pause(trial_id, False)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the hposdk record is what a study resumes from."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see :meth:`save`)."""


class SchedulerProxy(TrialScheduler):  # type: ignore[misc]
    """Passes a Ray scheduler the objective's reports only.

    * a report without the study metric is not shown (Ray's HyperBand indexes the metric of
      every live trial's latest result and would raise ``KeyError``);
    * on completion the scheduler gets the trial's last report, never hposdk's outcome report
      (``MedianStoppingRule.on_trial_complete`` keeps whatever it is given and later indexes
      its metric);
    * ``metric`` is None towards Ray's strict result check, for the reason given in
      :class:`HposdkSearcher`.
    """

    def __init__(self, inner: Any, coordinator: Coordinator) -> None:
        super().__init__()
        self.inner = inner
        self.coordinator = coordinator
        self._supports_buffered_results = getattr(inner, "_supports_buffered_results", True)

    @property
    def metric(self) -> None:
        return None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, **spec))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if self.coordinator.spec.metric not in result:
            return str(TrialScheduler.CONTINUE)
        task = self.coordinator.tasks.get(trial.trial_id)
        if task is not None:
            task.scheduler_result = result
        decision = str(self.inner.on_trial_result(tune_controller, trial, result))
        if decision == TrialScheduler.STOP:
            self.coordinator.stopped_at_rung(trial.trial_id, result)
        elif decision == TrialScheduler.PAUSE:
            self.coordinator.pausing(trial)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        task = self.coordinator.tasks.get(trial.trial_id)
        last = task.scheduler_result if task is not None else None
        if last is not None:
            self.inner.on_trial_complete(tune_controller, trial, last)
        else:
            self.inner.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        # Hyperband schedulers resume a promoted trial here whatever else runs: with max_concurrent
        # trials live (a pausing trial stays RUNNING until its save is done), Tune would start it
        # on a new actor, beside them (see Coordinator.pausing). New trials are started by Tune
        # itself, not through this call, and the searcher has already counted them.
        statuses = [t.status for t in tune_controller.get_trials()]
        self.coordinator.ray_trials_unfinished = any(s in ("RUNNING", "PENDING", "PAUSED") for s in statuses)
        if sum(1 for s in statuses if s in ("RUNNING", "PENDING")) >= self.coordinator.spec.max_concurrent:
            return None
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return str(self.inner.debug_string())

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


class SyncHyperBand(HyperBandForBOHB):  # type: ignore[misc]
    """Synchronous Hyperband for ``optimizer='bohb'`` and ``pruner='hyperband'``: Ray's
    ``HyperBandForBOHB`` with hpbandster's brackets, each filled exactly once.

    ``HyperBandForBOHB`` pauses a trial at a rung until its whole bracket has reached it, which
    works with hposdk's one-proposal-at-a-time searcher; Ray's ``HyperBandScheduler`` halves a
    bracket as soon as its *live* trials reached the rung, so with trials proposed one after
    another it stops nothing (30 of 30 trials ran the full budget in a measured run). Two changes
    to ``HyperBandForBOHB``, so that a budget means the same brackets on every backend:

    * A bracket takes new trials until it has had its initial size, never after. Ray asks
      ``bracket.filled()``, which compares the bracket's *live* trials with its *current* size:
      once a bracket has halved and its trials have finished, it looks unfilled again, and every
      later trial joins it at its last rung and runs the full budget -- after the first bracket
      no trial is ever stopped early (ray-project/ray#5775 shows such a bracket: "Max Size (n)=1
      ... TERMINATED: 64").
    * Bracket ``s`` starts ``floor(s_max / (s + 1)) * eta**s`` trials, hpbandster's count (Ray
      rounds up after multiplying: 12 instead of 9 for ``s=2`` with budgets 1..27, eta 3).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        s_max, eta = self._s_max_1, self._eta
        self._get_n0 = lambda s: int(math.floor(s_max / (s + 1)) * eta**s)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        bracket: Any = self._state["bracket"]
        if bracket is not None and len(bracket._all_trials) >= bracket._n0:
            self._state["bracket"] = None  # Ray then opens the next bracket (or band)
        super().on_trial_add(tune_controller, trial)


class RecordCallback(Callback):  # type: ignore[misc]
    """Writes Ray's trial events to the hposdk record through the :class:`Coordinator`."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        # ray.init replaced the Study's SIGTERM handler (Ray's exits with sys.exit, and the core
        # worker's C++ handler aborts the driver). A batch scheduler's SIGTERM must stop the study
        # as cleanly as Ctrl-C: KeyboardInterrupt, the record notes it, running trials are re-run.
        # Tune calls setup in the thread that runs fit, after ray.init; the Study restores its
        # previous handler when optimize returns.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        self.coordinator.on_result(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.coordinator.complete(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.coordinator.error(trial)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.coordinator.recover(trial)


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def trial_name(trial: Any) -> str:
    """Ray trial names carry the hposdk trial number (``trial_00007``)."""
    meta = trial.config.get(CONFIG_KEY, {})
    return f"trial_{meta.get('number', 0):05d}"


def trial_dirname(trial: Any) -> str:
    """Ray trial directories: ``trial_00007_<ray id>``."""
    return f"{trial_name(trial)}_{trial.trial_id}"
