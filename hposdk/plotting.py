"""Plots of a study (matplotlib, behind the ``plot`` extra; imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._imports import require

if TYPE_CHECKING:
    from .result import StudyResult

__all__ = ["plot_history"]


def plot_history(result: StudyResult, path: str | Path) -> Path:
    """Write the optimisation history (each trial's value and the best so far) as PNG/SVG/PDF.

    Pruned trials are drawn with their last reported value, failed trials as marks on the axis.

    Args:
        result: the study result.
        path: the image file to write (its suffix picks the format).

    Returns:
        The path written.
    """
    matplotlib = require("matplotlib", "plot", "plotting")
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

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
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result.metric} ({result.mode})")
    ax.set_title(f"{result.name}: {result.summary_line()}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
