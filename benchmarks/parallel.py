"""Parallel efficiency: ``max_concurrent=2`` with a sleep-bound objective, wall time against ideal.

Ideal = trials x sleep / 2. Two measurements: the whole ``Study.optimize()`` (worker processes or
Ray trial actors started, on a Ray runtime already up) and the steady state, from the first
objective call's start to the last one's end, as the objective's own clock reads them (a trial's
``started_at`` is when the driver launched it, before its worker or actor was up).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["efficiency", "engine_efficiency", "sleepy"]

SLEEP_S = 1.0


def sleepy(trial: Any) -> dict[str, float]:
    # The monotonic clock is one for every process on this machine (worker processes, Ray actors)
    # and a step of the wall clock, which CI hosts have shown, does not move it.
    began = time.monotonic()
    time.sleep(float(trial.params["sleep"]))
    return {"loss": float(trial.params["x"]), "began": began, "ended": time.monotonic()}


def efficiency(backend: str, n_trials: int, sleep_s: float, root: Path, max_concurrent: int = 2) -> dict[str, Any]:
    """Run ``n_trials`` of ``sleep_s`` seconds with ``max_concurrent`` at once; wall time and ratio to ideal."""
    from hposdk import SearchSpace, Study, Uniform

    options: dict[str, Any] = {"reuse_actors": True} if backend == "ray" else {}
    study = Study(sleepy, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", backend=backend,
                  optimizer="random", n_trials=n_trials, max_concurrent=max_concurrent, seed=0,
                  fixed={"sleep": sleep_s}, storage=str(root), name=f"parallel-{backend}-{time.monotonic_ns()}",
                  progress=False, backend_options=options)
    start = time.perf_counter()
    result = study.optimize()
    wall = time.perf_counter() - start
    ideal = n_trials * sleep_s / max_concurrent
    # Steady state: the first objective call's start to the last one's end, on the objective's own
    # clock (worker or actor start-up left out).
    calls = [t.metrics for t in result.trials if "began" in t.metrics and "ended" in t.metrics]
    span = max(m["ended"] for m in calls) - min(m["began"] for m in calls) if calls else float("nan")
    return {"backend": backend, "trials": len(result.trials), "sleep_s": sleep_s, "max_concurrent": max_concurrent,
            "ideal_s": ideal, "wall_s": wall, "ratio": wall / ideal, "span_s": span, "span_ratio": span / ideal}


def _sleepy_trainable(config: dict[str, float]) -> None:
    from ray import tune

    time.sleep(config["sleep"])
    tune.report({"loss": config["x"]})


def engine_efficiency(backend: str, n_trials: int, sleep_s: float, root: Path, max_concurrent: int = 2) -> float:
    """The same measurement with the engine alone: Optuna ``n_jobs`` threads, or a hand-written Tuner.

    Returns wall / ideal.
    """
    start = time.perf_counter()
    if backend == "ray":
        from ray import tune
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from hposdk.backends.ray import _environ

        from .overhead import tuner_loggers

        callbacks, env = tuner_loggers()
        tuner = tune.Tuner(
            _sleepy_trainable,
            param_space={"x": tune.uniform(0.0, 1.0), "sleep": sleep_s},
            tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=n_trials, reuse_actors=True,
                                        max_concurrent_trials=max_concurrent,
                                        search_alg=BasicVariantGenerator(random_state=0)),
            run_config=tune.RunConfig(name=f"parallel-{time.monotonic_ns()}", storage_path=str(root), verbose=0,
                                      callbacks=callbacks),
        )
        with _environ(**env):
            tuner.fit()
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def objective(trial: Any) -> float:
            time.sleep(sleep_s)
            return trial.suggest_float("x", 0.0, 1.0)

        optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).optimize(
            objective, n_trials=n_trials, n_jobs=max_concurrent)
    return (time.perf_counter() - start) / (n_trials * sleep_s / max_concurrent)
