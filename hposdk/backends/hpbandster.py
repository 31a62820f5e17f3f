"""BOHB and Hyperband from hpbandster, run by the local backend: exact space translation, robust runner.

``Study(..., optimizer="bohb", budget={"min_budget": 1, "max_budget": 27, "eta": 3})`` runs
hpbandster's BOHB (``optimizer="hyperband"``: its Hyperband). Every evaluation is an hposdk trial
with its own number, params and ``trial.budget``; ``n_trials`` counts evaluations. A configuration
promoted to a larger budget is a new trial with the same params, and its ``trial.load_checkpoint()``
returns what the same configuration saved at the previous budget, so an objective can train from
there up to ``trial.budget`` instead of starting over::

    def objective(trial):
        state = trial.load_checkpoint() or {"epoch": 0, "model": new_model(trial.params)}
        for epoch in range(state["epoch"], int(trial.budget)):
            loss = train_one_epoch(state["model"])
            trial.report(epoch, loss=loss)
        trial.save_checkpoint({"epoch": int(trial.budget), "model": state["model"]})
        return loss

Translation (:func:`to_configspace`, :func:`decode`, :func:`encode`; ConfigSpace 1.2):

| hposdk                              | ConfigSpace                                | decoded as                     |
|-------------------------------------|--------------------------------------------|--------------------------------|
| Uniform(lo, hi)                     | UniformFloat(lo, hi)                       | the value, clipped to [lo, hi] |
| LogUniform(lo, hi) (any base)       | UniformFloat(lo, hi, log=True): values     | the value, clipped             |
| Uniform/LogUniform stepped,         | UniformInteger(0, n-1): the grid index     | ``value_at(k)`` / low + k*step |
| Integer(lo, hi, step>1)             |                                            |                                |
| Integer(lo, hi)                     | UniformInteger(lo, hi) (both inclusive)    | int                            |
| Integer(lo, hi, log=True)           | UniformFloat(lo-0.5, hi+0.5, log=True)     | round(), as hposdk defines it  |
| Discrete(choices), 2+ choices       | Categorical([repr(c) for c in choices])    | the choice itself (True, 1,    |
|                                     |                                            | None... keep their types)      |
| Discrete([c])                       | (left out: BOHB's KDE needs 2+ levels)     | c                              |

Why not more direct: ConfigSpace 1.x has no ``q`` (so steps become an index), its log-integer
discretisation is not the hposdk one (P(1) is 0.10 instead of 0.14 for Integer(1, 1000, log=True))
and its categoricals return ``numpy.str_``. It also rounds every float to 13 decimals, which would
leave few significant digits for tiny ranges: a range narrower than 5e-7 (Uniform) or starting
below 5e-7 (LogUniform) is encoded exactly on the unit interval / natural-log exponent instead.

The run (one study = one hpbandster run):

* a Pyro4 name server on 127.0.0.1 with a port the OS picks (never 9090), in a thread of ours;
  workers, the dispatcher and the name server are shut down in ``finally`` on success, failure and
  Ctrl-C, and every port they opened is closed again.
* hposdk drives hpbandster's own iterations and config generator (BOHB's KDE, or Hyperband's
  random sampling) with the loop of ``Master.run``, in this thread, so that every trial is recorded
  here, ``n_trials`` evaluations finish exactly, and resume works.
* ``max_concurrent=1``: one hpbandster worker in a thread of this process hands each job back to
  this thread, which runs the objective (Ctrl-C and ``KeyboardInterrupt`` behave as in-process).
  ``max_concurrent > 1`` (or ``isolate=True``): hpbandster workers in worker processes, each running
  the objective through :func:`run_objective`; the objective must be importable.
* configs are turned into Python natives before they cross the Pyro wire, and numpy scalars get a
  serpent converter (:func:`register_numpy_serializers`).
* failed trials are told to hpbandster the way it records a crashed ``compute``: no result, the
  error text as exception (BOHB counts them as loss +inf). A worker process that dies fails its
  trial and is replaced. The dispatcher's proxies to workers are guarded so that a dead worker
  cannot wedge hpbandster's dispatcher (see :class:`_GuardedProxy`), and its threads are daemons.
* in worker processes, ``trial.report`` values reach the study record when the trial ends (BOHB
  does not prune on them); in-process they are recorded as they come.
* resume: finished trials are fed to the config generator as warm-start data (like hpbandster's
  ``previous_result``); unfinished ones rerun first with their number, params and budget; the
  Hyperband bracket cycle continues where the previous run stopped. Completed trials never rerun.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import math
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._imports import require
from ..exceptions import ConfigError, UnsupportedError
from ..result import ReportRecord, TrialResult, TrialState
from ..spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from ..spaces._params import _native
from ..trial import Report, Trial
from ._base import Outcome, RunSession, StudySpec, run_objective
from .local import _describe_exit, _uses_processes

if TYPE_CHECKING:
    from ConfigSpace import ConfigurationSpace

    from .._record import Started

__all__ = [
    "BOHB_OPTIONS",
    "OPTIMIZERS",
    "budgets",
    "check",
    "decode",
    "encode",
    "register_numpy_serializers",
    "run",
    "to_configspace",
]

#: The optimizer names this module runs (on the local backend).
OPTIMIZERS = ("bohb", "hyperband")
#: ``optimizer_options`` that BOHB takes (its KDE model); Hyperband takes none.
BOHB_OPTIONS = ("min_points_in_model", "top_n_percent", "num_samples", "random_fraction", "bandwidth_factor",
                "min_bandwidth")
HOST = "127.0.0.1"

_LOG = logging.getLogger("hposdk.hpbandster")
# hpbandster logs every failed job with its traceback at WARNING; hposdk records failures itself, so
# these stay silent unless the application configures logging (then they propagate as usual).
_LOG.addHandler(logging.NullHandler())

_FEATURE = "optimizer='bohb' or 'hyperband'"
# ConfigSpace rounds float bounds and values to 13 decimals (hp_components.ROUND_PLACES): below
# this scale that keeps fewer than 7 significant digits, and we switch to an exact encoding.
_CS_DECIMALS = 13
_MIN_SCALE = 0.5 * 10.0**-_CS_DECIMALS / 1e-7  # = 5e-7
_WORKER_DIED = "Worker died unexpectedly."  # hpbandster/core/dispatcher.py, discover_workers
_START_TIMEOUT = 120.0  # seconds for worker processes to register (spawn is slow on a loaded machine)


def _configspace() -> Any:
    return require("ConfigSpace", "bohb", _FEATURE)


def _hpbandster() -> Any:
    _configspace()
    return require("hpbandster", "bohb", _FEATURE)


# --- translation: one pure function each way ---------------------------------------------------


def _encoding(p: Any) -> str:
    """How a parameter is encoded in ConfigSpace (see the module table)."""
    if isinstance(p, Uniform):
        if p.step is not None:
            return "index"
        return "float" if float(p.high) - float(p.low) >= _MIN_SCALE else "unit"
    if isinstance(p, LogUniform):
        if p.step is not None:
            return "index"
        return "log" if float(p.low) >= _MIN_SCALE else "exp"
    if isinstance(p, Integer):
        if p.log:
            return "logint"
        return "int" if p.step == 1 else "index"
    if isinstance(p, Discrete):
        return "const" if len(p.choices) == 1 else "choice"
    raise TypeError(f"unknown parameter type {type(p).__name__}")  # pragma: no cover - the union is closed


def run_seed(seed: int, done: int) -> int:
    """The seed of one hpbandster run (its ConfigSpace sampler and numpy stream).

    A fresh study uses the study seed as is (a raw hpbandster run seeded the same way gives the
    same trials); a resumed one mixes in how many trials it already has, so it does not redraw the
    configurations of the first run. The Ray backend's BOHB seeds itself the same way.
    """
    import numpy as np

    if not done:
        return seed % 2**32
    return int(np.random.SeedSequence([seed % 2**32, done]).generate_state(1)[0])


class NumpyStream:
    """A private numpy global-RNG state, swapped in around calls into hpbandster's BOHB model.

    hpbandster's config generator draws from ``np.random`` (its random-fraction coin and the KDE
    samples), so two runs with the same seed agree only if nothing else draws from the global
    stream in between; ours is swapped in for the call and the caller's state put back after it.
    """

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.state: Any = np.random.RandomState(seed).get_state()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        import numpy as np

        saved = np.random.get_state()
        np.random.set_state(self.state)
        try:
            with warnings.catch_warnings():
                # ConfigSpace 1.x and statsmodels deprecations about hpbandster's calls: not the
                # user's to fix.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                yield
        finally:
            self.state = np.random.get_state()
            np.random.set_state(saved)


def to_configspace(space: SearchSpace, seed: int | None = None) -> ConfigurationSpace:
    """The ConfigSpace equivalent of ``space`` (pure; imports ConfigSpace lazily).

    Args:
        space: the hposdk search space.
        seed: seeds the ConfigurationSpace's sampler (what hpbandster's random picks draw from).

    Raises:
        MissingExtraError: ConfigSpace is not installed (``pip install hposdk[bohb]``).
        UnsupportedError: every parameter has a single value, so there is nothing to search.

    Example:
        >>> from hposdk.spaces import Integer, LogUniform
        >>> cs = to_configspace(SearchSpace({"lr": LogUniform(1e-4, 1e-1), "layers": Integer(1, 4)}))
        >>> cs["lr"].lower, cs["lr"].upper, cs["lr"].log, cs["layers"].upper
        (0.0001, 0.1, True, 4)
    """
    cs_mod = _configspace()
    float_hp, int_hp = cs_mod.UniformFloatHyperparameter, cs_mod.UniformIntegerHyperparameter
    hps: list[Any] = []
    for name, param in space.items():
        p: Any = param  # _encoding(p) says which type it is
        enc = _encoding(p)
        if enc == "const":
            continue
        if enc == "float":
            hps.append(float_hp(name, float(p.low), float(p.high)))
        elif enc == "unit":
            hps.append(float_hp(name, 0.0, 1.0))
        elif enc == "log":
            hps.append(float_hp(name, float(p.low), float(p.high), log=True))
        elif enc == "exp":
            hps.append(float_hp(name, math.log(p.low), math.log(p.high)))
        elif enc == "index":
            hps.append(int_hp(name, 0, p.cardinality - 1))
        elif enc == "int":
            hps.append(int_hp(name, p.low, p.high))
        elif enc == "logint":
            hps.append(float_hp(name, p.low - 0.5, p.high + 0.5, log=True))
        else:
            hps.append(cs_mod.CategoricalHyperparameter(name, [repr(c) for c in p.choices]))
    if not hps:
        raise UnsupportedError(
            f"optimizer bohb/hyperband: every parameter of the space ({', '.join(space.names)}) has a single "
            "value, so there is nothing to search. Fix: pass them as fixed= values, or add a parameter with "
            "more than one value."
        )
    cs = cs_mod.ConfigurationSpace(seed=seed)
    cs.add(hps)
    return cs


def _clip(v: float, lo: float, hi: float) -> float:
    return min(max(v, lo), hi)


def _cs_round(x: float) -> float:
    # ConfigSpace rounds bounds like this; encoded values must lie within the rounded bounds.
    import numpy as np

    return float(np.round(x, _CS_DECIMALS))


@functools.lru_cache(maxsize=256)
def _choice_index(choices_repr: tuple[str, ...]) -> dict[str, int]:
    return {r: i for i, r in enumerate(choices_repr)}


def decode(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """ConfigSpace values (as hpbandster hands them out) -> exact hposdk values (Python natives).

    Example:
        >>> space = SearchSpace({"flag": Discrete([True, 1, None])})
        >>> decode(space, {"flag": "True"}), decode(space, {"flag": "1"})
        ({'flag': True}, {'flag': 1})
    """
    out: dict[str, Any] = {}
    for name, param in space.items():
        p: Any = param  # _encoding(p) says which type it is
        enc = _encoding(p)
        if enc == "const":
            out[name] = p.choices[0]
            continue
        v = _native(config[name])
        if enc in ("float", "log"):
            out[name] = p.canonicalize(_clip(float(v), float(p.low), float(p.high)))
        elif enc == "unit":
            lo, hi = float(p.low), float(p.high)
            out[name] = p.canonicalize(_clip(lo + float(v) * (hi - lo), lo, hi))
        elif enc == "exp":
            out[name] = p.canonicalize(_clip(math.exp(float(v)), float(p.low), float(p.high)))
        elif enc == "index":
            k = min(max(int(v), 0), p.cardinality - 1)
            out[name] = p.low + k * p.step if isinstance(p, Integer) else p.value_at(k)
        elif enc == "int":
            out[name] = p.canonicalize(int(v))
        elif enc == "logint":
            out[name] = min(max(round(float(v)), p.low), p.high)
        else:
            out[name] = p.choices[_choice_index(tuple(repr(c) for c in p.choices))[str(v)]]
    return out


def encode(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """hposdk values -> the ConfigSpace values that :func:`decode` maps back to them.

    Used to hand finished trials to BOHB (warm start) and to rerun unfinished ones.
    """
    out: dict[str, Any] = {}
    for name, param in space.items():
        p: Any = param  # _encoding(p) says which type it is
        enc = _encoding(p)
        if enc == "const":
            continue
        v = p.canonicalize(params[name])
        if enc in ("float", "log"):
            out[name] = _clip(float(v), _cs_round(float(p.low)), _cs_round(float(p.high)))
        elif enc == "unit":
            lo, hi = float(p.low), float(p.high)
            out[name] = _clip((float(v) - lo) / (hi - lo), 0.0, 1.0)
        elif enc == "exp":
            out[name] = _clip(math.log(float(v)), _cs_round(math.log(p.low)), _cs_round(math.log(p.high)))
        elif enc == "index":
            grid = p.grid()
            out[name] = min(range(len(grid)), key=lambda k: abs(float(grid[k]) - float(v)))
        elif enc == "int":
            out[name] = int(v)
        elif enc == "logint":
            out[name] = float(v)
        else:
            out[name] = repr(v)
    return out


def budgets(min_budget: float, max_budget: float, eta: float) -> list[float]:
    """The budgets successive halving uses: ``max_budget * eta**-k`` down to ``min_budget``.

    hpbandster computes the number of rungs as ``-int(log(min/max) / log(eta)) + 1``, which float
    error truncates (1..1000 with eta=10 gives 3 rungs and never runs budget 1); and its budgets
    drift (``27 * 3**-3`` is not always exactly 1). hposdk counts the rungs with a tolerance and
    snaps each budget to 12 significant digits, within ``[min_budget, max_budget]``.

    Example:
        >>> budgets(1, 1000, 10)
        [1.0, 10.0, 100.0, 1000.0]
    """
    n = math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9)
    out = [float(f"{max_budget * eta ** -k:.12g}") for k in range(n, -1, -1)]
    return [_clip(b, float(min_budget), float(max_budget)) for b in out]


def register_numpy_serializers() -> None:
    """Let Pyro4's serpent serializer send numpy scalars as the Python natives they hold.

    ConfigSpace 1.x returns ``numpy.str_`` for categoricals; serpent then fails with "don't know how
    to serialize class numpy.str_", inside hpbandster's dispatcher thread, and the run hangs. hposdk
    converts configs to natives before they reach the wire anyway; this is the second line of
    defence (and what a raw hpbandster script needs). Idempotent.
    """
    import numpy
    import serpent

    serpent.register_class(numpy.generic, _serialize_numpy_scalar)


def _serialize_numpy_scalar(obj: Any, serializer: Any, stream: Any, level: int) -> None:
    serializer._serialize(obj.item(), stream, level)


# --- checks before any compute -----------------------------------------------------------------


def check(spec: StudySpec) -> None:
    """Refuse what optimizer ``bohb``/``hyperband`` cannot do with ``spec`` (before any compute).

    Raises:
        ConfigError: no ``budget``, a pruner, unknown optimizer options, an unpicklable objective
            where worker processes are needed.
        UnsupportedError: ``trial_timeout``, or a space with nothing to search.
        MissingExtraError: hpbandster or ConfigSpace is not installed.
    """
    name = spec.optimizer
    if spec.budget is None:
        raise ConfigError(
            f"optimizer={name!r} gives each trial a budget (e.g. epochs) and needs the budget range: pass "
            "budget={'min_budget': 1, 'max_budget': 27, 'eta': 3} and read trial.budget in the objective"
        )
    b = spec.budget
    if not all(math.isfinite(v) for v in (b.min_budget, b.max_budget, b.eta)):
        raise ConfigError(
            f"budget: optimizer={name!r} needs finite budgets (it counts the rungs of successive halving "
            f"from them), but got min_budget={b.min_budget}, max_budget={b.max_budget}, eta={b.eta}"
        )
    if spec.pruner is not None or spec.pruner_options:
        raise ConfigError(
            f"optimizer={name!r} stops bad configurations itself (successive halving over budgets), so "
            f"pruner={spec.pruner!r} cannot be combined with it. Fix: drop pruner=, or use "
            "optimizer='tpe' with pruner='hyperband' for Optuna's Hyperband pruning"
        )
    if spec.trial_timeout is not None:
        raise UnsupportedError(
            f"optimizer={name!r} on the local backend does not support trial_timeout: hpbandster cannot stop "
            "an evaluation that is running. Fix: drop trial_timeout, or bound the time inside the objective"
        )
    valid = BOHB_OPTIONS if name == "bohb" else ()
    for key in spec.optimizer_options:
        if key not in valid:
            offered = ", ".join(valid) if valid else "none"
            raise ConfigError(f"optimizer_options ({name}): unknown option {key!r}. Valid options: {offered}")
    _hpbandster()
    to_configspace(spec.space)
    if _uses_processes(spec):
        try:
            pickle.dumps(spec.objective)
        except Exception as exc:  # noqa: BLE001 - any pickling failure means the same fix
            raise ConfigError(
                f"optimizer={name!r} with max_concurrent > 1 or isolate=True runs hpbandster workers in "
                "worker processes, so the objective must be importable by name (a module-level function), but "
                f"{spec.objective!r} cannot be pickled ({exc}). Fix: define it at module level, or use "
                "max_concurrent=1."
            ) from None


# --- running ----------------------------------------------------------------------------------


def run(spec: StudySpec, session: RunSession) -> None:
    """Run hpbandster's BOHB or Hyperband until ``session.remaining() == 0``.

    Called by the local backend for ``optimizer='bohb'`` and ``'hyperband'`` (after :func:`check`).
    """
    _hpbandster()
    register_numpy_serializers()
    _Runner(spec, session).run()


def _pack(obj: Any) -> str:
    # Outcomes and trial payloads cross Pyro as one base64 string: serpent would turn arbitrary
    # objects (a Path in `fixed`, a numpy array in the metrics) into dicts without a word.
    return base64.b64encode(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def _unpack(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def _quietly(fn: Callable[[], Any], what: str) -> None:
    # Cleanup steps must all run, and must not hide the error (or Ctrl-C) that ended the run.
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"hposdk: stopping the hpbandster {what} failed: {exc!r}", RuntimeWarning, stacklevel=2)


class _NameServer:
    """A Pyro4 name server on 127.0.0.1 with an OS-chosen port, in a thread we can join.

    hpbandster's ``NameServer`` runs the loop in a non-daemon thread it keeps no handle of, and on
    a non-loopback host throws away the broadcast server that ``startNS`` opened (UDP 9091).
    """

    def __init__(self) -> None:
        import Pyro4.naming

        _, self.daemon, bcserver = Pyro4.naming.startNS(host=HOST, port=0, enableBroadcast=False)
        if bcserver is not None:  # never on loopback with enableBroadcast=False; never leak one either
            bcserver.close()
        self.port = int(self.daemon.locationStr.rsplit(":", 1)[1])
        self.thread = threading.Thread(target=self.daemon.requestLoop, name="hposdk hpbandster name server",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.daemon.shutdown()
        self.thread.join(timeout=10)


@dataclass
class _Pending:
    """An evaluation handed to hpbandster's dispatcher and not finished yet."""

    number: int
    params: dict[str, Any]
    budget: float
    config_id: tuple[int, int, int]
    config: dict[str, Any]
    iteration: Any
    attempt: int = 1
    started_at: float = 0.0
    restore: str | None = None
    outcome: Outcome | None = None


