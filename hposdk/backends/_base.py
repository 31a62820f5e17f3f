"""The backend protocol: what a backend declares (capabilities, options) and what it is handed.

A backend receives a validated :class:`StudySpec` and a :class:`RunSession`. It asks its engine
for parameters, runs trials (through :func:`run_objective`, so every backend interprets objective
output and failures the same way) and tells the session when trials start, report and finish. The
session owns the durable record, the trial budget and the progress display, so resume, `show`
and exports behave identically on every backend.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from .._goals import Goals
from ..exceptions import ConfigError, UnsupportedError
from ..result import ReportRecord, TrialResult, TrialState
from ..spaces import SearchSpace
from ..trial import Report, Trial, TrialPruned, _TrackedParams

if TYPE_CHECKING:
    from .._record import Started

__all__ = [
    "Backend",
    "Budget",
    "Capabilities",
    "NoOptions",
    "Outcome",
    "RunSession",
    "StudySpec",
    "run_objective",
]


class NoOptions(BaseModel):
    """Options model of a backend that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(BaseModel):
    """The fidelity range of a multi-fidelity study (e.g. epochs).

    ``trial.budget`` is always within ``[min_budget, max_budget]``; optimizers without budgets give
    every trial ``max_budget``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    min_budget: float
    max_budget: float
    eta: float = 3.0

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if not 0 < self.min_budget <= self.max_budget:
            raise ValueError(
                f"`0 < min_budget <= max_budget` must hold, but got min_budget={self.min_budget}, "
                f"max_budget={self.max_budget}"
            )
        if self.eta <= 1:
            raise ValueError(f"`eta > 1` must hold, but got eta={self.eta}")
        return self


#: The space features every parameter type offers. A backend lists those it translates exactly
#: (the conformance suites check it); anything else is refused at translation, never dropped.
SPACE_FEATURES = (
    "uniform", "uniform+step", "loguniform", "loguniform+step", "integer", "integer+step", "integer+log", "discrete",
)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data (asked before running, listed by ``hposdk backends``)."""

    optimizers: tuple[str, ...]
    pruners: tuple[str, ...] = ()
    parallel: bool = True
    resume: bool = True
    budget_optimizers: tuple[str, ...] = ()  # optimizers that set trial.budget themselves
    space_features: tuple[str, ...] = SPACE_FEATURES
    notes: str = ""
    #: Optimizers that optimise several objectives at once (a Pareto front). Every backend records
    #: constraints and keeps infeasible trials from ``best``; these also tell the optimizer.
    multi_objective: tuple[str, ...] = ()
    constraint_aware: tuple[str, ...] = ()
    #: Optimizers that can run with a study record shared by several drivers (a database storage).
    shared_record: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudySpec:
    """A fully validated study, as handed to a backend."""

    name: str
    objective: Callable[[Trial], Any]
    objective_ref: str | None  # "module:attr", when the objective is importable by name
    space: SearchSpace
    metric: str
    mode: Literal["min", "max"]
    optimizer: str
    n_trials: int
    max_concurrent: int = 1
    seed: int = 0
    fixed: Mapping[str, Any] = field(default_factory=dict)
    optimizer_options: Mapping[str, Any] = field(default_factory=dict)
    pruner: str | None = None
    pruner_options: Mapping[str, Any] = field(default_factory=dict)
    trial_timeout: float | None = None
    retries: int = 0
    budget: Budget | None = None
    backend_options: BaseModel = field(default_factory=NoOptions)
    workdir: Path = Path(".")
    #: Objectives, composites, constraints and pruning metric (``metric``/``mode`` are its first
    #: objective); None means the single objective ``metric``/``mode``.
    goals_: Goals | None = None

    @property
    def goals(self) -> Goals:
        """What the study optimises (see :mod:`hposdk._goals`)."""
        return self.goals_ if self.goals_ is not None else Goals.single(self.metric, self.mode)

    @property
    def objectives(self) -> dict[str, Literal["min", "max"]]:
        return dict(self.goals.objectives)

    @property
    def pruning_metric(self) -> str:
        return self.goals.pruning_metric or self.metric


