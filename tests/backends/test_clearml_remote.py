"""executor='remote' without a server: the optimizer arguments against the installed ClearML signatures,
and ClearML's real HyperParameterOptimizer loops driven against an in-memory fleet.

The in-memory fleet replaces only what needs a server (``FleetIO``: task cloning, scalars, status).
Its trial "tasks" run the real agent runner code (``_agent.run``) on a fake task that stores values
as strings, as ClearML does. Tests against a real server are in ``test_clearml_server.py``.
"""

from __future__ import annotations

import inspect
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

pytest.importorskip("clearml")

from clearml.automation import GridSearch, HyperParameterOptimizer, RandomSearch
from clearml.automation.hpbandster import OptimizerBOHB
from clearml.automation.optuna import OptimizerOptuna

from hposdk import Study, Trial
from hposdk.backends._base import StudySpec
from hposdk.backends.clearml import _remote
from hposdk.backends.clearml._agent import run as agent_run
from hposdk.backends.clearml._options import ClearMLOptions, resolve_executor
from hposdk.backends.clearml._translate import task_string
from hposdk.exceptions import ConfigError, UnsupportedError
from hposdk.result import TrialState
from hposdk.spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from hposdk.testing import objectives


@pytest.fixture(autouse=True)
def _offline_clearml(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("clearml-home")
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLEARML_API_HOST", raising=False)


SEED_SPACE = SearchSpace({
    "dampening_frac": Uniform(0.01, 0.1, step=0.01),
    "num_samples": LogUniform(512, 2048, base=2, step=1),
})


def _spec(optimizer: str = "tpe", space: SearchSpace = SEED_SPACE, **kw: Any) -> StudySpec:
    base: dict[str, Any] = dict(name="gptq", objective=lambda t: 0.0, objective_ref="hposdk.objectives.gptq:objective",
                                space=space, metric="average", mode="max", optimizer=optimizer, n_trials=10,
                                max_concurrent=2, seed=0)
    base.update(kw)
    return StudySpec(**base)


# --- the arguments, checked against the installed ClearML ---------------------------------------------

_BASES = {"grid": GridSearch, "random": RandomSearch, "tpe": OptimizerOptuna, "bohb": OptimizerBOHB}


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = set(inspect.signature(HyperParameterOptimizer).parameters) - {"optimizer_kwargs"}
    return {k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names}


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe", "bohb"])
def test_kwargs_bind_to_the_installed_signatures(optimizer: str) -> None:
    from hposdk.backends._base import Budget

    spec = _spec(optimizer, budget=Budget(min_budget=1, max_budget=9), trial_timeout=600.0,
                 pruner="median" if optimizer == "tpe" else None,
                 optimizer_options={"n_startup_trials": 2} if optimizer == "tpe" else {})
    opts = ClearMLOptions(executor="remote", queue="oneshot-a100x1", spawn_project="alexandre_debug",
                          pool_period_min=5, report_period_min=5, time_limit_min=600)
    kwargs = _remote.build_optimizer_kwargs(spec, opts, base_task_id="abc", n_jobs=10)
    _, optimizer_kwargs = _split(kwargs)
    inspect.signature(HyperParameterOptimizer).bind(**kwargs)
    base: type = _BASES[optimizer]
    base_params = inspect.signature(base).parameters
    clearml_kwargs = {k: v for k, v in optimizer_kwargs.items() if not k.startswith("hposdk_")}
    # Every argument is a *named* parameter of ClearML's class: none is swallowed by its **kwargs.
    swallowed = sorted(set(clearml_kwargs) - set(base_params))
    if optimizer == "bohb":  # eta is one of OptimizerBOHB's documented **bohb_kwargs (verified_bohb_kwargs)
        swallowed = sorted(set(swallowed) - {"eta"})
    assert not swallowed, swallowed
    # HyperParameterOptimizer calls the class like this (optimization.py, HyperParameterOptimizer.__init__).
    inspect.signature(base).bind(
        base_task_id="abc", hyper_parameters=kwargs["hyper_parameters"], objective_metric=None,
        execution_queue=kwargs["execution_queue"], num_concurrent_workers=kwargs["max_number_of_concurrent_tasks"],
        compute_time_limit=None, **clearml_kwargs)
    cls = kwargs["optimizer_class"]
    assert issubclass(cls, base)
    hposdk_params = {n for c in cls.__mro__ if c.__module__.startswith("hposdk")
                     for n in inspect.signature(c).parameters if n.startswith("hposdk_")}
    assert set(optimizer_kwargs) - set(clearml_kwargs) <= hposdk_params


def test_kwargs_for_the_seed_setup() -> None:
    """BaseHPO(...) of the seed, argument by argument."""
    spec = _spec("tpe", optimizer_options={"n_startup_trials": 2})
    opts = ClearMLOptions(executor="remote", base_task_id="pipeline-id", objective_title="openllm",
                          objective_series="average", spawn_project="alexandre_debug", pool_period_min=5,
                          report_period_min=5, max_iteration_per_job=1, queue="oneshot-a100x1")
    kw = _remote.build_optimizer_kwargs(spec, opts, base_task_id="pipeline-id", n_jobs=10)
    assert kw["base_task_id"] == "pipeline-id"
    assert (kw["objective_metric_title"], kw["objective_metric_series"], kw["objective_metric_sign"]) == (
        "openllm", "average", "max")
    assert kw["total_max_jobs"] == 10 and kw["max_number_of_concurrent_tasks"] == 2
    assert kw["optimizer_class"].__name__ == "HposdkOptuna"
    assert kw["hposdk_sampler_options"] == {"n_startup_trials": 2}
    assert kw["pool_period_min"] == 5 and kw["max_iteration_per_job"] == 1
    assert kw["spawn_project"] == "alexandre_debug" and kw["execution_queue"] == "oneshot-a100x1"
    assert [p.to_dict() for p in kw["hyper_parameters"]] == [
        {"type": "DiscreteParameterRange", "name": "Args/dampening_frac",
         "values": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]},
        {"type": "DiscreteParameterRange", "name": "Args/num_samples", "values": [512, 1024, 2048]},
    ]
    json.dumps({k: v for k, v in kw.items() if k not in ("hyper_parameters", "optimizer_class")})  # plain data


