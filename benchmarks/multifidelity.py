"""Multi-fidelity accounting: cost, incumbent and regret of a run on multi-fidelity Hartmann-6.

Budgets are epochs 1..27 (eta 3); evaluating at budget b costs b, and one *unit* is one full-budget
evaluation (27 epochs). A trial stopped by a pruner costs the epochs it reported.

Simple regret at a total budget of N units = Hartmann-6 at the incumbent minus its minimum, where
the incumbent is the best observed trial at the highest budget reached within N units (what
``StudyResult.best`` returns for BOHB and Hyperband); for optimizers that give every trial the full
budget and prune (TPE + Hyperband pruning, ASHA), only trials that ran all 27 epochs are candidates.

Also here: raw hpbandster BOHB and Hyperband as their documentation shows them, on the same
function and seed (the check that hposdk's BOHB adds nothing), and the Hyperband schedule that turns
N units into a number of evaluations.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import numpy as np

from hposdk.result import StudyResult, TrialState

from .functions import hartmann6, hartmann6_mf
from .problems import H6, MF_ETA, MF_MAX, MF_MIN

__all__ = ["History", "as_evaluations", "history_of", "raw_hpbandster", "ray_bohb_trials", "regret_at", "schedule"]

# (cost, true value of the trial's point or None when it is not an incumbent candidate, observed value, budget)
History = list[tuple[float, float | None, float, float]]


def _brackets() -> list[list[tuple[int, float]]]:
    """One Hyperband iteration as hpbandster runs it: per bracket, (configurations, budget) per rung."""
    from hposdk.backends import hpbandster as hb

    budgets = hb.budgets(MF_MIN, MF_MAX, MF_ETA)
    s_max = len(budgets)
    out = []
    for s in range(s_max - 1, -1, -1):
        n0 = int(math.floor(s_max / (s + 1)) * MF_ETA**s)
        out.append([(max(int(n0 * MF_ETA ** (-k)), 1), b) for k, b in enumerate(budgets[-s - 1:])])
    return out


def schedule(n_units: float) -> tuple[int, int]:
    """(evaluations, Hyperband iterations) whose total budget first reaches ``n_units`` full evaluations."""
    brackets = _brackets()
    spent, evals, it = 0.0, 0, 0
    while True:
        for count, budget in brackets[it % len(brackets)]:
            for _ in range(count):
                spent += budget
                evals += 1
                if spent >= n_units * MF_MAX:
                    return evals, it + 1
        it += 1


def ray_bohb_trials(n_units: float) -> int:
    """Trials that Ray's BOHB (hposdk's brackets, paused trials continued) needs to spend ``n_units``.

    Whole brackets: on Ray a trial paused at a rung and promoted later continues from where it
    stopped, so promoting it from budget 3 to 9 costs 6 epochs (on hpbandster, 9).
    """
    spent, trials = 0.0, 0
    while True:
        for rungs in _brackets():
            trials += rungs[0][0]
            done = 0.0
            for count, budget in rungs:
                spent += count * (budget - done)
                done = budget
            if spent >= n_units * MF_MAX:
                return trials


def as_evaluations(result: StudyResult) -> History:
    """A Ray BOHB run as the evaluations hpbandster would have made for the same decisions.

    Trial numbers give each trial's bracket (hposdk's Ray scheduler fills the brackets in order,
    each with its hpbandster size); a trial that reached rung budget b counts as one evaluation
    at every rung of its bracket up to b, each costing its full budget and observing the report
    at that budget, in successive-halving order (bracket by bracket, rung by rung).
    """
    # (bracket index, its rungs) of each trial number within one Hyperband iteration
    slots = [(index, [b for _, b in rungs]) for index, rungs in enumerate(_brackets()) for _ in range(rungs[0][0])]
    keyed: list[tuple[tuple[int, int, int, int], tuple[float, float | None, float, float]]] = []
    for t in result.trials:
        band, pos = divmod(t.number, len(slots))
        index, rungs = slots[pos]
        true = hartmann6([t.params[d] for d in H6])
        for k, budget in enumerate(b for b in rungs if b <= len(t.reports)):
            loss = t.reports[int(budget) - 1].metrics.get("loss")
            if loss is not None:
                keyed.append(((band, index, k, t.number), (budget, true, float(loss), budget)))
    return [entry for _, entry in sorted(keyed, key=lambda e: e[0])]


def history_of(result: StudyResult, by_reports: bool) -> History:
    """The run as (cost, candidate's true value, observed value, budget), in trial order.

    ``by_reports``: cost is the number of reports (pruning optimizers, every trial given 27 epochs);
    otherwise cost is the trial's budget (BOHB, Hyperband).
    """
    out: History = []
    for t in sorted(result.trials, key=lambda t: t.number):
        budget = float(t.budget or MF_MAX)
        cost = float(len(t.reports)) if by_reports else budget
        full = t.state is TrialState.COMPLETE and budget >= MF_MAX and len(t.reports) >= MF_MAX
        true = hartmann6([t.params[d] for d in H6]) if t.value is not None else None
        out.append((cost, true if (full or not by_reports) else None,
                    t.value if t.value is not None else math.inf, budget))
    return out


def spent(history: History) -> float:
    """Total cost in units."""
    return sum(c for c, *_ in history) / MF_MAX


def regret_at(history: History, units: float, minimum: float) -> float:
    """Regret of the incumbent (best observed at the highest budget reached) within ``units``."""
    total, seen = 0.0, []
    for cost, true, observed, budget in history:
        total += cost
        if total > units * MF_MAX + 1e-9:
            break
        if true is not None:
            seen.append((budget, observed, true))
    if not seen:
        return math.nan
    top = max(b for b, _, _ in seen)
    return min((o, t) for b, o, t in seen if b == top)[1] - minimum


def raw_hpbandster(seed: int, units: float, optimizer: str = "bohb") -> History:
    """hpbandster's own NameServer/Worker/``run``, seeded as hposdk seeds it, in this process."""
    import ConfigSpace as CS
    import hpbandster.core.nameserver as hpns
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers import BOHB, HyperBand

    from hposdk.backends import hpbandster as hb

    # Without this, hpbandster 0.7.4 hangs on its first job under numpy 2: its budgets are np.float64,
    # serpent writes them as "np.float64(1.0)", the worker cannot parse the call and drops it silently.
    hb.register_numpy_serializers()
    quiet = logging.getLogger("raw-hpbandster")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    class HartmannWorker(Worker):  # type: ignore[misc]
        def compute(self, config: dict[str, float], budget: float, **kwargs: Any) -> dict[str, Any]:
            x = [config[d] for d in H6]
            return {"loss": hartmann6_mf(x, round(budget), MF_MIN, MF_MAX, seed), "info": {}}

    cs = CS.ConfigurationSpace(seed=seed)
    cs.add([CS.UniformFloatHyperparameter(d, 0.0, 1.0) for d in H6])
    run_id = f"raw-{seed}-{time.time_ns()}"
    ns = hpns.NameServer(run_id=run_id, host="127.0.0.1", port=0)
    host, port = ns.start()
    worker = HartmannWorker(run_id=run_id, nameserver=host, nameserver_port=port, logger=quiet)
    worker.run(background=True)
    cls = BOHB if optimizer == "bohb" else HyperBand
    with warnings.catch_warnings():  # ConfigSpace 1.x deprecations in hpbandster's code
        warnings.simplefilter("ignore", DeprecationWarning)
        opt = cls(configspace=cs, run_id=run_id, nameserver=host, nameserver_port=port, min_budget=MF_MIN,
                  max_budget=MF_MAX, eta=MF_ETA, logger=quiet)
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
        worker.shutdown()  # joins the worker's Pyro thread (shutdown_workers only asks it to stop)
    runs = sorted(res.get_all_runs(), key=lambda r: r.time_stamps["finished"])[:n_evals]
    id2conf = res.get_id2config_mapping()
    return [(float(r.budget), hartmann6([id2conf[r.config_id]["config"][d] for d in H6]), float(r.loss),
             float(r.budget)) for r in runs]