class _CheckpointTrial(Trial):
    """A Trial that can resume from the checkpoint of the same config at the previous budget."""

    def __init__(self, number: int, params: dict[str, Any], *, budget: float, workdir: str, study_name: str,
                 restore: str | None) -> None:
        super().__init__(number, params, budget=budget, workdir=workdir, study_name=study_name)
        self._restore = Path(restore) if restore else None

    def _restored_checkpoint_dir(self) -> Path | None:
        if self._restore is not None and (self._restore / "state.pkl").exists():
            return self._restore
        return None


class _InlineTrial(_CheckpointTrial):
    """In this process: reports go straight to the study record."""

    def __init__(self, session: RunSession, pending: _Pending, study_name: str) -> None:
        super().__init__(pending.number, session.trial_params(pending.params), budget=pending.budget,
                         workdir=str(session.trial_dir(pending.number)), study_name=study_name,
                         restore=pending.restore)
        self._session = session

    def _on_report(self, report: Report) -> None:
        self._session.report(self.number, report)


@functools.cache
def _worker_classes() -> tuple[type, type]:
    """hpbandster Worker subclasses (built on first use: hpbandster is imported lazily)."""
    from hpbandster.core.worker import Worker

    class InlineWorker(Worker):  # type: ignore[misc]
        """Hands each job to the driver thread, which runs the objective, and waits for it."""

        events: queue.Queue[tuple[Any, ...]]

        def compute(self, config_id: Any, config: Any, budget: float, working_directory: str,
                    **kwargs: Any) -> dict[str, Any]:
            reply: queue.Queue[bool | None] = queue.Queue(maxsize=1)
            self.events.put(("run", tuple(config_id), reply))
            if reply.get() is None:
                raise RuntimeError("hposdk stopped the study before this evaluation ran")
            return {"loss": 0.0, "info": {}}

    class ProcessWorker(Worker):  # type: ignore[misc]
        """Runs the objective in this worker process and sends the whole Outcome back."""

        objective: Callable[[Trial], Any]
        metric: str

        def compute(self, config_id: Any, config: Any, budget: float, working_directory: str,
                    hposdk_trial: str = "", **kwargs: Any) -> dict[str, Any]:
            t = _unpack(hposdk_trial)
            trial = _CheckpointTrial(t["number"], t["params"], budget=t["budget"], workdir=t["workdir"],
                                     study_name=t["study"], restore=t["restore"])
            interrupted = False
            start = time.monotonic()
            try:
                outcome = run_objective(self.objective, trial, self.metric)
            except BaseException as exc:  # noqa: BLE001
                # hpbandster's start_computation catches only Exception; anything else leaves its
                # `result` unbound, the dispatcher never hears back and the run hangs. A
                # KeyboardInterrupt stops the study (as in-process); SystemExit & co fail the trial.
                interrupted = isinstance(exc, KeyboardInterrupt)
                reports = [ReportRecord(step=r.step, metrics=r.metrics, time=r.time) for r in trial.reports]
                outcome = Outcome(TrialState.FAILED, None, {}, traceback.format_exc(), reports, set(),
                                  time.monotonic() - start)
            return {"loss": 0.0, "info": {"hposdk": _pack((outcome, interrupted))}}

    return InlineWorker, ProcessWorker


