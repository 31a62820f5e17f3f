"""executor='remote': ClearML's HyperParameterOptimizer clones a base task per trial for ClearML agents.

The seed setup, as plain data: the arguments of ``HyperParameterOptimizer(...)`` come from one pure
function (:func:`build_optimizer_kwargs`, checked against the installed signatures in the tests);
the optimizer classes are the hposdk subclasses of ClearML's strategies; the job class is a
``ClearmlJob`` subclass that tells this process when a trial task is created and when it stops, so
every trial is written to the hposdk study record (number, params, ClearML task id, result) as it
happens. That record is what makes a study resumable (ClearML cannot pause or resume,
clearml/clearml#738): finished trials are marked taken, unfinished ones are adopted if their task
still exists (a trial that completed while the controller was down is collected, not re-run) or
proposed again with the same params.

Several objectives use ClearML's list-of-metrics mode: ``objective_metric_title``/``series``/``sign``
are lists, one entry per objective (:func:`~._options.objective_scalars`: the scalar
``<name>``/``<name>`` that hposdk's agent reports, or the lists given as
``objective_title``/``objective_series``). ClearML 2.1.12 accepts those lists only when
``optimizer_class`` is ``OptimizerOptuna`` itself, although its strategies read objectives through
``MultiObjective`` whatever they are; :func:`make_hyper_parameter_optimizer` works around that. A
trial's objectives come back from the agent's exact record (every metric, composites included, as
the agent computes them), or, on an existing task, from each objective's scalar.

Everything that talks to a server goes through :class:`FleetIO`, so the controller loop
(:func:`run_fleet`) is exercised in the tests with an in-memory fleet.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..._record import read_record
from ...exceptions import ConfigError, UnsupportedError
from ...result import ReportRecord, TrialResult, TrialState
from ...spaces import SearchSpace
from .. import _optuna
from .._base import Outcome, RunSession, StudySpec
from ._agent import HPOSDK_SECTION, OUTCOME_CONFIG, STUDY_CONFIG
from ._options import ClearMLOptions, create_module_task, objective_scalars
from ._translate import clearml_name, decode, params_key, to_clearml

__all__ = [
    "FleetIO",
    "build_optimizer_kwargs",
    "check_remote",
    "check_server",
    "make_hyper_parameter_optimizer",
    "outcome_from_scalars",
    "run_fleet",
    "run_remote",
    "study_document",
]

# --- checks before anything is sent ------------------------------------------------------------


def check_remote(spec: StudySpec, opts: ClearMLOptions) -> None:
    """Refuse what executor='remote' cannot do with ``spec`` (before any server call)."""
    if spec.retries:
        raise UnsupportedError(
            f"backend 'clearml' (executor='remote'): retries={spec.retries} is not supported; ClearML's "
            "optimizer never re-runs a failed task. Fix: retries=0, or executor='local'."
        )
    if opts.base_task_id is None and spec.objective_ref is None:
        raise ConfigError(
            "backend 'clearml' (executor='remote'): agents import the objective by name, but it has no import "
            "path (defined in __main__ or a closure?). Fix: make it a module-level function of an installed "
            "module, or give backend_options.base_task_id of an existing ClearML task."
        )
    if opts.controller == "remote" and spec.objective_ref is None:
        raise ConfigError("backend 'clearml': controller='remote' re-creates the study on a services agent, so the "
                          "objective needs an import path 'module:function'")
    goals = spec.goals
    if opts.controller == "remote" and any(c.fn is not None for c in goals.constraints):
        raise ConfigError(
            "backend 'clearml': controller='remote' re-creates the study on a services agent from plain data, so "
            f"constraints must be text like 'size_mb <= 700', but {[c.text for c in goals.constraints if c.fn]} "
            "are callables. Fix: write them as text, or controller='local'."
        )
    if opts.base_task_id is not None and goals.composites:
        raise ConfigError(
            f"backend 'clearml' (executor='remote'): composites {sorted(goals.composites)} are computed by hposdk's "
            f"runner inside the trial task, but base_task_id={opts.base_task_id!r} is an existing task that does not "
            "run it (ClearML would read a scalar nobody reports). Fix: leave base_task_id out (hposdk creates a base "
            "task running the objective), or report the combined metric from the task and optimise it by name."
        )
    if spec.optimizer in ("grid", "random") and opts.min_iteration_per_job is not None:
        raise ConfigError(f"backend_options.min_iteration_per_job only applies to optimizer='tpe' (pruning); "
                          f"ClearML's {spec.optimizer} search ignores it")
    if spec.optimizer == "bohb" and (opts.min_iteration_per_job or opts.max_iteration_per_job):
        raise ConfigError("optimizer='bohb': the iteration budgets come from the study's `budget` "
                          "(min_budget, max_budget); remove min/max_iteration_per_job")
    if opts.base_task_id is None:
        try:
            json.dumps(dict(spec.fixed))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"backend 'clearml': fixed values must be JSON data to reach the agents ({exc})"
            ) from None


def check_server(timeout: float) -> str:
    """The configured API server, after a short connection check (ClearML itself retries for minutes).

    Raises:
        ConfigError: no server configured, offline mode, or no answer within ``timeout`` seconds.
    """
    if (os.environ.get("CLEARML_OFFLINE_MODE") or "").strip().lower() in ("1", "true", "yes", "on"):
        raise ConfigError("backend 'clearml': executor='remote' needs a ClearML server, but CLEARML_OFFLINE_MODE "
                          "is set. Fix: unset it, or use backend_options.executor='local'.")
    host = os.environ.get("CLEARML_API_HOST")
    if not host:
        from clearml.config import config_obj

        host = config_obj.get("api.api_server", None)
    if not host:
        raise ConfigError("backend 'clearml': executor='remote' needs a ClearML server; none is configured "
                          "(set CLEARML_API_HOST and credentials, or run `clearml-init`), or use executor='local'.")
    url = host.rstrip("/") + "/debug.ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the configured server
            resp.read(256)
    except urllib.error.HTTPError:
        pass  # the server answered (an auth or method error still proves it is up)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(f"backend 'clearml': the ClearML server {host} did not answer within {timeout:g}s "
                          f"({exc}). Check CLEARML_API_HOST / clearml.conf, or use executor='local'.") from None
    return str(host)


# --- the arguments of HyperParameterOptimizer, as plain data ----------------------------------------


def optimizer_class(optimizer: str) -> type:
    """The hposdk subclass of ClearML's strategy for ``optimizer``."""
    if optimizer == "grid":
        from ._strategies import HposdkGridSearch

        return HposdkGridSearch
    if optimizer == "random":
        from ._strategies import HposdkRandomSearch

        return HposdkRandomSearch
    if optimizer == "tpe":
        from ._optuna_strategy import HposdkOptuna

        return HposdkOptuna
    if optimizer == "bohb":
        from ._bohb import HposdkBOHB

        return HposdkBOHB
    raise ConfigError(f"backend 'clearml' has no optimizer {optimizer!r}")


