"""Sample efficiency: simple regret at a fixed budget, every optimizer on every backend, many seeds.

Each *arm* is one optimizer on one backend (or a raw engine used directly, as a reference). Every
arm runs every seed of every problem it applies to; a unit of work is (problem, arm, seed) and the
units run in worker processes (Ray arms in up to ``RAY_DRIVERS`` more, sharing one Ray runtime).

Simple regret = the exact value of the best point found within the budget minus the minimum
(see ``problems.py``; the multi-fidelity problem's accounting is in ``multifidelity.py``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
import traceback
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .problems import MF_BUDGET, MF_MAX, PROBLEMS, Problem

__all__ = ["ARMS", "PEER_DEFAULTS", "Arm", "Unit", "arms_for", "run_units", "summarize"]

#: Single-fidelity BOHB: hpbandster needs a budget range; with min == max every evaluation is a full
#: one and BOHB is its KDE model alone (what "hpbandster BOHB on Branin" means without a fidelity).
SINGLE_BUDGET = {"min_budget": 1, "max_budget": 1, "eta": 3}


@dataclass(frozen=True)
class Arm:
    """One optimizer on one backend (``backend='raw-optuna'``/``'raw-hpbandster'``: the engine itself)."""

    backend: str
    optimizer: str
    options: dict[str, Any] = field(default_factory=dict)
    pruner: str | None = None
    pruner_options: dict[str, Any] = field(default_factory=dict)
    multi_fidelity_only: bool = False
    single_fidelity_only: bool = False

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.optimizer}" + (f"+{self.pruner}" if self.pruner else "")

    @property
    def raw(self) -> bool:
        return self.backend.startswith("raw-")


ARMS: tuple[Arm, ...] = (
    Arm("local", "auto"),
    Arm("local", "random"),
    Arm("local", "tpe"),
    Arm("local", "gp"),
    Arm("local", "tpe", pruner="hyperband", multi_fidelity_only=True),
    Arm("local", "bohb"),
    Arm("local", "hyperband", multi_fidelity_only=True),
    Arm("ray", "auto"),
    Arm("ray", "random"),
    Arm("ray", "tpe"),
    Arm("ray", "tpe", pruner="asha", multi_fidelity_only=True),
    Arm("ray", "bohb", multi_fidelity_only=True),
    Arm("clearml", "auto"),
    Arm("clearml", "random"),
    Arm("clearml", "tpe"),
    Arm("clearml", "tpe", pruner="hyperband", multi_fidelity_only=True),
    Arm("raw-optuna", "tpe", single_fidelity_only=True),
    Arm("raw-optuna", "cmaes", single_fidelity_only=True),
    Arm("raw-hpbandster", "bohb", multi_fidelity_only=True),
)

#: Each engine's own default optimizer (goal: auto strictly better than each on half the problems).
PEER_DEFAULTS = {
    "Optuna TPE": "local/tpe",
    "Ray random": "ray/random",
    "ClearML random": "clearml/random",
    "hpbandster BOHB": "local/bohb",
}


def arms_for(problem: Problem, backends: Iterable[str]) -> list[Arm]:
    """The arms that run on ``problem`` with the given backends (raw engines always)."""
    allowed = set(backends)
    out = []
    for arm in ARMS:
        if not arm.raw and arm.backend not in allowed:
            continue
        if arm.multi_fidelity_only and not problem.multi_fidelity:
            continue
        if arm.single_fidelity_only and problem.multi_fidelity:
            continue
        if arm.optimizer == "cmaes" and problem.name == "mixed":
            continue  # CMA-ES has no categorical parameters (Optuna samples them at random)
        out.append(arm)
    return out


@dataclass(frozen=True)
class Unit:
    """One run: a problem, an arm, a seed (and, for smoke runs, a smaller budget)."""

    problem: str
    arm: Arm
    seed: int
    n_trials: int | None = None
    units: float | None = None


@dataclass
class Outcome:
    unit: Unit
    regret: float
    seconds: float
    evaluations: int
    chosen: str = ""
    error: str | None = None
    #: Ray's BOHB: the regret of the same run counted as hpbandster's evaluations (see
    #: multifidelity.as_evaluations), which is what the adapter check compares with local/bohb.
    regret_evaluations: float | None = None


# --- running one unit ---------------------------------------------------------------------------


def _backend_options(backend: str) -> dict[str, Any]:
    if backend == "clearml":
        return {"executor": "local"}
    if backend == "ray":
        return {"reuse_actors": True}
    return {}


def _study(problem: Problem, arm: Arm, seed: int, root: Path, n_trials: int, name: str) -> Any:
    from hposdk import Study

    budget: dict[str, Any] | None = None
    fixed: dict[str, Any] = {}
    if problem.multi_fidelity:
        budget, fixed = dict(MF_BUDGET), {"bench_seed": seed}
    elif arm.optimizer in ("bohb", "hyperband"):
        budget = dict(SINGLE_BUDGET)
    pruner_options = dict(arm.pruner_options)
    if arm.pruner == "hyperband":
        pruner_options = {"min_resource": MF_BUDGET["min_budget"], "max_resource": MF_BUDGET["max_budget"],
                          "reduction_factor": MF_BUDGET["eta"], **pruner_options}
    return Study(problem.objective, problem.space, metric="loss", backend=arm.backend, optimizer=arm.optimizer,
                 optimizer_options=arm.options, pruner=arm.pruner, pruner_options=pruner_options,
                 n_trials=n_trials, seed=seed, storage=str(root), name=name, progress=False, budget=budget,
                 fixed=fixed, backend_options=_backend_options(arm.backend))


def study_name(problem: Problem, seed: int) -> str:
    """One name for a (problem, seed) on every arm, as a user running one study on two backends
    would give it: Optuna's HyperbandPruner puts trials in brackets by the study's name (each unit
    has a directory of its own, so the names never meet)."""
    return f"{problem.name}-{seed}"


def _chosen(study: Any, result: Any) -> str:
    choice = getattr(study, "optimizer_choice", None)
    if choice is not None:
        return choice.optimizer + (f"+{choice.pruner}" if choice.pruner else "")
    return str(result.optimizer)


def _run_single(problem: Problem, arm: Arm, seed: int, root: Path) -> tuple[float, int, str]:
    study = _study(problem, arm, seed, root, problem.n_trials, study_name(problem, seed))
    result = study.optimize()
    values = [problem.regret(t.params) for t in result.trials if t.value is not None]
    return (min(values) if values else math.nan), len(result.trials), _chosen(study, result)


#: Trials a pruned multi-fidelity run may start at most, per unit of budget: more than the budget
#: can pay for (a trial costs at least one epoch of 27), so the budget, not this, ends the run.
MF_TRIAL_CAP = 50


def auto_choice(problem: Problem, backend: str, n_trials: int) -> Any:
    """What ``optimizer='auto'`` resolves to for ``problem`` on ``backend`` with ``n_trials``."""
    from hposdk import Budget
    from hposdk._auto import choose, installed_engines
    from hposdk.backends._registry import get_backend

    budget = Budget(**MF_BUDGET) if problem.multi_fidelity else None
    return choose(problem.space, n_trials=n_trials, capabilities=get_backend(backend).capabilities,
                  installed=installed_engines(), budget=budget, backend=backend)


class StopWhenSpent:
    """A study callback that stops the study once its trials' epochs reach ``units`` full evaluations.

    A trial costs the epochs it reported (a pruned one, fewer than 27), so how many trials a budget
    pays for is known only as the run goes: the study is given more trials than any budget pays for
    and stopped here.
    """

    def __init__(self, units: float) -> None:
        self.left = units * MF_MAX

    def __call__(self, study: Any, trial: Any) -> None:
        self.left -= len(trial.reports)
        if self.left <= 1e-9:
            study.stop()


def _pruned(problem: Problem, arm: Arm, units: float) -> bool:
    """Whether the arm's trials may stop early, so that their number is set by the budget.

    ``auto`` counts only if it resolves to a pruner both with the budget's trial count and with the
    cap (the choice looks at ``n_trials``: on the local backend 100 trials give a GP, 300 TPE with
    Hyperband pruning), so that the cap never changes what it runs.
    """
    if arm.optimizer != "auto":
        return arm.pruner is not None
    low, cap = (auto_choice(problem, arm.backend, math.ceil(n)).to_dict() for n in (units, MF_TRIAL_CAP * units))
    del low["reason"], cap["reason"]  # the reason quotes n_trials
    return low["pruner"] is not None and low == cap


def _run_multi_fidelity(problem: Problem, arm: Arm, seed: int, root: Path) -> tuple[float, int, str, float | None]:
    from .multifidelity import as_evaluations, history_of, ray_bohb_trials, regret_at, schedule, spent

    units = float(problem.units or 0)
    name = study_name(problem, seed)
    ray_bohb = arm.backend == "ray" and arm.optimizer == "bohb"
    callbacks: list[Any] = []
    if arm.backend == "local" and arm.optimizer in ("bohb", "hyperband"):
        n = schedule(units)[0]  # exactly the evaluations raw hpbandster runs for this budget
    elif ray_bohb:
        # Whole brackets in one run: a resumed run would open a new Hyperband iteration.
        n = ray_bohb_trials(units)
    elif _pruned(problem, arm, units):
        # Pruned trials cost less: the budget, counted as it is spent, ends the run.
        n, callbacks = math.ceil(MF_TRIAL_CAP * units), [StopWhenSpent(units)]
    else:
        n = math.ceil(units)  # every trial runs all its epochs: one unit each
    study = _study(problem, arm, seed, root, n, name)
    result = study.optimize(callbacks=callbacks)
    by_reports = result.optimizer not in ("bohb", "hyperband") or arm.backend != "local"
    hist = history_of(result, by_reports=by_reports)
    if spent(hist) < units - 1 / MF_MAX:
        raise RuntimeError(f"{name}: {len(result.trials)} trials spent {spent(hist):.2f} of {units} units")
    evaluations = regret_at(as_evaluations(result), units, problem.minimum) if ray_bohb else None
    return regret_at(hist, units, problem.minimum), len(result.trials), _chosen(study, result), evaluations


def _run_raw_optuna(problem: Problem, arm: Arm, seed: int) -> tuple[float, int, str]:
    import optuna

    from hposdk.backends import _optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler: Any
    if arm.optimizer == "cmaes":
        sampler = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    dists = _optuna.to_optuna(problem.space)
    best = math.inf
    for _ in range(problem.n_trials):
        trial = study.ask(dists)
        params = _optuna.decode(problem.space, trial.params)
        value = problem.value(params)
        study.tell(trial, value)
        best = min(best, value - problem.minimum)
    return best, problem.n_trials, arm.optimizer


def _run_raw_hpbandster(problem: Problem, arm: Arm, seed: int) -> tuple[float, int, str]:
    from .multifidelity import raw_hpbandster, regret_at

    hist = raw_hpbandster(seed, float(problem.units or 0), arm.optimizer)
    return regret_at(hist, float(problem.units or 0), problem.minimum), len(hist), arm.optimizer


def run_unit(unit: Unit, root: str) -> Outcome:
    """Run one (problem, arm, seed); never raises (a failure is an Outcome with its error)."""
    problem = PROBLEMS[unit.problem]
    if unit.n_trials is not None:
        problem = replace(problem, n_trials=unit.n_trials)
    if unit.units is not None and problem.multi_fidelity:
        problem = replace(problem, units=unit.units)
    where = Path(tempfile.mkdtemp(prefix="unit-", dir=root))
    start = time.perf_counter()
    evaluations = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if unit.arm.backend == "raw-optuna":
                regret, n, chosen = _run_raw_optuna(problem, unit.arm, unit.seed)
            elif unit.arm.backend == "raw-hpbandster":
                regret, n, chosen = _run_raw_hpbandster(problem, unit.arm, unit.seed)
            elif problem.multi_fidelity:
                regret, n, chosen, evaluations = _run_multi_fidelity(problem, unit.arm, unit.seed, where)
            else:
                regret, n, chosen = _run_single(problem, unit.arm, unit.seed, where)
        return Outcome(unit, regret, time.perf_counter() - start, n, chosen, regret_evaluations=evaluations)
    except Exception:
        return Outcome(unit, math.nan, time.perf_counter() - start, 0, "", traceback.format_exc()[-2000:])
    finally:
        shutil.rmtree(where, ignore_errors=True)


# --- running many units -------------------------------------------------------------------------


#: Ray units run in this many driver processes at most, all on one Ray runtime. A Ray unit waits
#: on Ray's messages more than it computes (two drivers on an idle machine: each unit about 10%
#: slower, together 1.7 times the throughput), so Ray takes what the other units leave free.
RAY_DRIVERS = 3
#: Logical CPUs of the shared runtime per Ray driver. Each driver's Tune can hold CPUs its trial is
#: not using: a finished trial's actor kept for reuse, the next trial's placement group, paused trials'
#: actors under BOHB. With 2 per driver (a runtime of its own on this machine), one driver's trials
#: sometimes waited minutes for CPUs the others held (the last unit of an arm took 36-61 s where
#: its other seeds took 3 s, and a Ray BOHB seed 469 s against 24-89 s; with 8, 4-10 s and at
#: most 137 s, the Ray units 2,396 run-seconds in all against 2,743). The scheduling decisions
#: are each study's own (one trial at a time), so more tokens change no trial, only the waiting.
RAY_CPUS_PER_DRIVER = 8


def _ray_connect(address: str) -> None:
    import ray

    # RAY_AIR_NEW_OUTPUT comes from the parent: _shared_ray sets it before the drivers start.
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)


def _shared_ray() -> tuple[str, bool]:
    """The address of the Ray runtime the Ray drivers join, and whether it was started here."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():  # a runtime the caller started (or an earlier study): it stays up
        return ray.get_runtime_context().gcs_address, False
    # One runtime for every Ray driver: a runtime each (raylet, GCS, prestarted workers) costs
    # more CPU than it saves on two cores. Its logical CPUs are tokens, not cores: see
    # RAY_CPUS_PER_DRIVER.
    info: Any = ray.init(num_cpus=RAY_CPUS_PER_DRIVER * RAY_DRIVERS, include_dashboard=False,
                         logging_level=logging.ERROR, log_to_driver=False)
    return info.address_info["address"], True


