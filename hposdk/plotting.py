"""Plots and a self-contained HTML report of a study.

Everything here needs the ``plot`` extra (matplotlib; :func:`param_importances` also uses
scikit-learn) and is imported only when a plot is asked for, so ``import hposdk`` stays light.

Every ``plot_*`` function takes a :class:`~hposdk.StudyResult` and a path whose suffix picks the
format (``.png``, ``.svg``, ``.pdf``) and returns the path written. The same functions are methods
of the result (``result.plot_history(path)``) and kinds of ``hposdk plot``.

Example:
    >>> from hposdk import StudyResult, TrialResult
    >>> result = StudyResult(name="s", metric="loss", mode="min", trials=(
    ...     TrialResult(number=0, params={"x": 1}, state="COMPLETE", value=0.5),
    ...     TrialResult(number=1, params={"x": 2}, state="COMPLETE", value=0.2)))
    >>> path = plot_history(result, getfixture("tmp_path") / "history.png")
    >>> path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._imports import require
from .exceptions import ConfigError, NoCompletedTrialsError, NoSingleBestError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .result import StudyResult, TrialResult

__all__ = [
    "PLOT_KINDS",
    "param_importances",
    "plot_history",
    "plot_pareto_front",
    "plot_importance",
    "plot_learning_curves",
    "plot_parallel_coordinates",
    "write_report",
]


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plot", "plotting")
    matplotlib.use("Agg")  # no display needed, and safe in worker processes and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _usable(result: StudyResult) -> list[TrialResult]:
    """Completed trials with a finite value: the only ones an optimizer could compare."""
    return [t for t in result.completed if t.value is not None and math.isfinite(t.value)]


# --- history ----------------------------------------------------------------------------------


def _fig_history(result: StudyResult) -> Figure:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    from .result import TrialState, _better

    trials = sorted(result.trials, key=lambda t: t.number)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    styles = {TrialState.COMPLETE: ("tab:blue", "o", "complete"), TrialState.PRUNED: ("tab:orange", "x", "pruned")}
    for state, (color, marker, label) in styles.items():
        pts = [(t.number, t.value) for t in trials if t.state is state and t.value is not None]
        if pts:
            ax.scatter(*zip(*pts), color=color, marker=marker, label=label, zorder=3)
    failed = [t.number for t in trials if t.state is TrialState.FAILED]
    if failed:
        ax.scatter(failed, [0] * len(failed), color="tab:red", marker="v", label="failed",
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=3)
    best_x, best_y, best = [], [], None
    for t in trials:
        done = t.state is TrialState.COMPLETE and t.value is not None
        if done and (best is None or _better(t.value, best, result.mode)):  # type: ignore[arg-type]
            best = t.value
        if best is not None:
            best_x.append(t.number)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="black", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers are integers
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result.metric} ({result.mode})")
    ax.set_title(f"{result.name}: {result.summary_line()}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def plot_history(result: StudyResult, path: str | Path) -> Path:
    """Write the optimisation history (each trial's value and the best so far).

    Pruned trials are drawn with their last reported value, failed trials as marks on the axis.

    Args:
        result: the study result.
        path: the image file to write (its suffix picks the format).

    Returns:
        The path written.
    """
    return _save(_fig_history(result), path)


# --- parallel coordinates ---------------------------------------------------------------------


def _axis_positions(result: StudyResult, name: str, values: list[Any]) -> tuple[list[float], list[str]]:
    """Map one parameter's values to [0, 1] and give tick labels.

    Numbers are scaled linearly (log-scaled for log parameters, so a log-uniform search fills the
    axis); anything else (strings, None, bools) is spaced evenly in the order of the space's choices.
    """
    from .spaces import Discrete, Integer, LogUniform

    param = result.space[name] if result.space is not None and name in result.space.names else None
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if isinstance(param, Discrete) or not numeric:
        order = list(param.choices) if isinstance(param, Discrete) else []
        for v in values:
            if not any(v is c or (type(v) is type(c) and v == c) for c in order):
                order.append(v)
        # type-exact lookup: True, 1 and 1.0 are different choices in hposdk
        index = [next(i for i, c in enumerate(order) if v is c or (type(v) is type(c) and v == c)) for v in values]
        span = max(len(order) - 1, 1)
        return [i / span for i in index], [str(c) for c in order]
    log = isinstance(param, LogUniform) or (isinstance(param, Integer) and param.log)
    log = log and all(v > 0 for v in values)
    xs = [math.log(v) if log else float(v) for v in values]
    lo = float(min(xs)) if param is None else (math.log(param.low) if log else float(param.low))  # type: ignore[union-attr]
    hi = float(max(xs)) if param is None else (math.log(param.high) if log else float(param.high))  # type: ignore[union-attr]
    width = (hi - lo) or 1.0

    def fmt(x: float) -> str:
        return f"{(math.exp(x) if log else x):.3g}"

    return [(x - lo) / width for x in xs], [fmt(lo), fmt(hi)]


def _fig_parallel(result: StudyResult) -> Figure:
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    trials = _usable(result)
    if not trials:
        raise NoCompletedTrialsError(f"parallel coordinates need completed trials; {result.summary_line()}")
    names = list(result.space.names) if result.space is not None else sorted({k for t in trials for k in t.params})
    names = [n for n in names if all(n in t.params for t in trials)]
    columns = {n: _axis_positions(result, n, [t.params[n] for t in trials]) for n in names}
    values = [float(t.value) for t in trials]  # type: ignore[arg-type]
    vmin, vmax = min(values), max(values)
    vspan = (vmax - vmin) or 1.0  # all equal: any positive span draws them on one line
    norm = Normalize(vmin, vmin + vspan)
    # the best trials are drawn last (on top) and darkest, whatever the mode
    cmap = colormaps["viridis" if result.mode == "min" else "viridis_r"]
    order = sorted(range(len(trials)), key=lambda i: values[i], reverse=result.mode == "min")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.5), dpi=120)
    xs = list(range(len(names) + 1))
    vnorm = [(v - vmin) / vspan for v in values]
    for i in order:
        ys = [columns[n][0][i] for n in names] + [vnorm[i]]
        ax.plot(xs, ys, color=cmap(norm(values[i])), alpha=0.8, linewidth=1.5)
    for x, n in enumerate(names):
        ax.axvline(x, color="grey", linewidth=0.8)
        labels = columns[n][1]
        ticks = [i / max(len(labels) - 1, 1) for i in range(len(labels))]  # numbers: [low, high]
        for tick, label in zip(ticks, labels):
            ax.annotate(label, (x, tick), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
    ax.axvline(len(names), color="black", linewidth=1.0)
    ax.annotate(f"{vmin:.3g}", (len(names), 0.0), xytext=(3, 0), textcoords="offset points", fontsize=7)
    ax.annotate(f"{vmax:.3g}", (len(names), 1.0), xytext=(3, 0), textcoords="offset points", fontsize=7)
    ax.set_xticks(xs, [*names, result.metric])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(names) + 0.5)
    ax.set_title(f"{result.name}: {len(trials)} completed trials (darker is better)")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"{result.metric} ({result.mode})")
    fig.tight_layout()
    return fig


def plot_parallel_coordinates(result: StudyResult, path: str | Path) -> Path:
    """Write a parallel-coordinates plot: one line per completed trial through its parameter values.

    Each parameter is an axis (log-scaled for log parameters, choices evenly spaced in the order
    of the space); the last axis and the colour are the study metric, the best trials darkest.

    Args:
        result: the study result (needs at least one completed trial).
        path: the image file to write.

    Returns:
        The path written.

    Raises:
        NoCompletedTrialsError: no trial completed.
    """
    return _save(_fig_parallel(result), path)


# --- importance -------------------------------------------------------------------------------


def param_importances(result: StudyResult, seed: int = 0) -> dict[str, float]:
    """How much each parameter explains the variation of the metric, summing to 1 (fANOVA).

    The estimator is Optuna's fANOVA (``optuna.importance.FanovaImportanceEvaluator``: a random
    forest fitted on the completed trials, then the share of the forest's variance each parameter
    explains on its own, Hutter et al. 2014). The trials are replayed into an in-memory Optuna
    study through the exact translation the local backend uses, so log and stepped parameters are
    measured on the scale they were searched on. With multi-fidelity studies only the trials at
    the highest budget are used, since lower-budget values are not comparable. Parameters with a
    single value (fixed, or never varied) are left out.

    Args:
        result: the study result; it must carry its search space (results of ``Study`` and
            ``load_study`` do).
        seed: the random forest's seed (the estimate varies a little with it).

    Returns:
        ``{name: importance}``, most important first.

    Raises:
        NoCompletedTrialsError: fewer than two completed trials.
        ConfigError: the result has no search space.
        MissingExtraError: scikit-learn is not installed (``pip install hposdk[plot]``).
    """
    optuna = require("optuna", "plot", "parameter importances")
    require("sklearn", "plot", "parameter importances (Optuna's fANOVA)")
    from .backends._optuna import encode, to_optuna

    if result.space is None:
        raise ConfigError(
            f"parameter importances need the study's search space, but result {result.name!r} has none. "
            "Fix: use a result from Study.optimize() or load_study()."
        )
    trials = _usable(result)
    budgets = [t.budget for t in trials if t.budget is not None]
    if budgets:
        trials = [t for t in trials if t.budget == max(budgets)]
    if len(trials) < 2:
        raise NoCompletedTrialsError(
            f"parameter importances need at least 2 completed trials, got {len(trials)} ({result.summary_line()})"
        )
    space = result.space
    dists = to_optuna(space)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        study = optuna.create_study(direction="minimize" if result.mode == "min" else "maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t in trials:
        params = {n: t.params[n] for n in space.names}
        study.add_trial(optuna.trial.create_trial(params=encode(space, params), distributions=dists,
                                                  value=float(t.value)))  # type: ignore[arg-type]
    varied = [n for n in space.names if len({repr(t.params[n]) for t in trials}) > 1]
    if not varied:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied))


def _fig_importance(result: StudyResult) -> Figure:
    plt = _pyplot()
    importances = param_importances(result)
    names = list(importances)[::-1]  # most important at the top
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(names) + 1.5), dpi=120)
    bars = ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"importance for {result.metric} (fANOVA, sums to 1)")
    ax.set_title(f"{result.name}: parameter importance ({len(_usable(result))} completed trials)")
    fig.tight_layout()
    return fig


def plot_importance(result: StudyResult, path: str | Path) -> Path:
    """Write a bar chart of :func:`param_importances` (fANOVA; needs at least 2 completed trials).

    Args:
        result: the study result.
        path: the image file to write.

    Returns:
        The path written.
    """
    return _save(_fig_importance(result), path)


# --- learning curves --------------------------------------------------------------------------


def _fig_curves(result: StudyResult, metric: str | None = None) -> Figure:
    plt = _pyplot()
    from matplotlib.lines import Line2D

    from .result import TrialState

    metric = metric or result.metric
    curves = [
        (t, [(r.step, r.metrics[metric]) for r in t.reports if metric in r.metrics])
        for t in sorted(result.trials, key=lambda t: t.number)
    ]
    curves = [(t, pts) for t, pts in curves if pts]
    if not curves:
        reported = sorted({k for t in result.trials for r in t.reports for k in r.metrics})
        hint = f"reported metrics: {', '.join(reported)}" if reported else "no trial called trial.report()"
        raise ConfigError(f"learning curves need intermediate reports of {metric!r}, but {hint}. "
                          "Fix: call trial.report(step, **metrics) in the objective, or pass metric=.")
    colors = {TrialState.COMPLETE: "tab:blue", TrialState.PRUNED: "tab:orange", TrialState.FAILED: "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for t, pts in curves:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, color=colors[t.state], alpha=0.7, marker=".", linewidth=1.2)
        if t.state is TrialState.PRUNED:
            ax.plot(xs[-1], ys[-1], color=colors[t.state], marker="x")  # where it was stopped
    try:
        best = result.best
    except (NoCompletedTrialsError, NoSingleBestError):
        best = None
    for t, pts in curves:
        if best is not None and t.number == best.number:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color="black", linewidth=2.2, label=f"best (#{t.number})")
    handles = [Line2D([], [], color=c, label=s.value.lower()) for s, c in colors.items()
               if any(t.state is s for t, _ in curves)]
    handles += ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="best", fontsize="small")
    ax.set_xlabel("step (trial.report)")
    ax.set_ylabel(metric)
    ax.set_title(f"{result.name}: {metric} per step, {len(curves)} trials")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learning_curves(result: StudyResult, path: str | Path, metric: str | None = None) -> Path:
    """Write every trial's intermediate reports against their step (one line per trial).

    Useful for pruned and multi-fidelity studies: pruned trials are orange and end with an ``x``
    where they were stopped, the best trial is black.

    Args:
        result: the study result.
        path: the image file to write.
        metric: the reported metric to draw (default: the study metric).

    Returns:
        The path written.

    Raises:
        ConfigError: no trial reported ``metric`` (the message lists what was reported).
    """
    return _save(_fig_curves(result, metric), path)


# --- Pareto front -----------------------------------------------------------------------------


def _fig_pareto(result: StudyResult, objectives: tuple[str, str] | None = None) -> Figure:
    from .result import _metric

    names = list(objectives or list(result.directions)[:2])
    if len(names) != 2:
        raise ConfigError(f"a Pareto-front plot needs two objectives; study {result.name!r} has "
                          f"{len(result.directions)} ({', '.join(result.directions)})")
    front = {t.number for t in result.pareto_front}
    pts: list[tuple[TrialResult, float, float]] = []
    for t in result.completed:
        x, y = _metric(t, names[0], result.metric), _metric(t, names[1], result.metric)
        if x is not None and y is not None:
            pts.append((t, x, y))
    if not pts:
        raise NoCompletedTrialsError(f"a Pareto-front plot needs completed trials; {result.summary_line()}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    groups = [("dominated", "tab:gray", "o", [p for p in pts if p[0].feasible and p[0].number not in front]),
              ("infeasible", "tab:red", "x", [p for p in pts if not p[0].feasible]),
              ("Pareto front", "tab:blue", "o", sorted((p for p in pts if p[0].number in front), key=lambda p: p[1]))]
    for label, color, marker, group in groups:
        if group:
            ax.scatter([p[1] for p in group], [p[2] for p in group], color=color, marker=marker, label=label,
                       zorder=3, alpha=0.9 if label == "Pareto front" else 0.5)
    if groups[2][3]:
        ax.plot([p[1] for p in groups[2][3]], [p[2] for p in groups[2][3]], color="tab:blue", linewidth=1,
                drawstyle="steps-post" if result.directions.get(names[1]) == "min" else "steps-pre")
    modes = result.directions
    ax.set_xlabel(f"{names[0]} ({modes.get(names[0], '?')})")
    ax.set_ylabel(f"{names[1]} ({modes.get(names[1], '?')})")
    ax.set_title(f"{result.name}: {len(front)} of {len(pts)} trials on the front")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig


def plot_pareto_front(result: StudyResult, path: str | Path, objectives: tuple[str, str] | None = None) -> Path:
    """Write a scatter of two objectives with the Pareto front highlighted.

    Args:
        result: a study with two objectives (or pass ``objectives`` to pick two).
        path: the image file to write.
        objectives: the two metrics to draw (default: the study's first two objectives).

    Raises:
        ConfigError: fewer than two objectives to draw.
        NoCompletedTrialsError: no completed trial has both metrics.
    """
    return _save(_fig_pareto(result, objectives), path)


# --- the HTML report --------------------------------------------------------------------------

PLOT_KINDS: dict[str, Callable[..., Path]] = {
    "history": plot_history,
    "parallel": plot_parallel_coordinates,
    "importance": plot_importance,
    "curves": plot_learning_curves,
    "pareto": plot_pareto_front,
}
"""The ``--kind`` names of ``hposdk plot``, each with the function that draws it."""

_FIGURES: dict[str, tuple[str, Callable[[StudyResult], Figure]]] = {
    "history": ("Optimisation history", _fig_history),
    "parallel": ("Parallel coordinates", _fig_parallel),
    "importance": ("Parameter importance (fANOVA)", _fig_importance),
    "curves": ("Learning curves", _fig_curves),
    "pareto": ("Pareto front", _fig_pareto),
}


def _png_base64(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(result: StudyResult, path: str | Path) -> Path:
    """Write one self-contained HTML page: summary, every plot that applies, and the trials table.

    The plots are PNGs embedded as base64 data, so the file opens offline, can be mailed or
    attached to a ticket, and loads nothing from the network. A plot that does not apply (no
    reports for learning curves, fewer than two completed trials for importance) is replaced by
    a line saying why.

    Args:
        result: the study result.
        path: the ``.html`` file to write.

    Returns:
        The path written.
    """
    esc = html.escape
    sections = []
    for kind, (title, make) in _FIGURES.items():
        try:
            body = f'<img alt="{esc(kind)}" src="data:image/png;base64,{_png_base64(make(result))}">'
        except (ConfigError, NoCompletedTrialsError, ImportError) as exc:
            body = f'<p class="na">Not drawn: {esc(str(exc))}</p>'
        sections.append(f'<section id="{kind}"><h2>{esc(title)}</h2>{body}</section>')
    rows = result.rows()
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body_rows = "".join(
        f'<tr class="{esc(str(r["state"]).lower())}">' + "".join(f"<td>{esc(_cell(r.get(c)))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>hposdk report: {esc(result.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
img {{ max-width: 100%; }} table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
tr.pruned {{ color: #b35900; }} tr.failed {{ color: #b00; }} .na {{ color: #777; font-style: italic; }}
</style></head><body>
<h1>{esc(result.name)}</h1>
<pre>{esc(result.summary())}</pre>
<p>backend <code>{esc(result.backend)}</code>, optimizer <code>{esc(result.optimizer)}</code>,
metric <code>{esc(result.metric)}</code> ({esc(result.mode)})</p>
{"".join(sections)}
<section id="trials"><h2>Trials</h2><table><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table></section>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