class _GuardedProxy:
    """The dispatcher's Pyro proxy of one worker, made safe against a worker that died.

    hpbandster's dispatcher threads take its lock with ``acquire()`` and call workers while holding
    it (dispatcher.py, ``job_runner`` and ``discover_workers``). A worker process that died makes
    that call raise (connection refused), the thread dies with the lock held, and every later
    dispatcher call deadlocks. Here a dead worker is "not alive" and "busy", and a job sent to it is
    reported as crashed (as hpbandster's own discovery would) and the worker leaves the pool.

    And a worker the dispatcher has given a job is busy, whatever the worker says: discovery asks
    ``is_busy()``, and before the oneway ``start_computation`` has arrived the worker says no, so
    hpbandster marks it idle and gives it a second job; if that worker dies, only one of the two is
    reported and the study would wait for the other forever.
    """

    def __init__(self, proxy: Any, dispatcher: Any, name: str) -> None:
        self._proxy = proxy
        self._dispatcher = dispatcher
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._proxy, attr)

    def _pyroReconnect(self, tries: int = 100) -> None:
        from Pyro4.errors import ConnectionClosedError, PyroError

        try:
            self._proxy._pyroReconnect(tries)
        except (PyroError, OSError) as exc:
            raise ConnectionClosedError(str(exc)) from exc  # what Worker.is_alive() expects

    def _pyroRelease(self) -> None:
        with contextlib.suppress(Exception):
            self._proxy._pyroRelease()

    def is_busy(self) -> bool:
        from Pyro4.errors import PyroError

        worker = self._dispatcher.worker_pool.get(self._name)  # discovery holds the dispatcher's lock
        if worker is not None and worker.runs_job is not None:
            return True
        try:
            return bool(self._proxy.is_busy())
        except (PyroError, OSError):
            return True  # not idle; the next discovery pass finds it dead

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._proxy.shutdown()

    def start_computation(self, callback: Any, job_id: Any, *args: Any, **kwargs: Any) -> None:
        from Pyro4.errors import PyroError

        try:
            self._proxy.start_computation(callback, job_id, *args, **kwargs)
        except (PyroError, OSError):
            # In job_runner, holding the dispatcher's lock: drop the worker, and report the job once the
            # lock is free (register_result takes it).
            d = self._dispatcher
            d.worker_pool.pop(self._name, None)
            d.idle_workers.discard(self._name)
            threading.Thread(target=d.register_result, args=(job_id, {"result": None, "exception": _WORKER_DIED}),
                             name="hposdk hpbandster lost job", daemon=True).start()


