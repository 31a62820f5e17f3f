"""executor='local': ClearML's search strategies choose the trials, hposdk runs them on this machine.

No server is contacted. The strategy objects are the ones the fleet uses (``_strategies.py``,
``_optuna_strategy.py``); instead of letting ``HyperParameterOptimizer`` clone tasks, hposdk's local
driver (``hposdk.backends.local``: in-process, or worker processes for ``max_concurrent > 1``, with
retries, timeouts and crash isolation) asks them for the next point and feeds results back:

* grid: ``GridSearch._next_configuration`` (``itertools.product`` of every ``to_list()``);
* random: every parameter's ``get_value()``, ClearML's 42-tries rule for a new point;
* tpe: the TPE sampler and pruner of ``OptimizerOptuna`` through Optuna's ask/tell, with ClearML's
  rule that a repeated point is pruned without running; trial reports drive the pruner.

With a pruner, grid and random trials are also told to a shadow Optuna study that holds the pruner
(the same as on the fleet, where the strategy's ``monitor_job`` feeds it).

Several objectives: ClearML's list-of-metrics mode (``MultiObjective``, one title/series per
objective) with grid, random and tpe; TPE's Optuna study then has one direction per objective and
is told every objective's value. Pruners watch the study's ``pruning_metric`` (required with a
pruner and several objectives): Optuna cannot prune a multi-objective study (optuna/optuna#3450),
so, as in ``hposdk.backends.local``, a TPE trial is mirrored into the pruner's shadow
single-objective study, fed the pruning metric's reports, whenever the pruning metric is not the
single objective. Constraints are recorded and keep infeasible trials from ``best`` and the Pareto
front; they are not told to the sampler (``Capabilities.constraint_aware`` is empty), so a study
proposes here what it proposes on the fleet, where ClearML's loop never sees them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..._goals import Goals
from ...result import ReportRecord, TrialResult, TrialState
from ...trial import Report
from .. import _optuna
from .._base import Outcome, RunSession, StudySpec
from ..local import _Driver
from ._options import ClearMLOptions, objective_scalars
from ._translate import params_key, to_clearml

__all__ = ["ClearMLEngine", "OfflineRecorder", "make_strategy", "run_local"]


def make_strategy(spec: StudySpec, options: ClearMLOptions, finished: Iterable[TrialResult] = ()) -> Any:
    """The hposdk-flavoured ClearML strategy of ``spec.optimizer``, usable with no server."""
    from clearml.automation.optimization import MultiObjective

    finished = sorted(finished, key=lambda t: t.number)
    goals = spec.goals
    # The budget protocol's rungs and report counting, as on the local backend (_optuna.PrunerPlan).
    plan = _optuna.PrunerPlan.of(spec)
    history = [history_entry(t, goals, plan) for t in finished]
    names, modes = list(goals.objectives), list(goals.objectives.values())
    common: dict[str, Any] = dict(
        base_task_id="hposdk-local",
        hyper_parameters=to_clearml(spec.space, optimizer=spec.optimizer, section=options.section,
                                    names=options.param_names),
        # No scalar is ever read here (hposdk runs the trials): the names stand for the scalars.
        objective_metric=MultiObjective(title=names, series=names, order=modes, extremum=[False] * len(names)),
        execution_queue="",
        num_concurrent_workers=spec.max_concurrent,
        total_max_jobs=spec.n_trials,
        hposdk_space=spec.space.to_dict(),
        hposdk_section=options.section,
        hposdk_names=dict(options.param_names),
        hposdk_seed=spec.seed,
        hposdk_study_name=spec.name,
        hposdk_offline=True,
        hposdk_history=history,
        hposdk_pruner=spec.pruner,
        hposdk_pruner_options=plan.options,
        hposdk_objectives=dict(goals.objectives),
        hposdk_pruning={"metric": spec.pruning_metric, "mode": goals.pruning_mode},
    )
    if spec.optimizer == "grid":
        from ._strategies import HposdkGridSearch

        return HposdkGridSearch(**common)
    if spec.optimizer == "random":
        from ._strategies import HposdkRandomSearch

        return HposdkRandomSearch(**common)
    if spec.optimizer == "tpe":
        from ._optuna_strategy import HposdkOptuna

        return HposdkOptuna(max_iteration_per_job=None, hposdk_sampler_options=dict(spec.optimizer_options),
                            **common)
    raise AssertionError(f"unreachable: optimizer {spec.optimizer!r} was checked")  # pragma: no cover


def history_entry(trial: TrialResult, goals: Goals | str, plan: _optuna.PrunerPlan | None = None) -> dict[str, Any]:
    """A finished trial as the plain data the strategies warm-start from (see ``HposdkStrategy``).

    ``values`` holds every objective's value (None unless the trial completed with all of them);
    ``prune_value`` and ``reports`` are the pruning metric's.
    """
    goals = Goals.single(goals) if isinstance(goals, str) else goals
    prune = goals.pruning_metric or goals.primary
    pvalue = trial.metrics.get(prune)
    complete = trial.state is TrialState.COMPLETE
    steps = plan.steps(trial.reports) if plan is not None else [r.step for r in trial.reports]
    return {
        "params": dict(trial.params),
        "state": str(trial.state),
        "value": trial.value,
        "values": goals.values(trial.metrics) if complete else None,
        "prune_value": float(pvalue) if complete and _number(pvalue) else None,
        "reports": [[step, r.metrics[prune]] for step, r in zip(steps, trial.reports) if prune in r.metrics],
    }


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class _Handle:
    """The Optuna trials of one hposdk trial: TPE's (None for grid/random) and the pruner's."""

    main: Any = None
    prune: Any = None
    reports: int = 0  # so far (the pruner's step under the budget protocol)


class ClearMLEngine:
    """The engine interface of ``hposdk.backends.local._Driver``, backed by a ClearML strategy."""

    def __init__(self, spec: StudySpec, options: ClearMLOptions, finished: Iterable[TrialResult] = ()) -> None:
        self.spec = spec
        self.goals = spec.goals
        self.prune_metric = spec.pruning_metric
        self.pruning = _optuna.PrunerPlan.of(spec)
        self.strategy = make_strategy(spec, options, finished)
        self.tpe = spec.optimizer == "tpe"
        self._pending: dict[str, Any] = {}
        import optuna

        self.optuna = optuna
        self.study: Any = None
        if self.tpe:
            self.study = self.strategy._study = self.strategy.make_study()

    def take(self, params: dict[str, Any]) -> None:
        """Never propose ``params`` again (the driver re-runs a lost trial with them)."""
        self.strategy.hposdk_taken.add(params_key(params))

    def restore(self, finished: Any) -> None:
        """Finished trials were given to the strategy when it was built (nothing more to do)."""

    def propose(self, number: int) -> dict[str, Any] | None:
        """The strategy's next point (None when it is done: grid exhausted, space covered)."""
        if not self.tpe:
            params: dict[str, Any] | None = self.strategy.hposdk_next()
            return params
        asked = self.strategy.ask()
        if asked is None:
            return None
        otrial, params = asked
        self._pending[params_key(params)] = otrial
        return params

    def ask(self, params: dict[str, Any]) -> tuple[_Handle, dict[str, Any]]:
        """The Optuna trials of a proposal (a re-run trial is enqueued with its params first)."""
        if not self.tpe:
            # With a pruner, grid/random trials live in the pruner's shadow study (None without one).
            return _Handle(prune=self.strategy.hposdk_shadow_trial(params)), params
        otrial = self._pending.pop(params_key(params), None)
        if otrial is None:  # a trial that never finished, run again with the same params
            self.strategy.enqueue(params)
            otrial, params = self.strategy.ask()
        if self.spec.pruner is None:
            return _Handle(main=otrial), params
        if self.strategy.hposdk_prunes_apart():
            return _Handle(main=otrial, prune=self.strategy.hposdk_shadow_trial(params)), params
        return _Handle(main=otrial, prune=otrial), params

    def report(self, handle: _Handle, report: Report | ReportRecord) -> None:
        handle.reports += 1
        value = report.metrics.get(self.prune_metric)
        if handle.prune is not None and value is not None:
            handle.prune.report(value, self.pruning.step(handle.reports, report.step))

    def should_prune(self, handle: _Handle) -> bool:
        return bool(handle.prune.should_prune()) if handle.prune is not None else False

    def tell(self, handle: _Handle, outcome: Outcome) -> None:
        ts = self.optuna.trial.TrialState
        complete = outcome.state is TrialState.COMPLETE
        if handle.main is not None:
            values = self.goals.values(outcome.metrics) if complete else None
            if values is not None:
                self.strategy._study.tell(handle.main, values)
            else:
                self.strategy._study.tell(handle.main, state=ts.PRUNED if outcome.state is TrialState.PRUNED
                                          else ts.FAIL)
        if handle.prune is not None and handle.prune is not handle.main:
            pvalue = outcome.metrics.get(self.prune_metric)
            mirror = self.strategy._hposdk_mirror
            if complete and _number(pvalue):
                mirror.tell(handle.prune, float(pvalue))
            else:
                mirror.tell(handle.prune, state=ts.PRUNED if outcome.state is TrialState.PRUNED else ts.FAIL)