def test_only_searched_values_reach_a_user_base_task() -> None:
    spec = _spec("random", fixed={"model": "meta-llama/Llama-3.2-1B-Instruct", "suites": ["openllm"]})
    kw = _remote.build_optimizer_kwargs(spec, ClearMLOptions(base_task_id="t"), base_task_id="t", n_jobs=3)
    assert [p.name for p in kw["hyper_parameters"]] == ["Args/dampening_frac", "Args/num_samples"]


def test_executor_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_executor(ClearMLOptions()) == "local"  # offline mode (fixture)
    monkeypatch.delenv("CLEARML_OFFLINE_MODE")
    monkeypatch.setenv("CLEARML_CONFIG_FILE", "/nonexistent/clearml.conf")
    assert resolve_executor(ClearMLOptions()) == "local"
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:9")
    assert resolve_executor(ClearMLOptions()) == "remote"
    assert resolve_executor(ClearMLOptions(executor="local")) == "local"


def test_server_check_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEARML_OFFLINE_MODE")
    monkeypatch.setenv("CLEARML_API_HOST", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not answer within 1s"):
        _remote.check_server(1.0)
    assert time.monotonic() - start < 5


def test_server_check_refuses_offline_mode() -> None:
    with pytest.raises(ConfigError, match="CLEARML_OFFLINE_MODE"):
        _remote.check_server(1.0)


@pytest.mark.parametrize(("kw", "opts", "match"), [
    ({"retries": 1}, {}, "retries=1"),
    ({"objective_ref": None}, {}, "import path"),
    ({"optimizer": "grid"}, {"min_iteration_per_job": 2}, "only applies to optimizer='tpe'"),
    ({"fixed": {"cfg": object()}}, {}, "must be JSON data"),
])
def test_remote_refusals(kw: dict[str, Any], opts: dict[str, Any], match: str) -> None:
    with pytest.raises((ConfigError, UnsupportedError), match=match):
        _remote.check_remote(_spec(**kw), ClearMLOptions(executor="remote", **opts))


def test_remote_refuses_choices_a_task_cannot_tell_apart(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="cannot tell them apart"):
        Study(objectives.echo_types, SearchSpace({"x": Discrete([1, "1"])}), metric="loss", backend="clearml",
              optimizer="grid", backend_options={"executor": "remote"}, storage=str(tmp_path), progress=False)


# --- an in-memory fleet ------------------------------------------------------------------------------


class MemoryTask:
    """What the agent runner and FleetIO.outcome use of a ClearML task, stored in memory as ClearML would."""

    _ids = itertools.count()

    def __init__(self, params: dict[str, Any], user_task: bool) -> None:
        self.id = f"mem-{next(self._ids)}"
        self.params = {k: task_string(v) for k, v in params.items()}  # ClearML stores strings
        self.status = "created"
        self.data = SimpleNamespace(status_message="", status_reason="")
        self.config: dict[str, str] = {}
        self.scalars: list[tuple[str, str, int, float]] = []
        self.user_task = user_task
        self.frozen = False

    # used by the agent runner
    def connect(self, defaults: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        return defaults

    def get_parameters(self, backwards_compatibility: bool = True, cast: bool = False) -> dict[str, str]:
        return dict(self.params)

    def get_logger(self) -> Any:
        return SimpleNamespace(report_scalar=self._report)

    def _report(self, title: str, series: str, value: float, iteration: int) -> None:
        if not self.frozen:
            self.scalars.append((title, series, iteration, value))

    def set_configuration_object(self, name: str, config_text: str, config_type: str | None = None) -> None:
        if not self.frozen and not self.user_task:  # a user's task knows nothing of hposdk
            self.config[name] = config_text

    def get_configuration_object(self, name: str) -> str | None:
        return self.config.get(name)

    def flush(self, wait_for_uploads: bool = False) -> bool:
        return True

    # used by FleetIO.outcome
    def reload(self) -> None:
        pass

    def get_last_scalar_metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for title, series, _, value in self.scalars:
            entry = out.setdefault(title, {}).setdefault(series, {"last": value, "min": value, "max": value})
            entry.update(last=value, min=min(entry["min"], value), max=max(entry["max"], value))
        return out

    def get_reported_scalars(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for title, series, it, value in self.scalars:
            entry = out.setdefault(title, {}).setdefault(series, {"x": [], "y": []})
            entry["x"].append(it)
            entry["y"].append(value)
        return out


class MemoryFleet:
    """The fleet's state: base task, trial tasks, and how long a trial 'runs'."""

    def __init__(self, study: dict[str, Any], user_task: bool = False) -> None:
        self.study = study
        self.user_task = user_task
        self.tasks: dict[str, MemoryJob] = {}
        self.launched: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class MemoryJob:
    """Stands in for ClearmlJob: 'launch' runs the hposdk agent runner on a MemoryTask in a thread."""

    fleet: ClassVar[MemoryFleet]

    def __init__(self, base_task_id: str, parameter_override: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.task = MemoryTask(dict(parameter_override or {}), self.fleet.user_task)
        self.started = 0.0
        self._done = threading.Event()
        with self.fleet.lock:
            self.fleet.tasks[self.task.id] = self

    def launch(self, queue_name: str | None = None) -> bool:
        with self.fleet.lock:
            self.fleet.launched.append(dict(self.task.params))
        self.task.status = "in_progress"
        self.started = time.monotonic()
        threading.Thread(target=self._run, daemon=True).start()
        return True

    def _run(self) -> None:
        code = agent_run(self.task, self.fleet.study)
        if self.task.status == "in_progress":
            self.task.status = "completed" if code == 0 else "failed"
        self._done.set()

    def abort(self) -> None:
        if self.task.status in ("queued", "in_progress", "created"):
            self.task.frozen = True
            self.task.status = "stopped"
            self._done.set()

    def is_stopped(self, aborted_nonresponsive_as_running: bool = False) -> bool:
        self._done.wait(0.005)  # a short block instead of ClearML's busy polling with sleep(0)
        return self.task.status in ("stopped", "completed", "failed", "published")

    def is_pending(self) -> bool:
        return self.task.status in ("created", "queued")

    def is_running(self) -> bool:
        return self.task.status == "in_progress"

    def is_failed(self) -> bool:
        return self.task.status == "failed"

    def task_id(self) -> str:
        return self.task.id

    def status(self, force: bool = False) -> str:
        return self.task.status

    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else -1

    def iterations(self) -> int:
        return max((s[2] for s in self.task.scalars), default=-1)


class MemoryObjective:
    """ClearML's Objective/MultiObjective reading a MemoryTask's scalars (no server)."""

    def __init__(self, title: str, series: str, sign: float) -> None:
        self.title, self.series, self.sign = title, series, sign
        self.objectives = [self]
        self.len = 1

    def _values(self, job: Any) -> list[tuple[int, float]]:
        task = job.task if hasattr(job, "task") else job
        return [(it, v) for t, s, it, v in task.scalars if (t, s) == (self.title, self.series)]

    def get_current_raw_objective(self, job: Any) -> Any:
        values = self._values(job)
        return [values[-1]] if values else None

    def get_objective(self, job: Any) -> Any:
        task = job.task if hasattr(job, "task") else job
        values = self._values(job)
        return [values[-1][1]] if values and task.status in ("completed", "stopped") else None

    def get_normalized_objective(self, job: Any) -> Any:
        value = self.get_objective(job)
        return None if value is None else self.sign * value[0]

    def get_objective_sign(self) -> list[float]:
        return [self.sign]

    def get_objective_metric(self) -> list[tuple[str, str]]:
        return [(self.title, self.series)]


class MemoryIO(_remote.FleetIO):
    """FleetIO with the server replaced by a MemoryFleet."""

    def __init__(self, fleet: MemoryFleet) -> None:
        self.fleet = fleet
        self.created_base = 0

    def check(self, opts: ClearMLOptions) -> None:
        pass

    def controller_task(self, spec: StudySpec, opts: ClearMLOptions) -> Any:
        return SimpleNamespace(id="controller")

    def create_base_task(self, spec: StudySpec, opts: ClearMLOptions) -> str:
        self.created_base += 1
        return "base-task"

    def make_optimizer(self, kwargs: dict[str, Any]) -> Any:
        kwargs = dict(kwargs)
        cls = kwargs.pop("optimizer_class")
        hpo_kwargs, opt_kwargs = _split(kwargs)
        sign = -1.0 if hpo_kwargs["objective_metric_sign"].startswith("min") else 1.0
        objective = MemoryObjective(hpo_kwargs["objective_metric_title"], hpo_kwargs["objective_metric_series"], sign)
        strategy = cls(base_task_id=hpo_kwargs["base_task_id"], hyper_parameters=hpo_kwargs["hyper_parameters"],
                       objective_metric=objective, execution_queue=hpo_kwargs["execution_queue"],
                       num_concurrent_workers=hpo_kwargs["max_number_of_concurrent_tasks"],
                       compute_time_limit=None, hposdk_offline=True, **opt_kwargs)
        # The real HyperParameterOptimizer, given the strategy instance (its documented option).
        return HyperParameterOptimizer(**{**hpo_kwargs, "optimizer_class": strategy})

    def job_base(self) -> type:
        return type("Job", (MemoryJob,), {"fleet": self.fleet})

    def existing_job(self, task_id: str) -> Any:
        return self.fleet.tasks.get(task_id)


def budget_curve(trial: Trial) -> dict[str, float]:
    """A multi-fidelity objective: trial.budget steps, loss falling towards (x - 0.3)**2."""
    x = float(trial.params["x"])
    # lr and opt (when searched) shift the optimum a little, so every key is read
    x += 0.01 * float(trial.params.get("lr", 0.0)) + (0.05 if trial.params.get("opt") == "sgd" else 0.0)
    steps = round(trial.budget or 1)
    loss = 0.0
    for step in range(steps):
        loss = (x - 0.3) ** 2 + 1.0 / (step + 1)
        trial.report(step, loss=loss)
    return {"loss": loss}


def slow_curve(trial: Trial) -> dict[str, float]:
    """learning_curve with 20 ms per step, so that ClearML's poll sees the reports of running tasks."""
    x = float(trial.params["x"])
    loss = 0.0
    for step in range(int(trial.params["steps"])):
        loss = (x - 0.3) ** 2 + 1.0 / (step + 1)
        trial.report(step, loss=loss)
        time.sleep(0.02)
    return {"loss": loss}


def _fleet_study(tmp_path: Path, objective: Any, space: SearchSpace, monkeypatch: pytest.MonkeyPatch,
                 user_task: bool = False, name: str = "fleet", **kw: Any) -> tuple[Study, MemoryIO]:
    opts: dict[str, Any] = {"executor": "remote", "pool_period_min": 0.001, **kw.pop("backend_options", {})}
    if user_task:
        opts["base_task_id"] = "user-task"
    study = Study(objective, space, backend="clearml", backend_options=opts, storage=str(tmp_path / "studies"),
                  progress=False, name=name, metric=kw.pop("metric", "loss"), **kw)
    doc = _remote.study_document(study.spec, ClearMLOptions(**opts))
    io = MemoryIO(MemoryFleet(doc, user_task=user_task))
    monkeypatch.setattr(_remote, "FleetIO", lambda: io)
    return study, io


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_fleet_each_optimizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125), "z": Discrete([True, "a", None])})
    study, io = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, optimizer=optimizer, n_trials=6,
                             seed=0, max_concurrent=2)
    result = study.optimize()
    assert len(result.trials) == 6 and len(io.fleet.launched) == 6  # exactly n_trials tasks, no more
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    assert sorted(t.number for t in result.trials) == list(range(6))
    for t in result.trials:
        assert space.contains(t.params) and t.info["clearml_task_id"].startswith("mem-")
        assert t.reports and t.reports[-1].metrics["loss"] == pytest.approx(t.value)
    # what the tasks received: exact values, as strings, plus hposdk's trial number
    sent = {json.dumps(p, sort_keys=True) for p in io.fleet.launched}
    assert all(json.loads(s)["hposdk/number"] in {str(n) for n in range(6)} for s in sent)
    assert all(json.loads(s)["Args/x"] in {repr(k / 8) for k in range(9)} for s in sent)
    assert io.created_base == 1
    events = [json.loads(line) for line in study.record_path.read_text().splitlines()]
    assert Counter(e["trial"]["number"] for e in events if e["event"] == "finish") == Counter(range(6))
    assert len([e for e in events if e.get("kind") == "clearml_trial_task"]) == 6