class _GuardedPool(dict):  # type: ignore[type-arg]
    """The dispatcher's worker pool; every worker added gets a :class:`_GuardedProxy`."""

    def __init__(self, dispatcher: Any) -> None:
        super().__init__()
        self._dispatcher = dispatcher

    def __setitem__(self, name: str, worker: Any) -> None:
        if not isinstance(worker.proxy, _GuardedProxy):
            worker.proxy = _GuardedProxy(worker.proxy, self._dispatcher, name)
        super().__setitem__(name, worker)


def _exit_with_parent(parent: int) -> None:
    # A worker process whose driver was killed (kill -9) would otherwise wait for jobs forever.
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1.0)


def _worker_main(payload: bytes, metric: str, run_id: str, port: int, index: int, parent: int) -> None:
    """Entry point of an hpbandster worker process."""
    # Ctrl-C reaches the whole process group; the driver decides what happens to running trials.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    register_numpy_serializers()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    objective = pickle.loads(payload)
    _, process_worker = _worker_classes()
    # hpbandster's Worker calls logging.basicConfig(level=DEBUG) when given no logger.
    worker = process_worker(run_id=run_id, nameserver=HOST, nameserver_port=port, host=HOST, id=index, logger=_LOG)
    worker.objective = objective
    worker.metric = metric
    worker.run(background=False)


