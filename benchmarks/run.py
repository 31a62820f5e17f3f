"""Run the whole benchmark suite: overhead, parallel efficiency, regret; write a report and a plot.

    python -m benchmarks              # the full suite (12-44 minutes on 2 cores by host; docs/benchmarks.md)
    python -m benchmarks --quick      # a smoke run (tiny budgets, about a minute)
    python -m benchmarks --only regret --seeds 20

Writes ``<out>/latest.md`` (``quick.md`` with ``--quick``), the matching ``.png`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Before torch, numpy or Ray are imported anywhere (here or in the processes started from here):
# Optuna's GP sampler is several times slower with one OpenMP thread pool per core fighting over 2
# cores (Optuna's own advice), Ray and spawned workers must import `benchmarks`, and ClearML must
# not look for a server. Ray: when a Tune run ends, its last trial actor does not exit when asked
# and is killed after Ray's graceful-shutdown timeout (30 s), holding its CPU until then; the
# suite's Ray units end a Tune run every few seconds on one shared runtime, so those actors used to
# take every CPU and stall the next units for up to a minute (a hand-written Tuner's runs end the
# same way: docs/benchmarks.md). One second is plenty for an actor that exits at all.
for _key, _value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                     ("CLEARML_OFFLINE_MODE", "1"), ("RAY_AIR_NEW_OUTPUT", "0"), ("MPLBACKEND", "Agg"),
                     ("RAY_actor_graceful_shutdown_timeout_ms", "1000")):
    os.environ.setdefault(_key, _value)
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(
    os.pathsep) if p and p != str(ROOT)]])
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("overhead", "parallel", "regret")
BACKENDS = ("local", "ray", "clearml")


def _plans(quick: bool) -> dict[str, Any]:
    if quick:
        return {"import": 2, "startup": 1, "startup_ray": False,
                "local": [("random", 30, 1), ("tpe", 30, 1)], "journal_max": 30, "sqlite_max": {"random": 30},
                "bohb": [(10, 1)], "ray": [(10, 1)],
                "parallel": {"local": (4, 0.2), "ray": (4, 0.2)},
                # Ray's regret arms need a Ray runtime of their own (seconds to start): the quick run
                # exercises Ray in the overhead and parallel sections only.
                "seeds": 1, "n_trials": 12, "units": 2.0, "ray_mf_seeds": 1, "raw_hpbandster_seeds": 1,
                "regret_backends": ("local", "clearml")}
    return {"import": 5, "startup": 3, "startup_ray": True,
            "local": [("random", 100, 9), ("random", 500, 3), ("random", 2000, 3),
                      # One run at 2000 TPE trials (47 s for three): 0-9% over eight earlier runs.
                      ("tpe", 100, 9), ("tpe", 500, 3), ("tpe", 2000, 1), ("gp", 100, 3)],
            "journal_max": 500, "sqlite_max": {"random": 500, "tpe": 100, "gp": 0},
            "bohb": [(100, 3), (500, 1)], "ray": [(100, 5), (500, 3)],
            # 40 one-second trials, two at a time: ideal 20 s, long enough that a fixed start-up
            # (Ray's trial actors: about 1.5 s) is not the whole story.
            "parallel": {"local": (40, 1.0), "ray": (40, 1.0)},
            # --ray-mf-seeds lowers the seeds of the Ray arms and raw hpbandster on the multi-fidelity
            # problem (the slowest units, about 40 s per seed for the Ray arms together).
            # Raw hpbandster is a reference, not a backend: local/bohb reproduces it evaluation for
            # evaluation (the same regret seed by seed), which 3 seeds show at a third of the cost.
            "seeds": 10, "n_trials": None, "units": None, "ray_mf_seeds": 10, "raw_hpbandster_seeds": 3}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import overhead, parallel, report

    plan = _plans(args.quick)
    if args.seeds is not None:
        plan["seeds"] = args.seeds
    if args.ray_mf_seeds is not None:
        plan["ray_mf_seeds"] = args.ray_mf_seeds
    backends = [b for b in args.backends.split(",") if b]
    sections = [s for s in args.only.split(",") if s] if args.only else list(SECTIONS)
    results: dict[str, Any] = {"meta": report.machine(), "quick": args.quick,
                               "command": "python -m benchmarks " + " ".join(sys.argv[1:])}
    start = time.perf_counter()
    tmp = overhead.tmpdir()
    try:
        if "overhead" in sections:
            _log("import and start-up times")
            results["import"] = overhead.import_time(plan["import"])
            results["startup"] = overhead.startup_times(tmp / "startup", plan["startup"],
                                                        ray=plan["startup_ray"] and "ray" in backends)
            _log("local backend vs Optuna")
            rows = []
            for sampler, n, repeats in plan["local"]:
                rows += overhead.local_overhead([(sampler, n, repeats)], tmp / "local",
                                                sqlite_max=plan["sqlite_max"].get(sampler, 0),
                                                journal_max=plan["journal_max"])
                _log(f"  {sampler} {n}: {rows[-1].ratio():.2f}x (CPU), {rows[-1].ratio('wall_ms'):.2f}x (wall)")
            results["local"] = [r.to_dict() for r in rows]
            _log("local BOHB vs raw hpbandster")
            results["bohb"] = [r.to_dict() for r in overhead.bohb_overhead(plan["bohb"], tmp / "bohb")]
        if "ray" in backends and ("overhead" in sections or "parallel" in sections):
            import ray

            ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level="ERROR",
                     log_to_driver=False)
            try:
                if "overhead" in sections:
                    _log("Ray backend vs hand-written Tuner")
                    results["ray"] = [r.to_dict() for r in overhead.ray_overhead(plan["ray"], tmp / "ray")]
                if "parallel" in sections:
                    _log("parallel efficiency on Ray")
                    n, sleep_s = plan["parallel"]["ray"]
                    row = parallel.efficiency("ray", n, sleep_s, tmp / "par")
                    row["engine_ratio"] = parallel.engine_efficiency("ray", n, sleep_s, tmp / "par")
                    results.setdefault("parallel", []).append(row)
            finally:
                ray.shutdown()
        if "parallel" in sections and "local" in backends:
            _log("parallel efficiency on the local backend")
            n, sleep_s = plan["parallel"]["local"]
            row = parallel.efficiency("local", n, sleep_s, tmp / "par")
            row["engine_ratio"] = parallel.engine_efficiency("local", n, sleep_s, tmp / "par")
            results.setdefault("parallel", []).insert(0, row)
        if "regret" in sections:
            regret_backends = [b for b in backends if b in plan.get("regret_backends", BACKENDS)]
            results["regret"] = _regret(plan, regret_backends, args.workers)
    finally:
        overhead.cleanup(tmp)
    results["wall_s"] = time.perf_counter() - start
    return results


def _auto_twins(backends: Sequence[str], plan: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(problem, arm label) -> the auto arm that runs the same configuration (so it is run once).

    ``optimizer='auto'`` resolves to one of the peers' configurations; the pure choice function
    says which before anything runs, and the auto runs record what they actually chose, which the
    report shows (so a mismatch would be visible).
    """
    from benchmarks import regret
    from benchmarks.problems import PROBLEMS

    twins = {}
    for problem in PROBLEMS.values():
        n_trials = plan["n_trials"] or problem.n_trials
        for backend in backends:
            choice = regret.auto_choice(problem, backend, n_trials if not problem.multi_fidelity else math.ceil(
                plan["units"] or problem.units or 0))
            for arm in regret.arms_for(problem, [backend]):
                if (arm.backend == backend and arm.optimizer == choice.optimizer and arm.pruner == choice.pruner
                        and not arm.options and not choice.optimizer_options):
                    twins[(problem.name, arm.label)] = f"{backend}/auto"
    return twins


