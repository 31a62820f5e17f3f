"""Study: validate everything, pick the backend by name, run, return a StudyResult."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ._goals import Composite, Constraint, Goals
from ._record import Journal, read_record
from ._sqlrecord import SharedRunSession, SqlRecord, is_url
from .backends._base import Budget, RunSession, StudySpec
from .backends._registry import get_backend
from .exceptions import BindingError, ConfigError, ObjectiveError, SpaceError, StudyRecordError, UnsupportedError
from .result import StudyResult, TrialResult
from .spaces import SearchSpace
from .spaces._errors import format_validation_error, skip_init_in_validation
from .trial import Trial

__all__ = ["Study", "StudyConfig", "load_study"]

DEFAULT_STORAGE = "hposdk-studies"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

# Strict: a YAML `yes` (True) or a quoted "3" is not a count; pydantic's lax mode would read 1 and 3.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
#: numpy's RandomState range, which Optuna's and Ray's samplers seed with.
Seed = Annotated[int, Field(ge=0, lt=2**32, strict=True)]
#: Finite: an infinite timeout is no timeout (leave it unset).
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]


class StudyConfig(BaseModel):
    """Everything that defines a study, as plain data (the schema of a study YAML file).

    Example (YAML)::

        name: demo
        objective: mypackage.train:objective
        metric: loss
        mode: min
        optimizer: tpe
        n_trials: 30
        space:
          lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    objective: str | None = Field(None, description="import path 'module:function' (YAML files)")
    space: SearchSpace
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    objectives: dict[str, Literal["min", "max"]] | None = None
    composites: dict[str, Composite] = Field(default_factory=dict)
    constraints: list[str | Callable[..., float]] = Field(default_factory=list)
    pruning_metric: str | None = None
    backend: str = "local"
    optimizer: str = "tpe"
    optimizer_options: dict[str, Any] = Field(default_factory=dict)
    pruner: str | None = None
    pruner_options: dict[str, Any] = Field(default_factory=dict)
    n_trials: PositiveInt | None = None
    max_concurrent: PositiveInt = 1
    seed: Seed | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    trial_timeout: PositiveFloat | None = None
    retries: NonNegativeInt = 0
    budget: Budget | None = None
    backend_options: dict[str, Any] = Field(default_factory=dict)
    storage: str | None = None

    @model_validator(mode="after")
    def _one_way_to_name_objectives(self) -> StudyConfig:
        if self.objectives is not None:
            if self.metric is not None or self.mode is not None:
                raise ValueError(
                    "give either metric/mode (one objective) or objectives={name: mode, ...}, not both; "
                    f"got metric={self.metric!r}, mode={self.mode!r}, objectives={self.objectives}"
                )
            if not self.objectives:
                raise ValueError("objectives: give at least one, e.g. {'acc': 'max', 'size_mb': 'min'}")
        elif self.metric is None:
            raise ValueError("metric: required (the metric to optimise), or objectives={name: mode, ...}")
        return self

    def goals(self) -> Goals:
        """The objectives, composites, constraints and pruning metric, checked against each other."""
        objectives = dict(self.objectives) if self.objectives else {str(self.metric): self.mode or "min"}
        for name, mode in objectives.items():
            if name in self.composites and mode != "max":
                raise ConfigError(
                    f"objectives: the composite {name!r} is higher-is-better (terms with mode 'min' enter flipped), "
                    f"so optimise it with mode 'max', not {mode!r}"
                )
        constraints = tuple(Constraint.parse(c) for c in self.constraints)
        pruning = self.pruning_metric
        known = [*objectives, *self.composites]
        if pruning is not None and pruning not in known:
            close = _suggest(pruning, known)
            raise ConfigError(
                f"pruning_metric: {pruning!r} is neither an objective nor a composite ({', '.join(known)})"
                + (f". Did you mean {close!r}?" if close else "")
            )
        if pruning is None:
            if len(objectives) > 1 and self.pruner is not None:
                raise ConfigError(
                    f"pruner={self.pruner!r} with {len(objectives)} objectives: a pruner compares one metric "
                    f"between trials (Optuna cannot prune multi-objective studies, optuna/optuna#3450). "
                    f"Fix: set pruning_metric to one of {list(objectives)} (or a composite)"
                )
            pruning = next(iter(objectives))
        return Goals(objectives=objectives, composites=dict(self.composites), constraints=constraints,
                     pruning_metric=pruning)

    # Invalid data is refused with a ConfigError naming each field, never pydantic's own error.
    @skip_init_in_validation
    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError("invalid study configuration\n" + format_validation_error(exc)) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> StudyConfig:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise ConfigError("invalid study configuration\n" + format_validation_error(exc)) from None

    @classmethod
    def from_yaml(cls, source: str | Path) -> StudyConfig:
        """Read a study YAML file; errors name the line and the field."""
        from ._yaml import line_lookup, load_yaml, source_name

        data, lines = load_yaml(source)
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source_name(source)}: a study file must be a mapping of keys (name, objective, space, ...)"
            )
        try:
            return super().model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                f"{source_name(source)}: invalid study file\n"
                + format_validation_error(exc, line_of=line_lookup(lines))
            ) from None