def ray_slots(other_running: int, other_queued: int, workers: int) -> int:
    """How many Ray units may run now: one while the other units keep every worker busy, one more
    for each worker they leave idle (up to :data:`RAY_DRIVERS`)."""
    idle = max(0, workers - other_running) if not other_queued else 0
    return min(RAY_DRIVERS, 1 + idle)


def run_units(units: Sequence[Unit], workers: int = 2, progress: bool = True) -> list[Outcome]:
    """Run ``units``: the non-Ray ones in ``workers`` processes, the Ray ones in up to
    :data:`RAY_DRIVERS` more processes that share one Ray runtime started here.
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait

    ctx = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp(prefix="hposdk-regret-")
    # The slowest first, so that a slow arm does not start last.
    ray_queue = deque(sorted((u for u in units if u.arm.backend == "ray"),
                             key=lambda u: (not PROBLEMS[u.problem].multi_fidelity,
                                            u.arm.optimizer not in ("auto", "bohb"))))
    other = deque(sorted((u for u in units if u.arm.backend != "ray"),
                         key=lambda u: (u.arm.optimizer not in ("gp", "auto", "bohb", "hyperband"), u.problem)))
    total = len(ray_queue) + len(other)
    running: dict[Future[Outcome], bool] = {}  # future -> is a Ray unit
    outcomes: list[Outcome] = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    ray_pool = None
    ray_started = False
    try:
        if ray_queue:
            address, ray_started = _shared_ray()
            ray_pool = ProcessPoolExecutor(max_workers=RAY_DRIVERS, mp_context=ctx,
                                           initializer=functools.partial(_ray_connect, address))

        def submit(queue: deque[Unit], executor: ProcessPoolExecutor, is_ray: bool) -> None:
            unit = queue.popleft()
            running[executor.submit(run_unit, unit, root)] = is_ray

        while other or ray_queue or running:
            n_other = sum(not r for r in running.values())
            while other and n_other < workers:
                submit(other, pool, False)
                n_other += 1
            n_ray = len(running) - n_other
            while ray_queue and ray_pool is not None and n_ray < ray_slots(n_other, len(other), workers):
                submit(ray_queue, ray_pool, True)
                n_ray += 1
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in done:
                del running[f]
                out = f.result()
                outcomes.append(out)
                if progress and (out.error or len(outcomes) % 50 == 0 or len(outcomes) == total):
                    failed = (f"; {out.unit.problem} {out.unit.arm.label} seed {out.unit.seed} FAILED: "
                              f"{(out.error or '').strip().splitlines()[-1]}") if out.error else ""
                    print(f"  regret: {len(outcomes)}/{total} units{failed}", flush=True)
    finally:
        pool.shutdown(cancel_futures=True)
        if ray_pool is not None:
            ray_pool.shutdown(cancel_futures=True)
        if ray_started:
            import ray

            ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


# --- summaries ----------------------------------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    vals = sorted(v for v in values if not math.isnan(v))
    if not vals:
        return math.nan, math.nan, math.nan
    if len(vals) == 1:
        return vals[0], vals[0], vals[0]
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return q[0], statistics.median(vals), q[2]


def summarize(outcomes: Sequence[Outcome], twins: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """Per problem and arm: regrets per seed, median, IQR, seconds, the optimizer auto chose.

    ``twins``: (problem, arm label) -> the auto arm whose runs it shares (the same configuration).
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for o in outcomes:
        cell = table.setdefault(o.unit.problem, {}).setdefault(
            o.unit.arm.label, {"regrets": {}, "seconds": [], "chosen": set(), "errors": []})
        cell["regrets"][o.unit.seed] = o.regret
        if o.regret_evaluations is not None:
            cell.setdefault("regrets_evaluations", {})[o.unit.seed] = o.regret_evaluations
        cell["seconds"].append(o.seconds)
        if o.chosen:
            cell["chosen"].add(o.chosen)
        if o.error:
            cell["errors"].append(o.error)
    for arms in table.values():
        for cell in arms.values():
            regrets = [cell["regrets"][s] for s in sorted(cell["regrets"])]
            cell["q1"], cell["median"], cell["q3"] = quartiles(regrets)
            cell["n"] = sum(not math.isnan(r) for r in regrets)
            cell["chosen"] = ", ".join(sorted(cell["chosen"]))
    for (problem, label), auto in (twins or {}).items():
        source = table.get(problem, {}).get(auto)
        if source is not None:
            table[problem][label] = {**source, "chosen": "", "note": f"= {auto}'s runs, the same configuration"}
    return {"table": table, "goals": auto_goals(table), "adapters": adapter_check(table)}


