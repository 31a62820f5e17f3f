"""backend='clearml' with several objectives, composites, constraints and a pruning metric.

executor='local' runs ClearML's strategies here; executor='remote' runs ClearML's real
HyperParameterOptimizer loops against the in-memory fleet of ``test_clearml_remote.py`` (no ClearML
server can run in the tests), whose trial "tasks" run the real agent runner. The fleet's objective
is ClearML's own ``MultiObjective``, each of its objectives reading a task's scalars from memory.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("clearml")

import test_clearml_remote as fleet  # the in-memory fleet: MemoryIO, MemoryJob, MemoryTask...
from clearml.automation import HyperParameterOptimizer
from clearml.automation.optimization import MultiObjective

from hposdk import Study
from hposdk._goals import dominates
from hposdk.backends._base import Outcome
from hposdk.backends.clearml import ClearMLBackend, _remote
from hposdk.backends.clearml._local import ClearMLEngine, history_entry
from hposdk.backends.clearml._options import ClearMLOptions
from hposdk.exceptions import ConfigError, NoSingleBestError, UnsupportedError
from hposdk.result import StudyResult, TrialResult, TrialState
from hposdk.spaces import SearchSpace, Uniform
from hposdk.testing import objectives


@pytest.fixture(autouse=True)
def _offline_clearml(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing may reach a server or write to the real home (as in test_clearml.py).
    home = tmp_path_factory.mktemp("clearml-home")
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLEARML_API_HOST", raising=False)


TWO = {"f1": "min", "f2": "min"}
XY = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125), "y": Uniform(-0.5, 0.5, step=0.25)})
X = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})


def _local(tmp_path: Path, space: SearchSpace, **kwargs: Any) -> Study:
    kwargs.setdefault("backend_options", {"executor": "local"})
    return Study(objectives.biquadratic, space, backend="clearml", storage=str(tmp_path / "studies"),
                 progress=False, **kwargs)


# --- the in-memory fleet, with ClearML's MultiObjective -------------------------------------------------


class MemoryScalar:
    """ClearML's ``Objective`` (one title/series), reading a MemoryTask's scalars instead of a server's."""

    def __init__(self, title: str, series: str, order: str, extremum: bool = False) -> None:
        self.title, self.series, self.extremum = title, series, extremum
        self.sign = -1.0 if order == "min" else 1.0

    def _values(self, job: Any) -> list[tuple[int, float]]:
        task = job.task if hasattr(job, "task") else job
        return [(it, v) for t, s, it, v in task.scalars if (t, s) == (self.title, self.series)]

    def get_current_raw_objective(self, job: Any) -> tuple[int, float] | None:
        values = self._values(job)
        return values[-1] if values else None

    def get_objective(self, job: Any) -> float | None:
        task = job.task if hasattr(job, "task") else job
        values = self._values(job)
        return values[-1][1] if values and task.status in ("completed", "stopped") else None

    def get_normalized_objective(self, job: Any) -> float | None:
        value = self.get_objective(job)
        return None if value is None else self.sign * value

    def get_objective_sign(self) -> float:
        return self.sign

    def get_objective_metric(self) -> tuple[str, str]:
        return self.title, self.series


