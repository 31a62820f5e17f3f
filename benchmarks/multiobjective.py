"""Multi-objective sample efficiency: hypervolume on ZDT1, hposdk's local samplers vs random search.

ZDT1 (Zitzler, Deb and Thiele, 2000) has a known Pareto front, f2 = 1 - sqrt(f1) for f1 in [0, 1]
(all x_i = 0 for i > 1), so the best reachable hypervolume is known (printed under the table, for the
reference point (1.1, 11)). Each optimizer runs ``--trials`` trials per seed; the table gives the
median and IQR of the hypervolume after the first 50 / 100 / all trials (higher is better) and how
many seeds beat random search with the same seed and budget.

Run: ``.venv/bin/python benchmarks/multiobjective.py [--seeds 10] [--trials 200] [--dims 5]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from typing import Any

from hposdk import Study, Uniform
from hposdk._goals import hypervolume_2d, pareto_front

REFERENCE = (1.1, 11.0)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "random": {},
    "tpe": {},  # Optuna's TPE with several objectives is MOTPE
    "nsga2": {"population_size": 20},  # the default 50 leaves two generations at 100 trials
}


def zdt1(trial: Any) -> dict[str, float]:
    """ZDT1 over the trial's x0..x{n-1} in [0, 1]."""
    x = [trial.params[f"x{i}"] for i in range(len(trial.params))]
    g = 1 + 9 * sum(x[1:]) / (len(x) - 1)
    f1 = x[0]
    return {"f1": f1, "f2": g * (1 - math.sqrt(f1 / g))}


def true_hypervolume(n: int = 200_000) -> float:
    """HV of the true front w.r.t. REFERENCE (the front is f2 = 1 - sqrt(f1), f1 in [0, 1])."""
    pts = [(i / n, 1 - math.sqrt(i / n)) for i in range(n + 1)]
    return hypervolume_2d(pts, REFERENCE)


def hv_of(points: list[tuple[float, float]]) -> float:
    front = pareto_front(points, ["min", "min"])
    return hypervolume_2d([points[i] for i in front], REFERENCE)


def run(seeds: int, trials: int, dims: int, checkpoints: tuple[int, ...]) -> dict[str, dict[int, list[float]]]:
    space = {f"x{i}": Uniform(0.0, 1.0) for i in range(dims)}
    out: dict[str, dict[int, list[float]]] = {name: {c: [] for c in checkpoints} for name in OPTIMIZERS}
    with tempfile.TemporaryDirectory() as storage:
        for name, options in OPTIMIZERS.items():
            for seed in range(seeds):
                r = Study(zdt1, space, objectives={"f1": "min", "f2": "min"}, optimizer=name,
                          optimizer_options=options, n_trials=trials, seed=seed, name=f"{name}-{seed}",
                          storage=storage, progress=False).optimize()
                points = [(t.metrics["f1"], t.metrics["f2"]) for t in sorted(r.completed, key=lambda t: t.number)]
                for c in checkpoints:
                    out[name][c].append(hv_of(points[:c]))
    return out


def iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[2] - q[0]


def table(results: dict[str, dict[int, list[float]]], best: float) -> str:
    checkpoints = list(next(iter(results.values())))
    head = "| optimizer | " + " | ".join(f"HV @ {c} (median, IQR)" for c in checkpoints) + " | wins vs random |"
    lines = [head, "|" + "---|" * (len(checkpoints) + 2)]
    for name, by_c in results.items():
        cells = [f"{statistics.median(v):.3f} ({iqr(v):.3f})" for v in by_c.values()]
        last = checkpoints[-1]
        wins = sum(a > b for a, b in zip(by_c[last], results["random"][last]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wins}/{len(by_c[last])} |")
    lines.append(f"\nTrue front's hypervolume (reference {REFERENCE}): {best:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--dims", type=int, default=5)
    args = ap.parse_args(argv)
    checkpoints = (*(c for c in (50, 100) if c < args.trials), args.trials)
    start = time.perf_counter()
    results = run(args.seeds, args.trials, args.dims, checkpoints)
    text = (f"ZDT1, {args.dims} dims, {args.seeds} seeds, local backend\n\n" + table(results, true_hypervolume())
            + f"\n\n({time.perf_counter() - start:.0f} s)")
    print(text)
    return text


if __name__ == "__main__":
    main()
