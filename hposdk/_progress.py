"""Live progress: a rich progress bar on a terminal, one plain line per trial elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any

from .result import TrialResult, TrialState, _better


class Progress:
    """Shows trials done / running / pruned / failed and the best value so far."""

    def __init__(self, name: str, total: int, metric: str, mode: str, enabled: bool | str = "auto",
                 objectives: dict[str, Any] | None = None) -> None:
        self.name, self.total, self.metric, self.mode = name, total, metric, mode
        # With several objectives the status shows the Pareto front's size instead of a best value.
        self.objectives = dict(objectives) if objectives and len(objectives) > 1 else None
        self._points: list[list[float]] = []
        self.enabled = bool(enabled)
        self.live = (enabled == "auto" and sys.stderr.isatty()) or enabled == "live"
        self.best: TrialResult | None = None
        self._bar: Any = None
        self._task: Any = None
        self._start = time.monotonic()

    def start(self, finished: dict[int, TrialResult]) -> None:
        for t in finished.values():
            self._consider(t)
        if not self.enabled:
            return
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.name, total=self.total, completed=len(finished), status="")
        elif finished:
            self._line(f"resuming: {len(finished)}/{self.total} trials already finished" + self._best_text())

    def _consider(self, t: TrialResult) -> None:
        if t.state is not TrialState.COMPLETE or t.value is None or not t.feasible:
            return
        if self.objectives is not None:
            values = [t.metrics.get(k) for k in self.objectives]
            if all(isinstance(v, (int, float)) for v in values):
                self._points.append([float(v) for v in values])  # type: ignore[arg-type]
            return
        if self.best is None or self.best.value is None or _better(t.value, self.best.value, self.mode):  # type: ignore[arg-type]
            self.best = t

    def _best_text(self) -> str:
        if self.objectives is not None:
            from ._goals import pareto_front

            if not self._points:
                return ""
            return f", Pareto front {len(pareto_front(self._points, list(self.objectives.values())))}"
        if self.best is None or self.best.value is None:
            return ""
        return f", best {self.metric}={self.best.value:.5g} (#{self.best.number})"

    def _line(self, text: str) -> None:
        print(f"[hposdk] {self.name}: {text}", file=sys.stderr, flush=True)

    def update(self, session: Any, result: TrialResult | None = None) -> None:
        if result is not None:
            self._consider(result)
        if not self.enabled:
            return
        done = len(session.finished)
        counts = {s: 0 for s in TrialState}
        for t in session.finished.values():
            counts[t.state] += 1
        status = (f"running {len(session.running)} | pruned {counts[TrialState.PRUNED]} | "
                  f"failed {counts[TrialState.FAILED]}{self._best_text()}")
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=status)
        elif result is not None:
            value = f"{self.metric}={result.value:.5g}" if result.value is not None else ""
            why = ""
            if result.state is TrialState.FAILED and result.error:
                why = " (" + result.error.strip().splitlines()[-1][:120] + ")"
            self._line(f"trial {result.number} {result.state.value} {value}{why} | {done}/{self.total} done, "
                       f"{status}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