class _RecordingDriver(_Driver):
    """The local driver, also handing every finished trial to the offline recorder."""

    recorder: OfflineRecorder | None = None

    def on_outcome(self, task: Any, outcome: Outcome) -> None:
        super().on_outcome(task, outcome)
        result = self.session.finished.get(task.number)
        if self.recorder is not None and result is not None and result.attempt == task.attempt:
            self.recorder.submit(result)


def run_local(spec: StudySpec, session: RunSession, options: ClearMLOptions) -> None:
    """Run the study on this machine (see the module docstring)."""
    engine = ClearMLEngine(spec, options, session.finished.values())
    driver = _RecordingDriver(spec, session, engine)  # type: ignore[arg-type] # duck-typed engine
    recorder = OfflineRecorder(spec, options) if options.record_offline else None
    driver.recorder = recorder
    try:
        if spec.max_concurrent > 1 or spec.trial_timeout is not None or options.isolate:
            driver.run_pool()
        else:
            driver.run_inline()
    finally:
        if recorder is not None:
            sessions = recorder.close()
            session.journal.note(kind="clearml_offline_sessions", sessions=sessions)


# --- optional: every trial as a ClearML offline session, written off the critical path ------------


class OfflineRecorder:
    """A background process that records finished trials as ClearML offline sessions.

    ClearML's offline ``Task.close()`` waits ~11 s for its reporter subprocess, and ``Task.init``
    hooks process-wide state (atexit, signals); a separate process keeps both away from the
    trials. Trials are sent as JSON lines; :meth:`close` waits for the sessions to be written.
    """

    def __init__(self, spec: StudySpec, options: ClearMLOptions) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "hposdk.backends.clearml._offline"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "CLEARML_OFFLINE_MODE": "1"},
        )
        scalars = objective_scalars(list(spec.objectives), options)
        self._header = {
            "study": spec.name, "project": options.project, "section": options.section,
            "names": dict(options.param_names),
            "metric": spec.metric, "title": scalars[spec.metric][0], "series": scalars[spec.metric][1],
            "scalars": {k: list(v) for k, v in scalars.items()},
        }
        self._sessions: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._send(self._header)

    def _send(self, payload: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(payload) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the recorder died; trials are unaffected (the hposdk record is the source of truth)

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.startswith("session "):
                self._sessions.append(line[len("session "):].strip())

    def submit(self, result: TrialResult) -> None:
        """Queue one finished trial (returns at once)."""
        self._send({"trial": json.loads(result.model_dump_json())})

    def close(self, timeout: float = 120.0) -> list[str]:
        """Finish writing and return the session folders written."""
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._reader.join(timeout=5)
        return list(self._sessions)