def make_hyper_parameter_optimizer(kwargs: Mapping[str, Any]) -> Any:
    """``HyperParameterOptimizer(**kwargs)``, with lists of objectives for hposdk's strategies too.

    ClearML 2.1.12 takes one title/series/sign per objective as lists, but refuses them unless
    ``optimizer_class`` is ``OptimizerOptuna`` itself (``optimizer_class != OptimizerOptuna``):
    not its subclass ``HposdkOptuna``, not a strategy instance, not grid or random search, although
    every strategy reads its objective through ``MultiObjective``, which handles lists (grid and
    random search never read it to choose points). With several objectives the optimizer is
    therefore built with the first one and then given ClearML's ``MultiObjective`` of all of them
    (a strategy instance keeps the one it was built with), so that its strategy, its reports and
    its top-k selection see every objective.
    """
    from clearml.automation import HyperParameterOptimizer
    from clearml.automation.optimization import MultiObjective

    titles = kwargs["objective_metric_title"]
    if isinstance(titles, str):
        return HyperParameterOptimizer(**kwargs)
    series, signs = list(kwargs["objective_metric_series"]), list(kwargs["objective_metric_sign"])
    titles = list(titles)
    if not len(titles) == len(series) == len(signs) or not titles:
        raise ConfigError(f"objective_metric_title/series/sign need one entry per objective, but got {titles}, "
                          f"{series}, {signs}")
    first = {**kwargs, "objective_metric_title": titles[0], "objective_metric_series": series[0],
             "objective_metric_sign": signs[0]}
    hpo: Any = HyperParameterOptimizer(**first)
    if isinstance(kwargs.get("optimizer_class"), type):
        hpo.optimizer._objective_metric = MultiObjective(
            title=titles, series=series, order=["min" if s.startswith("min") else "max" for s in signs],
            extremum=[s.endswith("_global") for s in signs])
    hpo._objective_metric = hpo.optimizer._objective_metric
    return hpo