def resolve_objective(ref: str) -> Callable[[Trial], Any]:
    """Import ``'package.module:function'`` (only that module is imported; nothing is evaluated).

    Every part must be a plain identifier. Dunder names (``__import__``, ``__main__``,
    ``f.__globals__``), built-in functions (``os:system``, ``builtins:eval``) and classes are refused:
    none of them is an objective, and they are how a reference would reach code other than the
    function it names.
    """
    hint = "write it as 'package.module:function'"
    if not isinstance(ref, str) or not _REF.match(ref):
        raise ConfigError(f"objective: {ref!r} is not an import path; {hint}")
    module_name, _, attr = ref.partition(":")
    parts = [*module_name.split("."), *attr.split(".")]
    if not all(p.isidentifier() for p in parts):
        raise ConfigError(f"objective: {ref!r} is not an import path (an empty part between dots); {hint}")
    dunder = [p for p in parts if p.startswith("__") and p.endswith("__")]
    if dunder:
        raise ConfigError(
            f"objective: {ref!r} names {dunder[0]!r}; special (dunder) names are not objectives. "
            f"Fix: name a module-level function, {hint}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"objective: cannot import module {module_name!r} ({exc})") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code failed on import
        raise ConfigError(
            f"objective: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"objective: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"objective: {ref!r} is not callable")
    if inspect.isbuiltin(obj) or isinstance(obj, type):
        kind = "a class" if isinstance(obj, type) else "a built-in function"
        raise ConfigError(f"objective: {ref!r} is {kind}, not an objective; name a function of a trial ({hint})")
    try:
        signature: inspect.Signature | None = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature to check (some C callables)
        signature = None
    if signature is not None:
        try:
            signature.bind(None)
        except TypeError:
            raise ConfigError(
                f"objective: {ref!r} has the signature {signature}, but an objective is called with one "
                "argument, the trial. Fix: def objective(trial): ..."
            ) from None
    return obj  # type: ignore[no-any-return]


def _given(value: Any, default: Any) -> Any:
    # None means "not given"; anything else goes to the StudyConfig model as it is, so a wrong type
    # (fixed=5) is refused there with the field's name rather than by a dict() call here.
    if value is None:
        return default
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _objective_ref(fn: Callable[..., Any]) -> str | None:
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qual or "<" in qual or module == "__main__":
        return None
    return f"{module}:{qual}"


def _default_name(fn: Callable[..., Any]) -> str:
    qual = getattr(fn, "__qualname__", None) or type(fn).__name__
    module = getattr(fn, "__module__", "") or ""
    base = qual if module in ("", "__main__") else f"{module.rsplit('.', 1)[-1]}.{qual}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", base)


def _suggest(key: str, names: list[str]) -> str | None:
    """A likely intended name: a close spelling, or an abbreviation (learning_rate -> lr, optim_lr)."""
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return close[0]

    def initials(name: str) -> str:
        return "".join(part[0] for part in re.split(r"[_.\-]", name) if part)

    for name in names:
        if name.startswith(key) or key.startswith(name):
            return name
    for name in names:
        if initials(key) in (name, *name.split("_")) or initials(name) in (key, *key.split("_")):
            return name
    return None


