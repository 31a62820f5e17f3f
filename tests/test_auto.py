"""optimizer='auto': the pure choice (every rule, every backend's capabilities) and its wiring into Study."""

from __future__ import annotations

import json

import pytest

from hposdk import Budget, ConfigError, Discrete, Integer, SearchSpace, Study, Uniform, load_study
from hposdk._auto import GP_MAX_DIMS, GP_MAX_TRIALS, Choice, choose, installed_engines
from hposdk.backends._base import Capabilities
from hposdk.backends.local import LocalBackend

LOCAL = LocalBackend.capabilities
# The Ray and ClearML capabilities as data, so these tests need neither engine.
RAY = Capabilities(optimizers=("grid", "random", "tpe", "bohb"), pruners=("asha", "hyperband", "median"),
                   multi_objective=("grid", "random", "tpe"))
CLEARML = Capabilities(optimizers=("grid", "random", "tpe", "bohb"),
                       pruners=("median", "percentile", "successive_halving", "hyperband"),
                       budget_optimizers=("bohb",))
ALL = frozenset({"torch", "scipy", "hpbandster", "ConfigSpace"})
CONTINUOUS = SearchSpace({"x": Uniform(0.0, 1.0), "y": Uniform(-1.0, 1.0)})
BUDGET = Budget(min_budget=1, max_budget=27, eta=3)


def test_small_continuous_budget_gets_the_gp_sampler() -> None:
    c = choose(CONTINUOUS, n_trials=100, capabilities=LOCAL, installed=ALL)
    assert (c.optimizer, c.pruner, dict(c.optimizer_options)) == ("gp", None, {})
    assert "Gaussian process" in c.reason


def test_many_trials_or_dimensions_get_tpe() -> None:
    assert choose(CONTINUOUS, n_trials=GP_MAX_TRIALS + 1, capabilities=LOCAL, installed=ALL).optimizer == "tpe"
    wide = SearchSpace({f"x{i}": Uniform(0.0, 1.0) for i in range(GP_MAX_DIMS + 1)})
    c = choose(wide, n_trials=100, capabilities=LOCAL, installed=ALL)
    assert c.optimizer == "tpe" and f"more than {GP_MAX_DIMS} parameters" in c.reason


def test_without_torch_the_gp_is_not_chosen_and_the_reason_says_how_to_get_it() -> None:
    c = choose(CONTINUOUS, n_trials=100, capabilities=LOCAL, installed=frozenset())
    assert c.optimizer == "tpe" and "hposdk[gp]" in c.reason


def test_backends_without_gp_get_tpe() -> None:
    for caps, backend in ((RAY, "ray"), (CLEARML, "clearml")):
        c = choose(CONTINUOUS, n_trials=100, capabilities=caps, installed=ALL, backend=backend)
        assert c.optimizer == "tpe" and "no GP sampler on this backend" in c.reason


def test_a_finite_space_within_the_budget_is_searched_exhaustively() -> None:
    space = SearchSpace({"a": Discrete(["x", "y"]), "n": Integer(1, 20)})
    assert choose(space, n_trials=40, capabilities=LOCAL, installed=ALL).optimizer == "grid"
    assert choose(space, n_trials=None, capabilities=LOCAL, installed=ALL).optimizer == "grid"
    assert choose(space, n_trials=39, capabilities=LOCAL, installed=ALL).optimizer == "gp"  # 40 points > 39 trials


def test_a_small_budget_with_a_fidelity_still_gets_the_gp_on_full_budgets() -> None:
    c = choose(CONTINUOUS, n_trials=100, budget=BUDGET, capabilities=LOCAL, installed=ALL)
    assert (c.optimizer, c.pruner) == ("gp", None)
    assert "every trial gets max_budget" in c.reason


def test_a_budget_means_tpe_with_hyperband_style_pruning_on_each_backend() -> None:
    local = choose(CONTINUOUS, n_trials=500, budget=BUDGET, capabilities=LOCAL, installed=ALL)
    assert (local.optimizer, local.pruner) == ("tpe", "hyperband")
    no_gp = choose(CONTINUOUS, n_trials=100, budget=BUDGET, capabilities=LOCAL, installed=frozenset())
    assert (no_gp.optimizer, no_gp.pruner) == ("tpe", "hyperband")
    ray = choose(CONTINUOUS, n_trials=100, budget=BUDGET, capabilities=RAY, installed=ALL, backend="ray")
    assert (ray.optimizer, ray.pruner) == ("tpe", "asha")
    clearml = choose(CONTINUOUS, n_trials=100, budget=BUDGET, capabilities=CLEARML, installed=ALL, backend="clearml")
    assert (clearml.optimizer, clearml.pruner) == ("tpe", "hyperband")


def test_a_budget_without_pruners_gets_bohb_and_a_given_pruner_is_kept() -> None:
    caps = Capabilities(optimizers=("random", "bohb"), budget_optimizers=("bohb",))
    assert choose(CONTINUOUS, n_trials=100, budget=BUDGET, capabilities=caps, installed=ALL).optimizer == "bohb"
    c = choose(CONTINUOUS, n_trials=500, budget=BUDGET, capabilities=LOCAL, installed=ALL, pruner="median")
    assert (c.optimizer, c.pruner) == ("tpe", None)  # None: the study's own pruner stays


