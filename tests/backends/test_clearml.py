"""backend='clearml': exact space translation (golden), and ClearML's strategies run locally (no server)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("clearml")

from hposdk import Study
from hposdk.backends import get_backend
from hposdk.exceptions import ConfigError, UnsupportedError
from hposdk.result import TrialState
from hposdk.spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from hposdk.testing import SPACE_CASES, BackendConformance, SpaceConformance, objectives


@pytest.fixture(autouse=True)
def _offline_clearml(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing may reach a server or write to the real home.
    home = tmp_path_factory.mktemp("clearml-home")
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLEARML_API_HOST", raising=False)


from hposdk.backends.clearml._strategies import HposdkGridSearch, clearml_random  # noqa: E402
from hposdk.backends.clearml._translate import (  # noqa: E402
    check_task_strings,
    decode,
    decode_configspace,
    decode_string,
    to_clearml,
    to_configspace,
)

LOCAL = {"executor": "local"}


# --- golden translations -----------------------------------------------------------------------


def _golden(space: SearchSpace, optimizer: str = "random") -> list[dict[str, Any]]:
    return [p.to_dict() for p in to_clearml(space, optimizer=optimizer)]


def test_golden_uniform_continuous() -> None:
    assert _golden(SearchSpace({"x": Uniform(-2.0, 3.0)})) == [
        {"type": "UniformParameterRange", "name": "Args/x", "min_value": -2.0, "max_value": 3.0,
         "step_size": None, "include_max": True}]


def test_golden_uniform_step_is_the_exact_grid() -> None:
    # ClearML's own UniformParameterRange(0.1, 0.7, step 0.2) samples {0.1, 0.3, 0.5} and grids {0.1, 0.3, 0.7}.
    assert _golden(SearchSpace({"x": Uniform(0.1, 0.7, step=0.2)})) == [
        {"type": "DiscreteParameterRange", "name": "Args/x", "values": [0.1, 0.3, 0.5, 0.7]}]
    assert _golden(SearchSpace({"x": Uniform(0.0, 0.3, step=0.1)}), "grid")[0]["values"] == [0.0, 0.1, 0.2, 0.3]


def test_golden_seed_dampening_frac() -> None:
    values = _golden(SearchSpace({"dampening_frac": Uniform(0.01, 0.1, step=0.01)}))[0]["values"]
    assert values == [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]


def test_golden_loguniform_bounds_become_exponents() -> None:
    (d,) = _golden(SearchSpace({"lr": LogUniform(1e-4, 1e-1)}))
    assert d == {"type": "LogUniformParameterRange", "name": "Args/lr", "min_value": -4.0, "max_value": -1.0,
                 "step_size": None, "include_max": True, "base": 10}


def test_golden_loguniform_step_is_the_exact_int_grid() -> None:
    # The seed's LogUniformParameterRange(9, 11, base=2, step_size=1) would give 512.0/1024.0 and never 2048.
    assert _golden(SearchSpace({"num_samples": LogUniform(512, 2048, base=2, step=1)}), "grid") == [
        {"type": "DiscreteParameterRange", "name": "Args/num_samples", "values": [512, 1024, 2048]}]
    values = _golden(SearchSpace({"x": LogUniform(1e-4, 1e-1, step=1)}))[0]["values"]
    assert values == [0.0001, 0.001, 0.01, 0.1]


def test_golden_integer_includes_max() -> None:
    assert _golden(SearchSpace({"n": Integer(0, 10, step=5)})) == [
        {"type": "UniformIntegerParameterRange", "name": "Args/n", "min_value": 0, "max_value": 10,
         "step_size": 5, "include_max": True}]


def test_golden_integer_log() -> None:
    (d,) = _golden(SearchSpace({"n": Integer(1, 1000, log=True)}))
    assert d["type"] == "LogUniformParameterRange" and d["base"] == math.e
    assert d["min_value"] == pytest.approx(math.log(0.5)) and d["max_value"] == pytest.approx(math.log(1000.5))
    assert _golden(SearchSpace({"n": Integer(1, 4, log=True)}), "grid")[0]["values"] == [1, 2, 3, 4]


def test_golden_discrete_keeps_types_and_section() -> None:
    space = SearchSpace({"z": Discrete([True, 1, "1", None, 2.5])})
    assert [p.to_dict() for p in to_clearml(space, optimizer="random", section="General")] == [
        {"type": "DiscreteParameterRange", "name": "General/z", "values": [True, 1, "1", None, 2.5]}]
    assert [p.name for p in to_clearml(space, optimizer="random", section=None)] == ["z"]


def test_grid_refuses_continuous() -> None:
    with pytest.raises(UnsupportedError, match=r"'x'.*101 points"):
        to_clearml(SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="grid")


def test_clearml_own_ranges_really_are_wrong() -> None:
    """The quirks the translation absorbs, observed on the installed ClearML (not assumed)."""
    from clearml.automation.parameters import LogUniformParameterRange, UniformParameterRange

    stepped = UniformParameterRange("x", 0.1, 0.7, step_size=0.2)
    with clearml_random("quirk"):
        drawn = {round(stepped.get_value()["x"], 9) for _ in range(300)}
    assert 0.7 not in drawn  # randrange(0, round(steps)) never reaches max
    assert [v["x"] for v in stepped.to_list()] == [0.1, 0.30000000000000004, 0.7]  # 0.5 dropped, drift
    seed = UniformParameterRange("Args/dampening_frac", min_value=0.01, max_value=0.1, step_size=0.01)
    grid = [v["Args/dampening_frac"] for v in seed.to_list()]
    assert 0.060000000000000005 in grid and 0.06999999999999999 in grid  # what the seed's tasks received
    with clearml_random("quirk"):
        assert max(seed.get_value()["Args/dampening_frac"] for _ in range(500)) < 0.095  # 0.1 never drawn
    log = LogUniformParameterRange("n", 9, 11, base=2, step_size=1)
    assert [v["n"] for v in log.to_list()] == [512.0, 1024.0, 2048.0]  # floats, not ints
    with clearml_random("quirk"):
        assert {log.get_value()["n"] for _ in range(200)} == {512.0, 1024.0}  # 2048 unreachable


def test_decode_snaps_to_exact_values() -> None:
    space = SearchSpace({"x": Uniform(0.0, 0.3, step=0.1), "n": Integer(1, 1000, log=True),
                         "lr": LogUniform(1e-4, 1e-1), "z": Discrete([True, 1, "1"])})
    out = decode(space, {"Args/x": 0.30000000000000004, "Args/n": 36.6, "Args/lr": 10 ** -4.0 * (1 - 1e-15),
                         "Args/z": 1})
    assert out == {"x": 0.3, "n": 37, "lr": 1e-4, "z": 1}
    assert type(out["z"]) is int and type(out["n"]) is int


@pytest.mark.parametrize(("param", "text", "expected"), [
    (Discrete([True, "a", None, 2.5]), "True", True),
    (Discrete([True, "a", None, 2.5]), "", None),
    (Discrete([True, "a", None, 2.5]), "2.5", 2.5),
    (LogUniform(512, 2048, base=2, step=1), "1024", 1024),
    (Uniform(0.01, 0.1, step=0.01), "0.03", 0.03),
    (Uniform(0.0, 1.0), "1", 1.0),
    (Integer(1, 4), "3", 3),
    (Integer(1, 1000, log=True), "36.6", 37),
])
def test_decode_string(param: Any, text: str, expected: Any) -> None:
    got = decode_string(param, text)
    assert got == expected and type(got) is type(expected)


def test_decode_string_refuses_outside() -> None:
    with pytest.raises(ValueError, match="not one of"):
        decode_string(Discrete(["a"]), "b")
    with pytest.raises(ValueError, match="outside"):
        decode_string(Integer(1, 4), "5")


def test_task_strings_must_be_distinct() -> None:
    check_task_strings(SearchSpace({"z": Discrete([True, "a", None, 2.5])}))
    with pytest.raises(UnsupportedError, match=r"'z'.*'1'"):
        check_task_strings(SearchSpace({"z": Discrete([1, "1"])}))
    with pytest.raises(UnsupportedError, match="''"):
        check_task_strings(SearchSpace({"z": Discrete([None, ""])}))


def test_configspace_translation_for_bohb() -> None:
    space = SearchSpace({k: SPACE_CASES[k] for k in SPACE_CASES})
    cs = to_configspace(space, seed=0)
    assert "q" not in repr(cs)
    for config in cs.sample_configuration(200):
        point = decode_configspace(space, dict(config))
        assert space.contains(point), point
        assert space.validate_params(point) == point
    reached = Counter(decode_configspace(space, dict(c))["loguniform_base2_step"] for c in cs.sample_configuration(200))
    assert set(reached) == {512, 1024, 2048}


# --- the shared suites ---------------------------------------------------------------------------


class TestClearMLSampling(SpaceConformance):
    """ClearML's own get_value() (its RNG seeded) on the translated ranges, decoded back; grid via GridSearch."""

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        params = to_clearml(space, optimizer="random")
        points = []
        with clearml_random(f"conformance:{seed}"):
            for _ in range(n):
                raw: dict[str, Any] = {}
                for p in params:
                    raw.update(p.get_value())
                points.append(decode(space, raw))
        return points

    def grid(self, space: SearchSpace) -> list[dict[str, Any]]:
        grid = HposdkGridSearch(base_task_id="local", hyper_parameters=to_clearml(space, optimizer="grid"),
                                objective_metric=None, execution_queue="", num_concurrent_workers=1,
                                hposdk_space=space.to_dict(), hposdk_offline=True)
        out = []
        while (point := grid.hposdk_next()) is not None:
            out.append(point)
        return out