class Backend(ABC):
    """Base class of every backend. Subclasses set the class variables and implement :meth:`run`."""

    name: ClassVar[str]
    extra: ClassVar[str | None] = None  # the pip extra that installs its engine
    capabilities: ClassVar[Capabilities]
    options_model: ClassVar[type[BaseModel]] = NoOptions

    @classmethod
    def check(cls, spec: StudySpec) -> None:
        """Refuse, before any compute, what this backend cannot do with ``spec``.

        The default checks the optimizer and pruner names against :attr:`capabilities`;
        backends extend it with their space translation.
        """
        caps = cls.capabilities
        if spec.optimizer not in caps.optimizers:
            raise UnsupportedError(
                f"backend {cls.name!r} has no optimizer {spec.optimizer!r}; it offers "
                f"{', '.join(caps.optimizers)}"
            )
        if spec.pruner is not None and spec.pruner not in caps.pruners:
            offered = ", ".join(caps.pruners) if caps.pruners else "none"
            raise UnsupportedError(f"backend {cls.name!r} has no pruner {spec.pruner!r}; it offers {offered}")
        if spec.max_concurrent > 1 and not caps.parallel:
            raise UnsupportedError(f"backend {cls.name!r} runs one trial at a time; use max_concurrent=1")
        if spec.goals.multi and spec.optimizer not in caps.multi_objective:
            offered = ", ".join(caps.multi_objective) or "none"
            raise UnsupportedError(
                f"backend {cls.name!r}: optimizer {spec.optimizer!r} optimises a single objective, but the study "
                f"has {len(spec.objectives)} ({', '.join(spec.objectives)}). Optimizers for several objectives "
                f"here: {offered}. Or combine them into one with composites={{...}}."
            )

    @abstractmethod
    def run(self, spec: StudySpec, session: RunSession) -> None:
        """Run trials until ``session.remaining() == 0`` or ``session.stopping``."""


def check_options(where: str, given: Mapping[str, Any], target: Callable[..., Any], exclude: set[str]) -> None:
    """Refuse options ``target`` (a class or function) does not accept, listing the ones it does."""
    if not given:
        return
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(n for n in params if n not in exclude and n != "self")
    for key in given:
        if key not in valid:
            raise ConfigError(f"{where}: unknown option {key!r}. Valid options: {', '.join(valid)}")


# --- running an objective: one interpretation of its output for every backend -----------------


@dataclass
class Outcome:
    """What running an objective once produced (picklable, sent back from worker processes)."""

    state: TrialState
    value: float | None
    metrics: dict[str, Any]
    error: str | None
    reports: list[ReportRecord]
    accessed: set[str]
    duration_s: float
    config_error: bool = False  # the study is misconfigured (metric missing): stop the study


def _to_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "__float__") and not isinstance(value, str):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def interpret_output(
    output: Any, metric: str | Goals
) -> tuple[float | None, dict[str, Any], str | None, bool]:
    """Map an objective's return value to (value, metrics, error, config_error).

    ``value`` is the first objective's; composites are added to ``metrics``; with several
    objectives or constraints every metric they need must be there.
    """
    goals = Goals.single(metric) if isinstance(metric, str) else metric
    metric = goals.primary
    if type(output) is float and goals.plain and math.isfinite(output):
        # The common case, decided without the general path below (the same outcome, measurably
        # cheaper per trial with fast samplers): one objective, no composites or constraints.
        return output, {metric: output}, None, False
    if isinstance(output, Mapping):
        metrics = {str(k): (_to_number(v) if _to_number(v) is not None else v) for k, v in output.items()}
        goals.derive(metrics)
        missing = goals.missing(metrics)
        if missing:
            return None, metrics, missing, True
        value = _to_number(metrics[metric])
        if value is None:
            got = metrics[metric]
            return None, metrics, f"metric {metric!r} must be a number, but the objective returned {got!r}", False
    else:
        value = _to_number(output)
        if value is not None and (goals.multi or goals.constraints or metric in goals.composites):
            needed = [*goals.objectives, *(c.metric for c in goals.constraints if c.metric)]
            return None, {}, (
                f"the objective returned a bare number ({value!r}) but this study needs the metrics "
                f"{needed}; return a dict such as {{{', '.join(repr(n) + ': ...' for n in needed)}}}"
            ), True
        if value is None:
            kind = (
                "None (did it forget to `return`?)" if output is None
                else f"a {type(output).__name__}: {output!r:.80}"
            )
            return None, {}, (
                f"the objective returned {kind}; return a number or a dict such as {{'{metric}': 0.1}}"
            ), False
        metrics = {metric: value}
    for name in goals.objectives:
        v = _to_number(metrics.get(name))
        if v is None:
            got = metrics.get(name)
            return None, metrics, f"metric {name!r} must be a number, but the objective returned {got!r}", False
        if not math.isfinite(v):
            return None, metrics, f"the objective returned {name}={v}; NaN and infinities count as failures", False
    return value, metrics, None, False


