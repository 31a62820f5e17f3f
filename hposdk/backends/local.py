"""The local backend: zero infrastructure, the embedded default.

The engine is an in-memory Optuna study (TPE sampling and the pruners), the durable record is
hposdk's own journal (see ``_record.py``), and trials run in this process (``max_concurrent=1``)
or in a pool of worker processes (``max_concurrent > 1``, a ``trial_timeout``, or
``isolate=True``). Worker processes also contain crashes: a trial whose process dies (segfault,
``os._exit``, out of memory) becomes FAILED and the worker is replaced.

Grid and random proposals come from the space model itself (random is seeded per trial number),
so they are identical on every backend and across resumes; Optuna only records them, which lets
its pruners compare all trials.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .._goals import Goals
from ..exceptions import ConfigError
from ..result import ReportRecord, TrialState
from ..spaces import GridCursor
from ..trial import Report, Trial
from . import _optuna
from ._base import Backend, Capabilities, Outcome, RunSession, StudySpec, check_options, run_objective
from ._optuna import PRUNERS

__all__ = ["LocalBackend", "LocalOptions"]

#: Optimizers that are Optuna samplers (proposals come from the in-memory Optuna study).
SAMPLERS = {
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "nsga2": "NSGAIISampler",
}
#: The Optuna constraint that marks a failed trial (told as the worst value seen, infeasible), and
#: the samplers told so. GP is left out: it models every constraint and needs the same constraints
#: on every trial, so a constraint that appears with the first failure would break it.
FAILED_KEY = "hposdk:failed"
FAILURE_AWARE = ("tpe", "nsga2")
#: How long a worker may take to start (spawn, import the objective) on top of trial_timeout.
WORKER_START_GRACE_S = 120.0
#: Multi-fidelity optimizers run by hpbandster (``hposdk/backends/hpbandster.py``, imported on first use).
HPBANDSTER_OPTIMIZERS = ("bohb", "hyperband")


class LocalOptions(BaseModel):
    """Options of the local backend (``backend_options``).

    Attributes:
        isolate: run trials in worker processes even with ``max_concurrent=1`` (crash isolation).
        start_method: how worker processes start; ``spawn`` is the safe default with threaded
            libraries (PyTorch, Optuna), ``forkserver``/``fork`` start faster.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    isolate: bool = False
    start_method: Literal["spawn", "forkserver", "fork"] = "spawn"


def _uses_processes(spec: StudySpec) -> bool:
    opts = spec.backend_options
    return spec.max_concurrent > 1 or spec.trial_timeout is not None or bool(getattr(opts, "isolate", False))


class LocalBackend(Backend):
    """Runs studies on this machine with grid, random or TPE search and Optuna's pruners."""

    name = "local"
    extra = None
    capabilities = Capabilities(
        optimizers=("grid", "random", *SAMPLERS, *HPBANDSTER_OPTIMIZERS),
        pruners=tuple(PRUNERS),
        parallel=True,
        resume=True,
        budget_optimizers=HPBANDSTER_OPTIMIZERS,
        multi_objective=("grid", "random", "tpe", "nsga2"),
        shared_record=("grid", "random", *SAMPLERS),
        constraint_aware=tuple(SAMPLERS),
        notes="in-process for max_concurrent=1, worker processes otherwise; bohb/hyperband need hposdk[bohb]",
    )
    options_model = LocalOptions

    @classmethod
    def check(cls, spec: StudySpec) -> None:
        super().check(spec)
        if spec.optimizer in HPBANDSTER_OPTIMIZERS:
            from . import hpbandster

            hpbandster.check(spec)
            return
        import optuna

        _optuna.to_optuna(spec.space)  # exact for every parameter type; raises if it were not
        if spec.optimizer == "grid":
            spec.space.grid()  # refuses continuous spaces with a clear message
        if spec.optimizer in SAMPLERS:
            check_options(f"optimizer_options ({spec.optimizer})", spec.optimizer_options,
                          getattr(optuna.samplers, SAMPLERS[spec.optimizer]), {"seed"})
        elif spec.optimizer_options:
            raise ConfigError(
                f"optimizer {spec.optimizer!r} takes no optimizer_options, but got {dict(spec.optimizer_options)}"
            )
        if spec.pruner is not None:
            check_options(f"pruner_options ({spec.pruner})", spec.pruner_options,
                          getattr(optuna.pruners, PRUNERS[spec.pruner]), set())
        elif spec.pruner_options:
            raise ConfigError(f"pruner_options given without a pruner: {dict(spec.pruner_options)}")
        if spec.optimizer_options or spec.pruner is not None:
            # Only given option values can be bad (a sampler's defaults are not): the dry run
            # builds a second engine, which is a tenth of a 100-trial TPE study's cost.
            _dry_run(spec)
        if _uses_processes(spec):
            try:
                pickle.dumps(spec.objective)
            except Exception as exc:  # noqa: BLE001 - any pickling failure means the same fix
                raise ConfigError(
                    "max_concurrent > 1, trial_timeout and isolate=True run trials in worker "
                    "processes, so the objective must be importable by name (a module-level "
                    f"function), but {spec.objective!r} cannot be pickled ({exc}). Fix: define it at "
                    "module level, or use max_concurrent=1 without trial_timeout."
                ) from None

    def run(self, spec: StudySpec, session: RunSession) -> None:
        if spec.optimizer in HPBANDSTER_OPTIMIZERS:
            from . import hpbandster

            hpbandster.run(spec, session)
            return
        engine = _Engine(spec, shared=session.shared)
        engine.restore(session.finished.values())
        driver = _Driver(spec, session, engine)
        if _uses_processes(spec):
            driver.run_pool()
        else:
            driver.run_inline()