def test_fleet_random_matches_the_local_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study tried locally proposes what the fleet runs (same seed, same ClearML strategy)."""
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 1000, log=True)})
    study, _ = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, optimizer="random", n_trials=4,
                            seed=9)
    fleet = sorted(study.optimize().trials, key=lambda t: t.number)
    local = Study(objectives.quadratic, space, backend="clearml", optimizer="random", n_trials=4, seed=9,
                  metric="loss", backend_options={"executor": "local"}, storage=str(tmp_path / "local"),
                  progress=False).optimize()
    assert [t.params for t in fleet] == [t.params for t in sorted(local.trials, key=lambda t: t.number)]


def test_fleet_user_base_task_reads_the_objective_scalar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing task (the seed's pipeline): values as Args/..., result from the title/series scalar."""
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    study, io = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, user_task=True, optimizer="grid",
                             mode="max", metric="neg_loss", fixed={"target": 0.5})
    result = study.optimize()
    assert io.created_base == 0
    assert result.best.params == {"x": 0.5} and result.best.value == pytest.approx(0.0)
    assert all("hposdk/number" not in p for p in io.fleet.launched)  # nothing hposdk-specific on a user's task
    assert all(set(p) == {"Args/x"} for p in io.fleet.launched)  # the searched values only


def test_fleet_failed_task_is_recorded_and_the_study_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """clearml/clearml#644: a failed job must not stop the optimizer; here it is a FAILED trial."""
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    for optimizer in ("grid", "tpe"):
        study, _ = _fleet_study(tmp_path / optimizer, objectives.quadratic, space, monkeypatch, optimizer=optimizer,
                                n_trials=5, seed=1, fixed={"fail_above": 0.6})
        result = study.optimize()
        assert len(result.trials) == 5
        failed = result.by_state(TrialState.FAILED)
        assert {t.params["x"] for t in failed} == {0.75, 1.0}, optimizer
        assert all("deliberate failure" in (t.error or "") for t in failed)


