"""Does BOHB through hposdk optimise? Multi-fidelity Hartmann-6, regret per unit of total budget.

Budgets are epochs 1..27 (eta 3); evaluating at budget b costs b, and one *unit* is one full-budget
evaluation (27). For each seed, every method spends the same total budget on
``benchmarks/functions.py:hartmann6_mf`` (bias and noise shrink with the budget, exact at 27):

* hposdk BOHB and hposdk Hyperband: ``Study(optimizer="bohb"/"hyperband", budget=...)``;
* raw hpbandster BOHB: hpbandster's own NameServer/Worker/``BOHB.run`` on the same function and
  seed, in the same process (same algorithm: hposdk should add nothing);
* random search with full budgets: ``Study(optimizer="random")``;
* hposdk TPE + Hyperband pruning (Optuna): every trial may run 27 epochs, reporting each one.

Simple regret at a checkpoint = Hartmann-6 at the incumbent minus its minimum, where the incumbent is
the best trial at the highest budget reached within that much total budget (``StudyResult.best``;
TPE: the best trial that ran all 27 epochs). Prints a Markdown table of the median and IQR over seeds.

    python benchmarks/multifidelity.py --seeds 10                # the table (minutes)
    python benchmarks/multifidelity.py --overhead 100 --repeats 3  # per-evaluation overhead vs raw hpbandster
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from functions import HARTMANN6_MIN, hartmann6, hartmann6_mf

from hposdk import SearchSpace, Study, Uniform
from hposdk.backends import hpbandster as hb
from hposdk.result import StudyResult, TrialState

MIN_B, MAX_B, ETA = 1, 27, 3
BUDGET = {"min_budget": MIN_B, "max_budget": MAX_B, "eta": ETA}
DIMS = [f"x{i}" for i in range(6)]
SPACE = SearchSpace({d: Uniform(0.0, 1.0) for d in DIMS})
METHODS = ("hposdk BOHB", "raw hpbandster BOHB", "hposdk Hyperband", "random (full budget)",
           "hposdk TPE + Hyperband pruning")

# (cost, true value of the trial's point or None when it is not an incumbent candidate, observed value, budget)
History = list[tuple[float, float | None, float, float]]


def objective(trial: Any) -> dict[str, float]:
    """Trains ``trial.budget`` epochs; epoch e reports the function at budget e (pruners see it)."""
    x = [trial.params[d] for d in DIMS]
    seed = int(trial.params["bench_seed"])
    loss = math.nan
    for epoch in range(1, round(trial.budget) + 1):
        loss = hartmann6_mf(x, epoch, MIN_B, MAX_B, seed)
        trial.report(epoch, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


def schedule(n_units: float) -> tuple[int, int]:
    """(evaluations, Hyperband iterations) whose total budget first reaches ``n_units`` full evaluations."""
    budgets = hb.budgets(MIN_B, MAX_B, ETA)
    s_max = len(budgets)
    spent, evals, it = 0.0, 0, 0
    while True:
        s = s_max - 1 - it % s_max
        n0 = int(math.floor(s_max / (s + 1)) * ETA**s)
        for k, b in enumerate(budgets[-s - 1:]):
            for _ in range(max(int(n0 * ETA ** (-k)), 1)):
                spent += b
                evals += 1
                if spent >= n_units * MAX_B:
                    return evals, it + 1
        it += 1


def history_of(result: StudyResult, by_reports: bool = False) -> History:
    out: History = []
    for t in sorted(result.trials, key=lambda t: t.number):
        cost = float(len(t.reports)) if by_reports else float(t.budget or MAX_B)
        full = t.state is TrialState.COMPLETE and (t.budget or MAX_B) >= MAX_B and len(t.reports) >= MAX_B
        true = hartmann6([t.params[d] for d in DIMS]) if t.value is not None else None
        # Only trials at the full budget can be TPE's incumbent; for BOHB the highest budget rules.
        out.append((cost, true if (full or not by_reports) else None, t.value if t.value is not None else math.inf,
                    float(t.budget or MAX_B)))
    return out


def regret_at(history: History, units: float) -> float:
    """Regret of the incumbent (best observed at the highest budget reached) within ``units``."""
    spent, seen = 0.0, []
    for cost, true, observed, budget in history:
        spent += cost
        if spent > units * MAX_B + 1e-9:
            break
        if true is not None:
            seen.append((budget, observed, true))
    if not seen:
        return math.nan
    top = max(b for b, _, _ in seen)
    return min((o, t) for b, o, t in seen if b == top)[1] - HARTMANN6_MIN


def run_hposdk(optimizer: str, seed: int, units: float, root: Path) -> History:
    kw: dict[str, Any] = dict(metric="loss", optimizer=optimizer, seed=seed, storage=root, progress=False,
                              budget=BUDGET, fixed={"bench_seed": seed}, name=f"{optimizer}-{seed}")
    if optimizer in ("bohb", "hyperband"):
        return history_of(Study(objective, SPACE, n_trials=schedule(units)[0], **kw).optimize())
    if optimizer == "random":
        return history_of(Study(objective, SPACE, n_trials=math.ceil(units), **kw).optimize())
    # TPE + Hyperband pruning: how many trials fit is unknown up front; resume until the budget is spent.
    kw.update(pruner="hyperband", pruner_options={"min_resource": MIN_B, "max_resource": MAX_B,
                                                  "reduction_factor": ETA})
    n = math.ceil(units)
    while True:
        result = Study(objective, SPACE, n_trials=n, **kw).optimize()
        hist = history_of(result, by_reports=True)
        if sum(c for c, *_ in hist) >= units * MAX_B:
            return hist
        n += max(5, n // 2)


def run_raw_bohb(seed: int, units: float, optimizer: str = "bohb") -> History:
    """hpbandster as its documentation shows it, seeded like hposdk seeds it."""
    import ConfigSpace as CS
    import hpbandster.core.nameserver as hpns
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB, HyperBand

    # Without this, hpbandster 0.7.4 hangs on its first job under numpy 2: its budgets are np.float64,
    # serpent writes them as "np.float64(1.0)", the worker cannot parse the call and drops it silently.
    hb.register_numpy_serializers()
    quiet = logging.getLogger("raw-hpbandster")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    class HartmannWorker(Worker):  # type: ignore[misc]
        def compute(self, config: dict[str, float], budget: float, **kwargs: Any) -> dict[str, Any]:
            x = [config[d] for d in DIMS]
            return {"loss": hartmann6_mf(x, round(budget), MIN_B, MAX_B, seed), "info": {}}

    cs = CS.ConfigurationSpace(seed=seed)
    cs.add([CS.UniformFloatHyperparameter(d, 0.0, 1.0) for d in DIMS])
    run_id = f"raw-{seed}-{time.time_ns()}"
    ns = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = ns.start()
    worker = HartmannWorker(run_id=run_id, nameserver=host, nameserver_port=port, logger=quiet)
    worker.run(background=True)
    cls = BOHB if optimizer == "bohb" else HyperBand
    with warnings.catch_warnings():  # ConfigSpace 1.x deprecations in hpbandster's code
        warnings.simplefilter("ignore", DeprecationWarning)
        opt = cls(configspace=cs, run_id=run_id, nameserver=host, nameserver_port=port, min_budget=MIN_B,
                  max_budget=MAX_B, eta=ETA, logger=quiet)
    opt.config_generator.logger = quiet
    n_evals, n_iterations = schedule(units)
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # ConfigSpace 1.x / statsmodels warn about hpbandster's calls
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            res = opt.run(n_iterations=n_iterations)
    finally:
        opt.shutdown(shutdown_workers=True)
        ns.shutdown()
    runs = sorted(res.get_all_runs(), key=lambda r: r.time_stamps["finished"])[:n_evals]
    id2conf = res.get_id2config_mapping()
    return [(float(r.budget), hartmann6([id2conf[r.config_id]["config"][d] for d in DIMS]), float(r.loss),
             float(r.budget)) for r in runs]


def table(regrets: dict[str, list[list[float]]], checkpoints: Sequence[float], seeds: int) -> str:
    head = "| method | " + " | ".join(f"{c:g} units" for c in checkpoints) + " |"
    lines = [f"Simple regret on multi-fidelity Hartmann-6, median [IQR] over {seeds} seed(s), at a total budget of "
             f"N full evaluations ({MAX_B} epochs each; budgets {MIN_B}..{MAX_B}, eta {ETA}).", "", head,
             "|---|" + "---|" * len(checkpoints)]
    for method, per_seed in regrets.items():
        cells = []
        for j in range(len(checkpoints)):
            vals = [r[j] for r in per_seed if not math.isnan(r[j])]
            if not vals:
                cells.append("n/a")
                continue
            q1, med, q3 = np.percentile(vals, [25, 50, 75])
            cells.append(f"{med:.3f} [{q1:.3f}, {q3:.3f}]" + ("" if len(vals) == len(per_seed) else
                                                                f" (n={len(vals)})"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(seeds: int, units: float, checkpoints: Sequence[float], root: Path) -> str:
    runners: dict[str, Callable[[int], History]] = {
        "hposdk BOHB": lambda s: run_hposdk("bohb", s, units, root),
        "raw hpbandster BOHB": lambda s: run_raw_bohb(s, units),
        "hposdk Hyperband": lambda s: run_hposdk("hyperband", s, units, root),
        "random (full budget)": lambda s: run_hposdk("random", s, units, root),
        "hposdk TPE + Hyperband pruning": lambda s: run_hposdk("tpe", s, units, root),
    }
    regrets: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    same = 0
    for seed in range(seeds):
        histories = {}
        for method in METHODS:
            start = time.perf_counter()
            histories[method] = runners[method](seed)
            regrets[method].append([regret_at(histories[method], c) for c in checkpoints])
            print(f"seed {seed}: {method}: {len(histories[method])} evaluations in "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
        same += histories["hposdk BOHB"] == histories["raw hpbandster BOHB"]
    out = table(regrets, checkpoints, seeds)
    return out + (f"\n\nhposdk BOHB and raw hpbandster BOHB evaluated identical (config, budget, value) sequences "
                  f"for {same} of {seeds} seed(s).")


# --- per-evaluation overhead -------------------------------------------------------------------


def _trivial(trial: Any) -> float:
    return float(sum((trial.params[d] - 0.5) ** 2 for d in DIMS)) / float(trial.budget)


def _raw_timed(optimizer: str, n: int) -> tuple[float, float]:
    """(whole run, first evaluation start to last evaluation end) per evaluation, raw hpbandster."""
    import ConfigSpace as CS
    import hpbandster.core.nameserver as hpns
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB, HyperBand

    hb.register_numpy_serializers()  # see run_raw_bohb
    quiet = logging.getLogger("raw-hpbandster")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    class TrivialWorker(Worker):  # type: ignore[misc]
        def compute(self, config: dict[str, float], budget: float, **kwargs: Any) -> dict[str, Any]:
            return {"loss": float(sum((config[d] - 0.5) ** 2 for d in DIMS)) / float(budget), "info": {}}

    start = time.perf_counter()
    cs = CS.ConfigurationSpace(seed=0)
    cs.add([CS.UniformFloatHyperparameter(d, 0.0, 1.0) for d in DIMS])
    run_id = f"overhead-{time.time_ns()}"
    ns = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = ns.start()
    TrivialWorker(run_id=run_id, nameserver=host, nameserver_port=port, logger=quiet).run(background=True)
    cls = BOHB if optimizer == "bohb" else HyperBand
    opt = cls(configspace=cs, run_id=run_id, nameserver=host, nameserver_port=port, min_budget=MIN_B,
              max_budget=MAX_B, eta=ETA, logger=quiet)
    opt.config_generator.logger = quiet
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = opt.run(n_iterations=schedule(_units_for(n))[1])
    finally:
        opt.shutdown(shutdown_workers=True)
        ns.shutdown()
    total = time.perf_counter() - start
    runs = sorted(res.get_all_runs(), key=lambda r: r.time_stamps["started"])[:n]
    span = runs[-1].time_stamps["finished"] - runs[0].time_stamps["started"]
    return total / len(runs), span / len(runs)


def _sdk_timed(optimizer: str, n: int, root: Path) -> tuple[float, float]:
    study = Study(_trivial, SPACE, metric="loss", optimizer=optimizer, n_trials=n, seed=0, storage=root,
                  budget=BUDGET, progress=False, name=f"overhead-{optimizer}-{time.time_ns()}")
    start = time.perf_counter()
    result = study.optimize()
    total = time.perf_counter() - start
    trials = sorted(result.trials, key=lambda t: t.number)
    span = (trials[-1].started_at or 0) + (trials[-1].duration_s or 0) - (trials[0].started_at or 0)
    return total / n, span / n


def overhead(n: int, repeats: int, root: Path) -> str:
    """Milliseconds per evaluation, hposdk vs raw hpbandster, same trivial objective, same process."""
    rows = ["| optimizer | timing | raw hpbandster (ms/eval) | hposdk (ms/eval) | hposdk - raw |",
            "|---|---|---|---|---|"]
    for optimizer in ("bohb", "hyperband"):
        raw, sdk = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            raw.append(_raw_timed(optimizer, n))
            sdk.append(_sdk_timed(optimizer, n, root))
        for i, what in enumerate(("whole run", "steady state")):
            r = statistics.median(x[i] for x in raw) * 1e3
            s = statistics.median(x[i] for x in sdk) * 1e3
            rows.append(f"| {optimizer} | {what} | {r:.1f} | {s:.1f} | {s - r:+.1f} |")
    return (f"Wall time per evaluation, {n} evaluations of a trivial objective (budgets {MIN_B}..{MAX_B}, eta {ETA}), "
            f"median of {repeats} interleaved runs. Whole run: name server, workers, run and shutdown (raw "
            "hpbandster's wait_for_workers polls once a second); steady state: first evaluation start to last "
            "evaluation end. hposdk includes its durable journal.\n\n" + "\n".join(rows))


def _units_for(n_evals: int) -> float:
    lo, hi = 0.0, float(n_evals)
    while hi - lo > 0.01:  # the smallest budget whose schedule has >= n_evals evaluations
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if schedule(mid)[0] < n_evals else (lo, mid)
    return hi


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--units", type=float, default=100.0, help="total budget, in full evaluations")
    parser.add_argument("--checkpoints", type=float, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--overhead", type=int, default=0, help="measure overhead with ~N evaluations instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", type=Path, default=None, help="where study records go (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        # Study names are fixed (Optuna's Hyperband pruner hashes them into brackets); a fresh
        # directory per invocation keeps them from resuming an earlier run's studies.
        root = (args.storage or Path(tmp)) / f"multifidelity-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}"
        if args.overhead:
            print(overhead(args.overhead, args.repeats, root))
        else:
            print(compare(args.seeds, max(args.units, *args.checkpoints), args.checkpoints, root))
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        print(f"note: threads still running: {extra}", file=sys.stderr)


if __name__ == "__main__":
    main()