def run_objective(objective: Callable[[Trial], Any], trial: Trial, metric: str | Goals) -> Outcome:
    """Run ``objective(trial)`` and interpret what happened, the same way on every backend.

    Exceptions become FAILED (traceback kept); :class:`TrialPruned`, or returning after
    ``should_prune()`` said True, becomes PRUNED; NaN/inf, None and strings become FAILED with a
    message saying what to return instead. ``KeyboardInterrupt`` propagates.
    """
    start = time.monotonic()
    error: str | None = None
    value: float | None = None
    metrics: dict[str, Any] = {}
    config_error = False
    pruned = False
    goals = Goals.single(metric) if isinstance(metric, str) else metric
    metric = goals.primary
    if goals.composites:
        trial._derive = goals.derive  # reports carry the composites, so schedulers can watch them
    try:
        output = objective(trial)
    except TrialPruned:
        pruned = True
        output = None
    except Exception:  # noqa: BLE001 - any objective failure is data, not a crash of the study
        error = traceback.format_exc()
        output = None
    reports = [ReportRecord(step=r.step, metrics=r.metrics, time=r.time) for r in trial.reports]
    if pruned or (error is None and trial.pruned):
        state = TrialState.PRUNED
        if output is not None:
            value, metrics, _, _ = interpret_output(output, goals)
        if not metrics and reports:
            metrics = dict(reports[-1].metrics)
            value = metrics.get(metric)
    elif error is not None:
        state = TrialState.FAILED
    else:
        value, metrics, error, config_error = interpret_output(output, goals)
        state = TrialState.FAILED if error else TrialState.COMPLETE
    params = trial.params
    accessed = set(params.accessed) if isinstance(params, _TrackedParams) else set(params)
    return Outcome(state, value, metrics, error, reports, accessed, time.monotonic() - start, config_error)


# --- the session a backend reports to ----------------------------------------------------------