def test_fleet_failed_user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5)})
    study, _ = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, user_task=True, optimizer="grid",
                            fixed={"fail_above": 0.6})
    states = {t.params["x"]: (t.state, t.error) for t in study.optimize().trials}
    assert states[1.0][0] is TrialState.FAILED and "status 'failed'" in (states[1.0][1] or "")
    assert states[0.0][0] is TrialState.COMPLETE


# ClearML's OptunaObjective reports the same iteration again at every poll; Optuna warns and ignores it.
@pytest.mark.filterwarnings("ignore:The reported value is ignored:UserWarning")
def test_fleet_tpe_pruner_aborts_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 3.0)})
    study, _ = _fleet_study(tmp_path, slow_curve, space, monkeypatch, optimizer="tpe", n_trials=8, seed=0,
                            pruner="median", pruner_options={"n_startup_trials": 2, "n_warmup_steps": 2},
                            fixed={"steps": 15})
    result = study.optimize()
    assert len(result.trials) == 8
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in result.trials)
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned, "ClearML's OptunaObjective loop never aborted a task for the pruner"
    assert all(len(t.reports) < 15 for t in pruned)


@pytest.mark.filterwarnings("ignore:The reported value is ignored:UserWarning")
def test_fleet_random_pruner_aborts_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grid/random on the fleet prune through the strategy's monitor_job (ClearML's own never prune)."""
    space = SearchSpace({"x": Uniform(0.0, 3.0)})
    study, _ = _fleet_study(tmp_path, slow_curve, space, monkeypatch, optimizer="random", n_trials=8, seed=0,
                            max_concurrent=2, pruner="median",
                            pruner_options={"n_startup_trials": 2, "n_warmup_steps": 2}, fixed={"steps": 15})
    result = study.optimize()
    assert len(result.trials) == 8
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned, "no task was aborted for the pruner"
    assert all(len(t.reports) < 15 for t in pruned)


def test_fleet_resume_without_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})
    log = tmp_path / "calls.txt"
    for optimizer in ("grid", "random", "tpe"):
        log.write_text("")
        kw: dict[str, Any] = dict(optimizer=optimizer, seed=3, name=f"resume-{optimizer}", fixed={"log_path": str(log)})
        first, _io1 = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=3, **kw)
        first_trials = first.optimize().trials
        second, io2 = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=6, **kw)
        result = second.optimize()
        assert len(result.trials) == 6 and len(io2.fleet.launched) == 3
        calls = Counter(int(n) for n in log.read_text().split())
        assert sorted(calls) == list(range(6)) and set(calls.values()) == {1}, optimizer
        assert len({t.params["x"] for t in result.trials}) == 6
        assert io2.created_base == 0  # the base task of the first run is reused
        by_number = {t.number: t.params for t in result.trials}
        assert all(by_number[t.number] == t.params for t in first_trials)


def test_fleet_resume_collects_a_trial_that_finished_while_the_controller_was_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})
    log = tmp_path / "calls.txt"
    kw: dict[str, Any] = dict(optimizer="random", seed=3, name="adopt", fixed={"log_path": str(log)})
    first, io = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=2, **kw)
    first.optimize()
    record = first.record_path
    lines = record.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines)
               if json.loads(line).get("event") == "finish" and json.loads(line)["trial"]["number"] == 1)
    record.write_text("\n".join(lines[:cut]) + "\n")  # the controller died before recording trial 1
    second, io2 = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=3, **kw)
    io2.fleet.tasks.update(io.fleet.tasks)  # the server still has the trial task, completed
    result = second.optimize()
    assert sorted(t.number for t in result.trials) == [0, 1, 2]
    assert Counter(int(n) for n in log.read_text().split()) == Counter({0: 1, 1: 1, 2: 1})  # trial 1 not re-run
    assert len(io2.fleet.launched) == 1


def test_fleet_resume_reruns_a_trial_whose_task_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})
    kw: dict[str, Any] = dict(optimizer="tpe", seed=3, name="gone")
    first, _ = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=2, **kw)
    trials = {t.number: t.params for t in first.optimize().trials}
    record = first.record_path
    lines = record.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines)
               if json.loads(line).get("event") == "finish" and json.loads(line)["trial"]["number"] == 1)
    record.write_text("\n".join(lines[:cut]) + "\n")
    second, io2 = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, n_trials=3, **kw)
    result = second.optimize()  # io2's fleet does not know the old task: trial 1 runs again
    assert {t.number: t.params for t in result.trials}[1] == trials[1]
    assert len(io2.fleet.launched) == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::RuntimeWarning")
def test_fleet_bohb_sends_exact_values_and_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repaired OptimizerBOHB end to end (ConfigSpace 1.x, Pyro with numpy values, free port)."""
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25), "lr": LogUniform(1e-4, 1e-1),
                         "opt": Discrete(["sgd", "adam"])})
    study, _io = _fleet_study(tmp_path, budget_curve, space, monkeypatch, optimizer="bohb", n_trials=8, seed=0,
                             budget={"min_budget": 1, "max_budget": 9, "eta": 3})
    result = study.optimize()
    assert len(result.trials) == 8
    assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    for t in result.trials:
        assert space.contains(t.params)
        assert 1e-4 <= t.params["lr"] <= 1e-1  # a value, not ClearML's exponent
        assert t.budget in (1.0, 3.0, 9.0) and len(t.reports) == int(t.budget)
    assert {type(t.params["opt"]) for t in result.trials} == {str}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::RuntimeWarning")