def _regret(plan: dict[str, Any], backends: Sequence[str], workers: int) -> dict[str, Any]:
    from benchmarks import regret
    from benchmarks.problems import PROBLEMS

    twins = _auto_twins(backends, plan)
    units = []
    for problem in PROBLEMS.values():
        for arm in regret.arms_for(problem, backends):
            if (problem.name, arm.label) in twins:
                continue
            seeds = plan["seeds"]
            if problem.multi_fidelity and arm.backend == "ray":
                seeds = min(seeds, plan["ray_mf_seeds"])
            if arm.backend == "raw-hpbandster":
                seeds = min(seeds, plan["raw_hpbandster_seeds"])
            units += [regret.Unit(problem.name, arm, s, plan["n_trials"], plan["units"]) for s in range(seeds)]
    _log(f"regret: {len(units)} runs ({plan['seeds']} seeds; {workers} worker processes, Ray units in up to "
         f"{regret.RAY_DRIVERS} more)")
    outcomes = regret.run_units(units, workers=workers)
    summary = regret.summarize(outcomes, twins)
    summary["seeds"] = plan["seeds"]
    summary["ray_mf_seeds"] = min(plan["seeds"], plan["ray_mf_seeds"])
    summary["raw_hpbandster_seeds"] = min(plan["seeds"], plan["raw_hpbandster_seeds"])
    summary["problems"] = {p.name: p.description if plan["n_trials"] is None else
                           f"{p.description} (quick: {plan['n_trials']} evaluations / {plan['units']} units)"
                           for p in PROBLEMS.values()}
    summary["errors"] = [f"{o.unit.problem} {o.unit.arm.label} seed {o.unit.seed}: {o.error}"
                         for o in outcomes if o.error][:20]
    return summary


def write(results: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path | None, Path]:
    """Write ``<stem>.md``, ``<stem>.png`` and ``<stem>.json`` under ``out``."""
    from benchmarks import report

    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    md.write_text(report.markdown(results))
    png = report.plot(results, out / f"{stem}.png")
    js = out / f"{stem}.json"
    js.write_text(json.dumps(results, indent=1, default=str))
    return md, png, js


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of every section")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated backends to include")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per (problem, optimizer); default 10")
    parser.add_argument("--ray-mf-seeds", type=int, default=None, dest="ray_mf_seeds",
                        help="seeds of the Ray arms on the multi-fidelity problem (default: --seeds)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the regret runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where to write")
    args = parser.parse_args(argv)
    results = run(args)
    md, png, js = write(results, args.out, "quick" if args.quick else "latest")
    if png is not None and not args.quick and args.out == ROOT / "benchmarks" / "results":
        shutil.copyfile(png, ROOT / "docs" / "assets" / "benchmarks-latest.png")  # shown by docs/benchmarks.md
    print(md.read_text())
    _log(f"wrote {md}, {png}, {js} in {results['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