def _dispatchers(run_id: str) -> list[tuple[Any, threading.Thread]]:
    """The running hpbandster dispatchers of ``run_id``, with their main threads."""
    out = []
    for t in threading.enumerate():
        target = getattr(t, "_target", None)
        d = getattr(target, "__self__", None)
        if getattr(target, "__name__", "") == "run" and getattr(d, "run_id", None) == run_id \
                and type(d).__name__ == "Dispatcher":
            out.append((d, t))
    return out


def _helper_threads(d: Any, main: threading.Thread) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t is not main and getattr(getattr(t, "_target", None), "__self__", None) is d]


def _stop_dispatcher(d: Any, main: threading.Thread, helpers: list[threading.Thread]) -> None:
    """Stop an hpbandster dispatcher: its Pyro daemon, its main thread and its helper threads."""
    deadline = time.monotonic() + 5
    while getattr(d, "pyro_daemon", None) is None and main.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    for w in list(d.worker_pool.values()):
        with contextlib.suppress(Exception):
            w.proxy._pyroRelease()
    if getattr(d, "pyro_daemon", None) is not None:
        if d.thread_lock.acquire(timeout=10):
            d.thread_lock.release()
            d.shutdown(shutdown_workers=False)
        else:  # wedged; its threads are daemons (see _make_optimizer), so exit is not blocked
            warnings.warn("hposdk: hpbandster's dispatcher is deadlocked; its threads are left behind",
                          RuntimeWarning, stacklevel=2)
            d.pyro_daemon.shutdown()
    main.join(timeout=10)
    # If the dispatcher thread died early, its helper threads still wait on their conditions.
    if d.thread_lock.acquire(timeout=5):
        try:
            d.shutdown_all_threads = True
            d.runner_cond.notify_all()
            d.discover_cond.notify_all()
        finally:
            d.thread_lock.release()
    for t in helpers:
        t.join(timeout=5)


