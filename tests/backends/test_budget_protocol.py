"""One budget protocol on every backend: one objective, ``hposdk.testing.objectives.epochs``, run
with ``budget={"min_budget": 1, "max_budget": 9, "eta": 3}`` by every multi-fidelity engine.

The objective reads ``trial.budget`` as epochs, continues from ``trial.load_checkpoint()``, saves
a checkpoint and reports every epoch, and stops when ``trial.should_prune()`` says so. It also
writes every epoch it trains to a log of its own, so what the backend records is checked against
what really ran. The engines give budgets in one of three ways (the ``kind`` of each case):

* ``rungs`` (hpbandster's BOHB/Hyperband on the local backend, ClearML's BOHB): every evaluation
  is a trial with ``trial.budget`` = its rung; a configuration promoted to a larger rung is a new
  trial with the same params. ``TrialResult.budget`` is the rung.
* ``paused`` (Ray's BOHB = TuneBOHB + HyperBandForBOHB): one trial per configuration, with
  ``trial.budget = max_budget``; the scheduler pauses it at a rung and resumes it from its
  checkpoint, or stops it there. ``TrialResult.budget`` is the rung reached (counted in reports).
* ``pruner`` (Optuna's successive halving / Hyperband pruners, Ray's ASHA): every trial gets
  ``trial.budget = max_budget`` and may be stopped early, at the study's rungs.
  ``TrialResult.budget`` is the budget reached: ``max_budget`` when it completed, its number of
  reports when it was stopped.

The ClearML case runs ClearML's real ``OptimizerBOHB`` (hpbandster, Pyro) against the in-memory
fleet stand-in of ``test_clearml_remote.py``: BOHB needs ``executor='remote'``, and that stand-in
is the only way to run it without a ClearML server.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hposdk import Study
from hposdk.backends.hpbandster import budgets
from hposdk.result import StudyResult, TrialResult, TrialState
from hposdk.spaces import SearchSpace, Uniform
from hposdk.testing import objectives

BUDGET = {"min_budget": 1, "max_budget": 9, "eta": 3}
RUNGS = budgets(1, 9, 3)  # [1.0, 3.0, 9.0]
MAX = float(BUDGET["max_budget"])
SPACE = SearchSpace({"x": Uniform(0.0, 1.0)})

# hpbandster (BOHB's model) and Pyro4 call APIs that ConfigSpace 1.x and Python deprecate; pandas
# warns about numpy's global RNG; ClearML warns about hpbandster on Python 3.12. None is ours.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


@dataclass(frozen=True)
class Case:
    backend: str
    optimizer: str
    kind: str  # "rungs", "paused" or "pruner" (see the module docstring)
    n_trials: int
    pruner: str | None = None
    seed: int = 0
    resumes: bool = False  # the engine continues a configuration from its checkpoint
    at_rungs: bool = True  # a pruner stops trials at the study's rungs (min_budget * eta**k reports)
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    # 13 evaluations = hpbandster's first bracket: 9 configs at budget 1, 3 at 3, 1 at 9.
    "local-bohb": Case("local", "bohb", "rungs", 13, resumes=True),
    "local-hyperband": Case("local", "hyperband", "rungs", 13, resumes=True),
    "local-tpe-successive_halving": Case("local", "tpe", "pruner", 12, pruner="successive_halving"),
    "local-tpe-hyperband": Case("local", "tpe", "pruner", 12, pruner="hyperband"),
    "ray-bohb": Case("ray", "bohb", "paused", 6, seed=1, resumes=True),
    "ray-random-asha": Case("ray", "random", "pruner", 8, pruner="asha"),
    # Each trial is a fresh ClearML task (on any machine): nothing carries a checkpoint across rungs.
    "clearml-bohb": Case("clearml", "bohb", "rungs", 13),
}
_MARKS = {
    "local-bohb": [pytest.mark.server],  # hpbandster's Pyro name server on 127.0.0.1
    "local-hyperband": [pytest.mark.server],
    "ray-bohb": [pytest.mark.slow],
    "ray-random-asha": [pytest.mark.slow],
    "clearml-bohb": [pytest.mark.slow, pytest.mark.server],
}


def _run(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> StudyResult:
    kw: dict[str, Any] = dict(optimizer=case.optimizer, pruner=case.pruner, n_trials=case.n_trials, seed=case.seed,
                              budget=BUDGET, fixed={"epoch_log": str(tmp_path / "epochs.jsonl")})
    if case.backend == "clearml":
        monkeypatch = request.getfixturevalue("monkeypatch")
        _clearml_offline(tmp_path, monkeypatch)
        fleet = pytest.importorskip("test_clearml_remote")  # its in-memory fleet (and ClearML itself)
        study, _ = fleet._fleet_study(tmp_path, objectives.epochs, SPACE, monkeypatch, **kw)
        return study.optimize()
    if case.backend == "ray":
        pytest.importorskip("ray.tune")  # the study starts its own Ray runtime and shuts it down
    else:
        pytest.importorskip("hpbandster" if case.optimizer in ("bohb", "hyperband") else "optuna")
    return Study(objectives.epochs, SPACE, metric="loss", backend=case.backend, storage=str(tmp_path / "studies"),
                 progress=False, **kw).optimize()


def _clearml_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As test_clearml_remote.py's autouse fixture: no server, and nothing written to the real home.
    home = tmp_path / "clearml-home"
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLEARML_API_HOST", raising=False)


def _epochs_trained(log: Path) -> dict[int, list[dict[str, Any]]]:
    """Per trial number, the epochs the objective trained, in order (from its own log)."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        out[entry["number"]].append(entry)
    return out


