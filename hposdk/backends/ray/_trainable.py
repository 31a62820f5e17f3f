"""What runs inside a Ray Tune trial (worker side): the Trial subclass and the trainable function.

The trainable runs the objective through :func:`~hposdk.backends._base.run_objective`, so a
result is interpreted exactly as on every other backend, and ships the outcome back to the
driver in a last report flagged ``done=True``: Ray then ends the trial without consulting the
scheduler about that report (``TuneController._process_trial_result``), so schedulers only ever
see the objective's own reports. A failed outcome is raised instead, so that Ray's
``FailureConfig(max_failures=...)`` retries it; the exception carries the outcome for the driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...result import TrialState
from ...trial import Report, Trial
from .._base import Outcome, run_objective

#: The key of the hposdk bookkeeping in a Ray trial's config (number, budget, workdir).
CONFIG_KEY = "__hposdk__"
#: Result key carrying one hposdk report as JSON (step, metrics, time), exactly as reported.
REPORT_KEY = "hposdk_report"
#: Result key carrying the final outcome as JSON (present only in the trial's last result).
OUTCOME_KEY = "hposdk_outcome"

#: Keys Ray fills in or interprets in a result; an objective metric of that name is reported to
#: Ray as ``metric/<name>`` (it is still recorded under its own name by hposdk).
RESERVED = frozenset({
    "done", "training_iteration", "time_total_s", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "timesteps_total", "timesteps_this_iter", "timesteps_since_restore",
    "episodes_total", "episodes_this_iter", "timestamp", "date", "pid", "hostname", "node_ip",
    "trial_id", "experiment_id", "experiment_tag", "config", "should_checkpoint",
    "checkpoint_dir_name", "hyperband_info", "__duplicate__", "warmup_time",
    REPORT_KEY, OUTCOME_KEY,
})


@dataclass(frozen=True)
class StudyPayload:
    """What every trial needs, put into Ray's object store once (``tune.with_parameters``)."""

    name: str
    objective: Any
    metric: Any  # the study's Goals (objectives, composites), or a metric name
    fixed: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    cwd: str | None = None
    trial_timeout: float | None = None
    quiet: bool = True


class TrialFailed(Exception):
    """Raised in the trainable for a FAILED outcome so that Ray retries it (``max_failures``).

    ``args[0]`` is the outcome as JSON; ``str()`` is the objective's error, which is what Ray
    writes to the trial's ``error.txt``.
    """

    @property
    def outcome(self) -> dict[str, Any]:
        return json.loads(self.args[0])  # type: ignore[no-any-return]

    def __str__(self) -> str:
        try:
            return str(self.outcome.get("error") or "the trial failed")
        except (ValueError, TypeError):
            return str(self.args[0])


#: Seconds a timed-out objective gets to return to Python before its worker process is ended.
TIMEOUT_GRACE_S = 2.0
#: File in the trial's working directory saying why its worker was ended (read by the driver).
TIMEOUT_NOTE = ".hposdk-timeout.json"


class TrialTimeout(TimeoutError):
    """Raised asynchronously in the objective's thread when ``trial_timeout`` is exceeded."""

    seconds: float = 0.0

    def __str__(self) -> str:
        return f"the trial exceeded trial_timeout={self.seconds}s and was stopped"


def encode_outcome(outcome: Outcome) -> str:
    """An :class:`Outcome` as JSON text (it travels in a Ray result or an exception)."""
    return json.dumps(
        {
            "state": outcome.state.value,
            "value": outcome.value,
            "metrics": outcome.metrics,
            "error": outcome.error,
            "accessed": sorted(outcome.accessed),
            "duration_s": outcome.duration_s,
            "config_error": outcome.config_error,
        },
        default=repr,
    )