def check_binding(objective: Callable[..., Any], space: SearchSpace, fixed: Mapping[str, Any], seed: int) -> None:
    """Refuse search-space or fixed keys that a declared params model does not have (and vice versa)."""
    model = getattr(objective, "__hposdk_params__", None)
    if model is None:
        return
    fields = model.model_fields
    given = list(space.names) + [k for k in fixed if k not in space]
    for key in given:
        if key not in fields:
            close = _suggest(key, list(fields))
            hint = f" Did you mean {close!r}?" if close else ""
            where = "search-space" if key in space else "fixed"
            raise BindingError(
                f"{where} key {key!r} is not a parameter of the objective ({model.__name__} has "
                f"{', '.join(fields)}), so tuning it would change nothing.{hint}"
            )
    missing = [n for n, f in fields.items() if f.is_required() and n not in given]
    if missing:
        raise BindingError(
            f"the objective requires {missing} ({model.__name__}) but neither the space nor `fixed` "
            "gives them. Fix: add them to the space or to fixed."
        )
    # Values the space can produce must also be valid for the model (e.g. types, ranges).
    points = [space.sample_for_trial(seed, i) for i in range(3)]
    for name, p in space.items():
        if p.is_finite:
            grid = p.grid()
            points.append({**points[0], name: grid[0]})
            points.append({**points[0], name: grid[-1]})
    for point in points:
        try:
            model.model_validate({**fixed, **point})
        except ValidationError as exc:
            raise BindingError(
                f"the space can produce {point}, which the objective's {model.__name__} refuses:\n"
                + format_validation_error(exc)
            ) from None