class TestClearMLLocalInProcess(BackendConformance):
    backend = "clearml"
    backend_options = LOCAL
    pruner = "median"
    pruner_options = {"n_startup_trials": 2, "n_warmup_steps": 1}


class TestClearMLLocalWorkerProcesses(BackendConformance):
    backend = "clearml"
    backend_options = {"executor": "local", "start_method": "forkserver"}
    pruner = "successive_halving"
    max_concurrent = 2


# --- the local executor, optimizer by optimizer ------------------------------------------------------


def _study(tmp_path: Path, objective: Any, space: SearchSpace, **kwargs: Any) -> Study:
    kwargs.setdefault("metric", "loss")
    kwargs.setdefault("backend_options", LOCAL)
    return Study(objective, space, backend="clearml", storage=str(tmp_path / "studies"), progress=False, **kwargs)


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_local_executor_each_optimizer(tmp_path: Path, optimizer: str) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.1), "y": LogUniform(512, 2048, base=2, step=1)})
    result = _study(tmp_path, objectives.quadratic, space, optimizer=optimizer, n_trials=12, seed=1).optimize()
    assert len(result.trials) == 12
    assert all(t.state is TrialState.COMPLETE for t in result.trials)
    assert len({repr(sorted(t.params.items())) for t in result.trials}) == 12  # ClearML's no-repeat rule
    assert {type(t.params["y"]) for t in result.trials} == {int}