def test_bohb_resume_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    kw: dict[str, Any] = dict(optimizer="bohb", seed=0, name="b", budget={"min_budget": 1, "max_budget": 3})
    first, _ = _fleet_study(tmp_path, budget_curve, space, monkeypatch, n_trials=2, **kw)
    first.optimize()
    second, _ = _fleet_study(tmp_path, budget_curve, space, monkeypatch, n_trials=4, **kw)
    with pytest.raises(UnsupportedError, match="resuming a BOHB study"):
        second.optimize()


def test_controller_document_is_a_valid_study() -> None:
    """controller='remote' sends this StudyConfig to the services agent; it must rebuild the same study."""
    from hposdk.backends._base import Budget
    from hposdk.backends.clearml._controller import controller_document
    from hposdk.study import StudyConfig

    spec = _spec("bohb", budget=Budget(min_budget=1, max_budget=9), trial_timeout=60.0)
    opts = ClearMLOptions(executor="remote", controller="remote", queue="gpu", base_task_id="abc")
    doc = json.loads(json.dumps(controller_document(spec, opts)))
    cfg = StudyConfig.model_validate(doc)
    assert cfg.backend == "clearml" and SearchSpace.from_dict(doc["space"]) == spec.space
    back = ClearMLOptions(**cfg.backend_options)
    assert (back.executor, back.controller, back.queue, back.base_task_id) == ("remote", "local", "gpu", "abc")