class Study:
    """A hyperparameter study: an objective, a search space, and how to search it.

    Args:
        objective: a function of a :class:`~hposdk.Trial` returning a number or a dict of metrics,
            or its import path ``'package.module:function'``.
        space: a :class:`~hposdk.SearchSpace` (or a mapping that builds one).
        metric: the name of the metric to optimise (a bare-number return counts as this metric).
        mode: ``'min'`` (default) or ``'max'``.
        objectives: several metrics to optimise at once, ``{'acc': 'max', 'size_mb': 'min'}``
            (instead of ``metric``/``mode``); the result holds a Pareto front.
        composites: named metrics computed from others, ``{'avg': {'terms': {'arc': 1, 'mmlu': 1}}}``
            (a weighted average, see :class:`~hposdk.Composite`); usable as the metric.
        constraints: ``['size_mb <= 700']`` or callables ``metrics -> violation`` (``<= 0`` when
            satisfied); infeasible trials are recorded but never best.
        pruning_metric: the metric pruners watch (required with a pruner and several objectives).
        backend: where trials run: ``'local'`` (default), ``'ray'``, ``'clearml'``...
        optimizer: ``'grid'``, ``'random'``, ``'tpe'``... (what the backend offers); ``'auto'`` picks one
            from the space, ``n_trials`` and ``budget`` (``hposdk/_auto.py``); the record keeps the choice
            and a resumed study keeps it, as it keeps its seed.
        n_trials: how many trials to finish (defaults to the grid size for grid search).
        max_concurrent: trials run at the same time.
        seed: makes grid/random proposals and seeded samplers reproducible (chosen and recorded
            when None, so a resumed study keeps it).
        name: the study's name; rerunning a study with the same name resumes it.
        storage: the directory of study records (default ``$HPOSDK_STORAGE`` or ``./hposdk-studies``).
        fixed: constant values merged into ``trial.params`` (not searched).
        optimizer_options: options of the optimizer (e.g. ``{'n_startup_trials': 5}`` for TPE).
        pruner: early stopping driven by ``trial.report``: ``'median'``, ``'successive_halving'``...
        pruner_options: options of the pruner.
        trial_timeout: seconds after which a trial is stopped and recorded as FAILED.
        retries: how many times a FAILED trial is retried with the same params.
        budget: ``{'min_budget', 'max_budget', 'eta'}`` for multi-fidelity optimizers.
        backend_options: options of the backend (validated by it).
        resume: continue an existing study of the same name (False moves the old record aside).
        progress: ``'auto'`` (a live bar on a terminal, lines otherwise), True, False or ``'live'``.

    Example:
        >>> from hposdk import Study, SearchSpace, Uniform
        >>> def objective(trial):
        ...     return (trial.params["x"] - 0.3) ** 2
        >>> result = Study(objective, SearchSpace({"x": Uniform(0.0, 1.0, step=0.1)}), metric="loss",
        ...                optimizer="grid", storage=str(getfixture("tmp_path")), progress=False).optimize()
        >>> result.best.params
        {'x': 0.3}
    """

    def __init__(
        self,
        objective: Callable[[Trial], Any] | str,
        space: SearchSpace | Mapping[str, Any],
        *,
        metric: str | None = None,
        mode: Literal["min", "max"] | None = None,
        objectives: Mapping[str, Literal["min", "max"]] | None = None,
        composites: Mapping[str, Composite | Mapping[str, Any]] | None = None,
        constraints: Sequence[str | Callable[[Mapping[str, Any]], float]] | None = None,
        pruning_metric: str | None = None,
        backend: str = "local",
        optimizer: str = "tpe",
        n_trials: int | None = None,
        max_concurrent: int = 1,
        seed: int | None = None,
        name: str | None = None,
        storage: str | os.PathLike[str] | None = None,
        fixed: Mapping[str, Any] | None = None,
        optimizer_options: Mapping[str, Any] | None = None,
        pruner: str | None = None,
        pruner_options: Mapping[str, Any] | None = None,
        trial_timeout: float | None = None,
        retries: int = 0,
        budget: Budget | Mapping[str, Any] | None = None,
        backend_options: Mapping[str, Any] | None = None,
        resume: bool = True,
        progress: bool | str = "auto",
    ) -> None:
        if isinstance(space, Mapping) and not isinstance(space, SearchSpace):
            space = SearchSpace(space)
        try:
            cfg = StudyConfig(
                name=name,
                objective=objective if isinstance(objective, str) else None,
                space=space,
                metric=metric,
                mode=mode,
                objectives=objectives,
                composites=_given(composites, {}),
                constraints=_given(constraints, []),
                pruning_metric=pruning_metric,
                backend=backend,
                optimizer=optimizer,
                optimizer_options=_given(optimizer_options, {}),
                pruner=pruner,
                pruner_options=_given(pruner_options, {}),
                n_trials=n_trials,
                max_concurrent=max_concurrent,
                seed=seed,
                fixed=_given(fixed, {}),
                trial_timeout=trial_timeout,
                retries=retries,
                budget=budget,
                backend_options=_given(backend_options, {}),
                storage=str(storage) if storage is not None else None,
            )
        except ConfigError as exc:
            raise ConfigError(f"Study: invalid arguments: {exc}") from None
        self._init(cfg, objective if callable(objective) else None, resume, progress)

    @classmethod
    def from_config(
        cls, config: StudyConfig, *, objective: Callable[[Trial], Any] | None = None, resume: bool = True,
        progress: bool | str = "auto",
    ) -> Study:
        """Build a study from a :class:`StudyConfig` (the objective may be given as a callable)."""
        if isinstance(config, Mapping):
            config = StudyConfig.model_validate(config)
        elif not isinstance(config, StudyConfig):
            raise ConfigError(f"Study.from_config: expected a StudyConfig or a mapping, got {type(config).__name__}")
        self = cls.__new__(cls)
        self._init(config, objective, resume, progress)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, *, progress: bool | str = "auto", **overrides: Any) -> Study:
        """Build a study from a YAML file; ``overrides`` replace its keys (e.g. ``backend='ray'``)."""
        cfg = StudyConfig.from_yaml(path)
        if overrides:
            try:
                cfg = StudyConfig.model_validate({**cfg.model_dump(), **overrides})
            except ConfigError as exc:
                raise ConfigError(f"invalid override: {exc}") from None
        return cls.from_config(cfg, progress=progress)

    # --- validation (everything before any compute) -------------------------------------------
    def _init(self, cfg: StudyConfig, objective: Callable[[Trial], Any] | None, resume: bool,
              progress: bool | str) -> None:
        if objective is None:
            if cfg.objective is None:
                raise ConfigError("objective: missing; give a function or an import path 'module:function'")
            objective = resolve_objective(cfg.objective)
        if not callable(objective):
            raise ConfigError(f"objective: {objective!r} is not callable")
        self.config = cfg
        self.objective = objective
        self.resume = resume
        self._session: RunSession | None = None  # while optimize() runs (what stop() stops)
        self.progress = progress
        name = cfg.name or _default_name(objective)
        if not _NAME.match(name):
            raise ConfigError(f"name: {name!r} may only use letters, digits, '_', '.' and '-'")
        self.name = name
        storage = cfg.storage or os.environ.get("HPOSDK_STORAGE") or DEFAULT_STORAGE
        #: A database URL when several drivers share the record (``sqlite:///...``, ``postgresql://...``).
        self.storage_url: str | None = storage if is_url(storage) else None
        # Trial working directories stay on this machine's disk either way.
        self.storage = Path(DEFAULT_STORAGE if self.storage_url else storage)
        clash = [k for k in cfg.fixed if k in cfg.space]
        if clash:
            raise ConfigError(f"fixed: {clash} are also in the search space; a key is either searched or fixed")
        goals = cfg.goals()
        metrics = getattr(objective, "__hposdk_metrics__", None)
        if metrics is not None:
            needed = [(n, "metric" if cfg.objectives is None else "objectives") for n in goals.objectives
                      if n not in goals.composites]
            needed += [(t, f"composites.{c}") for c, comp in goals.composites.items() for t in comp.terms]
            needed += [(c.metric, "constraints") for c in goals.constraints if c.metric]
            for name, where in needed:
                if name not in metrics and name not in goals.composites:
                    close = _suggest(name, list(metrics))
                    hint = f" Did you mean {close!r}?" if close else ""
                    raise ConfigError(f"{where}: the objective returns {list(metrics)}, not {name!r}.{hint}")
        #: What optimizer="auto" resolved to (None otherwise); the record keeps it (header "optimizer_choice").
        self.optimizer_choice: Any = None
        previous = self._existing_header()
        if cfg.optimizer == "auto":
            from ._auto import resolve_config

            # A resumed study keeps the choice its record holds (as it keeps its seed).
            recorded = previous.get("optimizer_choice") if previous else None
            cfg, self.optimizer_choice = resolve_config(cfg, len(goals.objectives), recorded)
            self.config = cfg
        n_trials = cfg.n_trials
        if cfg.optimizer == "grid":
            try:
                size = len(cfg.space.grid())
            except SpaceError as exc:
                raise ConfigError(f"optimizer='grid': {exc}") from None
            n_trials = size if n_trials is None else min(n_trials, size)
        if n_trials is None:
            raise ConfigError("n_trials: required (how many trials to run), e.g. n_trials=30")
        self.n_trials = n_trials
        self.backend_cls = get_backend(cfg.backend)
        try:
            options = self.backend_cls.options_model(**cfg.backend_options)
        except ValidationError as exc:
            raise ConfigError(
                f"backend_options for backend {cfg.backend!r}:\n" + format_validation_error(exc)
            ) from None
        seed = cfg.seed
        if seed is None:
            seed = previous.get("seed") if previous else None
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        check_binding(objective, cfg.space, cfg.fixed, seed)
        self.spec = StudySpec(
            name=name,
            objective=objective,
            objective_ref=cfg.objective or _objective_ref(objective),
            space=cfg.space,
            metric=goals.primary,
            mode=goals.objectives[goals.primary],
            optimizer=cfg.optimizer,
            n_trials=n_trials,
            max_concurrent=cfg.max_concurrent,
            seed=seed,
            fixed=dict(cfg.fixed),
            optimizer_options=dict(cfg.optimizer_options),
            pruner=cfg.pruner,
            pruner_options=dict(cfg.pruner_options),
            trial_timeout=cfg.trial_timeout,
            retries=cfg.retries,
            budget=cfg.budget,
            backend_options=options,
            workdir=self.storage / name,
            goals_=goals,
        )
        self.backend_cls.check(self.spec)
        if self.storage_url is not None:
            shared = self.backend_cls.capabilities.shared_record
            if cfg.optimizer not in shared:
                raise UnsupportedError(
                    f"storage {self.storage_url!r} is a database shared by several drivers, which backend "
                    f"{cfg.backend!r} supports with the optimizers: {', '.join(shared) or 'none'} (not "
                    f"{cfg.optimizer!r}). Fix: use a directory storage, or one of those optimizers."
                )
        if previous is not None and resume:
            self._check_compatible(previous)

    @property
    def record_path(self) -> Path | str:
        """The study's durable record: a JSON-lines journal, or ``<database URL>#<name>``."""
        if self.storage_url is not None:
            return f"{self.storage_url}#{self.name}"
        return self.storage / self.name / "study.jsonl"

    def _sql(self) -> SqlRecord:
        assert self.storage_url is not None
        return SqlRecord(self.storage_url, self.name)

    def _existing_header(self) -> dict[str, Any] | None:
        if not self.resume:
            return None
        if self.storage_url is not None:
            record = self._sql()
            try:
                return record.header()
            finally:
                record.close()
        path = self.storage / self.name / "study.jsonl"
        if not path.exists():
            return None
        return read_record(path).header

    def _header(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "objective": spec.objective_ref,
            "space": spec.space.to_dict(),
            "metric": spec.metric,
            "mode": spec.mode,
            "optimizer": spec.optimizer,
            "backend": self.config.backend,
            "seed": spec.seed,
            "fixed": dict(spec.fixed),
            "budget": spec.budget.model_dump() if spec.budget else None,
            **spec.goals.to_dict(),  # objectives, composites, constraints, pruning_metric
            **({"optimizer_choice": self.optimizer_choice.to_dict()} if self.optimizer_choice else {}),
        }

    def _check_compatible(self, previous: dict[str, Any]) -> None:
        mine = self._header()
        # Records written before multi-objective support lack these keys: they had one objective.
        defaults = {"objectives": {previous.get("metric"): previous.get("mode")}, "composites": {}, "constraints": []}
        for key in ("space", "metric", "mode", "fixed", "budget", "objectives", "composites", "constraints"):
            if previous.get(key, defaults.get(key)) != mine[key]:
                raise StudyRecordError(
                    f"study {self.name!r} already exists in {self.record_path} with a different {key} "
                    f"({previous.get(key)!r} there, {mine[key]!r} now). Fix: choose a new name, or pass "
                    "resume=False to start over (the old record is kept aside)."
                )

    # --- running ----------------------------------------------------------------------------------
    def optimize(self, *, callbacks: Sequence[Callable[[Study, TrialResult], object]] = ()) -> StudyResult:
        """Run (or resume) the study until ``n_trials`` trials have finished, or :meth:`stop`.

        Args:
            callbacks: functions ``callback(study, trial)`` called in the driver after each trial
                this run finishes (``trial`` is its :class:`~hposdk.TrialResult`, already recorded),
                on every backend. A callback may call :meth:`stop`, e.g. once a budget is spent.
                If one raises, the study starts no more trials, the running ones finish, and the
                exception is raised from here once the record is closed.

        Returns:
            The :class:`~hposdk.StudyResult` with every trial, old and new.

        Raises:
            KeyboardInterrupt: after Ctrl-C or SIGTERM, once the record is closed; rerun the same
                study to resume it.
            ObjectiveError: the objective's output cannot be scored (e.g. the metric is missing).

        Example:
            >>> from hposdk import Study, SearchSpace, Uniform
            >>> def stop_when_good(study, trial):
            ...     if trial.value is not None and trial.value < 0.05:
            ...         study.stop()
            >>> study = Study(lambda t: (t.params["x"] - 0.3) ** 2, SearchSpace({"x": Uniform(0.0, 1.0)}),
            ...               metric="loss", optimizer="random", n_trials=100, seed=0,
            ...               storage=str(getfixture("tmp_path")), progress=False)
            >>> result = study.optimize(callbacks=[stop_when_good])
            >>> len(result.trials) < 100 and result.best.value < 0.05
            True
        """
        from ._progress import Progress

        hooks = self._hooks(callbacks)
        if self.storage_url is not None:
            return self._optimize_shared(hooks)
        path = self.storage / self.name / "study.jsonl"
        if path.exists() and not self.resume:
            path.rename(path.with_name(f"study.{time.strftime('%Y%m%d-%H%M%S')}.jsonl.bak"))
        if not path.exists():
            _move_trial_dirs_aside(self.spec.workdir)
        finished: dict[int, Any] = {}
        unfinished: list[Any] = []
        next_number = 0
        header = self._header()
        if path.exists():
            state = read_record(path)
            self._check_compatible(state.header)
            finished, unfinished, next_number = state.finished, list(state.unfinished.values()), state.next_number
            header = state.header  # a resumed record keeps its first header
        journal = Journal(path, header=header)
        if finished or unfinished:
            journal.note(kind="resume", finished=len(finished), rerun=[s.number for s in unfinished])
        progress = Progress(self.name, self.n_trials, self.spec.metric, self.spec.mode, self.progress,
                            objectives=self.spec.objectives)
        session = RunSession(self.spec, journal, finished, unfinished, next_number, progress)
        session.callbacks = hooks

        def result() -> StudyResult:
            # The record holds exactly what the session saw: build the result from memory rather
            # than replaying the file (a replay costs as much as the journal writes themselves).
            unfinished_now = [*session.running, *(s.number for s in session.rerun)]
            return _result_of(header, session.finished, unfinished_now, str(path))

        return self._run(session, journal, progress, result)

    def _hooks(self, callbacks: Sequence[Callable[[Study, TrialResult], object]],
               ) -> list[Callable[[TrialResult], object]]:
        if callable(callbacks):
            callbacks = [callbacks]  # type: ignore[list-item]  # one callback passed bare
        hooks: list[Callable[[TrialResult], object]] = []
        for i, callback in enumerate(callbacks):
            if not callable(callback):
                raise ConfigError(f"callbacks[{i}]: {callback!r} is not callable. Fix: pass functions "
                                  "callback(study, trial), e.g. callbacks=[stop_when_good]")
            hooks.append(functools.partial(callback, self))
        return hooks

    def stop(self) -> None:
        """Start no more trials: the running ones finish, then :meth:`optimize` returns normally.

        Call it from a callback of :meth:`optimize` (or from another thread while it runs). The
        record notes the stop; running the same study again continues it towards ``n_trials``.

        Raises:
            RuntimeError: the study is not running.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"study {self.name!r} is not running: Study.stop() stops a running optimize(). "
                               "Fix: call it from a callback, optimize(callbacks=[...])")
        session.stopping = session.stopped = True

    def _optimize_shared(self, hooks: list[Callable[[TrialResult], object]]) -> StudyResult:
        from ._progress import Progress

        record = self._sql()
        if not self.resume and record.header() is not None:
            record.move_aside()
            _move_trial_dirs_aside(self.spec.workdir)
        record.open(self._header())
        try:
            state = record.read()
            self._check_compatible(state.header)
            lost = record.adopt_lost()  # trials of drivers that are gone (killed, machine lost)
        except BaseException:
            record.close()
            raise
        if lost:
            record.note(kind="resume", finished=len(state.finished), rerun=[s.number for s in lost])
        progress = Progress(self.name, self.n_trials, self.spec.metric, self.spec.mode, self.progress,
                            objectives=self.spec.objectives)
        session = SharedRunSession(self.spec, record, dict(state.finished), lost, progress)
        session.callbacks = hooks
        return self._run(session, record, progress, self.result)  # other drivers add trials too

    def _run(self, session: RunSession, journal: Any, progress: Any,
             result: Callable[[], StudyResult]) -> StudyResult:
        backend = self.backend_cls()
        progress.start(session.finished)
        self._session = session
        try:
            with _sigterm_as_interrupt():
                backend.run(self.spec, session)
        except KeyboardInterrupt:
            journal.note(kind="interrupted", running=sorted(session.running))
            progress.close()
            progress._line(f"interrupted; {len(session.finished)}/{self.n_trials} trials finished. "
                           "Rerun the same study to resume it.")
            raise
        else:
            if session.callback_error is not None or session.stopped:
                why = "a callback raised" if session.callback_error is not None else "Study.stop()"
                journal.note(kind="stopped", by=why, finished=len(session.finished))
                progress.close()
                if progress.enabled:
                    progress._line(f"stopped by {why}; {len(session.finished)}/{self.n_trials} trials finished. "
                                   "Rerun the same study to continue it.")
        finally:
            self._session = None
            progress.close()
            journal.close()
        if session.abort_error:
            raise ObjectiveError(f"study {self.name!r} stopped: {session.abort_error}")
        if session.callback_error is not None:
            raise session.callback_error
        return result()

    def result(self) -> StudyResult:
        """The study's result as recorded so far (works while or after it runs)."""
        if self.storage_url is not None:
            return load_study(self.name, storage=self.storage_url)
        return load_study(self.record_path)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    # A scheduler's SIGTERM (Slurm, Kubernetes) should stop a study as cleanly as Ctrl-C.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _move_trial_dirs_aside(workdir: Path) -> None:
    """Move trial directories a new record did not make into ``trials.<time>.bak/``.

    A fresh record numbers its trials from 0 again: trial 0 would otherwise find the old trial 0's
    files, and ``trial.load_checkpoint()`` would continue the old run's model.
    """
    if not workdir.is_dir():
        return
    old = [d for d in workdir.iterdir() if d.name.startswith("trial_") and d.is_dir()]
    if not old:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = workdir / f"trials.{stamp}.bak"
    n = 1
    while aside.exists():
        n += 1
        aside = workdir / f"trials.{stamp}-{n}.bak"
    aside.mkdir()
    for d in old:
        d.rename(aside / d.name)


