"""The Trial an objective sees, whatever backend runs it, and FixedTrial for unit tests.

An objective is a plain importable function of a :class:`Trial`::

    def objective(trial):
        for epoch in range(3):
            loss = train_one_epoch(lr=trial.params["lr"])
            trial.report(epoch, loss=loss)
            if trial.should_prune():
                break
        return {"loss": loss}

Backends subclass :class:`Trial` and override the ``_on_*`` hooks; objectives never import a
backend.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["FixedTrial", "Report", "Trial", "TrialPruned", "objective"]

F = TypeVar("F", bound=Callable[..., Any])


class TrialPruned(Exception):
    """Raise inside an objective to stop the trial as pruned (its last reports are kept)."""


@dataclass(frozen=True)
class Report:
    """One intermediate report: a step (epoch, iteration...) and the metrics measured there."""

    step: int
    metrics: dict[str, float]
    time: float = field(default=0.0, compare=False)  # seconds since the trial started


class _TrackedParams(Mapping[str, Any]):
    """Read-only params that remember which keys the objective read (for the binding check)."""

    __slots__ = ("_data", "accessed")

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)
        self.accessed: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        self.accessed.add(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def items(self):  # type: ignore[no-untyped-def, override]
        # Iterating items (e.g. ``Model(**trial.params)``) reads every key.
        self.accessed.update(self._data)
        return self._data.items()

    def values(self):  # type: ignore[no-untyped-def, override]
        self.accessed.update(self._data)
        return self._data.values()

    def keys(self):  # type: ignore[no-untyped-def, override]
        # ``dict(**params)`` and ``Model(**params)`` go through keys() then __getitem__.
        return self._data.keys()

    def __repr__(self) -> str:
        return repr(self._data)

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == other if isinstance(other, Mapping) else NotImplemented

    def to_dict(self) -> dict[str, Any]:
        """A plain dict copy (does not count as reading the values)."""
        return dict(self._data)


class Trial:
    """What an objective receives: its parameters and the ways to talk back to the optimizer.

    Attributes:
        number: the trial's number in its study (0-based, stable across resumes).
        params: the parameter values, exact Python natives (plus the study's fixed values).
        budget: the fidelity this evaluation is given (e.g. epochs) by multi-fidelity optimizers
            such as BOHB or Hyperband; ``None`` when the study declares no budget.
        reports: every :meth:`report` made so far.
    """

    def __init__(
        self,
        number: int,
        params: Mapping[str, Any],
        *,
        budget: float | None = None,
        workdir: str | os.PathLike[str] | None = None,
        study_name: str | None = None,
    ) -> None:
        self.number = number
        self.params: Mapping[str, Any] = _TrackedParams(params)
        self.budget = budget
        self.study_name = study_name
        self.reports: list[Report] = []
        # Kept as given and made a Path on first use: most objectives never ask for it, and a Path
        # per trial is a measurable share of a fast sampler's per-trial cost.
        self._workdir: str | os.PathLike[str] | None = workdir
        self._start = time.monotonic()
        self._pruned = False
        #: Adds the study's composite metrics to each report (set by run_objective).
        self._derive: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    # --- reporting ----------------------------------------------------------------------------
    def report(self, step: int, /, **metrics: float) -> None:
        """Record intermediate metrics at ``step`` (an epoch, an iteration...).

        Pruners and schedulers (median, successive halving, ASHA, Hyperband) decide on these
        values; call :meth:`should_prune` afterwards.

        Args:
            step: a non-negative int, increasing from report to report.
            **metrics: named numbers, e.g. ``loss=0.3, acc=0.91``.

        Raises:
            TypeError: ``step`` is not an int or a metric is not a number.
            ValueError: ``step`` is negative or not larger than the previous step.
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"trial.report: `step` must be an int, but got {step!r}")
        if step < 0:
            raise ValueError(f"trial.report: `step >= 0` must hold, but got step={step}")
        if self.reports and step <= self.reports[-1].step:
            raise ValueError(
                f"trial.report: steps must increase, but step={step} follows step={self.reports[-1].step}"
            )
        if not metrics:
            raise TypeError("trial.report needs at least one metric, e.g. trial.report(epoch, loss=0.3)")
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if isinstance(value, bool) or (not isinstance(value, (int, float)) and not hasattr(value, "__float__")):
                raise TypeError(f"trial.report: metric {name!r} must be a number, but got {value!r}")
            clean[name] = float(value)
        if self._derive is not None:
            clean = self._derive(clean)
        rep = Report(step, clean, time.monotonic() - self._start)
        self.reports.append(rep)
        self._on_report(rep)

    def should_prune(self) -> bool:
        """Whether the optimizer wants this trial stopped (after the latest report).

        An objective that sees True should stop and return its latest metrics (or raise
        :class:`TrialPruned`); the trial is then recorded as PRUNED.
        """
        if not self.reports:
            return False
        decision = self._should_prune()
        self._pruned = self._pruned or decision
        return decision

    @property
    def pruned(self) -> bool:
        """Whether :meth:`should_prune` has returned True for this trial."""
        return self._pruned

    # --- working directory and checkpoints -----------------------------------------------------
    @property
    def workdir(self) -> Path:
        """A directory of this trial's own (created on first use) for files it writes."""
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix=f"hposdk-trial-{self.number}-")
        path = Path(self._workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def checkpoint_dir(self) -> Path:
        """Where :meth:`save_checkpoint` keeps its state (objectives may add files here too)."""
        path = self._checkpoint_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_checkpoint(self, state: Any) -> None:
        """Save ``state`` (any picklable object, e.g. model and optimizer state dicts).

        Call it before :meth:`report` at the end of an epoch: backends with pausing schedulers
        (Ray's HyperBand-for-BOHB, PBT) attach the latest checkpoint to the report, and a trial
        that is resumed later gets it back from :meth:`load_checkpoint`.
        """
        path = self.checkpoint_dir / "state.pkl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint
        self._on_checkpoint(self.checkpoint_dir)

    def load_checkpoint(self) -> Any | None:
        """The state last saved for this trial (possibly by an earlier, paused run), or None."""
        src = self._restored_checkpoint_dir() or self._checkpoint_dir()
        path = src / "state.pkl"
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            return pickle.load(fh)

    # --- hooks for backends --------------------------------------------------------------------
    def _on_report(self, report: Report) -> None:
        """Called after every report (backends forward it to their engine)."""

    def _should_prune(self) -> bool:
        """The engine's pruning decision for the latest report."""
        return False

    def _on_checkpoint(self, directory: Path) -> None:
        """Called after a checkpoint was saved into ``directory``."""

    def _checkpoint_dir(self) -> Path:
        return self.workdir / "checkpoint"

    def _restored_checkpoint_dir(self) -> Path | None:
        """A checkpoint handed back by the engine on resume (e.g. Ray's), if any."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(number={self.number}, params={self.params!r}, budget={self.budget!r})"


class FixedTrial(Trial):
    """A trial with given params, for running an objective directly in a unit test.

    Args:
        params: the parameter values the objective reads.
        budget: the fidelity to pretend an optimizer gave (e.g. epochs).
        prune_at_step: make :meth:`should_prune` return True from this step on, to test an
            objective's pruning path; None never prunes.
        number: the trial number.
        workdir: a directory for the trial's files (a fresh temporary one by default).

    Examples:
        >>> def objective(trial):
        ...     for step in range(3):
        ...         trial.report(step, loss=1.0 / (step + 1))
        ...     return trial.params["x"] ** 2
        >>> trial = FixedTrial({"x": 3})
        >>> objective(trial)
        9
        >>> [r.metrics["loss"] for r in trial.reports]
        [1.0, 0.5, 0.3333333333333333]
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        budget: float | None = None,
        prune_at_step: int | None = None,
        number: int = 0,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(number, params, budget=budget, workdir=workdir)
        self.prune_at_step = prune_at_step

    def _should_prune(self) -> bool:
        return self.prune_at_step is not None and self.reports[-1].step >= self.prune_at_step

    @property
    def accessed_params(self) -> set[str]:
        """The parameter keys the objective has read so far."""
        assert isinstance(self.params, _TrackedParams)
        return set(self.params.accessed)


def objective(
    *, params: type | None = None, metrics: tuple[str, ...] | list[str] | None = None
) -> Callable[[F], F]:
    """Declare what an objective reads and returns, so a Study can check it before any compute.

    Args:
        params: a pydantic model of the objective's parameters. Every search-space (and fixed)
            key must be a field of it, and every required field must be given; a typo such as
            ``learning_rate`` for ``lr`` is refused before the first trial.
        metrics: the names the objective returns; the study metric must be one of them.

    Example:
        >>> from pydantic import BaseModel
        >>> class Params(BaseModel):
        ...     lr: float
        >>> @objective(params=Params, metrics=["loss"])
        ... def train(trial):
        ...     return {"loss": Params(**trial.params).lr}
    """

    def mark(fn: F) -> F:
        fn.__hposdk_params__ = params  # type: ignore[attr-defined]
        fn.__hposdk_metrics__ = tuple(metrics) if metrics is not None else None  # type: ignore[attr-defined]
        return fn

    return mark


def is_bad_number(value: float) -> bool:
    """NaN and infinities are not usable objective values."""
    return not math.isfinite(value)