def test_metric_missing_on_the_agent_stops_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hposdk.exceptions import ObjectiveError

    study, _ = _fleet_study(tmp_path, objectives.wrong_metric, SearchSpace({"x": Uniform(0.0, 1.0)}), monkeypatch,
                            optimizer="random", n_trials=4, seed=0, max_concurrent=1)
    with pytest.raises(ObjectiveError, match="accuracy"):
        study.optimize()


# --- the example study ---------------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clearml" / "study.yaml"


def _example_spec(executor: str, **options: Any) -> StudySpec:
    from hposdk.backends.clearml import ClearMLBackend
    from hposdk.study import StudyConfig

    cfg = StudyConfig.from_yaml(EXAMPLE)  # the gptq objective itself needs hposdk[gptq]; it is not imported
    opts = ClearMLOptions(**{**cfg.backend_options, "executor": executor, **options})
    assert cfg.n_trials is not None and cfg.seed is not None
    spec = StudySpec(name=cfg.name or "x", objective=objectives.echo_types, objective_ref=cfg.objective,
                     space=cfg.space, metric=cfg.metric, mode=cfg.mode, optimizer=cfg.optimizer, n_trials=cfg.n_trials,
                     max_concurrent=cfg.max_concurrent, seed=cfg.seed, fixed=cfg.fixed,
                     optimizer_options=cfg.optimizer_options, backend_options=opts)
    ClearMLBackend.check(spec)
    return spec