# --- the engine: an in-memory Optuna study -----------------------------------------------------


class _Engine:
    """Proposes params and decides pruning; every trial is mirrored into an Optuna study.

    With several objectives the Optuna study is multi-objective (TPE becomes MOTPE, NSGA-II works
    as designed). Optuna cannot prune a multi-objective study (optuna/optuna#3450), so pruning
    then runs on a *shadow* single-objective study that sees the same trials with the declared
    ``pruning_metric``; the sampler's study is told the final outcome only.
    """

    def __init__(self, spec: StudySpec, shared: bool = False) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.spec = spec
        # With a record shared by several drivers, grid points are indexed by trial number (numbers
        # are unique across drivers) and each driver's sampler gets its own seed, so that two
        # drivers' start-up samples differ.
        self.shared = shared
        sampler_seed = spec.seed if not shared else (spec.seed * 1_000_003 + os.getpid()) % 2**31
        self.goals = spec.goals
        self.dists = _optuna.to_optuna(spec.space)
        if spec.optimizer in SAMPLERS:
            cls = getattr(optuna.samplers, SAMPLERS[spec.optimizer])
            sampler: Any = cls(seed=sampler_seed, **dict(spec.optimizer_options))
        else:
            # Grid and random points are enqueued; this sampler is never asked for a value.
            sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        directions: list[Any] = ["minimize" if m == "min" else "maximize" for m in self.goals.objectives.values()]
        self.prune_metric = spec.pruning_metric
        shadow = spec.pruner is not None and (self.goals.multi or self.prune_metric != spec.metric)

        # One budget protocol (see _optuna.PrunerPlan): with a study budget, the successive-halving
        # pruners take their rungs from it and count reports, as Ray's ASHA does.
        self.pruning = _optuna.PrunerPlan.of(spec)
        self._reports: dict[int, int] = {}  # pruning trial number -> reports so far

        # Grid and random search without a pruner need nothing from Optuna: skip the mirror
        # (Optuna's in-memory storage deep-copies trials, most of the per-trial cost).
        self.mirror = spec.optimizer in SAMPLERS or spec.pruner is not None
        # Named after the study: Optuna's HyperbandPruner assigns brackets by hashing the name and trial
        # number, so a random "no-name-<uuid>" would make seeded studies and resumes irreproducible.
        self.study = (
            # No pruner means no pruning (PrunerPlan.make: Optuna's own default is a MedianPruner).
            optuna.create_study(study_name=spec.name, directions=directions, sampler=sampler,
                                pruner=self.pruning.make() if not shadow else optuna.pruners.NopPruner())
            if self.mirror else None
        )
        self.prune_study = None
        self._worst: list[float] | None = None  # per objective, the worst value completed so far
        self._failures_told = False
        if shadow:
            pdir: Any = "minimize" if self.goals.pruning_mode == "min" else "maximize"
            self.prune_study = optuna.create_study(
                study_name=spec.name, direction=pdir, sampler=optuna.samplers.RandomSampler(seed=spec.seed),
                pruner=self.pruning.make())
        self.grid = GridCursor(spec.space)

    def take(self, params: dict[str, Any]) -> None:
        """Never propose ``params`` again (a finished or re-run trial has them)."""
        self.grid.take(params)

    def _track_worst(self, values: list[float]) -> None:
        modes = list(self.goals.objectives.values())
        if self._worst is None:
            self._worst = list(values)
        else:
            self._worst = [max(w, v) if m == "min" else min(w, v) for w, v, m in zip(self._worst, values, modes)]

    def restore(self, finished: Any) -> None:
        """Replay finished trials so the sampler and pruner know them (resume)."""
        ts = self.optuna.trial.TrialState
        for t in sorted(finished, key=lambda t: t.number):
            self.take(t.params)
            if self.study is None:
                continue
            state = {TrialState.COMPLETE: ts.COMPLETE, TrialState.PRUNED: ts.PRUNED}.get(t.state, ts.FAIL)
            values = self.goals.values(t.metrics) if state == ts.COMPLETE else None
            if state == ts.COMPLETE and values is None:
                state = ts.FAIL
            failed_as: dict[str, float] = {}
            if state == ts.COMPLETE and values is not None:
                self._track_worst(values)
            elif state == ts.FAIL and self._worst is not None and self.spec.optimizer in FAILURE_AWARE:
                # As in tell(): a failure is the worst value seen so far, and infeasible.
                state, values, failed_as = ts.COMPLETE, list(self._worst), {FAILED_KEY: 1.0}
                self._failures_told = True
            params = _optuna.encode(self.spec.space, t.params)
            # Samplers (TPE, NSGA-II, GP) read feasibility from the trials' constraints (Optuna 5).
            constraints = ({str(i): _finite(v) for i, v in enumerate(t.constraint_violations)}
                           if t.constraint_violations and state == ts.COMPLETE else {})
            if self._failures_told and state in (ts.COMPLETE, ts.PRUNED):
                constraints = {**constraints, FAILED_KEY: 0.0, **failed_as}
            inter = {step: r.metrics[self.prune_metric] for step, r in zip(self.pruning.steps(t.reports), t.reports)
                     if self.prune_metric in r.metrics}
            self.study.add_trial(
                self.optuna.trial.create_trial(
                    params=params, distributions=self.dists, values=values, state=state,
                    intermediate_values={} if self.prune_study is not None else inter,
                    constraints=constraints or None,
                )
            )
            if self.prune_study is not None:
                pvalue = t.metrics.get(self.prune_metric) if state == ts.COMPLETE else None
                pstate = state if (state != ts.COMPLETE or isinstance(pvalue, (int, float))) else ts.FAIL
                self.prune_study.add_trial(self.optuna.trial.create_trial(
                    params=params, distributions=self.dists, value=pvalue if pstate == ts.COMPLETE else None,
                    state=pstate, intermediate_values=inter))

    def propose(self, number: int) -> dict[str, Any] | None:
        """Params for a new trial (None when a grid is exhausted); samplers propose in :meth:`ask`."""
        if self.spec.optimizer == "random":
            return self.spec.space.sample_for_trial(self.spec.seed, number)
        if self.spec.optimizer == "grid":
            return self.grid.at(number) if self.shared else self.grid.next()
        return {}  # an Optuna sampler chooses

    def ask(self, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Start an Optuna trial with ``params`` fixed (or sampled when empty)."""
        if self.study is None:
            return None, params
        if params:
            self.study.enqueue_trial(_optuna.encode(self.spec.space, params))
        otrial = self.study.ask(self.dists)
        params = _optuna.decode(self.spec.space, otrial.params)
        if self.prune_study is None:
            return otrial, params
        self.prune_study.enqueue_trial(_optuna.encode(self.spec.space, params))
        return (otrial, self.prune_study.ask(self.dists)), params

    def _pruning_trial(self, otrial: Any) -> Any:
        return otrial[1] if isinstance(otrial, tuple) else otrial

    def report(self, otrial: Any, report: Report | ReportRecord) -> None:
        if otrial is None:
            return
        ptrial = self._pruning_trial(otrial)
        count = self._reports[ptrial.number] = self._reports.get(ptrial.number, 0) + 1
        value = report.metrics.get(self.prune_metric)
        if value is not None:
            ptrial.report(value, self.pruning.step(count, report.step))

    def should_prune(self, otrial: Any) -> bool:
        return otrial is not None and bool(self._pruning_trial(otrial).should_prune())

    def tell(self, otrial: Any, outcome: Outcome) -> None:
        if self.study is None:
            return
        ts = self.optuna.trial.TrialState
        main, shadow = otrial if isinstance(otrial, tuple) else (otrial, None)
        self._reports.pop(self._pruning_trial(otrial).number, None)
        if self.goals.constraints and outcome.state is TrialState.COMPLETE:
            # Samplers (TPE, NSGA-II, GP) learn feasibility from these (Optuna 5's set_constraint).
            for i, v in enumerate(self.goals.violations(outcome.metrics)):
                main.set_constraint(str(i), _finite(v))
        values = self.goals.values(outcome.metrics) if outcome.state is TrialState.COMPLETE else None
        if outcome.state is TrialState.COMPLETE and values is not None:
            self._track_worst(values)
            if self._failures_told:
                main.set_constraint(FAILED_KEY, 0.0)
            _optuna.tell(self.study, main, values)
        elif outcome.state is TrialState.PRUNED:
            if self._failures_told:
                main.set_constraint(FAILED_KEY, 0.0)
            _optuna.tell(self.study, main, state=ts.PRUNED)
        elif self._worst is not None and self.spec.optimizer in FAILURE_AWARE:
            # Optuna's samplers ignore FAIL trials, so a region that always fails looks unexplored
            # and TPE keeps going back to it. Told as the worst value seen and infeasible, the
            # failure counts among the bad trials and the sampler moves away from it.
            self._failures_told = True
            main.set_constraint(FAILED_KEY, 1.0)
            _optuna.tell(self.study, main, list(self._worst))
        else:
            _optuna.tell(self.study, main, state=ts.FAIL)
        if shadow is not None:
            pvalue = outcome.metrics.get(self.prune_metric)
            if outcome.state is TrialState.COMPLETE and isinstance(pvalue, (int, float)):
                _optuna.tell(self.prune_study, shadow, float(pvalue))  # type: ignore[union-attr]
            else:
                state = ts.PRUNED if outcome.state is TrialState.PRUNED else ts.FAIL
                _optuna.tell(self.prune_study, shadow, state=state)  # type: ignore[union-attr]


def _dry_run(spec: StudySpec) -> None:
    """Build the engine and ask it once, so that bad option *values* fail now, as a ConfigError,
    instead of in the middle of the study (Optuna checks some at construction, some when used)."""
    import optuna

    try:
        engine = _Engine(spec)
        if engine.study is not None and spec.optimizer in SAMPLERS:
            otrial = engine.study.ask(engine.dists)
            engine.study.tell(otrial, state=optuna.trial.TrialState.FAIL)
    except (TypeError, ValueError) as exc:
        given = {"optimizer_options": dict(spec.optimizer_options), "pruner_options": dict(spec.pruner_options)}
        given = {k: v for k, v in given.items() if v}
        raise ConfigError(
            f"optimizer {spec.optimizer!r}" + (f" with pruner {spec.pruner!r}" if spec.pruner else "")
            + f": Optuna refuses the options {given or '(defaults)'}: {exc}"
        ) from None


def _finite(v: float) -> float:
    # A missing constrained metric is an infinite violation for hposdk; Optuna needs a number.
    return v if math.isfinite(v) else 1e300


# --- the driver: turns proposals into trials, inline or in worker processes --------------------


@dataclass
class _Task:
    number: int
    params: dict[str, Any]
    budget: float | None
    attempt: int
    otrial: Any = None
    started_at: float = 0.0
    deadline: float | None = None


class _LocalTrial(Trial):
    """The in-process Trial: reports go straight to the engine."""

    def __init__(self, task: _Task, driver: _Driver, params: dict[str, Any]) -> None:
        super().__init__(task.number, params, budget=task.budget,
                         workdir=driver.session.trial_path(task.number), study_name=driver.spec.name)
        self._task = task
        self._driver = driver
        self._decision = False

    def _on_report(self, report: Report) -> None:
        self._decision = self._driver.on_report(self._task, report)

    def _should_prune(self) -> bool:
        return self._decision


class _Driver:
    def __init__(self, spec: StudySpec, session: RunSession, engine: _Engine) -> None:
        self.spec = spec
        self.session = session
        self.engine = engine
        self.retries: deque[_Task] = deque()
        self.exhausted = False
        self.budget = spec.budget.max_budget if spec.budget is not None else None
        #: The names a trial can read: what an objective read beyond these is not a parameter.
        self.known = set(spec.space.names) | set(spec.fixed)

    # --- shared logic -------------------------------------------------------------------------
    def next_task(self) -> _Task | None:
        s = self.session
        if s.remaining() <= 0:
            return None
        if self.retries:
            task = self.retries.popleft()
            task.attempt += 1
        elif s.rerun:
            lost = s.rerun.pop(0)
            task = _Task(lost.number, lost.params, lost.budget, lost.attempt)
            self.engine.take(lost.params)
        else:
            if self.exhausted:
                return None
            self.engine.restore(s.poll())  # other drivers' trials (a shared record), so samplers see them
            number = s.claim_number()
            if number is None:  # a shared record's n_trials are all taken by other drivers
                return None
            params = self.engine.propose(number)
            if params is None:
                s.release(number)
                self.exhausted = True
                return None
            task = _Task(number, params, self.budget, 1)
        task.otrial, task.params = self.engine.ask(task.params)
        task.started_at = time.time()
        if self.spec.trial_timeout is not None:
            # Until the worker says the objective started, the clock also allows for a fresh
            # worker's start-up (spawn, importing the objective's module); see _drain.
            task.deadline = time.monotonic() + self.spec.trial_timeout + WORKER_START_GRACE_S
        s.start(task.number, task.params, task.budget, task.attempt)
        return task

    def on_report(self, task: _Task, report: Report | ReportRecord) -> bool:
        self.engine.report(task.otrial, report)
        self.session.report(task.number, report)
        return self.engine.should_prune(task.otrial)

    def on_outcome(self, task: _Task, outcome: Outcome) -> None:
        self.engine.tell(task.otrial, outcome)
        retry = (
            outcome.state is TrialState.FAILED
            and not outcome.config_error
            and task.attempt <= self.spec.retries
            and not self.session.stopping
        )
        if retry:
            self.session.running.pop(task.number, None)
            self.session.journal.note(kind="retry", number=task.number, attempt=task.attempt,
                                      error=(outcome.error or "").strip().splitlines()[-1:])
            self.retries.append(task)
            return
        budget = task.budget
        if self.spec.budget is not None and outcome.state is TrialState.PRUNED and outcome.reports:
            # A stopped trial records the budget it reached (its reports), as on Ray.
            b = self.spec.budget
            budget = float(max(b.min_budget, min(len(outcome.reports), b.max_budget)))
        result = self.session.result_from(task.number, task.params, outcome, budget=budget,
                                          attempt=task.attempt, started_at=task.started_at)
        self.session.finish(result, outcome.accessed, outcome.config_error)

    # --- in this process ----------------------------------------------------------------------
    def run_inline(self) -> None:
        while (task := self.next_task()) is not None:
            trial = _LocalTrial(task, self, self.session.trial_params(task.params))
            outcome = run_objective(self.spec.objective, trial, self.spec.goals)
            outcome.accessed &= self.known
            self.on_outcome(task, outcome)

    # --- in worker processes --------------------------------------------------------------------
    def run_pool(self) -> None:
        opts = self.spec.backend_options
        ctx = multiprocessing.get_context(getattr(opts, "start_method", "spawn"))
        payload = pickle.dumps(self.spec.objective)
        n_workers = max(1, min(self.spec.max_concurrent, self.session.remaining() or 1))
        workers = [_Worker(ctx, payload, self.spec.goals.portable()) for _ in range(n_workers)]
        try:
            self._pool_loop(workers, lambda: _Worker(ctx, payload, self.spec.goals.portable()))
        finally:
            for w in workers:
                w.stop()

    def _pool_loop(self, workers: list[_Worker], new_worker: Callable[[], _Worker]) -> None:
        while True:
            for i, w in enumerate(workers):
                if w.task is None and not self.exhausted:
                    task = self.next_task()
                    if task is None:
                        break
                    if not w.alive():
                        w.stop()
                        workers[i] = w = new_worker()
                    w.assign(task, self.session.trial_dir(task.number), self.session.trial_params(task.params),
                             self.spec.name)
            busy = [w for w in workers if w.task is not None]
            if not busy:
                return
            deadlines = [w.task.deadline for w in busy if w.task is not None and w.task.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout))
            for i, w in enumerate(workers):
                task = w.task
                if task is None:
                    continue
                if w.conn in ready or w.proc.sentinel in ready:
                    finished = self._drain(w, task)
                    if finished:
                        continue
                    if not w.alive():
                        code = w.proc.exitcode
                        msg = f"the trial's worker process died ({_describe_exit(code)})"
                        self.on_outcome(task, _crash_outcome(task, msg))
                        w.task = None
                        workers[i] = new_worker()
                        continue
                if task.deadline is not None and time.monotonic() >= task.deadline:
                    w.kill()
                    msg = f"the trial exceeded trial_timeout={self.spec.trial_timeout}s and was stopped"
                    self.on_outcome(task, _crash_outcome(task, msg))
                    workers[i] = new_worker()

    def _drain(self, w: _Worker, task: _Task) -> bool:
        """Handle every message a worker has sent; True once its trial finished."""
        while True:
            try:
                if not w.conn.poll():
                    return False
                msg = w.conn.recv()
            except (EOFError, OSError):
                w.proc.join(timeout=5)
                return False
            kind = msg[0]
            if kind == "started":
                if self.spec.trial_timeout is not None:
                    task.deadline = time.monotonic() + self.spec.trial_timeout  # the objective's own time
            elif kind == "report":
                rep = msg[1]
                decision = self.on_report(task, rep)
                try:
                    w.conn.send(decision)
                except (BrokenPipeError, OSError):
                    return False
            elif kind == "done":
                outcome: Outcome = msg[1]
                outcome.accessed &= self.known
                w.task = None
                self.on_outcome(task, outcome)
                return True


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _crash_outcome(task: _Task, message: str) -> Outcome:
    return Outcome(TrialState.FAILED, None, {}, message, [], set(), time.time() - task.started_at)


class _Worker:
    """One long-lived worker process running trials sent over a pipe."""

    def __init__(self, ctx: Any, payload: bytes, metric: Goals) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, payload, metric), daemon=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process
            self.proc.start()
        child.close()
        self.task: _Task | None = None

    def alive(self) -> bool:
        return self.proc.is_alive()

    def assign(self, task: _Task, workdir: Any, params: dict[str, Any], study_name: str) -> None:
        self.task = task
        self.conn.send((task.number, params, task.budget, str(workdir), study_name))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()
        self.task = None

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self.conn.send(None)
            self.proc.join(timeout=2)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(timeout=5)
        self.conn.close()


class _WorkerTrial(Trial):
    """The Trial inside a worker process: each report is a round trip to the driver's pruner."""

    def __init__(self, conn: Connection, number: int, params: dict[str, Any], budget: float | None,
                 workdir: str, study_name: str) -> None:
        super().__init__(number, params, budget=budget, workdir=workdir, study_name=study_name)
        self._conn = conn
        self._decision = False

    def _on_report(self, report: Report) -> None:
        self._conn.send(("report", ReportRecord(step=report.step, metrics=report.metrics, time=report.time)))
        self._decision = bool(self._conn.recv())

    def _should_prune(self) -> bool:
        return self._decision


def _worker_main(conn: Connection, payload: bytes, metric: Goals) -> None:
    # Ctrl-C (and a batch scheduler's SIGTERM) reach the whole process group; the driver decides
    # what happens to running trials, so that they are re-run on resume instead of marked FAILED.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    objective = pickle.loads(payload)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        number, params, budget, workdir, study_name = msg
        trial = _WorkerTrial(conn, number, params, budget, workdir, study_name)
        conn.send(("started",))  # trial_timeout counts from here
        outcome = run_objective(objective, trial, metric)
        conn.send(("done", outcome))
