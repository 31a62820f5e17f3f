"""TrialResult and StudyResult: frozen, JSON round-trip, best trial, table exports."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .exceptions import NoCompletedTrialsError, NoSingleBestError
from .spaces import SearchSpace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportRecord", "StudyResult", "TrialResult", "TrialState"]

Mode = Literal["min", "max"]


class TrialState(str, Enum):
    """How a trial ended."""

    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value


class ReportRecord(BaseModel):
    """An intermediate report as stored in results."""

    # NaN and infinities round-trip through JSON as the json module writes them (not as null).
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")
    step: int
    metrics: dict[str, float]
    time: float = 0.0


class TrialResult(BaseModel):
    """One finished trial.

    Attributes:
        number: the trial's number in the study.
        params: the searched parameter values (exact Python natives).
        state: COMPLETE, PRUNED or FAILED.
        value: the study metric's final value (None when failed).
        metrics: everything the objective returned (or, when pruned, its last report).
        reports: the intermediate reports, in order.
        error: why it failed (traceback text), else None.
        budget: the fidelity it ran with (multi-fidelity optimizers), else None.
        attempt: 1 for a first run, 2+ when retried.
        started_at: Unix time when it started.
        duration_s: wall time in seconds.
        info: backend-specific extras (e.g. Ray's trial id).
        constraint_violations: one value per study constraint, ``<= 0`` when satisfied.
    """

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="constants")
    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    reports: tuple[ReportRecord, ...] = ()
    error: str | None = None
    budget: float | None = None
    attempt: int = 1
    started_at: float | None = None
    duration_s: float | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    constraint_violations: tuple[float, ...] = ()

    @property
    def feasible(self) -> bool:
        """Whether every constraint of the study holds (True when it has none)."""
        return all(v <= 0 for v in self.constraint_violations)


def _better(a: float, b: float, mode: Mode) -> bool:
    return a < b if mode == "min" else a > b


def _metric(t: TrialResult, name: str, primary: str) -> float | None:
    v = t.value if name == primary and t.value is not None else t.metrics.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


class StudyResult(BaseModel):
    """Everything a study produced, the same whichever backend ran it.

    Example:
        >>> result = StudyResult(name="s", metric="loss", mode="min", trials=(
        ...     TrialResult(number=0, params={"x": 1}, state="COMPLETE", value=0.5),
        ...     TrialResult(number=1, params={"x": 2}, state="FAILED", error="boom")))
        >>> result.best.params
        {'x': 1}
    """

    model_config = ConfigDict(frozen=True)
    name: str
    metric: str
    mode: Mode
    objectives: dict[str, Mode] = Field(default_factory=dict)
    constraints: tuple[str, ...] = ()
    backend: str = "local"
    optimizer: str = ""
    space: SearchSpace | None = None
    trials: tuple[TrialResult, ...] = ()
    record_path: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)

    # --- selections --------------------------------------------------------------------------
    def by_state(self, state: TrialState | str) -> list[TrialResult]:
        """Trials that ended in ``state``."""
        return [t for t in self.trials if t.state == TrialState(state)]

    @property
    def completed(self) -> list[TrialResult]:
        """Trials that completed (have a final value)."""
        return self.by_state(TrialState.COMPLETE)

    @property
    def directions(self) -> dict[str, Mode]:
        """The objectives and their modes (one entry for a single-objective study)."""
        return dict(self.objectives) or {self.metric: self.mode}

    @property
    def is_multi_objective(self) -> bool:
        return len(self.directions) > 1

    def _contenders(self) -> list[TrialResult]:
        # Completed, feasible trials at the highest budget reached (lower-budget values are not
        # comparable with higher-budget ones).
        done = [t for t in self.completed if t.feasible]
        budgets = [t.budget for t in done if t.budget is not None]
        if budgets:
            top = max(budgets)
            done = [t for t in done if t.budget == top]
        return done

    @property
    def best(self) -> TrialResult:
        """The best completed, feasible trial for the study's metric and mode.

        With multi-fidelity optimizers only trials at the highest budget reached compete, since
        lower-budget values are not comparable. Trials violating a constraint never win.

        Raises:
            NoSingleBestError: the study has several objectives; use :attr:`pareto_front` or
                :meth:`best_by`.
            NoCompletedTrialsError: no trial completed (the message summarises why).
        """
        if self.is_multi_objective:
            names = list(self.directions)
            raise NoSingleBestError(
                f"study {self.name!r} optimises {len(names)} objectives ({', '.join(names)}), so there is no "
                f"single best trial. Use result.pareto_front (the {len(self.pareto_front)} non-dominated "
                f"trials) or result.best_by({names[0]!r})."
            )
        return self.best_by(self.metric)

    def best_by(self, metric: str, mode: Mode | None = None) -> TrialResult:
        """The completed, feasible trial (at the highest budget) that is best for one metric.

        Args:
            metric: an objective, or any metric the trials returned.
            mode: ``'min'`` or ``'max'``; defaults to the objective's own mode.

        Raises:
            ValueError: ``mode`` is needed (``metric`` is not an objective) or no trial has ``metric``.
            NoCompletedTrialsError: no trial completed.
        """
        if mode is None:
            if metric not in self.directions:
                raise ValueError(
                    f"best_by({metric!r}): {metric!r} is not an objective of this study "
                    f"({', '.join(self.directions)}); pass mode='min' or mode='max'"
                )
            mode = self.directions[metric]
        done = self._contenders()
        if not done:
            infeasible = [t for t in self.completed if not t.feasible]
            why = f"; {len(infeasible)} completed but violate a constraint" if infeasible else ""
            raise NoCompletedTrialsError(
                f"study {self.name!r} has no completed trial{' that satisfies its constraints' if why else ''} "
                f"({self.summary_line()}{why}). " + self._failure_hint()
            )
        scored: list[tuple[TrialResult, float]] = []
        for t in done:
            v = _metric(t, metric, self.metric)
            if v is not None and math.isfinite(v):
                scored.append((t, v))
        if not scored:
            raise ValueError(f"best_by({metric!r}): no completed trial reported {metric!r}")
        best, best_v = scored[0]
        for t, v in scored[1:]:
            if _better(v, best_v, mode):
                best, best_v = t, v
        return best

    @property
    def pareto_front(self) -> list[TrialResult]:
        """The completed, feasible trials (at the highest budget) that no other trial dominates.

        For a single objective, the trials tied for best.
        """
        from ._goals import pareto_front

        names, modes = list(self.directions), list(self.directions.values())
        done = []
        for t in self._contenders():
            values = [_metric(t, n, self.metric) for n in names]
            if all(v is not None and math.isfinite(v) for v in values):
                done.append((t, values))
        keep = pareto_front([v for _, v in done], modes)  # type: ignore[misc]
        return [done[i][0] for i in keep]

    def _failure_hint(self) -> str:
        failed = self.by_state(TrialState.FAILED)
        if not failed:
            return "Run more trials."
        last = (failed[-1].error or "").strip().splitlines()
        return f"Last error (trial {failed[-1].number}): {last[-1] if last else 'unknown'}"

    def summary_line(self) -> str:
        """E.g. ``12 trials: 9 complete, 2 pruned, 1 failed``."""
        counts = {s: len(self.by_state(s)) for s in TrialState}
        return (
            f"{len(self.trials)} trials: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAILED]} failed"
        )

    # --- exports -----------------------------------------------------------------------------
    def rows(self, pareto_only: bool = False) -> list[dict[str, Any]]:
        """One flat dict per trial (the columns of :meth:`to_dataframe` and :meth:`to_csv`).

        Multi-objective studies get a ``pareto`` column; constrained ones ``feasible`` and one
        ``violation_<i>`` per constraint. ``pareto_only`` keeps the Pareto front only.
        """
        rows = []
        front = {t.number for t in self.pareto_front} if (self.is_multi_objective or pareto_only) else set()
        for t in self.trials:
            if pareto_only and t.number not in front:
                continue
            row: dict[str, Any] = {
                "number": t.number,
                "state": t.state.value,
                "value": t.value,
            }
            row.update({f"params_{k}": v for k, v in t.params.items()})
            row.update({f"metrics_{k}": v for k, v in t.metrics.items()})
            row.update(
                {
                    "budget": t.budget,
                    "n_reports": len(t.reports),
                    "attempt": t.attempt,
                    "duration_s": t.duration_s,
                    "error": (t.error or "").strip().splitlines()[-1] if t.error else None,
                }
            )
            if self.is_multi_objective:
                row["pareto"] = t.number in front
            if self.constraints:
                row["feasible"] = t.feasible if t.state is TrialState.COMPLETE else None
                row.update({f"violation_{i}": v for i, v in enumerate(t.constraint_violations)})
            rows.append(row)
        return rows

    def to_dataframe(self, pareto_only: bool = False) -> pd.DataFrame:
        """A pandas DataFrame, one row per trial (``params_*``, ``metrics_*`` columns)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is a core dependency
            from .exceptions import MissingExtraError

            raise MissingExtraError("to_dataframe needs pandas: pip install pandas") from exc
        return pd.DataFrame(self.rows(pareto_only))

    def to_csv(self, path: str | Path, pareto_only: bool = False) -> Path:
        """Write :meth:`rows` as CSV (only the Pareto front with ``pareto_only``); returns the path."""
        rows = self.rows(pareto_only)
        columns: list[str] = []
        for r in rows:
            columns.extend(c for c in r if c not in columns)
        path = Path(path)
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def to_json(self, path: str | Path | None = None, **kwargs: Any) -> str:
        """JSON text of the whole result (written to ``path`` too, when given)."""
        text = self.model_dump_json(**kwargs)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> StudyResult:
        """Read :meth:`to_json` output from text or a file path."""
        text = str(source)
        if isinstance(source, Path) or not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.model_validate_json(text)

    # --- plots (hposdk.plotting is imported only here, so matplotlib stays optional) -----------
    def plot_history(self, path: str | Path) -> Path:
        """Write the optimisation history plot (needs ``pip install hposdk[plot]``)."""
        from .plotting import plot_history

        return plot_history(self, path)

    def plot_parallel_coordinates(self, path: str | Path) -> Path:
        """Write a parallel-coordinates plot of the completed trials (see :mod:`hposdk.plotting`)."""
        from .plotting import plot_parallel_coordinates

        return plot_parallel_coordinates(self, path)

    def plot_importance(self, path: str | Path) -> Path:
        """Write a bar chart of the parameters' fANOVA importances (see :meth:`param_importances`)."""
        from .plotting import plot_importance

        return plot_importance(self, path)

    def plot_learning_curves(self, path: str | Path, metric: str | None = None) -> Path:
        """Write every trial's intermediate reports of ``metric`` (default: the study metric) per step."""
        from .plotting import plot_learning_curves

        return plot_learning_curves(self, path, metric)

    def plot_pareto_front(self, path: str | Path, objectives: tuple[str, str] | None = None) -> Path:
        """Write two objectives' scatter with the Pareto front highlighted (see :mod:`hposdk.plotting`)."""
        from .plotting import plot_pareto_front

        return plot_pareto_front(self, path, objectives)

    def param_importances(self, seed: int = 0) -> dict[str, float]:
        """Each parameter's share of the metric's variance (Optuna's fANOVA), most important first."""
        from .plotting import param_importances

        return param_importances(self, seed)

    def write_report(self, path: str | Path) -> Path:
        """Write a self-contained HTML report: summary, every plot that applies, the trials table."""
        from .plotting import write_report

        return write_report(self, path)

    def table(self, limit: int | None = None, sort: bool = True) -> str:
        """A plain-text table of trials (best first when ``sort``; Pareto front first with several
        objectives; ``*`` marks the front, ``!`` a trial that violates a constraint)."""
        trials: Sequence[TrialResult] = self.trials
        objectives = list(self.directions)
        front = {t.number for t in self.pareto_front} if self.is_multi_objective else set()
        if sort:
            sign = 1 if self.mode == "min" else -1
            trials = sorted(
                trials,
                key=lambda t: (
                    t.state != TrialState.COMPLETE,
                    not t.feasible,
                    t.number not in front,
                    sign * t.value if t.value is not None else math.inf,
                    t.number,
                ),
            )
        if limit is not None:
            trials = list(trials)[:limit]
        names = list(self.space.names) if self.space is not None else sorted(
            {k for t in self.trials for k in t.params}
        )
        header = ["#", "state", *objectives, *names, "time"]

        def mark(t: TrialResult) -> str:
            return str(t.number) + ("*" if t.number in front else "") + ("" if t.feasible else "!")

        body = [
            [
                mark(t),
                t.state.value,
                *(_fmt(_metric(t, o, self.metric)) for o in objectives),
                *(_fmt(t.params.get(n)) for n in names),
                _fmt(t.duration_s, "s"),
            ]
            for t in trials
        ]
        return _render(header, body)

    def summary(self) -> str:
        """A short text: counts and the best trial (the Pareto front with several objectives)."""
        lines = [f"Study {self.name!r} ({self.backend}, {self.optimizer}): {self.summary_line()}"]
        if self.constraints:
            infeasible = sum(1 for t in self.completed if not t.feasible)
            lines.append(f"Constraints {', '.join(self.constraints)}: {infeasible} completed trial(s) infeasible")
        if self.is_multi_objective:
            front = self.pareto_front
            goals = ", ".join(f"{k} ({v})" for k, v in self.directions.items())
            lines.append(f"Pareto front over {goals}: {len(front)} trial(s)")
            for t in front[:10]:
                values = ", ".join(f"{k}={_fmt(_metric(t, k, self.metric))}" for k in self.directions)
                lines.append(f"  #{t.number}: {values}")
            return "\n".join(lines)
        try:
            best = self.best
        except NoCompletedTrialsError as exc:
            lines.append(str(exc))
        else:
            lines.append(f"Best trial #{best.number}: {self.metric}={_fmt(best.value)} ({self.mode})")
            lines.append("  params: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
        return "\n".join(lines)


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}{unit}"
    return f"{v}{unit}"


def _render(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
    return "\n".join(out)


def dumps_line(obj: Any) -> str:
    """Compact JSON for one record line."""
    return json.dumps(obj, separators=(",", ":"), default=str)
