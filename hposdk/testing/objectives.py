"""Small importable objectives used by the conformance suites (worker processes and Ray actors
import them by name, so they live in a module, not in a test file)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..trial import Trial, TrialPruned


def _log_call(trial: Trial) -> None:
    # Lets a test count how often each trial really ran (resume must not repeat any).
    path = trial.params.get("log_path")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{trial.number}\n")


def quadratic(trial: Trial) -> dict[str, Any]:
    """``loss = (x - target)**2`` (+ ``y`` terms when present), reporting 3 steps.

    Fixed params it understands: ``target`` (default 0.3), ``fail_above`` (raise when x is above),
    ``nan_above`` (return NaN when x is above), ``log_path`` (append the trial number there).
    """
    _log_call(trial)
    x = float(trial.params["x"])
    target = float(trial.params.get("target", 0.3))
    if "fail_above" in trial.params and x > trial.params["fail_above"]:
        raise RuntimeError(f"deliberate failure at x={x}")
    loss = (x - target) ** 2
    for name in ("y", "z"):
        if name in trial.params and isinstance(trial.params[name], (int, float)):
            loss += 0.01 * float(trial.params[name]) ** 2
    if "nan_above" in trial.params and x > trial.params["nan_above"]:
        return {"loss": math.nan}
    for step in range(3):
        trial.report(step, loss=loss + 0.1 * (2 - step))
        if trial.should_prune():
            break
    return {"loss": loss, "neg_loss": -loss}


def learning_curve(trial: Trial) -> dict[str, float]:
    """A slow "training run": ``steps`` reports whose loss falls towards ``(x - 0.3)**2``.

    Bad trials (x far from 0.3) stay bad at every step, so pruners and schedulers can stop them.
    """
    _log_call(trial)
    x = float(trial.params["x"])
    steps = int(trial.params.get("steps", 8))
    loss = 0.0
    for step in range(steps):
        loss = (x - 0.3) ** 2 + 1.0 / (step + 1)
        trial.report(step, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


def epochs(trial: Trial) -> dict[str, float]:
    """A resumable multi-fidelity training run: ``trial.budget`` epochs (9 without a budget).

    The "model" is a weight that halves every epoch, so after ``n`` epochs in total the loss is
    exactly ``(x - 0.3)**2 + 0.5**n``: it falls with the budget, and a run continued from its
    checkpoint reports the same losses as one that never stopped. It starts from
    ``trial.load_checkpoint()`` when there is one (a configuration continued at a larger budget,
    or a trial a scheduler paused and resumed), and each epoch saves a checkpoint, then reports
    ``loss``, ``epochs`` (trained in total) and ``resumed_from`` (the epochs found in the
    checkpoint), and stops when ``trial.should_prune()`` says so.

    With the fixed param ``epoch_log`` (a file path) every epoch trained appends one JSON line
    there (trial number, budget, epoch, resumed_from, checkpoint directory), an account kept
    apart from what the backend records.
    """
    x = float(trial.params["x"])
    log = trial.params.get("epoch_log")
    budget = round(trial.budget) if trial.budget is not None else 9
    state = trial.load_checkpoint() or {"epochs": 0, "weight": 1.0}
    start = int(state["epochs"])
    loss = (x - 0.3) ** 2 + state["weight"]
    for epoch in range(start, budget):
        state = {"epochs": epoch + 1, "weight": state["weight"] * 0.5}
        loss = (x - 0.3) ** 2 + state["weight"]
        # Saved before the report: Ray attaches the latest checkpoint to the next report.
        trial.save_checkpoint(state)
        if log:
            line = {"number": trial.number, "budget": trial.budget, "epoch": epoch, "resumed_from": start,
                    "checkpoint": str(trial.checkpoint_dir)}
            with open(log, "a") as fh:
                fh.write(json.dumps(line) + "\n")
        trial.report(epoch, loss=loss, epochs=epoch + 1, resumed_from=start)
        if trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch}")
    return {"loss": loss, "epochs": float(state["epochs"]), "resumed_from": float(start)}


def echo_types(trial: Trial) -> dict[str, Any]:
    """Fails unless every param is a plain Python native (no numpy scalars, no engine objects)."""
    _log_call(trial)
    for name, value in trial.params.items():
        if value is not None and type(value) not in (bool, int, float, str):
            raise TypeError(f"param {name!r} has type {type(value).__module__}.{type(value).__name__}")
    return {"loss": 0.0}


def wrong_metric(trial: Trial) -> dict[str, float]:
    """Returns a dict without ``loss`` (the study metric in the conformance tests)."""
    return {"accuracy": float(trial.params["x"])}


def write_and_return(trial: Trial) -> float:
    """Writes a file into ``trial.workdir`` and returns x (checks per-trial directories)."""
    (Path(trial.workdir) / "out.txt").write_text(str(trial.params["x"]))
    return float(trial.params["x"])


def die(trial: Trial) -> float:
    """Kills its own process for x above 0.5 (crash isolation)."""
    if float(trial.params["x"]) > 0.5:
        os._exit(3)
    return float(trial.params["x"])


def sleepy(trial: Trial) -> dict[str, float]:
    """Sleeps ``sleep`` seconds (default 0.2), then returns ``(x - 0.3)**2`` (crash/resume tests)."""
    import time

    _log_call(trial)
    time.sleep(float(trial.params.get("sleep", 0.2)))
    x = float(trial.params["x"])
    trial.report(0, loss=(x - 0.3) ** 2)
    return {"loss": (x - 0.3) ** 2}


def flaky(trial: Trial) -> float:
    """Fails on its first attempt, succeeds on the retry (a transient failure)."""
    marker = Path(trial.workdir) / "attempted"
    if not marker.exists():
        marker.write_text("1")
        raise ConnectionError("transient failure")
    return float(trial.params["x"])


def two_quadratics(trial: Trial) -> dict[str, float]:
    """Two objectives with a known Pareto front (the segment from (0, 0) to (1, 1) in x, y)."""
    x, y = float(trial.params["x"]), float(trial.params["y"])
    return {"f1": x**2 + y**2, "f2": (x - 1) ** 2 + (y - 1) ** 2}


def biquadratic(trial: Trial) -> dict[str, float]:
    """Two objectives in conflict, both to minimise: ``f1 = x**2 + y**2``, ``f2 = (x - 1)**2 + y**2``.

    The Pareto front is ``y = 0, 0 <= x <= 1`` (``y`` is optional; 0 when not searched). Reports
    ``steps`` steps (fixed param, default 3) of both, each falling towards its final value
    (``+ 1 / (step + 1)``), and stops when ``trial.should_prune()`` says so; ``sleep`` (fixed
    param, seconds per step) lets a poller see the reports of a running trial.
    """
    import time

    _log_call(trial)
    x = float(trial.params["x"])
    y = float(trial.params.get("y", 0.0))
    f1, f2 = x**2 + y**2, (x - 1) ** 2 + y**2
    for step in range(int(trial.params.get("steps", 3))):
        trial.report(step, f1=f1 + 1.0 / (step + 1), f2=f2 + 1.0 / (step + 1))
        if trial.should_prune():
            break
        time.sleep(float(trial.params.get("sleep", 0.0)))
    return {"f1": f1, "f2": f2}


#: The faults :func:`faulty` injects, and what each one does.
FAULTS = {
    "raise": "raises RuntimeError",
    "nan": "returns {'loss': nan}",
    "inf": "returns {'loss': inf}",
    "none": "returns None",
    "string": "returns a str",
    "memoryerror": "raises MemoryError",
    "hang": "loops for an hour in Python (stopped by trial_timeout)",
    "hang_in_c": "blocks in one C call (time.sleep) for ``hang_s`` seconds, default an hour",
    "rlimit": "lowers its own address-space limit and allocates 1 GiB (worker processes only)",
    "exit": "kills its process with os._exit(3) (worker processes only)",
    "segfault": "dereferences NULL through ctypes (worker processes only)",
    "sigkill": "sends itself SIGKILL, as the kernel's OOM killer does (worker processes only)",
}


def faulty(trial: Trial) -> Any:
    """``(x - 0.3)**2``, except that for ``x > fault_above`` (fixed param, default -inf: always) it
    fails the way the fixed param ``fault`` says (see :data:`FAULTS`).

    Faults that take the process down refuse to run in the process whose pid is the fixed param
    ``driver_pid`` (the test's own process). ``log_path`` appends the trial number on every attempt.
    """
    _log_call(trial)
    x = float(trial.params["x"])
    fault = str(trial.params.get("fault", "raise"))
    if x <= float(trial.params.get("fault_above", -math.inf)):
        return {"loss": (x - 0.3) ** 2}
    if fault in ("rlimit", "exit", "segfault", "sigkill") and os.getpid() == int(trial.params.get("driver_pid", -1)):
        raise RuntimeError(f"fault {fault!r} would take down the test process; run it in a worker process")
    if fault == "raise":
        raise RuntimeError(f"deliberate fault at x={x}")
    if fault in ("nan", "inf"):
        return {"loss": math.nan if fault == "nan" else math.inf}
    if fault == "none":
        return None
    if fault == "string":
        return "not a number"
    if fault == "memoryerror":
        raise MemoryError(f"deliberate MemoryError at x={x}")
    if fault in ("hang", "hang_in_c"):
        import time

        if fault == "hang_in_c":
            time.sleep(float(trial.params.get("hang_s", 3600)))
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            time.sleep(0.05)
    if fault == "rlimit":
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as fh:  # Linux: the address space in use, in pages
            in_use = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = in_use + 256 * 2**20  # room for small allocations, not for 1 GiB
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
        try:
            buf = bytearray(2**30)  # MemoryError: the allocation is over the limit
            return {"loss": float(len(buf))}
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))  # the worker may run more trials
    if fault == "exit":
        os._exit(3)
    if fault == "segfault":
        import ctypes

        ctypes.string_at(0)
    if fault == "sigkill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