def auto_goals(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Goal 3: auto vs the best single peer, and vs each engine's default, per problem."""
    per_problem = {}
    wins = {peer: 0 for peer in PEER_DEFAULTS}
    for problem, arms in table.items():
        auto = arms.get("local/auto")
        if auto is None:
            continue
        peers = {label: c["median"] for label, c in arms.items() if not label.endswith("/auto")
                 and not math.isnan(c["median"])}
        best_label = min(peers, key=lambda k: peers[k]) if peers else None
        row: dict[str, Any] = {"auto": auto["median"], "chosen": auto["chosen"], "best_peer": best_label,
                               "best_peer_median": peers.get(best_label, math.nan) if best_label else math.nan}
        row["no_worse_than_best"] = bool(best_label) and auto["median"] <= row["best_peer_median"] * (1 + 1e-9)
        for peer, label in PEER_DEFAULTS.items():
            if label in arms:
                better = auto["median"] < arms[label]["median"]
                row[peer] = better
                wins[peer] += better
        per_problem[problem] = row
    n = len(per_problem)
    return {"per_problem": per_problem, "wins": wins, "problems": n,
            "no_worse_everywhere": all(r["no_worse_than_best"] for r in per_problem.values()),
            "beats_each_default_on_half": all(w * 2 >= n for w in wins.values()) if n else False}


def adapter_check(table: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The same optimizer on several backends: identical per seed, or a Mann-Whitney U p-value.

    Where a backend's runs also carry ``regrets_evaluations`` (Ray's BOHB, which continues paused
    trials where hpbandster starts each evaluation afresh), those are compared: the same budget
    counted the same way, so that a difference would be the optimizer's, not the cost model's.
    """
    from scipy.stats import mannwhitneyu

    rows = []
    for problem, arms in table.items():
        by_opt: dict[str, list[str]] = {}
        for label in arms:
            by_opt.setdefault(label.split("/", 1)[1], []).append(label)
        for opt, labels in by_opt.items():
            if len(labels) < 2 or opt == "auto":
                continue
            labels.sort(key=lambda label: (not label.startswith("local/"), label))
            base = labels[0]
            for other in labels[1:]:
                a = arms[base].get("regrets_evaluations") or arms[base]["regrets"]
                b = arms[other].get("regrets_evaluations") or arms[other]["regrets"]
                seeds = sorted(set(a) & set(b))
                xa = [a[s] for s in seeds if not math.isnan(a[s]) and not math.isnan(b[s])]
                xb = [b[s] for s in seeds if not math.isnan(a[s]) and not math.isnan(b[s])]
                identical = bool(xa) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(xa, xb))
                p = 1.0 if identical or len(xa) < 2 else float(mannwhitneyu(xa, xb).pvalue)
                rows.append({"problem": problem, "optimizer": opt, "a": base, "b": other, "identical": identical,
                             "p": p, "same": identical or p >= 0.05,
                             "as_evaluations": any("regrets_evaluations" in arms[x] for x in (base, other))})
    return rows
