"""Overhead: what hposdk adds to each engine, measured against the engine doing the same study.

* local backend (journal record, in-process trials) vs Optuna with the same sampler, on its
  in-memory, journal-file and SQLite storages;
* Ray backend vs a hand-written ``Tuner`` (the itwinai tutorial's shape), one Ray runtime;
* local BOHB vs raw hpbandster (its own name server, worker and ``run``);
* ``import hposdk``, and a fresh process's time to its first finished trial, with bytecode cached as
  after ``pip install`` (and the import also as this machine's own environment runs it).

Runs are interleaved (hposdk, engine, engine, hposdk...) so that the load of a shared machine hits
both alike and neither always runs second, on caches the other warmed; each figure is a median.
Per-trial figures are given in CPU time of this process (robust to other processes on a shared
machine) and as the wall-clock ratio.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Timing", "bohb_overhead", "import_time", "local_overhead", "ray_overhead", "startup_times"]


@dataclass
class Timing:
    """Per-trial wall and CPU milliseconds of one run."""

    wall_ms: float
    cpu_ms: float


@dataclass
class Row:
    """One line of an overhead table: hposdk vs the engine, plus reference columns."""

    what: str
    trials: int
    ours: list[Timing] = field(default_factory=list)
    engine: list[Timing] = field(default_factory=list)
    refs: dict[str, list[Timing]] = field(default_factory=dict)

    @staticmethod
    def med(ts: Sequence[Timing], attr: str = "cpu_ms") -> float:
        return statistics.median(getattr(t, attr) for t in ts) if ts else float("nan")

    def ratio(self, attr: str = "cpu_ms") -> float:
        return self.med(self.ours, attr) / self.med(self.engine, attr)

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "trials": self.trials, "runs": len(self.ours),
                "ours_ms": self.med(self.ours), "engine_ms": self.med(self.engine),
                "ours_wall_ms": self.med(self.ours, "wall_ms"), "engine_wall_ms": self.med(self.engine, "wall_ms"),
                "ratio_cpu": self.ratio(), "ratio_wall": self.ratio("wall_ms"),
                "refs": {k: self.med(v) for k, v in self.refs.items()},
                "refs_wall": {k: self.med(v, "wall_ms") for k, v in self.refs.items()}}


def _timed(fn: Callable[..., int], *args: Any) -> Timing:
    w, c = time.perf_counter(), time.process_time()
    n = fn(*args)
    return Timing((time.perf_counter() - w) / n * 1e3, (time.process_time() - c) / n * 1e3)


# --- local backend vs Optuna --------------------------------------------------------------------


def _xy(trial: Any) -> float:
    return float(trial.params["x"] ** 2 + trial.params["y"])


def _sampler(name: str, seed: int) -> Any:
    import optuna

    return {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
            "random": optuna.samplers.RandomSampler}[name](seed=seed)


def _optuna_run(sampler: str, storage: Any, n: int) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=_sampler(sampler, 0), storage=storage)
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", -5, 5), n_trials=n)
    return n


def _hposdk_run(sampler: str, n: int, root: Path) -> int:
    from hposdk import SearchSpace, Study, Uniform

    study = Study(_xy, SearchSpace({"x": Uniform(-5.0, 5.0), "y": Uniform(-5.0, 5.0)}), metric="loss",
                  optimizer=sampler, n_trials=n, seed=0, storage=root, progress=False,
                  name=f"bench-{sampler}-{n}-{time.monotonic_ns()}")
    study.optimize()
    return n


def local_overhead(plan: Sequence[tuple[str, int, int]], root: Path, sqlite_max: int = 500,
                   journal_max: int = 500) -> list[Row]:
    """``plan``: (sampler, trials, repeats). Optuna journal/SQLite are measured up to their max trials."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    rows = []
    for sampler, n, repeats in plan:
        _hposdk_run(sampler, 20, root)  # warm up imports and first-call costs on both paths
        _optuna_run(sampler, None, 20)
        row = Row(sampler, n)
        for rep in range(repeats):
            # Alternate which arm goes first: the second of a pair runs on caches the first warmed
            # (hposdk first read 1.13x at 100 TPE trials, Optuna first 1.08x, 15 pairs each).
            if rep % 2:
                row.engine.append(_timed(_optuna_run, sampler, None, n))
                row.ours.append(_timed(_hposdk_run, sampler, n, root))
            else:
                row.ours.append(_timed(_hposdk_run, sampler, n, root))
                row.engine.append(_timed(_optuna_run, sampler, None, n))
        if n <= journal_max:
            path = root / f"journal-{time.monotonic_ns()}.log"
            storage = JournalStorage(JournalFileBackend(str(path)))
            row.refs["Optuna journal file"] = [_timed(_optuna_run, sampler, storage, n)]
        if n <= sqlite_max:
            url = f"sqlite:///{root}/optuna-{time.monotonic_ns()}.db"
            row.refs["Optuna SQLite"] = [_timed(_optuna_run, sampler, url, n)]
        rows.append(row)
    return rows


