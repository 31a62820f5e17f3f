"""Per-trial overhead of the hposdk Ray backend against a hand-written Ray Tune script.

Both run the same study on one Ray runtime started once: a trivial objective of one float
parameter, random search, one trial at a time, one result per trial, ``reuse_actors=True``.
hposdk adds its journal (one flushed line per event), the trial's own working directory, its
outcome report and the Searcher/Callback round trips; the hand-written script is the itwinai
tutorial's shape (``Tuner`` + ``TuneConfig`` + ``RunConfig``).

Run:  python benchmarks/ray_overhead.py [--trials 50 200] [--repeats 3]
Prints the median wall time per trial of each, over ``--repeats`` runs, and the difference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def hposdk_objective(trial):  # type: ignore[no-untyped-def]
    return {"loss": (trial.params["x"] - 0.3) ** 2}


def ray_trainable(config):  # type: ignore[no-untyped-def]
    from ray import tune

    tune.report({"loss": (config["x"] - 0.3) ** 2})


def run_hposdk(n: int, root: Path, seed: int) -> float:
    from hposdk import SearchSpace, Study, Uniform

    study = Study(hposdk_objective, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", backend="ray",
                  optimizer="random", n_trials=n, seed=seed, storage=str(root), progress=False,
                  name=f"bench-{n}-{seed}", backend_options={"reuse_actors": True})
    start = time.perf_counter()
    result = study.optimize()
    elapsed = time.perf_counter() - start
    assert len(result.trials) == n
    return elapsed


def run_ray(n: int, root: Path, seed: int) -> float:
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    tuner = tune.Tuner(
        ray_trainable,
        param_space={"x": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", num_samples=n, reuse_actors=True, max_concurrent_trials=1,
            search_alg=BasicVariantGenerator(random_state=seed, max_concurrent=1),
        ),
        run_config=tune.RunConfig(name=f"bench-{n}-{seed}", storage_path=str(root), verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(grid) == n
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the hand-written script silent too
    root = Path(tempfile.mkdtemp(prefix="hposdk-bench-"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", _temp_dir=str(root / "ray"))
    try:
        # Warm up both paths (worker process start, imports) before measuring.
        run_hposdk(3, root / "warm-h", 0)
        run_ray(3, root / "warm-r", 0)
        rows = []
        for n in args.trials:
            h, r = [], []
            for rep in range(args.repeats):
                # Alternate the order so that machine noise hits both alike.
                if rep % 2 == 0:
                    h.append(run_hposdk(n, root / "h", rep))
                    r.append(run_ray(n, root / "r", rep))
                else:
                    r.append(run_ray(n, root / "r", rep))
                    h.append(run_hposdk(n, root / "h", rep))
            rows.append((n, statistics.median(h) / n * 1e3, statistics.median(r) / n * 1e3))
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nper-trial wall time, median of {args.repeats} (ms); Ray {ray.__version__}, reuse_actors=True, "
          "1 trial at a time")
    print(f"{'trials':>7} {'hposdk on Ray':>14} {'hand-written Ray':>17} {'difference':>11} {'ratio':>6}")
    for n, h_ms, r_ms in rows:
        print(f"{n:>7} {h_ms:>14.1f} {r_ms:>17.1f} {h_ms - r_ms:>+11.1f} {h_ms / r_ms:>6.2f}")


if __name__ == "__main__":
    main()