def load_study(name_or_path: str | os.PathLike[str], storage: str | os.PathLike[str] | None = None) -> StudyResult:
    """Read a study's record into a :class:`~hposdk.StudyResult`.

    Args:
        name_or_path: a study name (looked up in ``storage``), its directory, or its ``study.jsonl``.
        storage: the directory of study records (default ``$HPOSDK_STORAGE`` or ``./hposdk-studies``),
            or a database URL (``sqlite:///studies.db``, ``postgresql://...``) shared by several drivers.
    """
    url = storage if storage is not None else os.environ.get("HPOSDK_STORAGE")
    if is_url(url):
        record = SqlRecord(str(url), str(name_or_path))
        try:
            state = record.read()
        finally:
            record.close()
        return _result_of(state.header, state.finished, state.unfinished, f"{url}#{name_or_path}")
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "study.jsonl"
    elif not path.exists():
        root = Path(storage or os.environ.get("HPOSDK_STORAGE") or DEFAULT_STORAGE)
        path = root / str(name_or_path) / "study.jsonl"
        if not path.exists():
            known = sorted(p.parent.name for p in root.glob("*/study.jsonl")) if root.exists() else []
            raise StudyRecordError(
                f"no study named {str(name_or_path)!r} in {root}"
                + (f"; studies there: {', '.join(known)}" if known else " (no studies there)")
            )
    state = read_record(path)
    return _result_of(state.header, state.finished, state.unfinished, str(path))


def _result_of(h: dict[str, Any], finished: Mapping[int, TrialResult], unfinished: Iterable[int],
               where: str) -> StudyResult:
    """A StudyResult from a record's header, its finished trials and the numbers left unfinished."""
    running_or_lost = sorted(unfinished)
    return StudyResult(
        name=h["name"],
        metric=h["metric"],
        mode=h["mode"],
        objectives=h.get("objectives") or {},
        constraints=tuple(h.get("constraints") or ()),
        backend=h.get("backend", "local"),
        optimizer=h.get("optimizer", ""),
        space=SearchSpace.from_dict(h["space"]),
        trials=tuple(finished[n] for n in sorted(finished)),
        record_path=where,
        info={**({"running_or_lost": running_or_lost} if running_or_lost else {}),
              **({"optimizer_choice": h["optimizer_choice"]} if h.get("optimizer_choice") else {})},
    )
