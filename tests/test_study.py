"""Study: validation before compute, the failure policy, results and exports."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import hposdk
from hposdk import (
    BackendNotFoundError,
    BindingError,
    ConfigError,
    Discrete,
    Integer,
    LogUniform,
    NoCompletedTrialsError,
    SearchSpace,
    Study,
    StudyRecordError,
    StudyResult,
    TrialState,
    Uniform,
    UnsupportedError,
    objective,
)
from hposdk.backends._base import UnreadParameterWarning
from hposdk.testing import objectives

SPACE = SearchSpace(
    {
        "dampening_frac": Uniform(0.01, 0.1, step=0.01),
        "num_samples": LogUniform(512, 2048, base=2, step=1),
        "lr": LogUniform(1e-5, 1e-3),
        "layers": Integer(1, 4),
        "batch_size": Discrete([3, 4, 5, 6]),
    }
)


def issue_objective(trial: Any) -> dict[str, float]:
    p = trial.params
    loss = acc = 0.0
    for epoch in range(3):
        loss = (p["lr"] * 1e4 - 3) ** 2 + p["layers"] + p["dampening_frac"] + p["batch_size"] / 100
        loss += p["num_samples"] / 1e5 + 0.1 * (2 - epoch)
        acc = 1 / (1 + loss)
        trial.report(epoch, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss, "acc": acc}


def never_called(trial: Any) -> float:
    raise AssertionError("validation must fail before any trial runs")


def test_the_issue_example_runs_with_tpe_two_workers_and_pruning(tmp_path: Path) -> None:
    result = Study(issue_objective, SPACE, metric="loss", mode="min", backend="local", optimizer="tpe",
                   n_trials=30, max_concurrent=2, seed=0, storage=tmp_path, progress=False,
                   optimizer_options={"n_startup_trials": 5}, pruner="median").optimize()
    assert len(result.trials) == 30
    assert {t.state for t in result.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    best = result.best
    assert best.value == min(t.value for t in result.completed if t.value is not None)
    assert SPACE.contains(best.params)
    df = result.to_dataframe()
    assert len(df) == 30 and {"params_lr", "metrics_acc", "value", "state"} <= set(df.columns)
    # TPE should beat its own random start-up phase on this smooth function.
    startup = min(t.value for t in result.trials if t.number < 5 and t.value is not None)
    assert best.value <= startup


def test_seeded_random_search_is_reproducible_and_differs_across_seeds(tmp_path: Path) -> None:
    def run(seed: int, sub: str) -> list[dict[str, Any]]:
        r = Study(issue_objective, SPACE, metric="loss", optimizer="random", n_trials=5, seed=seed,
                  storage=tmp_path / sub, progress=False).optimize()
        return [t.params for t in sorted(r.trials, key=lambda t: t.number)]

    assert run(1, "a") == run(1, "b")
    assert run(1, "c") != run(2, "d")


# --- validation before compute -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"backend": "rya"}, BackendNotFoundError, r"unknown backend 'rya'.*Did you mean 'ray'"),
        ({"optimizer": "cmaes"}, UnsupportedError, r"no optimizer 'cmaes'; it offers grid, random, tpe"),
        ({"optimizer_options": {"n_startup": 2}}, ConfigError, r"unknown option 'n_startup'.*n_startup_trials"),
        ({"optimizer": "random", "optimizer_options": {"x": 1}}, ConfigError, "takes no optimizer_options"),
        ({"pruner": "asha"}, UnsupportedError, r"no pruner 'asha'; it offers median"),
        ({"pruner": "median", "pruner_options": {"warmup": 1}}, ConfigError, r"unknown option 'warmup'"),
        ({"backend_options": {"workers": 4}}, ConfigError, r"workers.*unknown field"),
        ({"mode": "minimize"}, ConfigError, r"mode.*'min' or 'max'"),
        ({"n_trials": None}, ConfigError, r"n_trials: required"),
        ({"n_trials": 0}, ConfigError, r"n_trials.*greater than 0"),
        ({"fixed": {"lr": 0.1}}, ConfigError, r"also in the search space"),
        ({"optimizer": "grid"}, ConfigError, r"'lr' is continuous"),
        ({"budget": {"min_budget": 5, "max_budget": 1}}, ConfigError, r"min_budget <= max_budget"),
    ],
)
def test_invalid_studies_are_refused_before_any_trial(tmp_path: Path, kwargs: dict[str, Any], error: type,
                                                      pattern: str) -> None:
    base: dict[str, Any] = {"metric": "loss", "n_trials": 3, "storage": tmp_path, "progress": False}
    with pytest.raises(error, match=pattern):
        Study(never_called, SPACE, **{**base, **kwargs}).optimize()


def test_a_lambda_cannot_run_in_worker_processes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"module-level function"):
        Study(lambda t: 0.0, SPACE, metric="loss", n_trials=2, max_concurrent=2, storage=tmp_path)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float
    layers: int = 2
    batch_size: int = 32


@objective(params=Params, metrics=["loss", "acc"])
def declared(trial: Any) -> dict[str, float]:
    p = Params(**trial.params)
    return {"loss": p.lr, "acc": 1 - p.lr}


def test_binding_check_catches_a_misspelt_key_before_compute(tmp_path: Path) -> None:
    space = SearchSpace({"learning_rate": LogUniform(1e-4, 1e-1)})
    with pytest.raises(BindingError, match=r"'learning_rate' is not a parameter.*Did you mean 'lr'"):
        Study(declared, space, metric="loss", n_trials=2, storage=tmp_path)


def test_binding_check_requires_required_fields_and_compatible_values(tmp_path: Path) -> None:
    with pytest.raises(BindingError, match=r"requires \['lr'\]"):
        Study(declared, SearchSpace({"layers": Integer(1, 3)}), metric="loss", n_trials=2, storage=tmp_path)
    with pytest.raises(BindingError, match=r"refuses"):
        Study(declared, SearchSpace({"lr": LogUniform(1e-4, 1e-1), "layers": Discrete(["deep", "wide"])}),
              metric="loss", n_trials=2, storage=tmp_path)


def test_declared_metrics_are_checked_before_compute(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"returns \['loss', 'acc'\], not 'accuracy'.*Did you mean 'acc'"):
        Study(declared, SearchSpace({"lr": LogUniform(1e-4, 1e-1)}), metric="accuracy", n_trials=2,
              storage=tmp_path)


def test_an_unread_key_warns_at_run_time(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "optim_lr": Uniform(0.0, 1.0)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Study(objectives.write_and_return, space, metric="loss", optimizer="random", n_trials=2, seed=0,
              storage=tmp_path, progress=False).optimize()
    messages = [str(w.message) for w in caught if issubclass(w.category, UnreadParameterWarning)]
    assert len(messages) == 1 and "['optim_lr']" in messages[0]


# --- failure policy ----------------------------------------------------------------------------


def test_retries_rerun_a_failed_trial_with_the_same_params(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    result = Study(objectives.flaky, space, metric="loss", optimizer="random", n_trials=3, retries=1, seed=0,
                   storage=tmp_path, progress=False).optimize()
    assert [t.state for t in result.trials] == [TrialState.COMPLETE] * 3
    assert all(t.attempt == 2 for t in result.trials)
    no_retry = Study(objectives.flaky, space, metric="loss", optimizer="random", n_trials=2, seed=0,
                     storage=tmp_path / "b", progress=False).optimize()
    assert all("ConnectionError: transient failure" in (t.error or "") for t in no_retry.trials)


def test_timeouts_and_crashing_processes_become_failed_trials(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    result = Study(objectives.die, space, metric="loss", optimizer="grid", max_concurrent=2, storage=tmp_path,
                   backend_options={"start_method": "forkserver"}, progress=False).optimize()
    states = {t.params["x"]: (t.state, t.error) for t in result.trials}
    assert states[0.25][0] is TrialState.COMPLETE
    assert states[0.75][0] is TrialState.FAILED and "died (exit code 3)" in (states[0.75][1] or "")
    slow = Study(objectives.sleepy, SearchSpace({"x": Discrete([0.1])}), metric="loss", optimizer="grid",
                 trial_timeout=0.5, fixed={"sleep": 30}, storage=tmp_path / "t", progress=False,
                 backend_options={"start_method": "forkserver"}).optimize()
    assert slow.trials[0].state is TrialState.FAILED
    assert "exceeded trial_timeout=0.5s" in (slow.trials[0].error or "")
    assert slow.trials[0].duration_s is not None and slow.trials[0].duration_s < 10


def test_a_study_where_every_trial_fails_ends_with_a_summary(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.5, 1.0)})
    result = Study(objectives.quadratic, space, metric="loss", optimizer="tpe", n_trials=4, seed=0,
                   fixed={"fail_above": 0.0}, storage=tmp_path, progress=False).optimize()
    assert len(result.by_state("FAILED")) == 4
    with pytest.raises(NoCompletedTrialsError, match=r"4 failed.*deliberate failure"):
        _ = result.best
    assert "4 failed" in result.summary()


# --- resume and records ------------------------------------------------------------------------


def test_changing_the_space_of_an_existing_study_is_refused(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"metric": "loss", "optimizer": "random", "n_trials": 2, "storage": tmp_path,
                          "name": "s", "progress": False, "seed": 0}
    Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), **kw).optimize()
    with pytest.raises(StudyRecordError, match="different space"):
        Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 2.0)}), **kw)
    fresh = Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 2.0)}), resume=False, **kw).optimize()
    assert len(fresh.trials) == 2
    assert list((tmp_path / "s").glob("study.*.jsonl.bak")), "the old record must be kept aside, not deleted"


def test_the_seed_is_recorded_so_a_resumed_study_continues_the_same_sequence(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"metric": "loss", "optimizer": "random", "storage": tmp_path, "name": "s",
                          "progress": False}
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    Study(objectives.quadratic, space, n_trials=2, **kw).optimize()  # seed chosen at random, recorded
    resumed = Study(objectives.quadratic, space, n_trials=4, **kw).optimize()
    seed = json.loads((tmp_path / "s" / "study.jsonl").read_text().splitlines()[0])["seed"]
    assert [t.params for t in resumed.trials] == [space.sample_for_trial(seed, n) for n in range(4)]


def test_result_exports_round_trip(tmp_path: Path) -> None:
    result = Study(issue_objective, SPACE, metric="loss", optimizer="random", n_trials=4, seed=0,
                   storage=tmp_path, progress=False).optimize()
    again = StudyResult.from_json(result.to_json(tmp_path / "r.json"))
    assert again == result
    assert StudyResult.from_json(tmp_path / "r.json") == result
    lines = result.to_csv(tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("number,state,value,params_dampening_frac") and len(lines) == 5
    assert hposdk.load_study("test_study.issue_objective", storage=tmp_path) == result
    with pytest.raises(StudyRecordError, match=r"studies there: test_study\.issue_objective"):
        hposdk.load_study("nope", storage=tmp_path)


def mixed_outcomes(trial: Any) -> Any:
    """Completes, fails (an exception, then NaN), is pruned, or returns extra metrics."""
    x = trial.params["x"]
    kind = trial.number % 4
    if kind == 1:
        raise RuntimeError("boom")
    if kind == 2:
        return float("nan")
    for step in range(3):
        trial.report(step, loss=x + step)
        if kind == 3 and trial.should_prune():
            break
    return {"loss": x, "extra": float("inf"), "note": "é"}


def _same(a: StudyResult, b: StudyResult) -> bool:
    # Trial by trial as JSON: a NaN metric is never == another NaN object.
    return (a.model_copy(update={"trials": ()}) == b.model_copy(update={"trials": ()})
            and [t.model_dump_json() for t in a.trials] == [t.model_dump_json() for t in b.trials])


@pytest.mark.parametrize("optimizer", ["random", "tpe"])
def test_the_result_optimize_returns_is_the_recorded_study(tmp_path: Path, optimizer: str) -> None:
    # optimize() builds its result from what it recorded, without replaying the file: both must
    # agree, including failures, NaN/inf, pruned trials, retries and a resumed record.
    kw: dict[str, Any] = {"metric": "loss", "optimizer": optimizer, "storage": tmp_path, "name": "s",
                          "progress": False, "seed": 3, "retries": 1, "pruner": "median",
                          "pruner_options": {"n_startup_trials": 0, "n_warmup_steps": 0}}
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = Study(mixed_outcomes, space, n_trials=6, **kw).optimize()
        assert _same(first, hposdk.load_study("s", storage=tmp_path))
        resumed = Study(mixed_outcomes, space, n_trials=12, **kw).optimize()
    assert _same(resumed, hposdk.load_study("s", storage=tmp_path))
    assert {t.state for t in resumed.trials} >= {TrialState.COMPLETE, TrialState.FAILED, TrialState.PRUNED}
    assert [t.model_dump_json() for t in resumed.trials[:6]] == [t.model_dump_json() for t in first.trials]
    assert all(t.attempt == 2 for t in resumed.trials if t.state is TrialState.FAILED)


def test_a_truncated_last_line_from_a_crash_is_ignored(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"metric": "loss", "optimizer": "random", "storage": tmp_path, "name": "s",
                          "progress": False, "seed": 0}
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    Study(objectives.quadratic, space, n_trials=2, **kw).optimize()
    record = tmp_path / "s" / "study.jsonl"
    with open(record, "a") as fh:
        fh.write('{"event":"finish","trial":{"numb')  # killed mid-write
    with pytest.warns(UserWarning, match="incomplete last line"):
        result = Study(objectives.quadratic, space, n_trials=3, **kw).optimize()
    assert len(result.trials) == 3
    assert all(json.loads(line) for line in record.read_text().splitlines())


# --- the public surface ------------------------------------------------------------------------


def test_import_hposdk_loads_no_engine() -> None:
    code = ("import sys, hposdk; heavy = [m for m in ('optuna', 'ray', 'clearml', 'torch', 'hpbandster', "
            "'pandas', 'lm_eval', 'llmcompressor') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_all_is_honest() -> None:
    import types

    public = {n for n in dir(hposdk) if not n.startswith("_")} | {"__version__"}
    modules = {n for n in public if isinstance(getattr(hposdk, n), types.ModuleType)}
    assert set(hposdk.__all__) == public - modules
    for name in hposdk.__all__:
        assert getattr(hposdk, name) is not None


# --- callbacks and Study.stop() ---------------------------------------------------------------------


def _stop_after(n: int, seen: list[Any]) -> Any:
    def callback(study: Study, trial: Any) -> None:
        seen.append(trial)
        if len(seen) == n:
            study.stop()

    return callback


def test_stop_is_noted_in_the_record_and_the_result_is_what_ran(tmp_path: Path) -> None:
    seen: list[Any] = []
    study = Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer="tpe",
                  n_trials=30, seed=0, storage=str(tmp_path), name="budgeted", progress=False)
    result = study.optimize(callbacks=[_stop_after(4, seen)])
    assert [t.number for t in result.trials] == [0, 1, 2, 3] == [t.number for t in seen]
    assert seen == list(result.trials)  # the callback saw the recorded trial itself
    events = [json.loads(line) for line in (tmp_path / "budgeted" / "study.jsonl").read_text().splitlines()]
    notes = [e for e in events if e.get("event") == "note"]
    assert notes[-1]["kind"] == "stopped" and notes[-1]["by"] == "Study.stop()" and notes[-1]["finished"] == 4
    # A later optimize() of the same object runs normally (the stop belonged to the last run).
    assert len(study.optimize().trials) == 30


@pytest.mark.parametrize("optimizer", ["bohb", "hyperband"])
def test_a_callback_stops_hpbandster_mid_iteration(tmp_path: Path, optimizer: str) -> None:
    seen: list[Any] = []
    study = Study(objectives.epochs, SearchSpace({"x": Uniform(0.0, 3.0)}), metric="loss",
                  optimizer=optimizer, n_trials=40, seed=0, storage=str(tmp_path), progress=False,
                  budget={"min_budget": 1, "max_budget": 9, "eta": 3})
    result = study.optimize(callbacks=[_stop_after(5, seen)])
    assert len(result.trials) == 5 and all(t.budget == 1 for t in result.trials)  # the first rung, cut short
    resumed = Study(objectives.epochs, SearchSpace({"x": Uniform(0.0, 3.0)}), metric="loss",
                    optimizer=optimizer, n_trials=40, seed=0, storage=str(tmp_path), progress=False,
                    budget={"min_budget": 1, "max_budget": 9, "eta": 3}).optimize()
    assert len(resumed.trials) == 40


def test_a_callback_stops_one_driver_of_a_shared_sqlite_record(tmp_path: Path) -> None:
    seen: list[Any] = []
    kw: dict[str, Any] = dict(metric="loss", optimizer="random", n_trials=10, seed=1, name="shared",
                              storage=f"sqlite:///{tmp_path / 'studies.db'}", progress=False)
    result = Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), **kw).optimize(
        callbacks=[_stop_after(2, seen)])
    assert len(result.trials) == 2
    assert len(Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), **kw).optimize().trials) == 10


def test_stop_outside_optimize_and_a_non_callable_callback_are_clear_errors(tmp_path: Path) -> None:
    study = Study(objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer="random",
                  n_trials=3, seed=0, storage=str(tmp_path), progress=False)
    with pytest.raises(RuntimeError, match=r"not running.*optimize\(callbacks="):
        study.stop()
    with pytest.raises(ConfigError, match=r"callbacks\[1\]: 'stop' is not callable"):
        study.optimize(callbacks=[lambda s, t: None, "stop"])  # type: ignore[list-item]
    assert not (tmp_path / study.name / "study.jsonl").exists()  # refused before anything ran


@pytest.mark.parametrize("where", ["directory", "sqlite"])
def test_starting_over_does_not_continue_the_old_trials_checkpoints(tmp_path: Path, where: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a database record keeps its trial directories under ./hposdk-studies
    storage = str(tmp_path) if where == "directory" else f"sqlite:///{tmp_path / 'studies.db'}"

    def run(resume: bool) -> StudyResult:
        return Study(objectives.epochs, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer="random",
                     n_trials=2, seed=0, name="ckpt", storage=storage, resume=resume, progress=False).optimize()

    first = run(True)
    assert [t.metrics["resumed_from"] for t in first.trials] == [0, 0]
    again = run(False)  # trial 0 of the new record must not find the old trial 0's checkpoint
    assert [t.metrics["resumed_from"] for t in again.trials] == [0, 0]
    assert [t.metrics["epochs"] for t in again.trials] == [9, 9]
    workdir = (tmp_path if where == "directory" else tmp_path / hposdk.study.DEFAULT_STORAGE) / "ckpt"
    kept = list(workdir.glob("trials.*.bak/trial_00000"))
    assert kept and any(kept[0].iterdir()), "the old trial's files must be kept aside, not deleted"
