"""BOHB/Hyperband through hpbandster on the local backend: translation, run, cleanup, resume."""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import ConfigSpace as CS
import numpy as np
import psutil
import pytest

from hposdk import Study
from hposdk._record import read_record
from hposdk.backends import get_backend
from hposdk.backends import hpbandster as hb
from hposdk.exceptions import ConfigError, MissingExtraError, NoCompletedTrialsError, ObjectiveError, UnsupportedError
from hposdk.result import StudyResult, TrialState
from hposdk.spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from hposdk.testing import SpaceConformance
from hposdk.testing import objectives as objs
from hposdk.testing.conformance import SPACE_CASES
from hposdk.trial import Trial

# Pyro4's request loops call Event.isSet() in their own threads (not ours to fix).
pytestmark = pytest.mark.filterwarnings("ignore:isSet\\(\\) is deprecated:DeprecationWarning")

BUDGET = {"min_budget": 1, "max_budget": 9, "eta": 3}  # budgets 1, 3, 9
ROOT = Path(__file__).resolve().parents[2]


# --- objectives (module level: worker processes import them by name) --------------------------


def epochs(trial: Trial) -> dict[str, float]:
    """A training run of ``trial.budget`` epochs: the loss falls towards ``(x - 0.3)**2``."""
    x = float(trial.params["x"])
    loss = 0.0
    for epoch in range(int(trial.budget or 1)):
        loss = (x - 0.3) ** 2 + 1.0 / (epoch + 1)
        trial.report(epoch, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


def always_fails(trial: Trial) -> float:
    raise RuntimeError(f"deliberate failure of trial {trial.number}")


def interrupt_third(trial: Trial) -> float:
    """Ctrl-C from inside the objective, at trial 2."""
    if trial.number == 2:
        raise KeyboardInterrupt
    return float(trial.params["x"])


def pid_and_budget(trial: Trial) -> dict[str, float]:
    loss = float(trial.params["x"]) + (0.1 if trial.params["z"] is None else 0.0)
    return {"loss": loss, "pid": float(os.getpid()), "budget": float(trial.budget or 0)}


def flaky(trial: Trial) -> float:
    """Fails on the first attempt of every trial (a marker file remembers it)."""
    marker = Path(trial.params["marker_dir"]) / f"{trial.number}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("transient")
    return float(trial.params["x"])


def checkpointed(trial: Trial) -> dict[str, float]:
    """Trains from the checkpoint of the same config at the previous budget, when there is one."""
    state = trial.load_checkpoint() or {"epochs": 0}
    start = state["epochs"]
    for epoch in range(start, int(trial.budget or 1)):
        trial.report(epoch, loss=float(trial.params["x"]) + 1.0 / (epoch + 1))
    trial.save_checkpoint({"epochs": int(trial.budget or 1)})
    return {"loss": float(trial.params["x"]) + 1.0 / int(trial.budget or 1), "resumed_from": float(start)}


# --- helpers -----------------------------------------------------------------------------------


def study(tmp_path: Path, objective: Any, space: SearchSpace, **kwargs: Any) -> Study:
    kwargs.setdefault("metric", "loss")
    kwargs.setdefault("optimizer", "bohb")
    kwargs.setdefault("budget", BUDGET)
    kwargs.setdefault("seed", 0)
    return Study(objective, space, storage=str(tmp_path / "studies"), progress=False, **kwargs)


def ports_of(s: Study) -> list[int]:
    return [n["port"] for n in read_record(s.record_path).notes if n.get("kind") == "hpbandster"]


def listening() -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


class Leaks:
    """Snapshot threads, listening sockets and child processes; assert none were left behind."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.sockets = listening()

    def assert_clean(self, s: Study) -> None:
        deadline = time.monotonic() + 10
        while True:
            threads = [t.name for t in set(threading.enumerate()) - self.threads if t.is_alive()]
            sockets = listening() - self.sockets
            children = [p for p in psutil.Process().children(recursive=True)  # multiprocessing's helpers stay
                        if not any(h in " ".join(p.cmdline()) for h in ("forkserver", "resource_tracker"))]
            if not threads and not sockets and not children:
                break
            assert time.monotonic() < deadline, f"left: threads {threads}, sockets {sockets}, children {children}"
            time.sleep(0.1)
        ports = ports_of(s)
        assert ports and all(p != 9090 for p in ports)
        for port in ports:  # the name server's port is free again
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((hb.HOST, port))
                sock.listen()


def by_number(result: StudyResult) -> list[Any]:
    return sorted(result.trials, key=lambda t: t.number)


# --- translation: golden tests -----------------------------------------------------------------


def test_golden_translation() -> None:
    space = SearchSpace({
        "u": Uniform(-2.0, 3.0),
        "u_step": Uniform(0.1, 0.7, step=0.2),
        "lr": LogUniform(1e-4, 1e-1),
        "ls": LogUniform(512, 2048, base=2, step=1),
        "i": Integer(1, 4),
        "i_step": Integer(0, 10, step=5),
        "i_log": Integer(1, 1000, log=True),
        "d": Discrete([True, 1, "1", None, 2.5]),
        "const": Discrete(["only"]),
    })
    cs = hb.to_configspace(space)
    assert dict(cs) == {
        "u": CS.UniformFloatHyperparameter("u", -2.0, 3.0),
        "u_step": CS.UniformIntegerHyperparameter("u_step", 0, 3),  # index into 0.1, 0.3, 0.5, 0.7
        "lr": CS.UniformFloatHyperparameter("lr", 1e-4, 1e-1, log=True),  # bounds are values
        "ls": CS.UniformIntegerHyperparameter("ls", 0, 2),  # index into 512, 1024, 2048
        "i": CS.UniformIntegerHyperparameter("i", 1, 4),  # both inclusive
        "i_step": CS.UniformIntegerHyperparameter("i_step", 0, 2),  # index into 0, 5, 10
        "i_log": CS.UniformFloatHyperparameter("i_log", 0.5, 1000.5, log=True),  # rounded: hposdk's definition
        "d": CS.CategoricalHyperparameter("d", ["True", "1", "'1'", "None", "2.5"]),
    }
    config = {"u": np.float64(0.5), "u_step": np.int64(3), "lr": 0.001, "ls": 1, "i": np.int64(4),
              "i_step": 2, "i_log": 999.7, "d": np.str_("'1'")}
    assert hb.decode(space, config) == {"u": 0.5, "u_step": 0.7, "lr": 0.001, "ls": 1024, "i": 4, "i_step": 10,
                                        "i_log": 1000, "d": "1", "const": "only"}
    decoded = hb.decode(space, config)
    assert [type(v) for v in decoded.values()] == [float, float, float, int, int, int, int, str, str]
    assert hb.encode(space, decoded) == {"u": 0.5, "u_step": 3, "lr": 0.001, "ls": 1, "i": 4, "i_step": 2,
                                         "i_log": 1000.0, "d": "'1'"}


@pytest.mark.parametrize("choice, token", [(True, "True"), (1, "1"), ("1", "'1'"), (None, "None"), (2.5, "2.5")])
def test_discrete_types_survive(choice: Any, token: str) -> None:
    space = SearchSpace({"d": Discrete([True, 1, "1", None, 2.5])})
    (value,) = hb.decode(space, {"d": np.str_(token)}).values()
    assert value == choice and type(value) is type(choice)


def test_tiny_ranges_are_encoded_exactly() -> None:
    # ConfigSpace rounds floats to 13 decimals: LogUniform(1e-12, 1e-9) as values would keep 1-4 digits.
    space = SearchSpace({"eps": LogUniform(1e-12, 1e-9), "w": Uniform(1.0, 1.0 + 1e-9)})
    cs = hb.to_configspace(space)
    assert cs["eps"] == CS.UniformFloatHyperparameter("eps", math.log(1e-12), math.log(1e-9))
    assert cs["w"] == CS.UniformFloatHyperparameter("w", 0.0, 1.0)
    values = [hb.decode(space, dict(c)) for c in hb.to_configspace(space, seed=0).sample_configuration(200)]
    eps = sorted(v["eps"] for v in values)
    assert eps[0] >= 1e-12 and eps[-1] <= 1e-9
    assert len({f"{e:.6g}" for e in eps}) == 200  # no coarse grid
    assert all(1.0 <= v["w"] <= 1.0 + 1e-9 for v in values)
    assert hb.decode(space, hb.encode(space, {"eps": 3.3e-11, "w": 1.0 + 5e-10}))["eps"] == pytest.approx(3.3e-11)


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_encode_decode_round_trip(case: str) -> None:
    param = SPACE_CASES[case]
    space = SearchSpace({"p": param})
    cs = hb.to_configspace(space)
    values = list(param.grid()) if param.is_finite and param.cardinality <= 50 else [param.low, param.high]
    for v in values:
        encoded = hb.encode(space, {"p": v})
        CS.Configuration(cs, values=encoded)  # a legal ConfigSpace value
        back = hb.decode(space, encoded)["p"]
        assert back == v and type(back) is type(v)


def test_budgets_fix_hpbandster_truncation() -> None:
    assert hb.budgets(1, 27, 3) == [1.0, 3.0, 9.0, 27.0]
    assert hb.budgets(1, 1000, 10) == [1.0, 10.0, 100.0, 1000.0]  # hpbandster: 10, 100, 1000
    assert hb.budgets(1, 100, 10) == [1.0, 10.0, 100.0]
    assert hb.budgets(1, 10, 3) == [pytest.approx(10 / 9), pytest.approx(10 / 3), 10.0]
    assert hb.budgets(5, 5, 3) == [5.0]


def test_all_constant_space_is_refused() -> None:
    with pytest.raises(UnsupportedError, match="nothing to search"):
        hb.to_configspace(SearchSpace({"a": Discrete([1])}))


def test_numpy_scalars_serialize_as_natives() -> None:
    import serpent

    hb.register_numpy_serializers()
    data = {"s": np.str_("a"), "i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True)}
    back = serpent.loads(serpent.dumps(data))
    assert back == {"s": "a", "i": 3, "f": 0.5, "b": True}
    assert [type(v) for v in back.values()] == [str, int, float, bool]


class TestConfigSpaceSampling(SpaceConformance):
    """Sampling the translated ConfigSpace with a seed (what hpbandster's random picks draw), decoded."""

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        cs = hb.to_configspace(space, seed=seed)
        return [hb.decode(space, dict(cs.sample_configuration())) for _ in range(n)]


@pytest.mark.parametrize("case", sorted(SPACE_CASES))
def test_bohb_model_proposals_in_support(case: str) -> None:
    """BOHB's model-based picks go through ConfigSpace vectors; they decode to exact values too."""
    from hpbandster.core.dispatcher import Job
    from hpbandster.optimizers.config_generators.bohb import BOHB as BOHBGenerator

    param = SPACE_CASES[case]
    space = SearchSpace({"p": param, "q": Uniform(0.0, 1.0)})
    cs = hb.to_configspace(space, seed=0)
    np.random.seed(0)
    with warnings.catch_warnings():  # ConfigSpace 1.x and statsmodels deprecations in hpbandster's code
        warnings.simplefilter("ignore")
        cg = BOHBGenerator(cs, random_fraction=0.0, num_samples=16)
        for i, c in enumerate(cs.sample_configuration(20)):
            job = Job((0, 0, i), config=dict(c), budget=1.0)
            job.result = {"loss": float(hb.decode(space, dict(c))["q"]), "info": {}}
            cg.new_result(job)
        assert cg.kde_models, "no model was built"
        proposals = [cg.get_config(1.0) for _ in range(30)]
    assert any(info["model_based_pick"] for _, info in proposals)
    for config, _ in proposals:
        value = hb.decode(space, config)["p"]
        assert param.contains(value) and param.canonicalize(value) == value
        assert type(value) is type(param.canonicalize(value))


# --- checks before compute ---------------------------------------------------------------------


def test_capabilities() -> None:
    caps = get_backend("local").capabilities
    assert {"bohb", "hyperband"} <= set(caps.optimizers)
    assert set(caps.budget_optimizers) == {"bohb", "hyperband"}


@pytest.mark.parametrize("kwargs, error, match", [
    ({"budget": None}, ConfigError, r"budget=\{'min_budget': 1, 'max_budget': 27, 'eta': 3\}"),
    ({"pruner": "median"}, ConfigError, "cannot be combined"),
    ({"trial_timeout": 5.0}, UnsupportedError, "trial_timeout"),
    ({"optimizer_options": {"n_startup_trials": 3}}, ConfigError, "Valid options: min_points_in_model"),
    ({"optimizer": "hyperband", "optimizer_options": {"top_n_percent": 10}}, ConfigError, "Valid options: none"),
    ({"max_concurrent": 2, "objective": lambda t: 0.0}, ConfigError, "cannot be pickled"),
])
def test_refused_before_compute(tmp_path: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    objective = kwargs.pop("objective", objs.quadratic)
    with pytest.raises(error, match=match):
        study(tmp_path, objective, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=3, **kwargs)


def test_missing_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hpbandster", None)
    with pytest.raises(MissingExtraError, match=r"pip install hposdk\[bohb\]"):
        study(tmp_path, objs.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=3)


# --- runs in this process ----------------------------------------------------------------------


@pytest.mark.server
def test_n_trials_budgets_and_best(tmp_path: Path) -> None:
    leaks = Leaks()
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    s = study(tmp_path, epochs, space, n_trials=23)
    result = s.optimize()
    assert [t.number for t in by_number(result)] == list(range(23))
    assert all(t.state is TrialState.COMPLETE for t in result.trials)
    assert {t.budget for t in result.trials} == {1.0, 3.0, 9.0}
    for t in result.trials:
        assert len(t.reports) == t.budget  # the objective saw its budget
        assert t.info["hpbandster_config_id"][0] >= 0
    # promotions: the same params again at a larger budget, as a new trial
    seen = Counter(repr(t.params) for t in result.trials)
    assert max(seen.values()) >= 2
    assert result.best.budget == 9.0
    assert result.best.value == min(t.value or math.inf for t in result.trials if t.budget == 9.0)
    leaks.assert_clean(s)


@pytest.mark.server
def test_hyperband_and_same_seed_same_trials(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 4)})
    runs = [study(tmp_path / str(i), objs.quadratic, space, optimizer=opt, n_trials=14, seed=3).optimize()
            for i, opt in enumerate(["hyperband", "hyperband", "bohb"])]
    key = [[(t.params, t.budget) for t in by_number(r)] for r in runs]
    assert key[0] == key[1]
    assert len(runs[2].trials) == 14


@pytest.mark.server
def test_numpy_types_never_reach_the_objective(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 4), "z": Discrete([True, "a", 2.5, None, 1]),
                         "w": LogUniform(512, 2048, base=2, step=1)})
    result = study(tmp_path, objs.echo_types, space, n_trials=12).optimize()
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    for t in result.trials:
        assert space.contains(t.params)
        assert all(v is None or type(v) in (bool, int, float, str) for v in t.params.values())