def test_several_objectives() -> None:
    assert choose(CONTINUOUS, n_trials=100, objectives_count=2, capabilities=LOCAL, installed=ALL).optimizer == "tpe"
    assert choose(CONTINUOUS, n_trials=5000, objectives_count=2, capabilities=LOCAL,
                  installed=ALL).optimizer == "nsga2"
    caps = Capabilities(optimizers=("random", "tpe"), multi_objective=("random",))
    assert choose(CONTINUOUS, n_trials=100, objectives_count=2, capabilities=caps, installed=ALL).optimizer == "random"


def test_tiny_budgets_are_random() -> None:
    assert choose(CONTINUOUS, n_trials=5, capabilities=LOCAL, installed=ALL).optimizer == "random"


@pytest.mark.parametrize("caps", [LOCAL, RAY, CLEARML, Capabilities(optimizers=("grid", "random"))])
@pytest.mark.parametrize("n_trials", [3, 50, 500, 5000])
@pytest.mark.parametrize("budget", [None, BUDGET])
@pytest.mark.parametrize("objectives", [1, 2])
def test_the_choice_is_always_offered_by_the_backend(caps: Capabilities, n_trials: int, budget: Budget | None,
                                                     objectives: int) -> None:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "c": Discrete(["a", "b"])})
    for installed in (ALL, frozenset()):
        c = choose(space, n_trials=n_trials, capabilities=caps, installed=installed, budget=budget,
                   objectives_count=objectives)
        assert c.optimizer in caps.optimizers
        assert c.pruner is None or c.pruner in caps.pruners
        assert c.reason


def test_choice_round_trips_as_json() -> None:
    c = Choice("tpe", "because", pruner="hyperband")
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()
    assert c.describe().startswith("tpe + hyperband pruning: because")


def test_installed_engines_only_looks() -> None:
    import sys

    before = set(sys.modules)
    found = installed_engines()
    assert found <= {"torch", "scipy", "hpbandster", "ConfigSpace"}
    assert not {m for m in set(sys.modules) - before if m.split(".")[0] in ("torch", "hpbandster")}


def _objective(trial):
    return (trial.params["x"] - 0.3) ** 2


def test_study_resolves_auto_and_the_record_keeps_choice_and_reason(tmp_path) -> None:
    study = Study(_objective, {"x": Uniform(0.0, 1.0, step=0.25)}, metric="loss", optimizer="auto", n_trials=20,
                  storage=tmp_path, seed=0, progress=False)
    assert study.optimizer_choice is not None and study.config.optimizer == "grid"
    assert study.n_trials == 5  # the grid's size
    result = study.optimize()
    assert result.optimizer == "grid"
    assert result.info["optimizer_choice"]["reason"] == study.optimizer_choice.reason
    assert load_study(study.record_path).info["optimizer_choice"]["optimizer"] == "grid"


def test_study_auto_with_a_budget_adds_pruning(tmp_path) -> None:
    study = Study(_objective, {"x": Uniform(0.0, 1.0)}, metric="loss", optimizer="auto", n_trials=500,
                  budget={"min_budget": 1, "max_budget": 9, "eta": 3}, storage=tmp_path, progress=False)
    assert (study.config.optimizer, study.config.pruner) == ("tpe", "hyperband")
    assert study.spec.pruner == "hyperband"


def test_a_resumed_auto_study_keeps_the_optimizer_its_record_holds(tmp_path) -> None:
    budget = {"min_budget": 1, "max_budget": 9, "eta": 3}

    def study(n_trials: int, resume: bool = True) -> Study:
        return Study(_objective, {"x": Uniform(0.0, 1.0)}, metric="loss", optimizer="auto", n_trials=n_trials,
                     budget=budget, storage=tmp_path, name="grows", seed=0, resume=resume, progress=False)

    first = study(3)
    assert first.spec.optimizer == "random"  # a tiny budget
    first.optimize()
    # 500 trials alone would choose TPE with Hyperband pruning; the study goes on as it started.
    assert (study(500, resume=False).spec.optimizer, study(500, resume=False).spec.pruner) == ("tpe", "hyperband")
    grown = study(500)
    assert (grown.spec.optimizer, grown.spec.pruner) == ("random", None)
    assert grown.optimizer_choice.reason == first.optimizer_choice.reason
    result = grown.optimize()
    assert len(result.trials) == 500 and result.optimizer == "random"


def test_auto_refuses_optimizer_options(tmp_path) -> None:
    with pytest.raises(ConfigError, match="optimizer='auto' chooses the optimizer and its options"):
        Study(_objective, {"x": Uniform(0.0, 1.0)}, metric="loss", optimizer="auto", n_trials=20,
              optimizer_options={"n_startup_trials": 5}, storage=tmp_path, progress=False)


def test_cli_prints_the_choice(tmp_path, capsys) -> None:
    from hposdk.cli import main

    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        "objective: tests.test_auto:_objective\nmetric: loss\noptimizer: auto\nn_trials: 5\nseed: 0\n"
        "space:\n  x: {type: uniform, low: 0.0, high: 1.0}\n")
    assert main(["run", str(study_file), "--storage", str(tmp_path / "s"), "--no-progress"]) == 0
    assert "optimizer=auto chose random" in capsys.readouterr().err