def test_example_study_translates_to_the_seed_setup() -> None:
    spec = _example_spec("local")
    assert spec.space.grid()[0] == {"dampening_frac": 0.01, "num_calibration_samples": 512}
    opts = ClearMLOptions(**{**spec.backend_options.model_dump(), "base_task_id": "pipeline-id"})
    kw = _remote.build_optimizer_kwargs(spec, opts, base_task_id="pipeline-id", n_jobs=spec.n_trials)
    names = {p.name: p.to_dict().get("values") for p in kw["hyper_parameters"]}
    assert names["Args/dampening_frac"] == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]
    assert names["Args/num_samples"] == [512, 1024, 2048]
    assert (kw["objective_metric_title"], kw["objective_metric_series"], kw["objective_metric_sign"]) == (
        "openllm", "average", "max")
    assert kw["max_number_of_concurrent_tasks"] == 2 and kw["total_max_jobs"] == 10
    assert kw["hposdk_sampler_options"] == {"n_startup_trials": 2}
    assert kw["execution_queue"] == "oneshot-a100x1" and kw["spawn_project"] == "alexandre_debug"
    assert kw["pool_period_min"] == 5


def test_example_study_is_valid_for_the_fleet() -> None:
    _example_spec("remote")
    _example_spec("remote", base_task_id="pipeline-id")


def test_param_names_on_a_user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5), "n": LogUniform(512, 2048, base=2, step=1)})
    study, io = _fleet_study(tmp_path, objectives.quadratic, space, monkeypatch, user_task=True, optimizer="grid",
                             backend_options={"param_names": {"n": "Args/num_samples"}})
    result = study.optimize()
    assert len(result.trials) == 9
    assert {p["Args/num_samples"] for p in io.fleet.launched} == {"512", "1024", "2048"}
    assert {t.params["n"] for t in result.trials} == {512, 1024, 2048}