# --- Ray backend vs a hand-written Tuner ---------------------------------------------------------


def _ray_objective(trial: Any) -> dict[str, float]:
    return {"loss": (trial.params["x"] - 0.3) ** 2}


def _ray_trainable(config: dict[str, float]) -> None:
    from ray import tune

    tune.report({"loss": (config["x"] - 0.3) ** 2})


def _hposdk_ray(n: int, root: Path, seed: int) -> int:
    from hposdk import SearchSpace, Study, Uniform

    study = Study(_ray_objective, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", backend="ray",
                  optimizer="random", n_trials=n, seed=seed, storage=str(root), progress=False,
                  name=f"bench-{n}-{seed}-{time.monotonic_ns()}", backend_options={"reuse_actors": True})
    result = study.optimize()
    if len(result.trials) != n:
        raise RuntimeError(f"hposdk on Ray finished {len(result.trials)} of {n} trials")
    return n


def tuner_loggers(default_loggers: bool = False) -> tuple[list[Any], dict[str, str]]:
    """(callbacks, environment) for a hand-written Tuner that writes what hposdk on Ray writes.

    hposdk keeps Ray's CSV and JSON result files and leaves TensorBoard's out unless asked; Ray's
    default adds a TensorBoard logger, which imports tensorboardX and torch into the driver.
    """
    if default_loggers:
        return [], {}
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()], {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


def _tuner(n: int, root: Path, seed: int, default_loggers: bool = False) -> int:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hposdk.backends.ray import _environ

    callbacks, env = tuner_loggers(default_loggers)
    tuner = tune.Tuner(
        _ray_trainable,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=n, reuse_actors=True, max_concurrent_trials=1,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=1),
        ),
        run_config=tune.RunConfig(name=f"bench-{n}-{seed}-{time.monotonic_ns()}", storage_path=str(root), verbose=0,
                                  callbacks=callbacks),
    )
    with _environ(**env):
        grid = tuner.fit()
    if len(grid) != n:
        raise RuntimeError(f"the Tuner finished {len(grid)} of {n} trials")
    return n


def ray_overhead(plan: Sequence[tuple[int, int]], root: Path) -> list[Row]:
    """``plan``: (trials, repeats); random search, one trial at a time, reuse_actors=True."""
    _hposdk_ray(3, root / "warm", 0)  # worker process start and imports, on both paths
    _tuner(3, root / "warm", 0)
    rows = []
    for n, repeats in plan:
        row = Row("random", n)
        for rep in range(repeats):
            if rep % 2:  # alternate the order too
                row.engine.append(_timed(_tuner, n, root / "t", rep))
                row.ours.append(_timed(_hposdk_ray, n, root / "h", rep))
            else:
                row.ours.append(_timed(_hposdk_ray, n, root / "h", rep))
                row.engine.append(_timed(_tuner, n, root / "t", rep))
        rows.append(row)
    return rows


# --- local BOHB vs raw hpbandster ---------------------------------------------------------------


def _bohb_trivial(trial: Any) -> float:
    return float(sum((trial.params[f"x{i}"] - 0.5) ** 2 for i in range(6))) / float(trial.budget)