def test_random_matches_across_runs_and_differs_by_seed(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 1000, log=True)})
    a = _study(tmp_path / "a", objectives.quadratic, space, optimizer="random", n_trials=4, seed=3).optimize()
    b = _study(tmp_path / "b", objectives.quadratic, space, optimizer="random", n_trials=4, seed=3).optimize()
    c = _study(tmp_path / "c", objectives.quadratic, space, optimizer="random", n_trials=4, seed=4).optimize()
    params = [[t.params for t in sorted(r.trials, key=lambda t: t.number)] for r in (a, b, c)]
    assert params[0] == params[1] != params[2]


def test_random_space_covered_ends_the_study(tmp_path: Path) -> None:
    space = SearchSpace({"z": Discrete(["a", "b", "c"])})
    result = _study(tmp_path, objectives.echo_types, space, optimizer="random", n_trials=10, seed=0).optimize()
    assert sorted(t.params["z"] for t in result.trials) == ["a", "b", "c"]


def test_tpe_options_and_pruner_are_passed_through(tmp_path: Path) -> None:
    space = SearchSpace({"x": Uniform(0.0, 3.0)})
    result = _study(tmp_path, objectives.learning_curve, space, optimizer="tpe", n_trials=12, seed=0,
                    optimizer_options={"n_startup_trials": 3}, pruner="median",
                    pruner_options={"n_startup_trials": 2, "n_warmup_steps": 1}, fixed={"steps": 6}).optimize()
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned and all(len(t.reports) < 6 for t in pruned)


def test_tpe_unknown_sampler_option_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_startup_trail"):
        _study(tmp_path, objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="tpe",
               n_trials=2, optimizer_options={"n_startup_trail": 2})


@pytest.mark.parametrize("optimizer", ["grid", "random"])
def test_grid_and_random_prune_too(tmp_path: Path, optimizer: str) -> None:
    """ClearML prunes only inside OptimizerOptuna; hposdk's shadow study gives grid/random the same pruner."""
    space = SearchSpace({"x": Uniform(0.0, 3.0, step=0.25)})
    result = _study(tmp_path, objectives.learning_curve, space, optimizer=optimizer, n_trials=13, seed=0,
                    pruner="median", pruner_options={"n_startup_trials": 2, "n_warmup_steps": 1},
                    fixed={"steps": 6}).optimize()
    pruned = result.by_state(TrialState.PRUNED)
    assert pruned and all(len(t.reports) < 6 for t in pruned)
    assert result.best.params == {"x": 0.25}