def test_param_names_refused_when_unknown_or_colliding(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Uniform(0.0, 1.0)})
    kw: dict[str, Any] = dict(metric="loss", backend="clearml", optimizer="random", n_trials=1,
                              storage=str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="neither searched nor fixed"):
        Study(objectives.quadratic, space, backend_options={"executor": "local", "param_names": {"q": "Args/q"}}, **kw)
    with pytest.raises(ConfigError, match="would both be"):
        Study(objectives.quadratic, space, backend_options={"executor": "local", "param_names": {"x": "Args/y"}}, **kw)


def test_interrupt_leaves_running_tasks_on_the_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C stops the controller but not the trial tasks (ClearML's stop() would abort them)."""
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5)})
    study, io = _fleet_study(tmp_path, slow_curve, space, monkeypatch, optimizer="grid", fixed={"steps": 50},
                             max_concurrent=3)
    real_handle = _remote._handle
    interrupted: list[bool] = []

    def interrupt_after_created(ev: Any, *args: Any) -> None:
        real_handle(ev, *args)
        if ev.kind == "created" and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt  # as Ctrl-C would, while the controller records trial 0

    monkeypatch.setattr(_remote, "_handle", interrupt_after_created)
    with pytest.raises(KeyboardInterrupt):
        study.optimize()
    assert any(job.task.status == "in_progress" for job in io.fleet.tasks.values())
    for job in io.fleet.tasks.values():
        job._done.wait(10)  # the tasks run to completion on the "fleet"
    monkeypatch.setattr(_remote, "_handle", real_handle)
    again, io2 = _fleet_study(tmp_path, slow_curve, space, monkeypatch, optimizer="grid", fixed={"steps": 50},
                              max_concurrent=3)
    io2.fleet.tasks.update(io.fleet.tasks)
    result = again.optimize()
    assert sorted(t.params["x"] for t in result.trials) == [0.0, 0.5, 1.0]
    assert len(io.fleet.launched) + len(io2.fleet.launched) == 3  # nothing ran twice


@pytest.mark.parametrize("executor", ["local", "remote"])
def test_example_study_binds_to_the_gptq_objective(tmp_path: Path, executor: str) -> None:
    """The whole study (space + fixed) against GPTQParams, as `hposdk run` checks it before any compute."""
    from hposdk.exceptions import MissingExtraError
    from hposdk.study import StudyConfig

    cfg = StudyConfig.from_yaml(EXAMPLE)
    cfg = StudyConfig.model_validate({**cfg.model_dump(), "storage": str(tmp_path),
                                      "backend_options": {**cfg.backend_options, "executor": executor}})
    try:
        study = Study.from_config(cfg, progress=False)
    except MissingExtraError as exc:
        pytest.skip(f"the gptq objective is not installed: {exc}")
    assert study.spec.objective_ref == "hposdk.objectives.gptq:objective" and study.n_trials == 10


@pytest.mark.parametrize(("status", "value", "reason", "state", "error"), [
    ("completed", 0.5, None, TrialState.COMPLETE, None),
    ("completed", None, None, TrialState.FAILED, "without reporting the objective scalar 'openllm'/'average'"),
    ("failed", None, None, TrialState.FAILED, "status 'failed'"),
    ("stopped", 0.7, "pruned", TrialState.PRUNED, None),
    ("stopped", 0.7, "budget", TrialState.COMPLETE, None),  # BOHB / max_iteration_per_job stop = done at budget
    ("stopped", 0.7, "timeout", TrialState.FAILED, "exceeded trial_timeout"),
    ("stopped", None, None, TrialState.FAILED, "was aborted"),
])
def test_outcome_of_a_user_task(status: str, value: float | None, reason: str | None, state: TrialState,
                                error: str | None) -> None:
    out = _remote.outcome_from_status(status, value, [], "score", "openllm", "average", "", reason)
    assert out.state is state
    assert (out.error is None) if error is None else (error in (out.error or ""))
    if state is TrialState.COMPLETE:
        assert out.value == value and out.metrics == {"score": value}


def test_fleet_job_class_composes_with_clearml_job() -> None:
    from clearml.automation.job import ClearmlJob

    cls = type("HposdkFleetJob", (_remote.FleetJob, ClearmlJob), {})
    assert [c.__name__ for c in cls.__mro__[:3]] == ["HposdkFleetJob", "FleetJob", "ClearmlJob"]
    for name in ("launch", "abort", "is_stopped"):  # the hooks hposdk relies on exist in ClearML's job
        assert callable(getattr(ClearmlJob, name))