class RunSession:
    """The study-side handle a backend drives: record, trial budget, progress, binding check.

    Backends call :meth:`start`, :meth:`report` and :meth:`finish`; the session writes the
    durable record and the progress display. It is used from the driver thread only.
    """

    def __init__(
        self,
        spec: StudySpec,
        journal: Any,
        finished: dict[int, TrialResult],
        unfinished: list[Started],
        next_number: int,
        progress: Any,
    ) -> None:
        self.spec = spec
        self.journal = journal
        self.finished: dict[int, TrialResult] = dict(finished)
        #: Trials a crashed or interrupted run left unfinished; backends run these first, with the
        #: same number and params (they never completed, so nothing is repeated).
        self.rerun: list[Started] = list(unfinished)
        self._next = next_number
        self.running: dict[int, float] = {}
        self.progress = progress
        self.stopping = False
        self.abort_error: str | None = None
        #: Called with each trial this run finishes, once it is recorded (``Study.optimize(callbacks=)``).
        self.callbacks: list[Callable[[TrialResult], object]] = []
        #: The first exception a callback raised: the study stops starting trials and
        #: ``Study.optimize`` raises it once the record is closed (never from inside an engine's loop).
        self.callback_error: Exception | None = None
        #: ``Study.stop()`` was called (``stopping`` is also set by a config error or a callback's).
        self.stopped = False
        self._unread_warned = False

    # --- trial budget --------------------------------------------------------------------------
    def remaining(self) -> int:
        """How many more trials may be started now."""
        if self.stopping:
            return 0
        return max(0, self.spec.n_trials - len(self.finished) - len(self.running))

    #: True when other drivers share the study record (see ``hposdk/_sqlrecord.py``).
    shared = False

    def new_number(self) -> int:
        """A fresh trial number."""
        n = self._next
        self._next += 1
        return n

    def claim_number(self) -> int | None:
        """A fresh trial number, or None when a shared record's ``n_trials`` are all taken."""
        return self.new_number()

    def release(self, number: int) -> None:
        """Give back a number from :meth:`claim_number` that will not be used (nothing to do here)."""

    def poll(self) -> list[TrialResult]:
        """Trials that other drivers of a shared record finished since the last call."""
        return []

    def trial_dir(self, number: int) -> Path:
        """The working directory of trial ``number`` (under the study's directory)."""
        return Path(self.trial_path(number))

    def trial_path(self, number: int) -> str:
        """:meth:`trial_dir` as a string (cheaper: the in-process trial makes a Path only on use)."""
        return os.path.join(self.spec.workdir, f"trial_{number:05d}")

    def trial_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The params an objective sees: the searched values plus the study's fixed values."""
        return {**self.spec.fixed, **params}

    # --- events --------------------------------------------------------------------------------
    def start(self, number: int, params: dict[str, Any], budget: float | None = None, attempt: int = 1) -> None:
        """A trial started."""
        self.running[number] = time.time()
        self.journal.start(number, params, budget, attempt)
        self.progress.update(self)

    def report(self, number: int, report: Report | ReportRecord) -> None:
        """A trial reported intermediate metrics."""
        self.journal.report(number, report.step, report.metrics, report.time)

    def finish(self, result: TrialResult, accessed: set[str] | None = None, config_error: bool = False) -> None:
        """A trial finished; ``config_error`` stops the study (the objective cannot be scored)."""
        goals = self.spec.goals
        if goals.constraints and result.state is TrialState.COMPLETE and not result.constraint_violations:
            # Evaluated here, in the driver, for every backend alike (callables need not pickle).
            result = result.model_copy(update={"constraint_violations": goals.violations(result.metrics)})
        self.running.pop(result.number, None)
        self.finished[result.number] = result
        self.journal.finish(result)
        if config_error:
            self.stopping = True
            self.abort_error = result.error
        if accessed is not None and result.state is not TrialState.FAILED:
            self._check_reads(accessed)
        self.progress.update(self, result)
        if self.callbacks and self.callback_error is None:
            self._call_back(result)

    def _call_back(self, result: TrialResult) -> None:
        for callback in self.callbacks:
            try:
                callback(result)
            except Exception as exc:  # noqa: BLE001 - raised by Study.optimize once the engine has wound down
                self.callback_error = exc
                self.stopping = True
                return

    def result_from(
        self,
        number: int,
        params: dict[str, Any],
        outcome: Outcome,
        *,
        budget: float | None = None,
        attempt: int = 1,
        started_at: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> TrialResult:
        """Build the TrialResult of an :class:`Outcome`."""
        return TrialResult(
            number=number,
            params=params,
            state=outcome.state,
            value=outcome.value,
            metrics=outcome.metrics,
            reports=tuple(outcome.reports),
            error=outcome.error,
            budget=budget,
            attempt=attempt,
            started_at=started_at,
            duration_s=outcome.duration_s,
            info=info or {},
        )

    def _check_reads(self, accessed: set[str]) -> None:
        # The declared-model check runs before compute (Study); this catches the rest at run
        # time: a searched key the objective never read means tuning it changes nothing.
        unread = [k for k in self.spec.space.names if k not in accessed]
        if unread and not self._unread_warned:
            self._unread_warned = True
            import warnings

            from ..exceptions import BindingError  # noqa: F401 - referenced in the message

            warnings.warn(
                f"study {self.spec.name!r}: the objective never read the search-space key(s) "
                f"{unread}; tuning them has no effect. Check the spelling against the names the "
                "objective reads, or declare a params model with @hposdk.objective(params=...) "
                "to make this an error before any compute.",
                UnreadParameterWarning,
                stacklevel=2,
            )


class UnreadParameterWarning(UserWarning):
    """A search-space key was never read by the objective."""