def test_bohb_refuses_a_pruner(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="successive halving"):
        _study(tmp_path, objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="bohb",
               n_trials=4, budget={"min_budget": 1, "max_budget": 9}, pruner="median",
               backend_options={"executor": "remote"})


def test_bohb_local_refused_with_the_alternative(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match=r"executor='remote'.*backend='local', optimizer='bohb'"):
        _study(tmp_path, objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="bohb",
               n_trials=4, budget={"min_budget": 1, "max_budget": 9})


def test_grid_continuous_refused(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, UnsupportedError), match="continuous"):
        _study(tmp_path, objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="grid")


def test_unknown_backend_option_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="executer"):
        _study(tmp_path, objectives.quadratic, SearchSpace({"x": Uniform(0.0, 1.0)}), optimizer="random",
               n_trials=1, backend_options={"executer": "local"})


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_failed_trials_do_not_stop_the_study(tmp_path: Path, optimizer: str) -> None:
    """clearml/clearml#644: one failed job crashed ClearML's optimizer; here it is a FAILED trial."""
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.25)})
    result = _study(tmp_path, objectives.quadratic, space, optimizer=optimizer, n_trials=5, seed=2,
                    fixed={"fail_above": 0.6}).optimize()
    assert len(result.trials) == 5
    failed = result.by_state(TrialState.FAILED)
    assert {t.params["x"] for t in failed} == {0.75, 1.0}
    assert all("deliberate failure" in (t.error or "") for t in failed)
    assert result.best.params == {"x": 0.25}


@pytest.mark.parametrize("optimizer", ["grid", "random", "tpe"])
def test_resume_without_repeats(tmp_path: Path, optimizer: str) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})
    log = tmp_path / "calls.txt"
    kw: dict[str, Any] = dict(optimizer=optimizer, seed=5, name="resumable", fixed={"log_path": str(log)})
    first = _study(tmp_path, objectives.quadratic, space, n_trials=3, **kw).optimize()
    second = _study(tmp_path, objectives.quadratic, space, n_trials=7, **kw).optimize()
    assert len(second.trials) == 7
    calls = Counter(int(n) for n in log.read_text().split())
    assert sorted(calls) == list(range(7)) and set(calls.values()) == {1}
    assert len({t.params["x"] for t in second.trials}) == 7  # finished points are not proposed again
    by_number = {t.number: t.params for t in second.trials}
    assert [by_number[t.number] for t in first.trials] == [t.params for t in first.trials]


def test_resume_reruns_unfinished_trial(tmp_path: Path) -> None:
    """A trial the record shows as started but never finished runs again with the same number and params."""
    import json

    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.125)})
    log = tmp_path / "calls.txt"
    kw: dict[str, Any] = dict(optimizer="random", seed=5, name="crashed", fixed={"log_path": str(log)})
    _study(tmp_path, objectives.quadratic, space, n_trials=2, **kw).optimize()
    record = tmp_path / "studies" / "crashed" / "study.jsonl"
    lines = record.read_text().splitlines()
    finish_1 = next(i for i, line in enumerate(lines)
                    if json.loads(line).get("event") == "finish" and json.loads(line)["trial"]["number"] == 1)
    lost_params = json.loads(lines[finish_1])["trial"]["params"]
    record.write_text("\n".join(lines[:finish_1]) + "\n")  # as if the driver died during trial 1
    result = _study(tmp_path, objectives.quadratic, space, n_trials=3, **kw).optimize()
    assert {t.number: t.params for t in result.trials}[1] == lost_params
    assert Counter(int(n) for n in log.read_text().split()) == Counter({0: 1, 1: 2, 2: 1})


def test_capabilities_and_registry() -> None:
    cls = get_backend("clearml")
    assert cls.capabilities.optimizers == ("grid", "random", "tpe", "bohb")
    assert cls.options_model.model_config.get("extra") == "forbid"


# --- optional dependency ------------------------------------------------------------------------------

_SUBPROCESS_ENV = {**os.environ, "CLEARML_OFFLINE_MODE": "1"}


def test_import_hposdk_does_not_import_clearml() -> None:
    code = "import sys, hposdk; print('clearml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_SUBPROCESS_ENV)
    assert out.stdout.strip() == "False"


def test_missing_clearml_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['clearml'] = None  # simulates an environment without clearml\n"
        "from hposdk.backends import get_backend\n"
        "from hposdk.exceptions import MissingExtraError\n"
        "try:\n"
        "    get_backend('clearml')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_SUBPROCESS_ENV)
    assert "pip install hposdk[clearml]" in out.stdout, out.stdout + out.stderr