class RayTrial(Trial):
    """The Trial inside a Ray trainable: reports become ``ray.tune.report`` calls.

    ``should_prune()`` is always False here: a Ray scheduler does not answer, it stops the
    function at the report it decided on (``tune.report`` raises ``SystemExit(0)`` in the
    trial's thread), and the driver records the trial as PRUNED with that report's metrics.
    """

    def __init__(self, tune: Any, number: int, params: dict[str, Any], *, budget: float | None,
                 workdir: str | None, study_name: str) -> None:
        super().__init__(number, params, budget=budget, workdir=workdir, study_name=study_name)
        self._tune = tune
        self._pending_checkpoint: Path | None = None
        self._restored: Path | None = None
        self._restored_checked = False

    def _on_report(self, report: Report) -> None:
        result: dict[str, Any] = {
            (f"metric/{k}" if k in RESERVED else k): v for k, v in report.metrics.items()
        }
        result[REPORT_KEY] = json.dumps([report.step, report.metrics, report.time])
        self._tune.report(result, checkpoint=self.take_checkpoint())

    def _on_checkpoint(self, directory: Path) -> None:
        # Attached to the next report: Ray persists a checkpoint together with a result.
        self._pending_checkpoint = directory

    def take_checkpoint(self) -> Any:
        """The checkpoint saved since the last report, as a ``ray.tune.Checkpoint`` (or None)."""
        if self._pending_checkpoint is None:
            return None
        directory, self._pending_checkpoint = self._pending_checkpoint, None
        return self._tune.Checkpoint.from_directory(str(directory))

    def _restored_checkpoint_dir(self) -> Path | None:
        # A trial Ray resumes (paused by HyperBand/BOHB, or retried after a failure) gets the
        # checkpoint of its last report back from tune.get_checkpoint().
        if not self._restored_checked:
            self._restored_checked = True
            checkpoint = self._tune.get_checkpoint()
            if checkpoint is not None:
                self._restored = Path(checkpoint.to_directory())
        return self._restored


class _Watchdog:
    """Raises :class:`TrialTimeout` in the objective's thread after ``seconds``.

    Python cannot kill a thread; an asynchronous exception is delivered when the thread next
    runs Python code, so an objective stuck inside one long C call is stopped after that call.
    """

    def __init__(self, seconds: float, note: Path | None = None) -> None:
        self._thread_id = threading.get_ident()
        self._seconds = seconds
        self._exc = type("TrialTimeout", (TrialTimeout,), {"seconds": seconds})
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._lock = threading.Lock()
        self._armed = True
        self._note = note

    def _fire(self) -> None:
        with self._lock:
            if self._armed:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                           ctypes.py_object(self._exc))
                # The exception only lands when the thread runs Python again: an objective blocked
                # in one C call (a sleep, a socket read, a CUDA sync) would run on. Escalate.
                escalate = threading.Timer(TIMEOUT_GRACE_S, self._escalate)
                escalate.daemon = True
                escalate.start()

    def _escalate(self) -> None:
        with self._lock:
            if not self._armed:
                return
            if self._note is not None:
                # The driver reads the reason from here: the worker's own end says only "actor died".
                with contextlib.suppress(OSError):
                    self._note.write_text(json.dumps({"error": (
                        f"the trial exceeded trial_timeout={self._seconds}s and was stopped (it was blocked "
                        f"in a call that does not return to Python, so its worker process was ended)")}))
            os._exit(70)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()


def run_trial(config: dict[str, Any], study: StudyPayload) -> None:
    """The Ray Tune function trainable of every hposdk trial."""
    from ray import tune

    if study.quiet:
        # Ray's workers log every checkpoint save and restore at INFO ("Checkpoint successfully
        # created at ..."), forwarded to the driver's console; hposdk keeps the console quiet.
        for name in ("ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.WARNING)
    meta = config[CONFIG_KEY]
    params = {k: v for k, v in config.items() if k != CONFIG_KEY}
    if study.cwd and os.path.isdir(study.cwd):
        # Ray changes into its own trial directory; objectives see the driver's working
        # directory instead, as on the local backend (relative config paths keep working).
        os.chdir(study.cwd)
    trial = RayTrial(tune, meta["number"], {**study.fixed, **study.data, **params}, budget=meta["budget"],
                     workdir=meta.get("workdir"), study_name=study.name)
    if study.trial_timeout is not None:
        note = Path(meta["workdir"]) / TIMEOUT_NOTE if meta.get("workdir") else None
        if note is not None:
            note.parent.mkdir(parents=True, exist_ok=True)
            note.unlink(missing_ok=True)  # from an earlier run of this trial
        with _Watchdog(study.trial_timeout, note):
            outcome = run_objective(study.objective, trial, study.metric)
    else:
        outcome = run_objective(study.objective, trial, study.metric)
    payload = encode_outcome(outcome)
    if outcome.state is TrialState.FAILED and not outcome.config_error:
        raise TrialFailed(payload)
    trial_checkpoint = trial.take_checkpoint()
    tune.report({"done": True, OUTCOME_KEY: payload}, checkpoint=trial_checkpoint)