@pytest.mark.server
def test_failures_recorded_and_told_to_hpbandster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpbandster.optimizers.config_generators.bohb import BOHB as BOHBGenerator

    told: list[tuple[Any, Any]] = []
    original = BOHBGenerator.new_result

    def spy(self: Any, job: Any, update_model: bool = True) -> None:
        told.append((job.result, job.exception))
        original(self, job, update_model)

    monkeypatch.setattr(BOHBGenerator, "new_result", spy)
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    result = study(tmp_path, objs.quadratic, space, n_trials=15, fixed={"fail_above": 0.6, "nan_above": 0.4},
                   mode="max", metric="neg_loss").optimize()
    states = {t.state for t in result.trials}
    assert states == {TrialState.COMPLETE, TrialState.FAILED}
    assert len(told) == 15
    for t, (res, exc) in zip(by_number(result), told):
        if t.state is TrialState.FAILED:
            assert res is None and exc  # what hpbandster records for a crashed compute
            assert "deliberate failure" in exc or "nan" in exc.lower()
        else:
            assert res["loss"] == -t.value  # mode="max": hpbandster minimises the negation


@pytest.mark.server
def test_every_trial_fails(tmp_path: Path) -> None:
    leaks = Leaks()
    s = study(tmp_path, always_fails, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=16)
    result = s.optimize()
    assert len(result.trials) == 16 and all(t.state is TrialState.FAILED for t in result.trials)
    assert result.summary_line() == "16 trials: 0 complete, 0 pruned, 16 failed"
    assert "deliberate failure of trial" in result.summary()
    with pytest.raises(NoCompletedTrialsError, match="no completed trial"):
        result.best  # noqa: B018
    leaks.assert_clean(s)