def _curve(x: float, epochs: int) -> float:
    return (x - 0.3) ** 2 + 0.5**epochs  # the loss of objectives.epochs after `epochs` in total


@pytest.mark.parametrize("name", [pytest.param(n, marks=_MARKS.get(n, [])) for n in CASES])
def test_one_objective_one_budget_protocol(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    result = _run(case, tmp_path, request)
    trials = sorted(result.trials, key=lambda t: t.number)
    log = _epochs_trained(tmp_path / "epochs.jsonl")

    assert len(trials) == case.n_trials
    assert not result.by_state(TrialState.FAILED), [t.error for t in result.by_state(TrialState.FAILED)]
    reached: dict[int, int] = {}
    for t in trials:
        x = float(t.params["x"])
        ran = log[t.number]
        epochs = [e["epoch"] for e in ran]
        # What the backend recorded is what ran: every epoch once, in order (a resumed run goes on
        # from its checkpoint), each reported with the loss of that many epochs in total.
        assert ran, f"trial {t.number} trained nothing"
        assert epochs == list(range(epochs[0], epochs[-1] + 1)), (t.number, epochs)
        assert [r.step for r in t.reports] == epochs, (t.number, t.reports, epochs)
        for r in t.reports:
            assert r.metrics["epochs"] == r.step + 1
            assert r.metrics["loss"] == pytest.approx(_curve(x, r.step + 1), rel=1e-12)
        reached[t.number] = epochs[-1] + 1
        # trial.budget, as the objective saw it
        seen = {e["budget"] for e in ran}
        assert seen == ({t.budget} if case.kind == "rungs" else {MAX}), (t.number, seen, t.budget)
        # TrialResult.budget
        assert t.budget is not None and BUDGET["min_budget"] <= t.budget <= BUDGET["max_budget"]
        if case.kind == "pruner":
            assert t.budget == reached[t.number]  # the budget reached
            if t.state is TrialState.COMPLETE:
                assert reached[t.number] == MAX
            else:  # stopped at a rung; its reports say how far it got. ASHA and Optuna's pruners have a
                # rung at max_budget too, so a trial can be stopped after its last epoch.
                assert reached[t.number] <= MAX and t.value == t.reports[-1].metrics["loss"]
        else:
            assert t.budget in RUNGS
            assert reached[t.number] == t.budget, (t.number, t.budget, epochs)  # the budget reached
        # a checkpoint was written, and it holds the last epoch trained
        ckpt = Path(ran[-1]["checkpoint"]) / "state.pkl"
        with open(ckpt, "rb") as fh:
            assert pickle.load(fh)["epochs"] == reached[t.number]

    # several budgets: rungs for the multi-fidelity optimizers, early stops for the pruners
    if case.kind == "pruner":
        assert result.by_state(TrialState.PRUNED) and result.completed
        assert min(reached.values()) < MAX, reached  # some trial was stopped early
        if case.at_rungs:
            assert {reached[t.number] for t in result.by_state(TrialState.PRUNED)} <= set(RUNGS), reached
    else:
        assert {t.budget for t in trials} == set(RUNGS)

    # continued configurations: from the checkpoint of the same configuration, never from scratch
    starts: dict[int, list[int]] = {}  # per trial, the epoch each run of its objective started from
    for t in trials:
        starts[t.number] = []
        for e in log[t.number]:
            if not starts[t.number] or e["resumed_from"] != starts[t.number][-1]:
                assert e["epoch"] == e["resumed_from"], (t.number, e)  # where its checkpoint left off
                starts[t.number].append(e["resumed_from"])
    continued = {n: s for n, s in starts.items() if any(s)}
    if case.resumes:
        assert continued, "no configuration was continued from its checkpoint"
    else:
        assert not continued, continued
    for t in trials:
        if case.kind == "rungs":  # one run per trial, from the same params' previous rung (an earlier trial)
            [start] = starts[t.number]
            earlier = [p.budget for p in trials if p.number < t.number and p.params == t.params]
            assert start == (max(b for b in earlier if b is not None) if start else 0), (t.number, start, earlier)
            if case.resumes and earlier:
                assert start, f"trial {t.number} trained from scratch though its params ran at {earlier}"
        else:  # one trial per configuration: paused at rungs and resumed there
            assert starts[t.number][0] == 0 and all(s in RUNGS for s in starts[t.number][1:]), starts[t.number]

    # result.best: the best completed trial at the highest budget reached
    top = max(t.budget for t in result.completed if t.budget is not None)
    assert top == MAX
    at_top: list[TrialResult] = [t for t in result.completed if t.budget == top]
    assert result.best in at_top
    assert result.best.value == min(t.value for t in at_top if t.value is not None)
    assert result.best.value == pytest.approx(_curve(float(result.best.params["x"]), int(MAX)))
    if case.backend == "clearml":  # trial workdirs of the fleet's tasks are temporary directories
        for ran in log.values():
            workdir = Path(ran[-1]["checkpoint"]).parent
            if workdir.name.startswith("hposdk-trial-") and tmp_path not in workdir.parents:
                shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_local_pruners_stop_at_the_study_rungs(pruner: str, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    result = Study(objectives.epochs, SPACE, metric="loss", optimizer="tpe", pruner=pruner, n_trials=12,
                   budget=BUDGET, storage=str(tmp_path), progress=False).optimize()
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned
    assert {len(t.reports) for t in pruned} <= set(RUNGS), sorted(len(t.reports) for t in pruned)


@pytest.mark.server
def test_clearml_bohb_uses_the_rungs_of_local_bohb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hpbandster's own rung count truncates log(10)/log(10) to 0: ClearML's BOHB would run only budget 10."""
    _clearml_offline(tmp_path, monkeypatch)
    fleet = pytest.importorskip("test_clearml_remote")
    study, _ = fleet._fleet_study(tmp_path, objectives.epochs, SPACE, monkeypatch, optimizer="bohb", n_trials=3,
                                  seed=0, budget={"min_budget": 1, "max_budget": 10, "eta": 10})
    result = study.optimize()
    assert budgets(1, 10, 10) == [1.0, 10.0]
    assert [t.budget for t in result.trials] == [1.0, 1.0, 1.0]  # the first rung of the largest bracket
    assert all(len(t.reports) == 1 for t in result.trials)


@pytest.mark.server
def test_clearml_remote_gives_optimizers_without_rungs_max_budget(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Random search has no rungs: as on every backend, each trial gets (and records) max_budget.
    _clearml_offline(tmp_path, monkeypatch)
    fleet = pytest.importorskip("test_clearml_remote")
    study, _ = fleet._fleet_study(tmp_path, objectives.epochs, SPACE, monkeypatch, optimizer="random", n_trials=2,
                                  seed=0, budget=BUDGET, fixed={"epoch_log": str(tmp_path / "epochs.jsonl")})
    result = study.optimize()
    assert [t.budget for t in result.trials] == [MAX, MAX]
    assert all(len(t.reports) == MAX for t in result.trials)  # the objective trained max_budget epochs
    ran = _epochs_trained(tmp_path / "epochs.jsonl")
    assert {e["budget"] for runs in ran.values() for e in runs} == {MAX}


def curve_from(trial: Any) -> dict[str, float]:
    """``trial.budget`` epochs of a learning curve, reported at steps ``first_step``, ``first_step + 1``..."""
    x, first = float(trial.params["x"]), int(trial.params["first_step"])
    loss = 0.0
    for k in range(round(trial.budget)):
        loss = (x - 0.3) ** 2 + 0.5**k
        trial.report(first + k, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


@pytest.mark.parametrize("first_step", [0, 1])
@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_optuna_pruners_count_reports_alike_on_local_and_clearml(pruner: str, first_step: int, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Rungs are counted in reports, whatever step the objective starts at (0-based epochs, 1-based),
    and ClearML's TPE makes the local backend's decisions (its Optuna study is named as the local
    one: HyperbandPruner puts a trial in a bracket by the study name and the trial number)."""
    pytest.importorskip("clearml")
    _clearml_offline(tmp_path, monkeypatch)
    runs = {}
    for backend in ("local", "clearml"):
        result = Study(curve_from, SPACE, metric="loss", backend=backend, optimizer="tpe", pruner=pruner,
                       n_trials=20, seed=3, budget=BUDGET, fixed={"first_step": first_step}, name="curve",
                       storage=str(tmp_path / backend), progress=False,
                       backend_options={"executor": "local"} if backend == "clearml" else {}).optimize()
        trials = sorted(result.trials, key=lambda t: t.number)
        runs[backend] = [(t.params["x"], t.state, len(t.reports)) for t in trials]
        pruned = result.by_state(TrialState.PRUNED)
        assert pruned and {len(t.reports) for t in pruned} <= set(RUNGS), sorted(len(t.reports) for t in pruned)
    assert runs["local"] == runs["clearml"]