def build_optimizer_kwargs(
    spec: StudySpec,
    opts: ClearMLOptions,
    *,
    base_task_id: str,
    n_jobs: int,
    finished: Sequence[TrialResult] = (),
    rerun: Sequence[Mapping[str, Any]] = (),
    running: Sequence[Mapping[str, Any]] = (),
    hposdk_created: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of ``HyperParameterOptimizer(...)`` for a study (a pure function).

    Args:
        spec: the validated study.
        opts: the backend options.
        base_task_id: the task (or pipeline) cloned per trial.
        n_jobs: how many trial tasks to launch (``total_max_jobs``).
        finished: trials of the hposdk record that finished (not proposed again; TPE warm start).
        rerun: params of trials that started but never finished (proposed first).
        running: params of trials of an earlier run still running on the fleet (not proposed).
        hposdk_created: the base task runs the hposdk agent (it then also receives each trial's
            number and BOHB budget under the ``hposdk/`` section).

    Returns:
        The arguments; those ``HyperParameterOptimizer`` does not name go to the optimizer class.
    """
    from ._local import history_entry

    # Only the searched parameters: a user's base task keeps its own values for everything else (the
    # study's `fixed` values are for the hposdk objective, which a created base task receives whole).
    hyper = to_clearml(spec.space, optimizer=spec.optimizer, section=opts.section, names=opts.param_names)
    goals = spec.goals
    scalars = objective_scalars(list(goals.objectives), opts)
    extremum = "_global" if opts.objective_extremum else ""
    titles = [t for t, _ in scalars.values()]
    series = [s for _, s in scalars.values()]
    signs = [mode + extremum for mode in goals.objectives.values()]
    prune_title, prune_series = scalars.get(spec.pruning_metric, (spec.pruning_metric, spec.pruning_metric))
    kwargs: dict[str, Any] = dict(
        base_task_id=base_task_id,
        hyper_parameters=hyper,
        # One objective: strings, as ClearML documents it; several: ClearML's lists, one per objective.
        objective_metric_title=titles if goals.multi else titles[0],
        objective_metric_series=series if goals.multi else series[0],
        objective_metric_sign=signs if goals.multi else signs[0],
        optimizer_class=optimizer_class(spec.optimizer),
        max_number_of_concurrent_tasks=spec.max_concurrent,
        execution_queue=opts.queue,
        optimization_time_limit=opts.time_limit_min,
        compute_time_limit=opts.compute_time_limit_min,
        # hposdk records the study itself; ClearML's auto-connect would store the optimizer kwargs
        # as strings on the task and cast them back on a remote run.
        auto_connect_task=False,
        always_create_task=False,
        spawn_project=opts.spawn_project,
        save_top_k_tasks_only=opts.save_top_k_tasks_only,
        # --- the optimizer class's own arguments
        total_max_jobs=n_jobs,
        pool_period_min=opts.pool_period_min,
        time_limit_per_job=spec.trial_timeout / 60.0 if spec.trial_timeout else None,
        max_iteration_per_job=opts.max_iteration_per_job,
        hposdk_space=spec.space.to_dict(),
        hposdk_section=opts.section,
        hposdk_names=dict(opts.param_names),
        hposdk_seed=spec.seed,
        hposdk_study_name=spec.name,
        hposdk_rerun=[dict(p) for p in rerun],
    )
    done = sorted(finished, key=lambda t: t.number)
    kwargs.update(
        hposdk_history=[history_entry(t, goals) for t in done],
        hposdk_taken=[dict(p) for p in running],
        hposdk_pruner=spec.pruner,
        # The budget's rungs, as on the local backend (steps here are ClearML iterations, see docs).
        hposdk_pruner_options=_optuna.PrunerPlan.of(spec).options,
        hposdk_objectives=dict(goals.objectives),
        hposdk_pruning={"metric": spec.pruning_metric, "mode": goals.pruning_mode, "title": prune_title,
                        "series": prune_series},
    )
    if spec.optimizer == "tpe":
        kwargs.update(
            min_iteration_per_job=opts.min_iteration_per_job,
            hposdk_sampler_options=dict(spec.optimizer_options),
        )
    if spec.optimizer == "bohb":
        assert spec.budget is not None  # checked by ClearMLBackend.check
        kwargs.update(
            max_iteration_per_job=spec.budget.max_budget,
            min_iteration_per_job=spec.budget.min_budget,
            eta=spec.budget.eta,
            local_port=opts.bohb_port,
            hposdk_budget_param=f"{HPOSDK_SECTION}/budget" if hposdk_created else None,
            **dict(spec.optimizer_options),
        )
    return kwargs


def study_document(spec: StudySpec, opts: ClearMLOptions) -> dict[str, Any]:
    """What the agent runner needs to run a trial of ``spec`` (stored on a created base task).

    The goals travel as plain data (``_agent.study_goals`` reads them back): the objectives, the
    composites (computed on the agent, so their scalars exist for ClearML), the text constraints
    (callables stay with the controller, which evaluates every constraint when it records the
    trial) and each objective's scalar. ``metric``/``mode``/``title``/``series`` are the first
    objective's.
    """
    goals = spec.goals.portable()
    scalars = objective_scalars(list(goals.objectives), opts)
    return {
        "name": spec.name,
        "objective": spec.objective_ref,
        "space": spec.space.to_dict(),
        "metric": spec.metric,
        "mode": spec.mode,
        **goals.to_dict(),  # objectives, composites, text constraints, pruning_metric (_agent.study_goals)
        # trial.budget of optimizers that do not set one per job (all but BOHB): the study's max_budget.
        "budget": spec.budget.max_budget if spec.budget is not None else None,
        "fixed": dict(spec.fixed),
        "section": opts.section,
        "names": dict(opts.param_names),
        "title": scalars[spec.metric][0],
        "series": scalars[spec.metric][1],
        "scalars": {k: list(v) for k, v in scalars.items()},
    }


def base_task_defaults(space: SearchSpace) -> dict[str, Any]:
    """A valid value per parameter for the created base task's section (its grid's first, or low)."""
    out: dict[str, Any] = {}
    for name, p in space.items():
        out[name] = p.grid()[0] if p.is_finite else p.canonicalize(p.low)  # type: ignore[union-attr]
    return out


# --- the bridge from ClearML's optimizer threads to the session (driver thread) ----------------------


@dataclass
class _Event:
    kind: str  # created | stopped | launch_failed
    job: Any


@dataclass
class FleetLink:
    """Shared by the job class (ClearML's threads) and the controller loop (this thread)."""

    spec: StudySpec
    opts: ClearMLOptions
    session: RunSession
    hposdk_created: bool
    reruns: dict[str, Any] = field(default_factory=dict)  # params key -> Started
    events: queue.Queue[_Event] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: bool = False
    #: Set on Ctrl-C/SIGTERM: running trial tasks are left to finish on the fleet (ClearML's
    #: HyperParameterOptimizer.stop would abort them); a resumed study collects them.
    detach: bool = False

    def allocate(self, params: Mapping[str, Any]) -> tuple[int, int]:
        """The hposdk (number, attempt) of a new trial task (a re-run keeps its number)."""
        with self.lock:
            lost = self.reruns.pop(params_key(params), None)
            if lost is not None:
                return lost.number, lost.attempt
            # Only ClearML's threads allocate, always under this lock; the driver thread never does.
            return self.session.new_number(), 1


class FleetJob:
    """Mixin over ``ClearmlJob``: reports creation and the end of each trial task to :class:`FleetLink`."""

    hposdk_link: ClassVar[FleetLink]

    def __init__(self, *args: Any, parameter_override: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        link = self.hposdk_link
        override = dict(parameter_override or {})
        self.hposdk_params = decode(link.spec.space, override, link.opts.section, link.opts.param_names)
        budget = override.get(f"{HPOSDK_SECTION}/budget")
        if budget is None and link.spec.budget is not None:
            budget = link.spec.budget.max_budget  # one protocol: optimizers without rungs give max_budget
        self.hposdk_budget = float(budget) if budget is not None else None
        self.hposdk_number, self.hposdk_attempt = link.allocate(self.hposdk_params)
        if link.hposdk_created:
            override[f"{HPOSDK_SECTION}/number"] = self.hposdk_number
        self.hposdk_abort_reason: str | None = None
        self.hposdk_reported = False
        self.hposdk_started_at = time.time()
        super().__init__(*args, parameter_override=override, **kwargs)  # type: ignore[call-arg]
        link.events.put(_Event("created", self))

    def launch(self, queue_name: str | None = None) -> bool:
        ok = bool(super().launch(queue_name))  # type: ignore[misc]
        if not ok:
            self._hposdk_end("launch_failed")
        return ok

    def abort(self) -> None:
        link = self.hposdk_link
        if link.detach:
            return
        if self.hposdk_abort_reason is None:
            limit = link.spec.trial_timeout
            if link.stopping:
                self.hposdk_abort_reason = "stopping"
            elif limit is not None and self.elapsed() >= limit:  # type: ignore[attr-defined]
                self.hposdk_abort_reason = "timeout"
            elif link.spec.pruner is not None and not self._at_iteration_budget():
                self.hposdk_abort_reason = "pruned"
            else:
                self.hposdk_abort_reason = "budget"
        super().abort()  # type: ignore[misc]

    def _at_iteration_budget(self) -> bool:
        cap = self.hposdk_link.opts.max_iteration_per_job
        if cap is None:
            return False
        try:
            return int(self.iterations()) >= cap  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a failed status query only loses the distinction
            return False

    def is_stopped(self, *args: Any, **kwargs: Any) -> bool:
        stopped = bool(super().is_stopped(*args, **kwargs))  # type: ignore[misc]
        if stopped:
            self._hposdk_end("stopped")
        return stopped

    def _hposdk_end(self, kind: str) -> None:
        if not self.hposdk_reported:
            self.hposdk_reported = True
            self.hposdk_link.events.put(_Event(kind, self))


# --- the server side, behind one seam ----------------------------------------------------------------


class FleetIO:
    """Every server interaction of the fleet executor (tests replace it with an in-memory fleet)."""

    def check(self, opts: ClearMLOptions) -> None:
        """Fail fast when the server is unreachable."""
        check_server(opts.server_check_timeout_s)

    def controller_task(self, spec: StudySpec, opts: ClearMLOptions) -> Any:
        """The optimizer task of this process (the running one on a services agent)."""
        from clearml import Task

        task: Any = Task.current_task()
        if task is None:
            task = Task.init(project_name=opts.project, task_name=f"HPO: {spec.name}",
                             task_type=Task.TaskTypes.optimizer, reuse_last_task_id=False,
                             auto_connect_arg_parser=False, auto_connect_frameworks=False)
            task.set_configuration_object(STUDY_CONFIG, config_text=json.dumps(study_document(spec, opts)),
                                          config_type="json")
        return task

    def create_base_task(self, spec: StudySpec, opts: ClearMLOptions) -> str:
        """A draft task that runs the agent runner with this study (what agents clone per trial)."""
        from clearml import Task

        task: Any = create_module_task(Task, opts, f"{spec.name}: trial", "training",
                                       "hposdk.backends.clearml._agent")
        values = base_task_defaults(spec.space)
        params: dict[str, Any] = {clearml_name(k, opts.section, opts.param_names): ("" if v is None else v)
                                  for k, v in values.items()}
        params.update({f"{HPOSDK_SECTION}/number": "", f"{HPOSDK_SECTION}/budget": ""})
        task.set_parameters(params)
        task.set_configuration_object(STUDY_CONFIG, config_text=json.dumps(study_document(spec, opts)),
                                      config_type="json")
        return str(task.id)

    def make_optimizer(self, kwargs: dict[str, Any]) -> Any:
        """``HyperParameterOptimizer(**kwargs)`` (see :func:`make_hyper_parameter_optimizer`)."""
        return make_hyper_parameter_optimizer(kwargs)

    def job_base(self) -> type:
        """The job class the fleet job class extends."""
        from clearml.automation.job import ClearmlJob

        return ClearmlJob  # type: ignore[no-any-return]

    def existing_job(self, task_id: str) -> Any | None:
        """A handle to a trial task started by an earlier run (None if it is gone)."""
        from clearml.automation.job import RunningJob

        try:
            return RunningJob(task_id)
        except Exception:  # noqa: BLE001 - deleted, archived or unreadable: run the trial again
            return None

    def outcome(self, job: Any, spec: StudySpec, opts: ClearMLOptions) -> Outcome:
        """Read a stopped trial task's result: the agent's exact record, else its scalars and status."""
        task = job.task
        task.reload()
        status = str(task.status)
        text = None
        try:
            text = task.get_configuration_object(OUTCOME_CONFIG)
        except Exception:  # noqa: BLE001 - not an hposdk agent task
            text = None
        if text:
            return outcome_from_record(json.loads(text), getattr(job, "hposdk_abort_reason", None))
        # An existing task: each objective's scalar, and the scalars (<name>/<name>) of the metrics
        # that text constraints need (a missing one makes the trial infeasible, not failed).
        goals = spec.goals
        scalars = objective_scalars(list(goals.objectives), opts)
        wanted = dict(scalars)
        for c in goals.constraints:
            if c.metric is not None and c.metric not in wanted:
                wanted[c.metric] = (c.metric, c.metric)
        last = task.get_last_scalar_metrics()
        values: dict[str, float | None] = {}
        for name, (title, series) in wanted.items():
            entry = last.get(title, {}).get(series)
            key = "last"
            if opts.objective_extremum and name in goals.objectives:
                key = "min" if goals.objectives[name] == "min" else "max"
            values[name] = float(entry[key]) if entry is not None else None
        by_step: dict[int, dict[str, float]] = {}
        try:
            history = task.get_reported_scalars()
            for name, (title, series) in scalars.items():
                hist = history.get(title, {}).get(series, {})
                for x, y in zip(hist.get("x", []), hist.get("y", [])):
                    by_step.setdefault(int(x), {})[name] = float(y)
        except Exception:  # noqa: BLE001 - the history is a nicety; the final values are what counts
            by_step = {}
        reports = [ReportRecord(step=step, metrics=m) for step, m in sorted(by_step.items())]
        message = f"{task.data.status_message or ''} {task.data.status_reason or ''}".strip()
        return outcome_from_scalars(status, values, scalars, reports, message,
                                    getattr(job, "hposdk_abort_reason", None))


def outcome_from_record(record: Mapping[str, Any], abort_reason: str | None) -> Outcome:
    """The agent's ``hposdk_outcome`` as an :class:`Outcome`."""
    state = TrialState(record["state"])
    if abort_reason == "pruned" and state is TrialState.COMPLETE:  # pragma: no cover - aborted after writing
        state = TrialState.PRUNED
    return Outcome(
        state=state,
        value=record.get("value"),
        metrics=dict(record.get("metrics") or {}),
        error=record.get("error"),
        reports=[ReportRecord(**r) for r in record.get("reports") or []],
        accessed=set(record.get("accessed") or []),
        duration_s=float(record.get("duration_s") or 0.0),
        config_error=bool(record.get("config_error")),
    )


def outcome_from_status(status: str, value: float | None, reports: list[ReportRecord], metric: str, title: str,
                        series: str, message: str, abort_reason: str | None) -> Outcome:
    """A single-objective trial task without an hposdk record (see :func:`outcome_from_scalars`)."""
    return outcome_from_scalars(status, {metric: value}, {metric: (title, series)}, reports, message, abort_reason)


def outcome_from_scalars(status: str, values: Mapping[str, float | None], scalars: Mapping[str, tuple[str, str]],
                         reports: list[ReportRecord], message: str, abort_reason: str | None) -> Outcome:
    """A trial task without an hposdk record (a user's base task) from its status and scalars.

    Args:
        status: the task's final status.
        values: the metrics read from the task (None: not reported), objectives first.
        scalars: each objective's (title, series), in order (the first is ``Outcome.value``).
        reports: the objectives' reported history.
        message: the task's status message and reason.
        abort_reason: why hposdk aborted the task (``pruned``, ``budget``, ``timeout``...), if it did.
    """
    metrics = {k: v for k, v in values.items() if v is not None}
    value = metrics.get(next(iter(scalars)))
    missing = [f"{t!r}/{s!r}" for name, (t, s) in scalars.items() if name not in metrics]
    if status in ("completed", "published", "closed"):
        if missing:
            what = "scalar" if len(missing) == 1 else "scalars"
            return Outcome(TrialState.FAILED, None, metrics, f"the task completed without reporting the objective "
                           f"{what} {', '.join(missing)}", reports, set(), 0.0)
        return Outcome(TrialState.COMPLETE, value, metrics, None, reports, set(), 0.0)
    if status == "stopped":
        if abort_reason == "pruned":
            return Outcome(TrialState.PRUNED, value, metrics, None, reports, set(), 0.0)
        if abort_reason == "budget" and not missing:
            return Outcome(TrialState.COMPLETE, value, metrics, None, reports, set(), 0.0)
        why = {"timeout": "exceeded trial_timeout and was aborted"}.get(abort_reason or "", "was aborted")
        return Outcome(TrialState.FAILED, None, metrics, f"the task {why} {message}".strip(), reports, set(), 0.0)
    return Outcome(TrialState.FAILED, None, metrics, f"the task ended with status {status!r} {message}".strip(),
                   reports, set(), 0.0)


# --- the controller loop --------------------------------------------------------------------------


@dataclass
class _Notes:
    base_task_id: str | None = None
    trial_tasks: dict[int, str] = field(default_factory=dict)


def _read_notes(spec: StudySpec) -> _Notes:
    path = spec.workdir / "study.jsonl"
    notes = _Notes()
    if not path.exists():
        return notes
    for n in read_record(path).notes:
        if n.get("kind") == "clearml_base_task":
            notes.base_task_id = n.get("task_id")
        elif n.get("kind") == "clearml_trial_task":
            notes.trial_tasks[int(n["number"])] = str(n["task_id"])
    return notes


def run_remote(spec: StudySpec, session: RunSession, opts: ClearMLOptions) -> None:
    """Run the study on a ClearML fleet (controller in this process, or followed from here)."""
    io = FleetIO()
    if opts.controller == "remote":
        from ._controller import launch_controller

        launch_controller(spec, session, opts, io)
        return
    run_fleet(spec, session, opts, io)


def run_fleet(spec: StudySpec, session: RunSession, opts: ClearMLOptions, io: Any) -> None:
    """The controller: ClearML's optimizer in background threads, the hposdk record in this thread."""
    if spec.optimizer == "bohb" and (session.finished or session.rerun):
        raise UnsupportedError(
            f"study {spec.name!r}: resuming a BOHB study on ClearML is not supported (hpbandster cannot be "
            "warm-started through ClearML's OptimizerBOHB). Fix: start a new study (another name)."
        )
    io.check(opts)
    notes = _read_notes(spec)
    journal = session.journal
    controller = io.controller_task(spec, opts)
    hposdk_created = opts.base_task_id is None
    base_task_id = opts.base_task_id or notes.base_task_id
    if base_task_id is None:
        base_task_id = io.create_base_task(spec, opts)
        journal.note(kind="clearml_base_task", task_id=base_task_id)
    link = FleetLink(spec, opts, session, hposdk_created)

    # Trials an earlier run started: collect them if their task finished, follow them if it runs.
    watched: list[Any] = []
    rerun_params: list[dict[str, Any]] = []
    for lost in list(session.rerun):
        job = io.existing_job(notes.trial_tasks[lost.number]) if lost.number in notes.trial_tasks else None
        if job is not None and not job.is_pending():
            job.hposdk_number, job.hposdk_attempt, job.hposdk_params = lost.number, lost.attempt, lost.params
            job.hposdk_budget, job.hposdk_abort_reason, job.hposdk_started_at = lost.budget, None, lost.started_at
            session.running[lost.number] = lost.started_at
            watched.append(job)
        else:
            link.reruns[params_key(lost.params)] = lost
            rerun_params.append(dict(lost.params))
    session.rerun = []
    n_jobs = max(0, spec.n_trials - len(session.finished) - len(watched))
    kwargs = build_optimizer_kwargs(spec, opts, base_task_id=base_task_id, n_jobs=n_jobs,
                                    finished=list(session.finished.values()), rerun=rerun_params,
                                    running=[j.hposdk_params for j in watched], hposdk_created=hposdk_created)
    job_class = type("HposdkFleetJob", (FleetJob, io.job_base()), {"hposdk_link": link})
    hpo = io.make_optimizer(kwargs)
    hpo.set_default_job_class(job_class)
    hpo.set_report_period(opts.report_period_min)
    open_jobs: dict[int, Any] = {}
    journal.note(kind="clearml_optimizer", task_id=getattr(controller, "id", None), base_task_id=base_task_id,
                 n_jobs=n_jobs, adopted=[j.hposdk_number for j in watched])
    if n_jobs > 0:
        hpo.start()
    try:
        _loop(spec, session, opts, io, link, hpo, open_jobs, watched, running=n_jobs > 0)
    except KeyboardInterrupt:
        link.stopping = link.detach = True
        # A few seconds for ClearML's thread to finish a job it is creating (not more: Ctrl-C should
        # be quick); a task created after that is not in the record, and its trial runs again later.
        hpo.stop(timeout=0.05, wait_for_reporter=False)
        # Record the trial tasks created meanwhile, so that a resumed study collects them too.
        while not link.events.empty():
            ev = link.events.get_nowait()
            if ev.kind == "created":
                _handle(ev, spec, session, opts, io, open_jobs)
        session.journal.note(kind="clearml_detached", running=sorted(open_jobs),
                             message="running trial tasks were left on the fleet; rerun the study to collect them")
        raise
    finally:
        link.stopping = True
    hpo.stop(timeout=None, wait_for_reporter=False)


def _loop(spec: StudySpec, session: RunSession, opts: ClearMLOptions, io: Any, link: FleetLink, hpo: Any,
          open_jobs: dict[int, Any], watched: list[Any], running: bool) -> None:
    poll = max(0.05, min(5.0, opts.pool_period_min * 60.0))
    next_watch = 0.0
    while True:
        try:
            ev = link.events.get(timeout=poll)
        except queue.Empty:
            ev = None
        if ev is not None:
            _handle(ev, spec, session, opts, io, open_jobs)
        if session.stopping:
            return
        now = time.monotonic()
        if watched and now >= next_watch:
            next_watch = now + opts.pool_period_min * 60.0
            for job in list(watched):
                if job.is_stopped():
                    watched.remove(job)
                    _finish(job, spec, session, opts, io)
        optimizer_done = not running or not hpo.is_running()
        if optimizer_done and link.events.empty() and not watched:
            # The optimizer is done; a job it aborted on the way out was never seen to stop: asking
            # posts its "stopped" event (once), handled by the next round.
            for job in list(open_jobs.values()):
                job.is_stopped()
            if link.events.empty():
                return


def _handle(ev: _Event, spec: StudySpec, session: RunSession, opts: ClearMLOptions, io: Any,
            open_jobs: dict[int, Any]) -> None:
    job = ev.job
    if ev.kind == "created":
        session.start(job.hposdk_number, job.hposdk_params, job.hposdk_budget, job.hposdk_attempt)
        session.journal.note(kind="clearml_trial_task", number=job.hposdk_number, task_id=str(job.task_id()))
        open_jobs[job.hposdk_number] = job
        return
    open_jobs.pop(job.hposdk_number, None)
    if ev.kind == "launch_failed":
        outcome = Outcome(TrialState.FAILED, None, {}, f"ClearML could not enqueue the trial task in queue "
                          f"{opts.queue!r}", [], set(), 0.0)
        _record(job, outcome, session, opts)
        return
    if job.hposdk_abort_reason == "stopping":
        return  # stopped because the study stops: left unfinished, run again on resume
    _finish(job, spec, session, opts, io)


def _finish(job: Any, spec: StudySpec, session: RunSession, opts: ClearMLOptions, io: Any) -> None:
    try:
        outcome = io.outcome(job, spec, opts)
    except Exception as exc:  # noqa: BLE001 - an unreadable task is a failed trial, not a dead study
        outcome = Outcome(TrialState.FAILED, None, {}, f"could not read the trial task's result: {exc}", [], set(), 0.0)
    _record(job, outcome, session, opts)


def _record(job: Any, outcome: Outcome, session: RunSession, opts: ClearMLOptions) -> None:
    if outcome.duration_s == 0.0:
        outcome.duration_s = max(0.0, time.time() - job.hposdk_started_at)
    try:
        task_id = str(job.task_id())
    except Exception:  # noqa: BLE001
        task_id = None
    result = session.result_from(job.hposdk_number, job.hposdk_params, outcome, budget=job.hposdk_budget,
                                 attempt=job.hposdk_attempt, started_at=job.hposdk_started_at,
                                 info={"clearml_task_id": task_id})
    accessed = outcome.accessed if outcome.accessed else None
    session.finish(result, accessed, outcome.config_error)