@pytest.mark.server
def test_cleanup_after_study_error(tmp_path: Path) -> None:
    leaks = Leaks()
    s = study(tmp_path, objs.wrong_metric, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=5)
    with pytest.raises(ObjectiveError, match="accuracy"):
        s.optimize()
    leaks.assert_clean(s)


@pytest.mark.server
def test_interrupt_inside_objective_then_resume(tmp_path: Path) -> None:
    leaks = Leaks()
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    s = study(tmp_path, interrupt_third, space, n_trials=8, name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        s.optimize()
    leaks.assert_clean(s)
    state = read_record(s.record_path)
    assert sorted(state.finished) == [0, 1] and list(state.unfinished) == [2]
    lost = state.unfinished[2]
    # resume with an objective that no longer interrupts: trial 2 reruns with its params and budget
    result = study(tmp_path, objs.quadratic, space, n_trials=8, name="interrupted").optimize()
    assert sorted(t.number for t in result.trials) == list(range(8))
    rerun = next(t for t in result.trials if t.number == 2)
    assert rerun.params == lost.params and rerun.budget == lost.budget and rerun.state is TrialState.COMPLETE


@pytest.mark.server
def test_resume_warm_starts_and_never_repeats(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    log = tmp_path / "calls.txt"
    kw: dict[str, Any] = dict(name="resumable", fixed={"log_path": str(log)})
    first = study(tmp_path, objs.quadratic, space, n_trials=13, **kw).optimize()
    s = study(tmp_path, objs.quadratic, space, n_trials=30, **kw)
    second = s.optimize()
    assert len(second.trials) == 30
    calls = Counter(int(n) for n in log.read_text().split())
    assert sorted(calls) == list(range(30)) and set(calls.values()) == {1}, "a trial ran twice"
    assert [t.params for t in by_number(second)][:13] == [t.params for t in by_number(first)]
    notes = [n for n in read_record(s.record_path).notes if n.get("kind") == "hpbandster_warm_start"]
    assert notes and notes[-1]["used"] == 13
    # the bracket cycle continues, and no configuration is redrawn
    first_iters = {t.info["hpbandster_config_id"][0] for t in first.trials}
    new = [t for t in second.trials if t.number >= 13]
    assert min(t.info["hpbandster_config_id"][0] for t in new) > max(first_iters)
    old_params = {repr(t.params) for t in first.trials}
    assert not any(repr(t.params) in old_params for t in new)


@pytest.mark.server
def test_retries(tmp_path: Path) -> None:
    marker = tmp_path / "markers"
    marker.mkdir()
    result = study(tmp_path, flaky, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=5, retries=1,
                   fixed={"marker_dir": str(marker)}).optimize()
    assert all(t.state is TrialState.COMPLETE and t.attempt == 2 for t in result.trials)


@pytest.mark.server
def test_promoted_config_resumes_from_checkpoint(tmp_path: Path) -> None:
    result = study(tmp_path, checkpointed, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=13).optimize()
    budget = {t.number: float(t.budget or 0) for t in result.trials}
    promoted = [t for t in result.trials if budget[t.number] > 1]
    assert promoted
    for t in promoted:
        previous = [budget[p.number] for p in result.trials
                    if p.params == t.params and budget[p.number] < budget[t.number]]
        assert t.metrics["resumed_from"] == max(previous)  # the checkpoint of the previous rung
        assert len(t.reports) == budget[t.number] - t.metrics["resumed_from"]  # only the missing epochs ran


@pytest.mark.server
def test_same_objective_under_bohb_and_tpe_hyperband_pruning(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    bohb = study(tmp_path / "bohb", epochs, space, n_trials=20).optimize()
    tpe = study(tmp_path / "tpe", epochs, space, optimizer="tpe", pruner="hyperband", n_trials=20,
                pruner_options={"min_resource": 1, "max_resource": 9, "reduction_factor": 3}).optimize()
    assert {t.budget for t in bohb.trials} == {1.0, 3.0, 9.0}
    # Every TPE trial may run to max_budget, and Hyperband pruning stops some early, at the study's
    # rungs: a stopped trial records the budget it reached.
    assert {t.budget for t in tpe.completed} == {9.0}
    assert tpe.by_state(TrialState.PRUNED)
    assert {t.budget for t in tpe.by_state(TrialState.PRUNED)} <= {1.0, 3.0, 9.0}
    assert all(t.budget == len(t.reports) for t in tpe.by_state(TrialState.PRUNED))
    for r in (bohb, tpe):
        assert r.best.budget == 9.0 and abs(r.best.params["x"] - 0.3) < 0.3
    # Optuna's Hyperband pruner hashes the study name into brackets: the same seed gives the same run
    again = study(tmp_path / "tpe2", epochs, space, optimizer="tpe", pruner="hyperband", n_trials=20,
                  pruner_options={"min_resource": 1, "max_resource": 9, "reduction_factor": 3}).optimize()
    assert [(t.params, t.state, len(t.reports)) for t in by_number(tpe)] == \
        [(t.params, t.state, len(t.reports)) for t in by_number(again)]


# --- worker processes --------------------------------------------------------------------------


@pytest.mark.server
def test_worker_processes(tmp_path: Path) -> None:
    leaks = Leaks()
    space = SearchSpace({"x": Uniform(0.0, 1.0), "z": Discrete(["a", True, None])})
    s = study(tmp_path, pid_and_budget, space, n_trials=14, max_concurrent=2,
              backend_options={"start_method": "spawn"})
    result = s.optimize()
    assert [t.number for t in by_number(result)] == list(range(14))
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    pids = {t.metrics["pid"] for t in result.trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(t.metrics["budget"] == t.budget for t in result.trials)
    leaks.assert_clean(s)


@pytest.mark.server
def test_worker_processes_failures_crashes_and_interrupt(tmp_path: Path) -> None:
    leaks = Leaks()
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    opts = {"start_method": "spawn"}
    s = study(tmp_path, objs.die, space, n_trials=8, max_concurrent=2, backend_options=opts, name="dies")
    result = s.optimize()
    assert len(result.trials) == 8
    for t in result.trials:
        if t.params["x"] > 0.5:
            assert t.state is TrialState.FAILED and "worker process died (exit code 3)" in (t.error or "")
        else:
            assert t.state is TrialState.COMPLETE
    leaks.assert_clean(s)
    s = study(tmp_path, objs.echo_types, SearchSpace({"z": Discrete([True, 1, None, "1"])}), n_trials=6,
              max_concurrent=2, backend_options=opts, name="types")
    assert all(t.state is TrialState.COMPLETE for t in s.optimize().trials)
    s = study(tmp_path, interrupt_third, SearchSpace({"x": Uniform(0.0, 1.0)}), n_trials=8, max_concurrent=2,
              backend_options=opts, name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        s.optimize()
    leaks.assert_clean(s)


SIGINT_SCRIPT = """
import sys
sys.path.insert(0, {tmp!r})
from hposdk import SearchSpace, Study, Uniform
import sleepy

if __name__ == "__main__":
    Study(sleepy.run, SearchSpace({{"x": Uniform(0.0, 1.0)}}), metric="loss", optimizer="bohb", n_trials=50,
          budget={{"min_budget": 1, "max_budget": 9, "eta": 3}}, max_concurrent={mc}, seed=0, storage={tmp!r},
          name="sigint", progress=False).optimize()
"""
SLEEPY = """
import os, time
def run(trial):
    with open(os.path.join({tmp!r}, "started"), "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    time.sleep(60)
    return 0.0
"""


@pytest.mark.server
@pytest.mark.parametrize("mc", [1, 2])
def test_ctrl_c_stops_everything(tmp_path: Path, mc: int) -> None:
    """A real SIGINT to the driver (Ctrl-C): it exits promptly, its workers and ports are gone."""
    import subprocess

    (tmp_path / "sleepy.py").write_text(SLEEPY.format(tmp=str(tmp_path)))
    (tmp_path / "main.py").write_text(SIGINT_SCRIPT.format(tmp=str(tmp_path), mc=mc))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "main.py")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        started = tmp_path / "started"

        def running() -> set[int]:
            return {int(pid) for pid in started.read_text().split()} if started.exists() else set()

        while len(running()) < mc:  # every worker is inside the objective
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the objective never started"
            time.sleep(0.1)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.pid in running()]
        assert len(workers) == (mc if mc > 1 else 0)  # mc=1 runs the objective in the driver itself
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - t0 < 15, "the driver took too long to stop"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in (proc.stderr.read() if proc.stderr else "")
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"worker processes left running: {alive}"
    state = read_record(tmp_path / "sigint" / "study.jsonl")
    assert any(n.get("kind") == "interrupted" for n in state.notes) and state.unfinished
    (port,) = [n["port"] for n in state.notes if n.get("kind") == "hpbandster"]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((hb.HOST, port))


# --- the benchmark script ----------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.allow_leaks("raw hpbandster, run as its documentation shows, leaves an idle Pyro4 pool thread")
def test_benchmark_smoke(tmp_path: Path) -> None:
    """The benchmark's BOHB arm (benchmarks/regret.py) evaluates exactly what raw hpbandster does."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.multifidelity import history_of, raw_hpbandster, schedule
    from benchmarks.problems import PROBLEMS
    from benchmarks.regret import Arm, _study

    units = 4.0
    study = _study(PROBLEMS["hartmann6_mf"], Arm("local", "bohb"), 0, tmp_path, schedule(units)[0], "bohb-0")
    ours = history_of(study.optimize(), by_reports=False)
    assert len(ours) == schedule(units)[0]
    assert ours == raw_hpbandster(0, units)