class MultiMemoryIO(fleet.MemoryIO):
    """MemoryIO whose strategies get ClearML's MultiObjective (lists of title/series/sign) over MemoryScalars."""

    hpo: Any = None

    def make_optimizer(self, kwargs: dict[str, Any]) -> Any:
        kwargs = dict(kwargs)
        cls = kwargs.pop("optimizer_class")
        hpo_kwargs, opt_kwargs = fleet._split(kwargs)
        titles, series, signs = ([v] if isinstance(v, str) else list(v) for v in (
            hpo_kwargs["objective_metric_title"], hpo_kwargs["objective_metric_series"],
            hpo_kwargs["objective_metric_sign"]))
        orders = ["min" if s.startswith("min") else "max" for s in signs]
        objective = MultiObjective(title=titles, series=series, order=orders, extremum=[False] * len(titles))
        objective.objectives = [MemoryScalar(t, s, o) for t, s, o in zip(titles, series, orders)]  # type: ignore[misc]
        strategy = cls(base_task_id=hpo_kwargs["base_task_id"], hyper_parameters=hpo_kwargs["hyper_parameters"],
                       objective_metric=objective, execution_queue=hpo_kwargs["execution_queue"],
                       num_concurrent_workers=hpo_kwargs["max_number_of_concurrent_tasks"],
                       compute_time_limit=None, hposdk_offline=True, **opt_kwargs)
        # What FleetIO.make_optimizer does, given the strategy instance (ClearML's documented option).
        self.hpo = _remote.make_hyper_parameter_optimizer({**hpo_kwargs, "optimizer_class": strategy})
        return self.hpo


def _fleet(tmp_path: Path, space: SearchSpace, monkeypatch: pytest.MonkeyPatch, user_task: bool = False,
           name: str = "fleet", **kw: Any) -> tuple[Study, MultiMemoryIO]:
    """test_clearml_remote._fleet_study, for studies that name their objectives themselves."""
    opts: dict[str, Any] = {"executor": "remote", "pool_period_min": 0.001, **kw.pop("backend_options", {})}
    if user_task:
        opts["base_task_id"] = "user-task"
    study = Study(kw.pop("objective", objectives.biquadratic), space, backend="clearml", backend_options=opts,
                  storage=str(tmp_path / "studies"), progress=False, name=name, **kw)
    doc = _remote.study_document(study.spec, ClearMLOptions(**opts))
    io = MultiMemoryIO(fleet.MemoryFleet(doc, user_task=user_task))
    monkeypatch.setattr(_remote, "FleetIO", lambda: io)
    return study, io


# --- what every two-objective result must satisfy ------------------------------------------------------


def _check_two_objectives(result: StudyResult, n: int) -> None:
    assert len(result.trials) == n
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    for t in result.trials:
        x, y = t.params["x"], t.params.get("y", 0.0)
        assert t.metrics["f1"] == pytest.approx(x**2 + y**2)
        assert t.metrics["f2"] == pytest.approx((x - 1) ** 2 + y**2)
        assert t.value == t.metrics["f1"]  # the first objective
    modes = list(result.directions.values())
    front = result.pareto_front
    assert front
    points = {t.number: (t.metrics["f1"], t.metrics["f2"]) for t in result.trials}
    on_front = {t.number for t in front}
    for number, p in points.items():
        dominated = any(dominates(q, p, modes) for q in points.values())
        assert dominated is (number not in on_front), (number, p)
    with pytest.raises(NoSingleBestError, match="pareto_front"):
        result.best  # noqa: B018
    pick = {"min": min, "max": max}
    for name, mode in result.directions.items():
        assert result.best_by(name).metrics[name] == pick[mode](t.metrics[name] for t in result.trials)


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_local_two_objectives(tmp_path: Path, optimizer: str) -> None:
    result = _local(tmp_path, XY, objectives=TWO, optimizer=optimizer, n_trials=12, seed=1).optimize()
    _check_two_objectives(result, 12)
    assert result.directions == TWO


def test_local_worker_processes_two_objectives(tmp_path: Path) -> None:
    result = _local(tmp_path, XY, objectives=TWO, optimizer="tpe", n_trials=6, seed=1, max_concurrent=2,
                    backend_options={"executor": "local", "start_method": "forkserver"}).optimize()
    _check_two_objectives(result, 6)


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_fleet_two_objectives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str) -> None:
    study, io = _fleet(tmp_path, XY, monkeypatch, objectives={"f1": "min", "f2": "max"}, optimizer=optimizer,
                       n_trials=6, seed=0, max_concurrent=2)
    result = study.optimize()
    assert len(io.fleet.launched) == 6
    # ClearML's optimizer and its strategy both hold the list of objectives.
    assert io.hpo._objective_metric is io.hpo.optimizer._objective_metric
    assert io.hpo._objective_metric.get_objective_metric() == [("f1", "f1"), ("f2", "f2")]
    assert io.hpo._objective_metric.get_objective_sign() == [-1.0, 1.0]
    for job in io.fleet.tasks.values():  # every objective reached the task as its own scalar
        assert {("f1", "f1"), ("f2", "f2")} <= {(t, s) for t, s, _, _ in job.task.scalars}
    assert result.directions == {"f1": "min", "f2": "max"}
    _check_two_objectives(result, 6)