def _raw_bohb(n: int) -> int:
    import logging
    import warnings

    import ConfigSpace as CS
    import hpbandster.core.nameserver as hpns
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB

    from hposdk.backends import hpbandster as hb

    from .multifidelity import schedule

    hb.register_numpy_serializers()  # hpbandster 0.7.4 hangs under numpy 2 without it
    quiet = logging.getLogger("raw-hpbandster")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    class TrivialWorker(Worker):  # type: ignore[misc]
        def compute(self, config: dict[str, float], budget: float, **kwargs: Any) -> dict[str, Any]:
            return {"loss": float(sum((config[f"x{i}"] - 0.5) ** 2 for i in range(6))) / float(budget), "info": {}}

    cs = CS.ConfigurationSpace(seed=0)
    cs.add([CS.UniformFloatHyperparameter(f"x{i}", 0.0, 1.0) for i in range(6)])
    run_id = f"overhead-{time.time_ns()}"
    ns = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = ns.start()
    TrivialWorker(run_id=run_id, nameserver=host, nameserver_port=port, logger=quiet).run(background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = BOHB(configspace=cs, run_id=run_id, nameserver=host, nameserver_port=port, min_budget=1, max_budget=27,
                   eta=3, logger=quiet)
        opt.config_generator.logger = quiet
        try:
            res = opt.run(n_iterations=schedule(_units_for(n))[1])
        finally:
            opt.shutdown(shutdown_workers=True)
            ns.shutdown()
    return len(res.get_all_runs())


def _units_for(n_evals: int) -> float:
    from .multifidelity import schedule

    lo, hi = 0.0, float(n_evals)
    while hi - lo > 0.01:  # the smallest budget whose schedule has >= n_evals evaluations
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if schedule(mid)[0] < n_evals else (lo, mid)
    return hi


def _hposdk_bohb(n: int, root: Path) -> int:
    import warnings

    from hposdk import SearchSpace, Study, Uniform

    from .multifidelity import schedule

    n_evals = schedule(_units_for(n))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Study(_bohb_trivial, SearchSpace({f"x{i}": Uniform(0.0, 1.0) for i in range(6)}), metric="loss",
              optimizer="bohb", n_trials=n_evals, seed=0, storage=root,
              budget={"min_budget": 1, "max_budget": 27, "eta": 3}, progress=False,
              name=f"overhead-bohb-{time.time_ns()}").optimize()
    return n_evals


def bohb_overhead(plan: Sequence[tuple[int, int]], root: Path) -> list[Row]:
    """``plan``: (about n evaluations, repeats): whole runs (name server, workers, run, shutdown)."""
    rows = []
    for n, repeats in plan:
        row = Row("bohb", n)
        for rep in range(repeats):
            if rep % 2:  # alternate the order, as in local_overhead
                row.ours.append(_timed(_hposdk_bohb, n, root))
                row.engine.append(_timed(_raw_bohb, n))
            else:
                row.engine.append(_timed(_raw_bohb, n))
                row.ours.append(_timed(_hposdk_bohb, n, root))
        rows.append(row)
    return rows


# --- import and start-up ------------------------------------------------------------------------


def _python(code: str, env: dict[str, str] | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return float(out.stdout.strip().splitlines()[-1])


def _bytecode_env(cache: Path) -> dict[str, str]:
    """An environment where Python keeps bytecode, as it does for a package ``pip`` installed.

    Some machines (this one) set ``PYTHONDONTWRITEBYTECODE=1``: an editable checkout is then compiled
    from source at every import, which a user's ``pip install hposdk`` never is (pip compiles the
    bytecode at install). The cache goes to a private prefix, so the checkout is left as it was.
    """
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(cache)}


_IMPORT = ("import time, sys; t, c = time.perf_counter(), time.process_time(); import hposdk; "
           "d, e = time.perf_counter() - t, time.process_time() - c; "
           "print(sorted(m for m in ('optuna', 'ray', 'clearml', 'torch', 'hpbandster') if m in sys.modules)); "
           "print(e); print(d)")


def import_time(repeats: int = 5) -> dict[str, Any]:
    """``import hposdk`` in fresh interpreters (median seconds) and the engines it must not load.

    ``seconds`` is measured with bytecode cached, as after ``pip install`` (the goal's figure);
    ``seconds_this_env`` in this process's own environment, which may compile hposdk from source
    (``source_compiled`` says whether it does).
    """
    def runs(env: dict[str, str]) -> list[list[str]]:
        return [subprocess.run([sys.executable, "-c", _IMPORT], capture_output=True, text=True, check=True,
                               env={**os.environ, **env}).stdout.split() for _ in range(repeats)]

    cache = tmpdir()
    try:
        warm = _bytecode_env(cache)
        subprocess.run([sys.executable, "-c", "import hposdk"], check=True, env={**os.environ, **warm})  # writes it
        cached, here = runs(warm), runs({})
    finally:
        cleanup(cache)
    return {"seconds": statistics.median(float(r[-1]) for r in cached),
            "cpu_seconds": statistics.median(float(r[-2]) for r in cached), "engines_loaded": cached[0][0],
            "seconds_this_env": statistics.median(float(r[-1]) for r in here),
            "source_compiled": bool(sys.flags.dont_write_bytecode)}


_LOCAL_FIRST = """
import time; t = time.perf_counter()
from hposdk import SearchSpace, Study, Uniform
def f(trial): return trial.params["x"]
Study(f, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer="tpe", n_trials=1, seed=0,
      storage=%(root)r, name="first-%(tag)s", progress=False).optimize()
print(time.perf_counter() - t)
"""
_OPTUNA_FIRST = """
import time; t = time.perf_counter()
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0)).optimize(lambda tr: tr.suggest_float("x", 0, 1), 1)
print(time.perf_counter() - t)
"""
_RAY_FIRST = """
import time, os; t = time.perf_counter()
os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
import psutil, ray, threading
peak = [0]
def watch():
    me = psutil.Process()
    while True:
        try:
            procs = [me, *me.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
threading.Thread(target=watch, daemon=True).start()
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
%(body)s
elapsed = time.perf_counter() - t
ray.shutdown()
print(peak[0] / 2**30)
print(elapsed)
"""
_RAY_HPOSDK = """
from hposdk import SearchSpace, Study, Uniform
from benchmarks.overhead import _ray_objective
Study(_ray_objective, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", backend="ray", optimizer="random",
      n_trials=1, seed=0, storage=%(root)r, name="first-ray", progress=False).optimize()
"""
_RAY_TUNER = """
from pathlib import Path
from benchmarks.overhead import _tuner
_tuner(1, Path(%(root)r), 0, default_loggers=%(default)r)
"""


def startup_times(root: Path, repeats: int = 3, ray: bool = True) -> dict[str, Any]:
    """Fresh process to first finished trial (seconds, median), and Ray's peak memory (GiB)."""
    out: dict[str, Any] = {}
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # Both arms with bytecode cached (see _bytecode_env), each warmed once: Optuna's own bytecode
    # came with its wheel, hposdk's must not be compiled from source inside its measurement.
    fast = {**env, **_bytecode_env(root / "pycache")}
    _python(_LOCAL_FIRST % {"root": str(root), "tag": "warm"}, fast)
    _python(_OPTUNA_FIRST, fast)
    local = [_python(_LOCAL_FIRST % {"root": str(root), "tag": i}, fast) for i in range(repeats)]
    raw = [_python(_OPTUNA_FIRST, fast) for _ in range(repeats)]
    out["local"] = statistics.median(local)
    out["optuna"] = statistics.median(raw)
    if ray:
        for key, body, default in (("ray", _RAY_HPOSDK, False), ("tuner", _RAY_TUNER, False),
                                   ("tuner_default", _RAY_TUNER, True)):
            code = _RAY_FIRST % {"body": body % {"root": str(root / key), "default": default}}
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 env={**os.environ, **env, "RAY_AIR_NEW_OUTPUT": "0"})
            mem, secs = res.stdout.strip().splitlines()[-2:]
            out[key], out[f"{key}_gib"] = float(secs), float(mem)
    return out


def tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hposdk-overhead-"))


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
