"""Per-trial overhead of the local backend against raw Optuna, in the same run.

Prints a Markdown table: median of ``--repeats`` runs of a trivial objective, for hposdk's local
backend (with its durable journal) and raw Optuna with the same sampler on each of its storages.

    python benchmarks/overhead_local.py --trials 100 500 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import optuna

from hposdk import SearchSpace, Study, Uniform

SPACE = SearchSpace({"x": Uniform(-5.0, 5.0), "y": Uniform(-5.0, 5.0)})


def trivial(trial) -> float:  # type: ignore[no-untyped-def]
    return float(trial.params["x"] ** 2 + trial.params["y"])


def raw_optuna(sampler: str, storage: str | None, n: int) -> float:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.samplers.TPESampler(seed=0) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(sampler=s, storage=storage)
    start = time.perf_counter()
    study.optimize(lambda t: t.suggest_float("x", -5, 5) ** 2 + t.suggest_float("y", -5, 5), n_trials=n)
    return (time.perf_counter() - start) / n


def hposdk_local(sampler: str, n: int, root: Path) -> float:
    study = Study(trivial, SPACE, metric="loss", optimizer=sampler, n_trials=n, seed=0, storage=root,
                  progress=False, name=f"bench-{sampler}-{n}-{time.monotonic_ns()}")
    start = time.perf_counter()
    study.optimize()
    return (time.perf_counter() - start) / n


def optuna_journal(sampler: str, n: int, root: Path) -> float:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = root / f"j-{time.monotonic_ns()}.log"
    return raw_optuna(sampler, JournalStorage(JournalFileBackend(str(path))), n)  # type: ignore[arg-type]


def optuna_sqlite(sampler: str, n: int, root: Path) -> float:
    return raw_optuna(sampler, f"sqlite:///{root}/s-{time.monotonic_ns()}.db", n)


def median_ms(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats)) * 1e3


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import hposdk; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(5)]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"`import hposdk`: {import_time() * 1e3:.0f} ms (median of 5 fresh interpreters)\n")
    print("| sampler | trials | hposdk local + journal (ms/trial) | Optuna in-memory | Optuna journal file "
          "| Optuna SQLite | hposdk / in-memory |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sampler in ("random", "tpe"):
            for n in args.trials:
                ours = median_ms(partial(hposdk_local, sampler, n, root), args.repeats)
                mem = median_ms(partial(raw_optuna, sampler, None, n), args.repeats)
                jour = median_ms(partial(optuna_journal, sampler, n, root), args.repeats)
                sql = median_ms(partial(optuna_sqlite, sampler, n, root), 1)
                print(f"| {sampler} | {n} | {ours:.2f} | {mem:.2f} | {jour:.2f} | {sql:.2f} | {ours / mem:.2f}x |")


if __name__ == "__main__":
    main()