class _Runner:
    """One hpbandster run driven from this thread (see the module docstring)."""

    def __init__(self, spec: StudySpec, session: RunSession) -> None:
        self.spec = spec
        self.session = session
        assert spec.budget is not None  # check() refused it
        self.budget = spec.budget
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.in_flight: dict[tuple[int, int, int], _Pending] = {}
        self.use_processes = _uses_processes(spec)
        self.n_workers = min(spec.max_concurrent, max(1, session.remaining())) if self.use_processes else 1
        self.run_id = f"hposdk-{uuid.uuid4().hex[:12]}"
        seed = run_seed(spec.seed, len(session.finished) + len(session.rerun))
        self.cs = to_configspace(spec.space, seed=seed)
        self.rng = NumpyStream(seed)
        self.iterations: list[Any] = []
        self.hb_index = 0
        self.reruns: dict[tuple[int, int, int], Started] = {}
        self.config_trials: dict[tuple[int, int, int], int] = {}
        self.processes: list[Any] = []
        self.exit_codes: dict[int, int | None] = {}
        self.inline_worker: Any = None
        self.worker_stopper: threading.Thread | None = None
        self.optimizer: Any = None
        self.dispatcher_threads: list[threading.Thread] = []
        self._next_health = 0.0
        self._rediscover_until = 0.0
        self._worker_index = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def run(self) -> None:
        if self.session.remaining() <= 0:
            return  # a finished study rerun: start no name server and no workers
        with contextlib.ExitStack() as stack:  # callbacks run in reverse: workers, dispatcher, name server
            ns = _NameServer()
            stack.callback(_quietly, ns.close, "name server")
            stack.callback(_quietly, self._join_workers, "workers")
            self.session.journal.note(kind="hpbandster", host=HOST, port=ns.port, run_id=self.run_id,
                                      workers=self.n_workers, processes=self.use_processes)
            self.optimizer = self._make_optimizer(ns.port)
            stack.callback(_quietly, self._stop_dispatcher, "dispatcher")
            self._warm_start()
            self._queue_reruns()
            stack.callback(_quietly, self._release_workers, "workers")
            self._start_workers(ns.port)
            self._wait_for_workers()
            self._loop()

    def _make_optimizer(self, port: int) -> Any:
        from hpbandster.optimizers import BOHB, HyperBand

        cls = BOHB if self.spec.optimizer == "bohb" else HyperBand
        b = self.budget
        built: list[Any] = []
        errors: list[BaseException] = []

        def build() -> None:
            try:
                with warnings.catch_warnings():  # ConfigSpace 1.x deprecations in hpbandster's code
                    warnings.simplefilter("ignore", DeprecationWarning)
                    built.append(cls(configspace=self.cs, eta=b.eta, min_budget=b.min_budget,
                                     max_budget=b.max_budget,
                                     run_id=self.run_id, nameserver=HOST, nameserver_port=port, host=HOST,
                                     working_directory=str(self.spec.workdir), ping_interval=5, logger=_LOG,
                                     **dict(self.spec.optimizer_options)))
            except BaseException as exc:  # noqa: BLE001 - re-raised in this thread
                errors.append(exc)

        # The Master starts its dispatcher threads right away, as non-daemon threads of the thread that
        # builds it; built from a daemon thread they are daemons too, so even a dispatcher wedged by
        # an hpbandster bug could never keep the interpreter from exiting.
        builder = threading.Thread(target=build, name="hposdk hpbandster start", daemon=True)
        builder.start()
        builder.join()
        if errors:
            # The Master starts its dispatcher (threads, a Pyro daemon listening on a port) before the
            # rest of its __init__ runs; an error there (e.g. BOHB's rung count) must not leave it running.
            for d, thread in _dispatchers(self.run_id):
                _quietly(functools.partial(_stop_dispatcher, d, thread, _helper_threads(d, thread)), "dispatcher")
            raise errors[0]
        opt = built[0]
        d = opt.dispatcher
        with d.discover_cond:  # no worker exists yet; from now on every one gets a guarded proxy
            d.worker_pool = _GuardedPool(d)
        opt.budgets = budgets(b.min_budget, b.max_budget, b.eta)
        opt.max_SH_iter = len(opt.budgets)
        opt.config.update(budgets=opt.budgets, max_SH_iter=opt.max_SH_iter)
        opt.config_generator.logger = _LOG
        # Results come to this thread; Master.job_callback would update the iterations in the
        # dispatcher's thread.
        opt.dispatcher.new_result_callback = lambda job: self.events.put(("result", job))
        return opt

    def _start_workers(self, port: int) -> None:
        if not self.use_processes:
            inline_worker, _ = _worker_classes()
            w = inline_worker(run_id=self.run_id, nameserver=HOST, nameserver_port=port, host=HOST, id="inline",
                              logger=_LOG)
            w.events = self.events
            w.run(background=True)
            self.inline_worker = w
            return
        for _ in range(self.n_workers):
            self.processes.append(self._spawn(port))

    def _spawn(self, port: int) -> Any:
        ctx: Any = multiprocessing.get_context(getattr(self.spec.backend_options, "start_method", "spawn"))
        self._worker_index += 1
        proc = ctx.Process(
            target=_worker_main,
            args=(pickle.dumps(self.spec.objective), self.spec.metric, self.run_id, port, self._worker_index,
                  os.getpid()),
            name=f"hposdk-hpbandster-worker-{self._worker_index}",
            daemon=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() in a threaded process
            proc.start()
        return proc

    def _wait_for_workers(self) -> None:
        d = self.optimizer.dispatcher
        deadline = time.monotonic() + _START_TIMEOUT
        while d.number_of_workers() < self.n_workers:
            for proc in self.processes:
                if not proc.is_alive():
                    raise RuntimeError(
                        f"an hpbandster worker process exited while starting ({_describe_exit(proc.exitcode)}); "
                        "its error is printed above"
                    )
            if self.inline_worker is not None and not self.inline_worker.thread.is_alive():
                raise RuntimeError("the hpbandster worker thread stopped while starting; its error is printed above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"hpbandster workers did not register within {_START_TIMEOUT:.0f} s")
            d.trigger_discover_worker()
            time.sleep(0.05)
        self.dispatcher_threads = [
            t for t in threading.enumerate() if getattr(getattr(t, "_target", None), "__self__", None) is d
        ]

    def _release_workers(self) -> None:
        """First cleanup step: unblock and stop the workers without waiting (Pyro's shutdown sleeps ~0.2 s
        per daemon, so the worker's and the dispatcher's overlap, as in hpbandster's own shutdown)."""
        # Evaluations still waiting for this thread get "stopped", which unblocks hpbandster's worker.
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "run":
                event[2].put(None)
        # Nothing new may go to a worker that is about to stop.
        d = self.optimizer.dispatcher
        if d.thread_lock.acquire(timeout=5):
            try:
                while not d.waiting_jobs.empty():
                    d.waiting_jobs.get_nowait()
            finally:
                d.thread_lock.release()
        for proc in self.processes:
            if proc.is_alive():
                proc.terminate()
        w = self.inline_worker
        if w is not None:
            deadline = time.monotonic() + 5
            while getattr(w, "pyro_daemon", None) is None and w.thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if getattr(w, "pyro_daemon", None) is not None:
                self.worker_stopper = threading.Thread(target=w.pyro_daemon.shutdown, daemon=True,
                                                       name="hposdk hpbandster worker shutdown")
                self.worker_stopper.start()

    def _join_workers(self) -> None:
        """After the dispatcher stopped, before the name server does (workers deregister from it)."""
        if self.worker_stopper is not None:
            self.worker_stopper.join(timeout=10)
        if self.inline_worker is not None:
            self.inline_worker.thread.join(timeout=5)
        for proc in self.processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            with contextlib.suppress(ValueError):
                proc.close()
        self.processes = []

    def _stop_dispatcher(self) -> None:
        opt = self.optimizer
        _stop_dispatcher(opt.dispatcher, opt.dispatcher_thread, self.dispatcher_threads)

    @contextlib.contextmanager
    def _engine(self) -> Iterator[None]:
        """Around every call into hpbandster's sampling and model code (see :class:`NumpyStream`):
        the study is reproducible and the caller's global numpy state is left alone."""
        with self.rng.active():
            yield

    # --- resume --------------------------------------------------------------------------------
    def _hb_budget(self, budget: float | None) -> float | None:
        for b in self.optimizer.budgets:
            if budget is not None and math.isclose(b, budget, rel_tol=1e-9):
                return float(b)
        return None

    def _warm_start(self) -> None:
        from hpbandster.core.dispatcher import Job

        finished = sorted(self.session.finished.values(), key=lambda t: t.number)
        if not finished:
            return
        ids = [t.info.get("hpbandster_config_id") for t in finished]
        # Reruns of lost trials have negative iteration ids; the bracket cycle counts only real ones.
        self.hb_index = 1 + max((int(i[0]) for i in ids if i and int(i[0]) >= 0), default=-1)
        usable: list[tuple[float, int, TrialResult]] = []
        for t in finished:
            b = self._hb_budget(t.budget)
            if b is not None and self.spec.space.contains(t.params):
                usable.append((b, t.number, t))
        # Lower budgets first: BOHB ignores results below the largest budget it already has a model for.
        usable.sort(key=lambda u: (u[0], u[1]))
        cg = self.optimizer.config_generator
        with self._engine():
            for i, (b, _, t) in enumerate(usable):
                job = Job((-1, 0, i), config=encode(self.spec.space, t.params), budget=b)
                self._set_job_result(job, t.value, t.state, t.error)
                last_of_budget = i + 1 == len(usable) or usable[i + 1][0] != b
                cg.new_result(job, update_model=last_of_budget)
        self.session.journal.note(kind="hpbandster_warm_start", used=len(usable),
                                  skipped=len(finished) - len(usable), next_iteration=self.hb_index)

    def _queue_reruns(self) -> None:
        from hpbandster.optimizers.iterations import SuccessiveHalving

        by_budget: dict[float, list[Started]] = {}
        for lost in self.session.rerun:
            b = self._hb_budget(lost.budget) or float(self.budget.max_budget)
            by_budget.setdefault(b, []).append(lost)
        self.session.rerun = []
        reruns = []
        for k, (b, lost_ones) in enumerate(sorted(by_budget.items())):
            # A one-rung iteration of its own (negative id, as hpbandster's warm start uses -1).
            it = SuccessiveHalving(HPB_iter=-2 - k, num_configs=[len(lost_ones)], budgets=[b],
                                   config_sampler=self.optimizer.config_generator.get_config, logger=_LOG)
            for lost in lost_ones:
                cid = it.add_configuration(config=encode(self.spec.space, lost.params),
                                           config_info={"hposdk_rerun": lost.number})
                self.reruns[_cid(cid)] = lost
            reruns.append(it)
        self.iterations = reruns + self.iterations

    # --- the loop of hpbandster's Master.run, one evaluation = one hposdk trial -----------------
    def _loop(self) -> None:
        while True:
            self._fill()
            if not self.in_flight:
                return
            try:
                event = self.events.get(timeout=0.25)
            except queue.Empty:
                event = None
            if event is not None and event[0] == "run":
                self._run_inline(_cid(event[1]), event[2])
            elif event is not None:
                self._on_result(event[1])
            self._check_health()

    def _fill(self) -> None:
        while len(self.in_flight) < self.n_workers and self.session.remaining() > 0:
            nxt = self._next_run()
            if nxt is None:
                return
            self._submit(*nxt)

    def _next_run(self) -> tuple[Any, tuple[Any, Any, Any]] | None:
        with self._engine():
            self.iterations = [it for it in self.iterations if not it.is_finished]
            for it in self.iterations:
                nxt = it.get_next_run()
                if nxt is not None:
                    return it, nxt
            # Every open iteration waits for results: start the next bracket (as Master.run does).
            it = self.optimizer.get_next_iteration(self.hb_index, {"logger": _LOG})
            self.hb_index += 1
            self.iterations.append(it)
            nxt = it.get_next_run()
        return (it, nxt) if nxt is not None else None

    def _submit(self, iteration: Any, nxt: tuple[Any, Any, Any]) -> None:
        config_id, config, budget = nxt
        cid = _cid(config_id)
        native = {k: _native(v) for k, v in config.items()}
        # Nothing numpy crosses the wire; hpbandster compares this dict with the one it stored.
        iteration.data[config_id].config = native
        lost = self.reruns.pop(cid, None)
        if lost is not None:
            number, params, attempt = lost.number, dict(lost.params), lost.attempt
        else:
            number, params, attempt = self.session.new_number(), decode(self.spec.space, native), 1
        prev = self.config_trials.get(cid)
        restore = str(self.session.trial_dir(prev) / "checkpoint") if prev is not None else None
        pending = _Pending(number, params, float(budget), cid, native, iteration, attempt, restore=restore)
        self.in_flight[pending.config_id] = pending
        self._dispatch(pending)

    def _dispatch(self, p: _Pending) -> None:
        p.started_at = time.time()
        self.session.start(p.number, p.params, p.budget, p.attempt)
        payload = {"number": p.number, "params": self.session.trial_params(p.params), "budget": p.budget,
                   "workdir": str(self.session.trial_dir(p.number)), "study": self.spec.name, "restore": p.restore}
        self.optimizer.dispatcher.submit_job(p.config_id, config=p.config, budget=p.budget,
                                             working_directory=str(self.spec.workdir), hposdk_trial=_pack(payload))

    def _run_inline(self, config_id: tuple[int, int, int], reply: queue.Queue[bool | None]) -> None:
        p = self.in_flight.get(config_id)
        if p is None:
            reply.put(None)
            return
        trial = _InlineTrial(self.session, p, self.spec.name)
        try:
            p.outcome = run_objective(self.spec.objective, trial, self.spec.metric)
        except BaseException:
            reply.put(None)  # let hpbandster's worker thread go before the interrupt unwinds the run
            raise
        reply.put(True)

    def _outcome_of(self, job: Any, p: _Pending) -> tuple[Outcome, bool]:
        if p.outcome is not None:
            outcome, p.outcome = p.outcome, None
            return outcome, False
        info = job.result.get("info") if isinstance(job.result, dict) else None
        if isinstance(info, dict) and "hposdk" in info:
            return _unpack(info["hposdk"])  # type: ignore[no-any-return]
        error = str(job.exception or "hpbandster reported no result")
        if error.strip() == _WORKER_DIED:
            error = f"the trial's worker process died ({_describe_exit(self._exit_code(_pid_of(job.worker_name)))})"
        return Outcome(TrialState.FAILED, None, {}, error, [], set(), time.time() - p.started_at), False

    def _on_result(self, job: Any) -> None:
        p = self.in_flight.get(_cid(job.id))
        if p is None:
            return  # a job of a run that was given up (e.g. reported again after a worker died)
        outcome, interrupted = self._outcome_of(job, p)
        if interrupted:
            raise KeyboardInterrupt(f"the objective of trial {p.number} raised KeyboardInterrupt")
        retry = (outcome.state is TrialState.FAILED and not outcome.config_error
                 and p.attempt <= self.spec.retries and not self.session.stopping)
        if retry:
            self.session.journal.note(kind="retry", number=p.number, attempt=p.attempt,
                                      error=(outcome.error or "").strip().splitlines()[-1:])
            p.attempt += 1
            self._dispatch(p)
            return
        del self.in_flight[p.config_id]
        if self.use_processes:
            for rep in outcome.reports:
                self.session.report(p.number, rep)
        outcome.accessed &= set(self.spec.space.names) | set(self.spec.fixed)
        result = self.session.result_from(p.number, p.params, outcome, budget=p.budget, attempt=p.attempt,
                                          started_at=p.started_at,
                                          info={"hpbandster_config_id": list(p.config_id)})
        self.session.finish(result, outcome.accessed, outcome.config_error)
        if result.state is TrialState.COMPLETE:
            self.config_trials[p.config_id] = p.number
        self._set_job_result(job, outcome.value, outcome.state, outcome.error)
        with self._engine():
            p.iteration.register_result(job)
            self.optimizer.config_generator.new_result(job)

    def _set_job_result(self, job: Any, value: float | None, state: TrialState, error: str | None) -> None:
        """Record a trial the way hpbandster records a job (failures: no result, the error as exception)."""
        usable = state is not TrialState.FAILED and value is not None and math.isfinite(value)
        if usable:
            assert value is not None
            job.result = {"loss": value if self.spec.mode == "min" else -value, "info": {}}
            job.exception = None
        else:
            job.result = None
            job.exception = error or f"trial {state.value.lower()} without a value"

    def _exit_code(self, pid: int | None) -> int | None:
        if pid in self.exit_codes:
            return self.exit_codes[pid]
        for proc in self.processes:
            if proc.pid == pid:
                proc.join(timeout=2)  # the dispatcher may notice a death before we do
                return proc.exitcode  # type: ignore[no-any-return]
        return None

    def _check_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + 0.5
        opt = self.optimizer
        dead = [t.name for t in [opt.dispatcher_thread, *self.dispatcher_threads] if not t.is_alive()]
        if dead and self.in_flight:
            raise RuntimeError(
                f"hpbandster's dispatcher thread(s) {dead} stopped (their error is printed above); the study "
                "stops instead of waiting forever. Rerun it to resume."
            )
        if self.inline_worker is not None and not self.inline_worker.thread.is_alive() and self.in_flight:
            raise RuntimeError("the hpbandster worker thread stopped (its error is printed above). Rerun to resume.")
        for i, proc in enumerate(self.processes):
            if proc.is_alive():
                continue
            # The dispatcher notices a dead worker on its next discovery pass and reports its job
            # as crashed ("Worker died unexpectedly."); make that pass happen now (and again for a
            # while: a trigger during a pass is lost), and replace the worker.
            self.exit_codes[proc.pid] = proc.exitcode
            proc.join(timeout=1)
            self.processes[i] = self._spawn(self.optimizer.dispatcher.nameserver_port)
            self._rediscover_until = now + 5.0
        if now < self._rediscover_until:
            opt.dispatcher.trigger_discover_worker()


def _cid(config_id: Any) -> tuple[int, int, int]:
    # hpbandster's config ids are (iteration, stage sampled in, index); they come back from Pyro
    # as tuples or lists.
    return (int(config_id[0]), int(config_id[1]), int(config_id[2]))


def _pid_of(worker_name: str | None) -> int | None:
    # hpbandster names workers "hpbandster.run_<run_id>.worker.<hostname>.<pid>.<id>".
    if not worker_name:
        return None
    try:
        return int(worker_name.rsplit(".", 2)[1])
    except (IndexError, ValueError):
        return None