def test_fleet_tpe_study_is_told_every_objective(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, io = _fleet(tmp_path, XY, monkeypatch, objectives={"f1": "min", "f2": "max"}, optimizer="tpe",
                       n_trials=5, seed=0)
    result = study.optimize()
    otrials = io.hpo.optimizer._study.trials
    assert [d.name for d in io.hpo.optimizer._study.directions] == ["MINIMIZE", "MAXIMIZE"]
    told = sorted(tuple(t.values) for t in otrials if t.state.name == "COMPLETE")
    assert told == sorted((t.metrics["f1"], t.metrics["f2"]) for t in result.trials)


def test_fleet_user_task_reads_every_objective_scalar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing task: each objective from its own scalar, here named by the list form of objective_title."""
    study, io = _fleet(tmp_path, X, monkeypatch, user_task=True, objectives=TWO, optimizer="random", n_trials=4,
                       seed=2, backend_options={"objective_title": ["eval", "eval"]})
    result = study.optimize()
    assert {(t, s) for job in io.fleet.tasks.values() for t, s, _, _ in job.task.scalars
            if t == "eval"} == {("eval", "f1"), ("eval", "f2")}
    assert all(not job.task.config for job in io.fleet.tasks.values())  # no hposdk record: scalars only
    _check_two_objectives(result, 4)
    assert all({"f1", "f2"} <= set(t.reports[-1].metrics) for t in result.trials)


# --- the arguments ----------------------------------------------------------------------------------------


def test_kwargs_are_lists_one_per_objective(tmp_path: Path) -> None:
    study = _local(tmp_path, XY, objectives={"f1": "min", "f2": "max"}, optimizer="tpe", n_trials=4, seed=0,
                   backend_options={"executor": "remote", "objective_series": ["loss", "gain"],
                                    "objective_extremum": True})
    opts = ClearMLOptions(**study.spec.backend_options.model_dump())
    kw = _remote.build_optimizer_kwargs(study.spec, opts, base_task_id="abc", n_jobs=4)
    inspect.signature(HyperParameterOptimizer).bind(**kw)
    assert kw["objective_metric_title"] == ["f1", "f2"]
    assert kw["objective_metric_series"] == ["loss", "gain"]
    assert kw["objective_metric_sign"] == ["min_global", "max_global"]
    assert kw["hposdk_objectives"] == {"f1": "min", "f2": "max"}
    doc = _remote.study_document(study.spec, opts)
    assert doc["objectives"] == {"f1": "min", "f2": "max"} and doc["scalars"] == {"f1": ["f1", "loss"],
                                                                                   "f2": ["f2", "gain"]}


def test_clearml_refuses_lists_for_its_strategies_and_hposdk_works_around(tmp_path: Path) -> None:
    """Observed on the installed ClearML: lists only with optimizer_class == OptimizerOptuna itself."""
    study = _local(tmp_path, XY, objectives=TWO, optimizer="random", n_trials=4, seed=0,
                   backend_options={"executor": "remote"})
    opts = ClearMLOptions(executor="remote")
    kw = {**_remote.build_optimizer_kwargs(study.spec, opts, base_task_id="abc", n_jobs=4), "hposdk_offline": True}
    with pytest.raises(ValueError, match="only supported via Optuna"):
        HyperParameterOptimizer(**kw)
    hpo = _remote.make_hyper_parameter_optimizer(kw)
    assert isinstance(hpo._objective_metric, MultiObjective)
    assert hpo.optimizer._objective_metric is hpo._objective_metric
    assert hpo._objective_metric.get_objective_metric() == [("f1", "f1"), ("f2", "f2")]


def test_single_objective_title_refused_with_several_objectives(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"objective_title='openllm'.*2 \(f1, f2\).*one entry per objective"):
        _local(tmp_path, XY, objectives=TWO, optimizer="random", n_trials=2,
               backend_options={"executor": "remote", "objective_title": "openllm"})
    with pytest.raises(ConfigError, match=r"objective_series: 3 entries"):
        _local(tmp_path, XY, objectives=TWO, optimizer="random", n_trials=2,
               backend_options={"executor": "remote", "objective_series": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="would both be the ClearML scalar 'eval'/'m'"):
        _local(tmp_path, XY, objectives=TWO, optimizer="random", n_trials=2,
               backend_options={"executor": "remote", "objective_title": ["eval", "eval"],
                                "objective_series": ["m", "m"]})


def test_bohb_refused_before_any_trial(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"optimises a single objective.*f1, f2.*grid, random, tpe"):
        _local(tmp_path, XY, objectives=TWO, optimizer="bohb", n_trials=4,
               budget={"min_budget": 1, "max_budget": 9}, backend_options={"executor": "remote"})
    assert not (tmp_path / "studies").exists()  # nothing was recorded, let alone run
    assert ClearMLBackend.capabilities.multi_objective == ("grid", "random", "tpe")


def test_composites_refused_on_an_existing_task(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"composites \['score'\].*base_task_id"):
        _local(tmp_path, X, metric="score", mode="max", composites={"score": {"terms": {"f1": 1, "f2": 1}}},
               optimizer="random", n_trials=2, backend_options={"executor": "remote", "base_task_id": "t"})


# --- TPE's Optuna study: one direction per objective, every value, warm start ---------------------------


def test_local_tpe_study_has_every_objective(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(objectives={"f1": "min", "f2": "max"}, optimizer="tpe", seed=4, name="warm")
    first = _local(tmp_path, XY, n_trials=4, **kw).optimize()
    spec = _local(tmp_path, XY, n_trials=6, **kw).spec
    engine = ClearMLEngine(spec, ClearMLOptions(executor="local"), first.trials)
    assert [d.name for d in engine.study.directions] == ["MINIMIZE", "MAXIMIZE"]
    warm = sorted(tuple(t.values) for t in engine.study.trials)
    assert warm == sorted((t.metrics["f1"], t.metrics["f2"]) for t in first.trials)
    params = engine.propose(4)
    assert params is not None
    handle, params = engine.ask(params)
    engine.tell(handle, Outcome(TrialState.COMPLETE, 0.5, {"f1": 0.5, "f2": 0.25}, None, [], set(), 0.0))
    assert engine.study.trials[-1].values == [0.5, 0.25]


def test_history_entry_carries_every_objective() -> None:
    from hposdk._goals import Goals

    goals = Goals(objectives={"f1": "min", "f2": "min"}, pruning_metric="f2")
    t = TrialResult(number=0, params={"x": 0.5}, state=TrialState.COMPLETE, value=0.25,
                    metrics={"f1": 0.25, "f2": 0.75}, reports=[])
    entry = history_entry(t, goals)
    assert entry["values"] == [0.25, 0.75] and entry["prune_value"] == 0.75
    pruned = t.model_copy(update={"state": TrialState.PRUNED})
    assert history_entry(pruned, goals)["values"] is None


# --- composites and constraints ---------------------------------------------------------------------------

SCORE = {"score": {"terms": {"f1": {"weight": 1, "mode": "min"}, "f2": {"weight": 3, "mode": "min"}}}}


def _check_score(result: StudyResult) -> None:
    for t in result.trials:
        expected = -(t.metrics["f1"] + 3 * t.metrics["f2"]) / 4  # the weighted average, lower-is-better terms
        assert t.value == pytest.approx(expected) and t.metrics["score"] == pytest.approx(expected)
        assert all("score" in r.metrics for r in t.reports)  # every report carries the composite


def test_local_composite_as_the_metric(tmp_path: Path) -> None:
    result = _local(tmp_path, X, metric="score", mode="max", composites=SCORE, optimizer="grid").optimize()
    assert len(result.trials) == 9
    _check_score(result)
    assert result.best.params == {"x": 0.75}  # the maximum of -(x**2 + 3 (x - 1)**2) / 4 on the grid


@pytest.mark.parametrize("optimizer", ["random", "tpe"])
def test_fleet_composite_is_computed_in_the_trial_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       optimizer: str) -> None:
    study, io = _fleet(tmp_path, X, monkeypatch, metric="score", mode="max", composites=SCORE, optimizer=optimizer,
                       n_trials=5, seed=0)
    result = study.optimize()
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    _check_score(result)
    for job in io.fleet.tasks.values():  # the agent reported the composite, as ClearML reads its objective
        assert ("score", "score") in {(t, s) for t, s, _, _ in job.task.scalars}


@pytest.mark.parametrize("executor", ["local", "remote"])
def test_constraint_keeps_infeasible_trials_from_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      executor: str) -> None:
    kw: dict[str, Any] = dict(objectives=TWO, constraints=["f1 <= 0.25"], optimizer="grid")
    if executor == "local":
        result = _local(tmp_path, X, **kw).optimize()
    else:
        study, _ = _fleet(tmp_path, X, monkeypatch, **kw)
        result = study.optimize()
    assert len(result.trials) == 9
    for t in result.trials:
        assert t.constraint_violations == pytest.approx((t.params["x"] ** 2 - 0.25,))
        assert t.feasible is (t.params["x"] <= 0.5)
    assert result.best_by("f2").params == {"x": 0.5}  # x = 1 has the best f2 but f1 = 1 > 0.25
    assert result.pareto_front and all(t.feasible for t in result.pareto_front)
    assert sorted(t.params["x"] for t in result.pareto_front) == [0.0, 0.125, 0.25, 0.375, 0.5]


def test_constraint_with_one_objective(tmp_path: Path) -> None:
    result = _local(tmp_path, X, metric="f2", constraints=["f1 <= 0.25"], optimizer="grid").optimize()
    assert result.best.params == {"x": 0.5}
    assert min(result.completed, key=lambda t: t.metrics["f2"]).params == {"x": 1.0}  # infeasible, not best


# --- pruning on the pruning metric --------------------------------------------------------------------------

MEDIAN = {"n_startup_trials": 2, "n_warmup_steps": 0}


def test_pruner_with_several_objectives_needs_a_pruning_metric(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pruning_metric"):
        _local(tmp_path, X, objectives=TWO, optimizer="grid", pruner="median")


def _check_pruned_on_f1(result: StudyResult, steps: int) -> None:
    # The grid runs x upwards: f1 (x**2) gets worse with every trial while f2 ((x - 1)**2), the first
    # objective, gets better. A pruner watching f1 stops every trial after the 2 startup ones at its
    # first report; one watching f2 (or the first objective) would stop none.
    states = {t.params["x"]: t.state for t in result.trials}
    assert states == {k / 8: TrialState.COMPLETE if k < 2 else TrialState.PRUNED for k in range(9)}
    assert all(len(t.reports) < steps for t in result.by_state(TrialState.PRUNED))
    assert all({"f1", "f2"} <= set(t.metrics) for t in result.completed)


def test_local_grid_prunes_on_the_pruning_metric(tmp_path: Path) -> None:
    result = _local(tmp_path, X, objectives={"f2": "min", "f1": "min"}, pruning_metric="f1", optimizer="grid",
                    pruner="median", pruner_options=MEDIAN, fixed={"steps": 4}).optimize()
    _check_pruned_on_f1(result, 4)


def test_fleet_grid_prunes_on_the_pruning_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, _ = _fleet(tmp_path, X, monkeypatch, objectives={"f2": "min", "f1": "min"}, pruning_metric="f1",
                      optimizer="grid", pruner="median", pruner_options=MEDIAN, fixed={"steps": 3, "sleep": 0.2})
    # Steps longer than ClearML's poll (pool_period_min 0.001 = 60 ms): every step is seen.
    _check_pruned_on_f1(study.optimize(), 3)


def _check_tpe_pruned(result: StudyResult, n: int, steps: int) -> None:
    assert len(result.trials) == n
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in result.trials), [
        t.error for t in result.trials]
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned, "the shadow pruner never stopped a trial"
    assert result.pareto_front
    for t in pruned:
        assert len(t.reports) < steps
        # Pruned only when worse in f1 than the median of the completed trials at that step.
        last = t.reports[-1]
        earlier = [r.metrics["f1"] for c in result.completed for r in c.reports if r.step == last.step]
        assert earlier and last.metrics["f1"] > min(earlier)


def test_local_tpe_prunes_a_multi_objective_study(tmp_path: Path) -> None:
    """Optuna cannot prune a multi-objective study (optuna/optuna#3450): the shadow study does."""
    result = _local(tmp_path, SearchSpace({"x": Uniform(0.0, 1.0)}), objectives=TWO, pruning_metric="f1",
                    optimizer="tpe", n_trials=16, seed=0, pruner="median", pruner_options=MEDIAN,
                    optimizer_options={"n_startup_trials": 4}, fixed={"steps": 4}).optimize()
    _check_tpe_pruned(result, 16, 4)


@pytest.mark.filterwarnings("ignore:The reported value is ignored:UserWarning")
def test_fleet_tpe_prunes_a_multi_objective_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, io = _fleet(tmp_path, SearchSpace({"x": Uniform(0.0, 1.0)}), monkeypatch, objectives=TWO,
                       pruning_metric="f1", optimizer="tpe", n_trials=10, seed=0, pruner="median",
                       pruner_options=MEDIAN, fixed={"steps": 12, "sleep": 0.02})
    result = study.optimize()
    _check_tpe_pruned(result, 10, 12)
    # The pruned trials were told to Optuna's TPE study as PRUNED, not as their aborted tasks' last values.
    states = [t.state.name for t in io.hpo.optimizer._study.trials]
    assert states.count("PRUNED") >= len(result.by_state(TrialState.PRUNED))
    assert states.count("COMPLETE") == len(result.completed)
    assert not math.isnan(sum(v for t in io.hpo.optimizer._study.trials if t.values for v in t.values))


def test_controller_document_keeps_the_goals(tmp_path: Path) -> None:
    """controller='remote' rebuilds the study on a services agent from this document."""
    from hposdk.backends.clearml._controller import controller_document
    from hposdk.study import StudyConfig

    study = _local(tmp_path, XY, objectives={"f1": "min", "score": "max"}, composites=SCORE,
                   constraints=["f2 <= 0.5"], pruning_metric="score", pruner="median", optimizer="tpe", n_trials=4,
                   backend_options={"executor": "remote", "controller": "remote"})
    opts = ClearMLOptions(**study.spec.backend_options.model_dump())
    goals = StudyConfig.model_validate(controller_document(study.spec, opts)).goals()
    assert goals.objectives == {"f1": "min", "score": "max"} and goals.pruning_metric == "score"
    assert goals.composites == study.spec.goals.composites
    assert [c.text for c in goals.constraints] == ["f2 <= 0.5"]
    with pytest.raises(ConfigError, match="constraints must be text"):
        _local(tmp_path, XY, objectives=TWO, constraints=[lambda m: m["f1"] - 0.5], optimizer="tpe", n_trials=4,
               backend_options={"executor": "remote", "controller": "remote"})
