"""The Ray Tune backend: exact space translation (pure), the shared conformance suites, and the
Ray-specific behaviour (schedulers, TPE reproducibility, BOHB pause/resume, retries, resume).

One local Ray runtime (2 CPUs, no dashboard, its own temp dir) serves every test that needs one;
it is started once per session and shut down at the end.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import ray
import ray.cloudpickle
from ray import tune

from hposdk import Study
from hposdk.backends import _optuna, get_backend
from hposdk.backends.ray import RayOptions, decode, encode, to_ray
from hposdk.backends.ray._space import decode_configspace, encode_configspace, encoding, to_configspace
from hposdk.exceptions import ConfigError, UnsupportedError
from hposdk.result import TrialState
from hposdk.spaces import Discrete, Integer, LogUniform, SearchSpace, Uniform
from hposdk.testing import SPACE_CASES, BackendConformance, SpaceConformance, objectives
from hposdk.trial import FixedTrial, Trial

# Objectives below are defined in this test module; Ray workers get them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# hpbandster 0.7.4 (BOHB's model) uses ConfigSpace APIs that 1.x deprecates, and pandas warns
# about its global numpy RNG; neither is ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:hpbandster"),
              pytest.mark.filterwarnings("ignore::FutureWarning:pandas")]


# --- one Ray runtime for the session ---------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_runtime():
    temp_dir = tempfile.mkdtemp(prefix="hposdk-ray-")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _temp_dir=temp_dir)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _study(tmp_path: Path, objective: Any, space: SearchSpace, **kwargs: Any) -> Study:
    kwargs.setdefault("metric", "loss")
    return Study(objective, space, backend="ray", storage=str(tmp_path / "studies"), progress=False, **kwargs)


def _by_number(result: Any) -> list[Any]:
    return sorted(result.trials, key=lambda t: t.number)


# --- golden translation tests (pure: no Ray runtime) -------------------------------------------------


def _domain(param: Any) -> Any:
    return to_ray(SearchSpace({"p": param}))["p"]


def _sampler(domain: Any) -> str:
    return type(domain.get_sampler()).__name__


def test_integer_upper_bound_is_inclusive():
    d = _domain(Integer(1, 4))
    # Ray's randint excludes its upper bound (sample.py Integer._Uniform: rng.integers(lower, upper)).
    assert (type(d).__name__, d.lower, d.upper, _sampler(d)) == ("Integer", 1, 5, "_Uniform")
    assert encoding(Integer(1, 4)) == "value"


def test_integer_step_on_multiples_of_step_uses_qrandint():
    d = _domain(Integer(0, 10, step=5))
    assert (d.lower, d.upper, _sampler(d), d.get_sampler().q) == (0, 10, "Quantized", 5)


def test_integer_step_off_multiples_is_an_index():
    # qrandint's grid is the multiples of q from 0 ({3, 6, 9}), hposdk's is low + k*step ({1, 4, 7, 10}).
    param = Integer(1, 10, step=3)
    d = _domain(param)
    assert (encoding(param), d.lower, d.upper) == ("index", 0, 4)
    assert [decode(SearchSpace({"p": param}), {"p": k})["p"] for k in range(4)] == [1, 4, 7, 10]


def test_integer_log_uses_hposdk_rounding():
    # Ray's lograndint floors a log-uniform draw (P(1) = log 2 / log 1001); hposdk rounds one
    # drawn in [low - 0.5, high + 0.5] (P(1) = log 3 / log 2001): a different distribution.
    d = _domain(Integer(1, 1000, log=True))
    assert (type(d).__name__, _sampler(d), d.lower, d.upper) == ("Float", "_LogUniform", 0.5, 1000.5)
    space = SearchSpace({"p": Integer(1, 1000, log=True)})
    assert [decode(space, {"p": v})["p"] for v in (0.5, 1.49, 1.51, 1000.49)] == [1, 1, 2, 1000]


def test_uniform_and_loguniform_are_values():
    d = _domain(Uniform(-2.0, 3.0))
    assert (type(d).__name__, _sampler(d), d.lower, d.upper) == ("Float", "_Uniform", -2.0, 3.0)
    d = _domain(LogUniform(1e-4, 1e-1))
    assert (type(d).__name__, _sampler(d), d.lower, d.upper) == ("Float", "_LogUniform", 1e-4, 1e-1)


def test_uniform_step_is_an_index_onto_low_plus_k_step():
    space = SearchSpace({"p": Uniform(0.1, 0.7, step=0.2)})
    d = to_ray(space)["p"]
    assert (type(d).__name__, d.lower, d.upper) == ("Integer", 0, 4)
    assert [decode(space, {"p": k})["p"] for k in range(4)] == [0.1, 0.3, 0.5, 0.7]
    # What Ray's own quniform would do: its grid is multiples of q from zero, so it refuses 0.1.
    with pytest.raises(ValueError, match="not divisible"):
        tune.quniform(0.1, 0.7, 0.2)


def test_uniform_step_has_no_float_drift():
    space = SearchSpace({"p": Uniform(0.0, 0.3, step=0.1)})
    assert [decode(space, {"p": k})["p"] for k in range(4)] == [0.0, 0.1, 0.2, 0.3]


def test_loguniform_exponent_step_is_exactly_the_hposdk_set():
    param = LogUniform(512, 2048, base=2, step=1)
    space = SearchSpace({"p": param})
    d = to_ray(space)["p"]
    assert (d.lower, d.upper) == (0, 3)
    values = [decode(space, {"p": k})["p"] for k in range(3)]
    assert values == [512, 1024, 2048] and all(type(v) is int for v in values)
    space10 = SearchSpace({"p": LogUniform(1e-4, 1e-1, step=1)})
    assert [decode(space10, {"p": k})["p"] for k in range(4)] == [1e-4, 1e-3, 1e-2, 1e-1]


def test_categorical_types_are_kept():
    d = _domain(Discrete(["a", True, 2.5, None]))
    assert d.categories == ["a", True, 2.5, None]
    draws = d.sample(size=200, random_state=0)
    assert {type(v) for v in draws} == {str, bool, float, type(None)}


def test_categorical_with_python_equal_choices_is_an_index():
    # 1 == True == 1.0 in Python: Ray's Categorical.is_valid and its searcher converters use ==.
    param = Discrete([True, 1, "1", None, 2.5])
    space = SearchSpace({"p": param})
    assert encoding(param) == "index" and to_ray(space)["p"].categories == [0, 1, 2, 3, 4]
    decoded = [decode(space, {"p": k})["p"] for k in range(5)]
    assert [(type(v), v) for v in decoded] == [(bool, True), (int, 1), (str, "1"), (type(None), None), (float, 2.5)]


@pytest.mark.parametrize("case", sorted(c for c, p in SPACE_CASES.items() if p.is_finite))
def test_encode_decode_round_trip_every_grid_value(case: str):
    space = SearchSpace({"p": SPACE_CASES[case]})
    for value in SPACE_CASES[case].grid():
        back = decode(space, encode(space, {"p": value}))["p"]
        assert back == value and type(back) is type(value)


def test_decode_accepts_numpy_scalars():
    space = SearchSpace({"i": Integer(1, 4), "x": Uniform(0.0, 1.0)})
    out = decode(space, {"i": np.int64(3), "x": np.float64(0.5)})
    assert out == {"i": 3, "x": 0.5} and type(out["i"]) is int and type(out["x"]) is float


def test_what_ray_cannot_hold_is_refused_naming_the_parameter():
    with pytest.raises(UnsupportedError, match=r"'huge'.*int64"):
        to_ray(SearchSpace({"huge": Integer(0, 2**70)}))
    with pytest.raises(UnsupportedError, match=r"'wide'.*overflows"):
        to_ray(SearchSpace({"wide": Uniform(-1e308, 1e308)}))


def test_configspace_for_bohb_is_exact():
    space = SearchSpace({k: SPACE_CASES[k] for k in SPACE_CASES})
    cs = to_configspace(space, seed=0)
    for config in cs.sample_configuration(200):
        point = decode_configspace(space, dict(config))
        assert space.contains(point), point
        assert decode_configspace(space, encode_configspace(space, point)) == point
    finite = {k: p for k, p in SPACE_CASES.items() if p.is_finite}
    for name, param in finite.items():
        for value in param.grid():
            enc = encode_configspace(SearchSpace({name: param}), {name: value})
            assert decode_configspace(SearchSpace({name: param}), enc)[name] == value


class TestRayDomainSampling(SpaceConformance):
    """Sampling through Ray's own domains (``Domain.sample``), decoded back to hposdk values."""

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        rng = np.random.default_rng(seed)
        columns = {name: list(np.atleast_1d(np.asarray(d.sample(size=n, random_state=rng), dtype=object)))
                   for name, d in to_ray(space).items()}
        return [decode(space, {name: col[i] for name, col in columns.items()}) for i in range(n)]

    def grid(self, space: SearchSpace) -> list[dict[str, Any]]:
        # An hposdk grid carried through Ray's own grid machinery (tune.grid_search, expanded by
        # its variant generator) in the encoding of to_ray, decoded back.
        from ray.tune.search.variant_generator import generate_variants

        spec = {name: tune.grid_search([encode(SearchSpace({name: p}), {name: v})[name] for v in p.grid()])
                for name, p in space.items()}
        return [decode(space, config) for _, config in generate_variants(spec)]


# --- configuration checks before any compute (Ray imported, no runtime) ------------------------------


SPACE = SearchSpace({"x": Uniform(0.0, 1.0)})


def test_capabilities_are_data():
    caps = get_backend("ray").capabilities
    assert caps.optimizers == ("grid", "random", "tpe", "bohb")
    assert caps.pruners == ("asha", "hyperband", "median")


def test_unknown_backend_option_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="gpu"):
        _study(tmp_path, objectives.quadratic, SPACE, optimizer="random", n_trials=2, backend_options={"gpu": 1})
    assert RayOptions(cpus=0.5, gpus=0.25).gpus == 0.25


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "bohb"}, ConfigError, "needs a budget"),
        ({"optimizer": "bohb", "budget": {"min_budget": 2, "max_budget": 8, "eta": 2}}, ConfigError,
         "set min_budget=1"),
        ({"optimizer": "bohb", "budget": {"min_budget": 1, "max_budget": 9, "eta": 3}, "pruner": "asha"},
         ConfigError, "own scheduler"),
        ({"optimizer": "random", "pruner": "asha", "pruner_options": {"grace": 1}}, ConfigError,
         "grace_period"),
        ({"optimizer": "random", "pruner": "asha", "pruner_options": {"stop_last_trials": True}},
         ConfigError, "unknown option 'stop_last_trials'"),
        ({"optimizer": "random", "pruner": "asha", "pruner_options": {"grace_period": 10, "max_t": 5}},
         ConfigError, "grace_period must be <= max_t"),
        ({"optimizer": "random", "pruner": "hyperband", "pruner_options": {"time_attr": "epoch"}}, ConfigError,
         "time_attr"),
        ({"optimizer": "random", "pruner_options": {"max_t": 5}}, ConfigError, "without a pruner"),
        ({"optimizer": "random", "optimizer_options": {"n_startup_trials": 5}}, ConfigError, "no optimizer_options"),
        ({"optimizer": "tpe", "optimizer_options": {"n_startup": 5}}, ConfigError, "n_startup_trials"),
        ({"optimizer": "random", "pruner": "pbt"}, UnsupportedError, "asha, hyperband, median"),
        ({"optimizer": "random", "metric": "done"}, UnsupportedError, "Ray fills in"),
        ({"optimizer": "random", "backend_options": {"data": {"x": 1}}}, ConfigError, "search-space or fixed"),
    ],
)
def test_refused_before_any_compute(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        _study(tmp_path, objectives.quadratic, SPACE, n_trials=2, **kwargs)


def test_unpicklable_objective_is_refused(tmp_path):
    import threading

    lock = threading.Lock()

    def holds_a_lock(trial):
        with lock:
            return 0.0

    with pytest.raises(ConfigError, match="cannot be serialised"):
        _study(tmp_path, holds_a_lock, SPACE, optimizer="random", n_trials=2)


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_hposdk_does_not_import_ray():
    out = _run_python("import sys, hposdk, hposdk.backends; print('ray' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_ray_gives_the_install_hint():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from hposdk import Study, SearchSpace, Uniform\n"
        "from hposdk.exceptions import MissingExtraError\n"
        "from hposdk.testing.objectives import quadratic\n"
        "try:\n"
        "    Study(quadratic, SearchSpace({'x': Uniform(0.0, 1.0)}), metric='loss', backend='ray', n_trials=1)\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
        "from hposdk._imports import require\n"
        "try:\n"
        "    require('ray.tune', 'ray', \"backend='ray'\")\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "the 'ray' package is not installed" in line and "pip install hposdk[ray]" in line


# --- the shared backend suite on a Ray runtime --------------------------------------------------------


class TestRayBackend(BackendConformance):
    backend = "ray"
    pruner = "asha"
    pruner_options = {"grace_period": 1, "reduction_factor": 2, "max_t": 8}

    @pytest.fixture(autouse=True)
    def _ray(self, ray_runtime):
        return ray_runtime


# --- Ray-specific behaviour -----------------------------------------------------------------------------


def test_tpe_reproduces_raw_optuna_bit_for_bit(ray_runtime, tmp_path):
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": LogUniform(1, 4, base=2, step=1),
                         "z": Discrete([True, "a", 2.5])})
    n, seed, options = 8, 11, {"n_startup_trials": 3}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    raw = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, **options))
    dists = _optuna.to_optuna(space)
    expected = []
    for _ in range(n):
        ask = raw.ask(dists)
        params = _optuna.decode(space, ask.params)
        expected.append(params)
        raw.tell(ask, objectives.quadratic(FixedTrial(params))["loss"])

    kw = dict(optimizer="tpe", seed=seed, optimizer_options=options, n_trials=n, max_concurrent=1)
    on_ray = _study(tmp_path / "ray", objectives.quadratic, space, **kw).optimize()
    local = Study(objectives.quadratic, space, metric="loss", storage=str(tmp_path / "local"), progress=False,
                  **kw).optimize()
    assert [t.params for t in _by_number(on_ray)] == expected
    assert [t.params for t in _by_number(local)] == expected


def test_random_and_grid_equal_the_local_backend(ray_runtime, tmp_path):
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Integer(1, 100), "z": Discrete([True, 1, "a"])})
    kw = dict(optimizer="random", seed=9, n_trials=4)
    on_ray = _study(tmp_path / "ray", objectives.echo_types, space, **kw).optimize()
    local = Study(objectives.echo_types, space, metric="loss", storage=str(tmp_path / "local"), progress=False,
                  **kw).optimize()
    assert [repr(t.params) for t in _by_number(on_ray)] == [repr(t.params) for t in _by_number(local)]
    assert all(t.state is TrialState.COMPLETE for t in on_ray.trials), [t.error for t in on_ray.trials]


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_schedulers_stop_bad_trials_as_pruned(ray_runtime, tmp_path, pruner):
    space = SearchSpace({"x": Uniform(0.0, 3.0, step=0.25)})
    options = {"max_t": 8, "reduction_factor": 2} if pruner == "hyperband" else {}
    result = _study(tmp_path, objectives.learning_curve, space, optimizer="grid", pruner=pruner,
                    pruner_options=options, fixed={"steps": 8}).optimize()
    states = Counter(t.state for t in result.trials)
    assert states[TrialState.FAILED] == 0, [t.error for t in result.trials]
    if pruner == "median":
        assert states[TrialState.PRUNED] > 0
    for t in result.by_state(TrialState.PRUNED):
        assert len(t.reports) < 8 and t.value == t.reports[-1].metrics["loss"]
    assert result.best.params == {"x": 0.25}


def checkpointing_curve(trial: Trial) -> dict[str, float]:
    """Like learning_curve, but checkpoints every step and resumes from its checkpoint."""
    x = float(trial.params["x"])
    state = trial.load_checkpoint() or {"step": 0, "resumes": 0}
    if state["step"]:
        state["resumes"] += 1
    loss = math.inf
    for step in range(state["step"], 9):
        loss = (x - 0.3) ** 2 + 1.0 / (step + 1)
        trial.save_checkpoint({"step": step + 1, "resumes": state["resumes"]})
        trial.report(step, loss=loss)
    return {"loss": loss, "resumes": float(state["resumes"])}


@pytest.mark.slow
def test_bohb_pauses_and_resumes_from_checkpoints(ray_runtime, tmp_path):
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    result = _study(tmp_path, checkpointing_curve, space, optimizer="bohb", n_trials=6, seed=1,
                    budget={"min_budget": 1, "max_budget": 9, "eta": 3}).optimize()
    assert len(result.trials) == 6
    assert not result.by_state(TrialState.FAILED), [t.error for t in result.trials]
    assert {t.budget for t in result.trials} <= {1.0, 3.0, 9.0}
    resumed = [t for t in result.completed if t.metrics.get("resumes", 0) > 0]
    assert resumed, "no trial was paused and resumed"
    for t in result.trials:  # a resumed trial continues its steps, it does not start over
        assert [r.step for r in t.reports] == list(range(len(t.reports)))
    assert result.best.budget == 9.0


@pytest.mark.parametrize(("optimizer", "pruner"), [("bohb", None), ("random", "hyperband")])
def test_hyperband_runs_hpbandsters_brackets_in_every_iteration(ray_runtime, tmp_path, optimizer, pruner):
    # Budgets 1..9, eta 3: hpbandster's brackets start 9 trials at budget 1 (3 continue to 3, 1 to
    # 9), 3 at budget 3 (1 continues to 9), 3 at budget 9: 15 trials per Hyperband iteration. Ray's
    # own HyperBandForBOHB starts 5 in the middle bracket, and once its first bracket has finished
    # it adds every later trial to that bracket's last rung (the full budget, never stopped); Ray's
    # HyperBandScheduler, given one trial at a time, stops none.
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    result = _study(tmp_path, objectives.learning_curve, space, optimizer=optimizer, pruner=pruner, n_trials=30,
                    seed=3, budget={"min_budget": 1, "max_budget": 9, "eta": 3}, fixed={"steps": 9}).optimize()
    reports = [len(t.reports) for t in _by_number(result)]
    iteration = [Counter({1: 6, 3: 2, 9: 1}), Counter({3: 2, 9: 1}), Counter({9: 3})]
    for start in (0, 15):
        got = [Counter(reports[start + a:start + b]) for a, b in ((0, 9), (9, 12), (12, 15))]
        assert got == iteration, (start, reports)
    assert {t.budget for t in result.trials} == {1.0, 3.0, 9.0}
    assert result.best.budget == 9.0 and result.best.state is TrialState.COMPLETE


def slow_above_first_rung(trial: Trial) -> dict[str, float]:
    import os

    for step in range(1, 10):
        start = time.time()
        if step > 1:  # the first rung is quick; promoted trials take 1 s an epoch
            time.sleep(1.0)
        trial.report(step, loss=float(trial.params["x"]) / step, start=start, end=time.time(), pid=os.getpid())
    return {"loss": float(trial.params["x"]) / 9}


@pytest.mark.slow
def test_bohb_resumes_promoted_trials_one_at_a_time_on_one_actor(ray_runtime, tmp_path):
    # One bracket (budgets 1..9, eta 3: 9 trials at 1, 3 promoted to 3, 1 to 9), max_concurrent=1
    # on a 2-CPU runtime. Ray's HyperBandForBOHB resumes a promoted trial whatever else runs, and
    # Tune starts a paused trial while another one's pause is still saving on a new actor: both
    # would put two trials on two actors at once (a new actor starts in about 1.5 s here, and a
    # promoted trial runs for 2 s or more), or at least ask for that actor and throw it away.
    from ray.util import placement_group_table

    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    before = set(placement_group_table())  # Tune asks for one per actor (removed ones stay listed)
    result = _study(tmp_path, slow_above_first_rung, space, optimizer="bohb", n_trials=9, seed=2,
                    budget={"min_budget": 1, "max_budget": 9, "eta": 3}).optimize()
    # One actor for the study: none requested while a pause saves, nor for the last bracket's
    # promotions once every trial has been proposed (11 placement groups before).
    assert len(set(placement_group_table()) - before) == 1
    assert Counter(len(t.reports) for t in result.trials) == Counter({1: 6, 3: 2, 9: 1})
    reports = [r.metrics for t in result.trials for r in t.reports]
    spans = sorted((r["start"], r["end"]) for r in reports)
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlaps, overlaps
    assert len({r["pid"] for r in reports}) == 1  # every epoch on the one reused actor


def test_bohb_model_learns_full_budget_results(tmp_path):
    # Ray's scheduler hands BOHB a result only where it decides (the rungs below max_budget);
    # hpbandster's model also learns from full-budget results, so the coordinator tells it.
    from hposdk.backends._base import RunSession
    from hposdk.backends.ray import _searcher
    from hposdk.backends.ray._driver import Coordinator, _Task

    spec = _study(tmp_path, objectives.quadratic, SPACE, optimizer="bohb", n_trials=5,
                  budget={"min_budget": 1, "max_budget": 9, "eta": 3}).spec
    session = RunSession(spec, journal=None, finished={}, unfinished=[], next_number=0, progress=None)
    inner = _searcher(spec)
    coordinator = Coordinator(spec, session, inner, "unused")
    for trial_id, x, iterations in (("full", 0.25, 9), ("stopped", 0.5, 3)):
        inner.suggest(trial_id)
        coordinator.tasks[trial_id] = _Task(trial_id, 0, {"x": x}, 9.0, 1, 0.0, True, iterations=iterations,
                                            outcome={"state": "COMPLETE", "value": x})
        coordinator.searcher_complete(trial_id, error=False)
    assert inner.bohber.losses.get(9.0) == [0.25]
    assert 3.0 not in inner.bohber.losses


@pytest.mark.slow
def test_bohb_makes_the_local_backends_decisions(ray_runtime, tmp_path):
    # The same seed and brackets on both backends, and the same hpbandster model inside: Ray's
    # BOHB must propose the configurations the local backend's hpbandster run proposes, in the
    # same order, and promote the same ones as far. It did not before: TuneBOHB drew from numpy's
    # global stream, which Ray draws from too (the same seed gave other trials every run), and
    # its model never heard a trial that closed a rung when halving stopped it.
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    budget = {"min_budget": 1, "max_budget": 9, "eta": 3}
    # Two Hyperband iterations: 15 configurations each; hpbandster evaluates 20 times per
    # iteration (a promoted configuration runs again), Ray continues a paused trial instead.
    on_ray = _study(tmp_path, objectives.epochs, space, optimizer="bohb", n_trials=30, seed=5,
                    budget=budget).optimize()
    local = Study(objectives.epochs, space, metric="loss", optimizer="bohb", n_trials=40, seed=5, budget=budget,
                  storage=str(tmp_path / "local"), progress=False).optimize()

    def reached(trials: list[Any], epochs: Any) -> list[tuple[float, float]]:
        furthest: dict[float, float] = {}  # x -> the largest budget it reached, in order of first evaluation
        for t in trials:
            furthest[t.params["x"]] = max(furthest.get(t.params["x"], 0.0), epochs(t))
        return list(furthest.items())

    on_ray_reached = reached(_by_number(on_ray), lambda t: float(len(t.reports)))
    local_reached = reached(_by_number(local), lambda t: float(t.budget))
    assert len(on_ray_reached) == 30
    # per iteration 9 configurations start at budget 1 (3 reach 3, 1 of them 9), 3 at 3 (1 reaches 9), 3 at 9
    assert Counter(b for _, b in local_reached) == Counter({1.0: 12, 3.0: 8, 9.0: 10})
    assert on_ray_reached == local_reached


def flaky(trial: Trial) -> dict[str, float]:
    """Fails on the first attempt of every trial (transient), succeeds on the next."""
    marker = trial.workdir / "attempted"
    x = float(trial.params["x"])
    if not marker.exists():
        marker.write_text("1")
        raise RuntimeError("transient failure")
    if trial.params.get("always_fail"):
        raise RuntimeError(f"permanent failure at x={x}")
    trial.report(0, loss=x)
    return {"loss": x}


@pytest.mark.parametrize("always_fail", [False, True])
def test_retries_use_ray_failure_config_and_are_recorded(ray_runtime, tmp_path, always_fail):
    result = _study(tmp_path, flaky, SPACE, optimizer="random", n_trials=2, seed=0, retries=1,
                    fixed={"always_fail": always_fail}).optimize()
    assert [t.attempt for t in result.trials] == [2, 2]
    if always_fail:
        assert all(t.state is TrialState.FAILED for t in result.trials)
        assert all("permanent failure" in (t.error or "") for t in result.trials)
        assert all("Traceback" in (t.error or "") for t in result.trials)
    else:
        assert all(t.state is TrialState.COMPLETE for t in result.trials), [t.error for t in result.trials]
    notes = [json.loads(line) for line in Path(result.record_path).read_text().splitlines()]
    retries = [e for e in notes if e.get("kind") == "retry"]
    assert sorted(e["number"] for e in retries) == [0, 1]
    assert all("transient failure" in e["error"][0] for e in retries)


def test_resume_reruns_lost_trials_and_tells_tpe(ray_runtime, tmp_path):
    from hposdk._record import Journal

    log = tmp_path / "calls.txt"
    space = SearchSpace({"x": Uniform(0.0, 1.0)})
    kw = dict(optimizer="tpe", seed=4, name="crashed", fixed={"log_path": str(log)},
              optimizer_options={"n_startup_trials": 2})
    first = _study(tmp_path, objectives.quadratic, space, n_trials=3, **kw).optimize()
    lost = {"x": 0.123}
    journal = Journal(first.record_path)  # a driver that crashed while trial 3 ran
    journal.start(3, lost, None, 1)
    journal.close()
    second = _study(tmp_path, objectives.quadratic, space, n_trials=6, **kw).optimize()
    trials = _by_number(second)
    assert [t.number for t in trials] == list(range(6))
    assert trials[3].params == lost
    assert [t.params for t in trials[:3]] == [t.params for t in _by_number(first)]
    calls = Counter(int(n) for n in log.read_text().split())
    assert all(c == 1 for c in calls.values()) and sorted(calls) == list(range(6)), calls


@pytest.mark.parametrize("optimizer", ["tpe", "bohb"])
def test_resume_tells_the_wrapped_searcher_about_finished_trials(tmp_path, optimizer):
    from hposdk.backends._base import RunSession
    from hposdk.backends.ray import _searcher
    from hposdk.backends.ray._driver import Coordinator
    from hposdk.result import ReportRecord, TrialResult

    budget = {"min_budget": 1, "max_budget": 9, "eta": 3} if optimizer == "bohb" else None
    spec = _study(tmp_path, objectives.quadratic, SPACE, optimizer=optimizer, n_trials=5, budget=budget).spec
    finished = {
        n: TrialResult(number=n, params={"x": x}, state=state, value=x if state is TrialState.COMPLETE else None,
                       reports=(ReportRecord(step=0, metrics={"loss": x}),), budget=9.0 if budget else None)
        for n, x, state in [(0, 0.2, TrialState.COMPLETE), (1, 0.7, TrialState.PRUNED), (2, 0.9, TrialState.FAILED)]
    }
    session = RunSession(spec, journal=None, finished=finished, unfinished=[], next_number=3, progress=None)
    inner = _searcher(spec)
    Coordinator(spec, session, inner, "unused").restore_inner()
    if optimizer == "tpe":
        states = [t.state.name for t in inner._ot_study.trials]
        assert states == ["COMPLETE", "PRUNED", "FAIL"]
        assert inner._ot_study.trials[0].params == {"x": 0.2}
    else:  # BOHB's model learns from results with a value at a budget
        assert len(inner.bohber.configs[9.0]) == 1 and inner.bohber.losses[9.0] == [0.2]


def sleeper(trial: Trial) -> dict[str, float]:
    start = time.time()
    time.sleep(float(trial.params.get("sleep", 0.4)))
    return {"loss": float(trial.params["x"]), "start": start, "end": time.time()}


@pytest.mark.slow
def test_max_concurrent_is_honoured(ray_runtime, tmp_path):
    # cpus=0.5: Ray alone would run 4 of these at once on the 2-CPU test runtime. A trial lasts
    # longer than starting a second Ray worker process (~1.5 s here), so the two do overlap.
    result = _study(tmp_path, sleeper, SPACE, optimizer="random", n_trials=4, seed=0, max_concurrent=2,
                    fixed={"sleep": 3.0}, backend_options={"cpus": 0.5}).optimize()
    spans = [(t.metrics["start"], t.metrics["end"]) for t in result.trials]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 2


def reads_data(trial: Trial) -> dict[str, float]:
    return {"loss": float(trial.params["big"].sum()) * float(trial.params["x"])}


def test_large_data_goes_through_the_object_store(ray_runtime, tmp_path):
    big = np.ones(2_000_000)  # 16 MB: serialised once, not into every trial or the record
    result = _study(tmp_path, reads_data, SPACE, optimizer="random", n_trials=2, seed=0,
                    backend_options={"data": {"big": big}}).optimize()
    assert [t.value for t in _by_number(result)] == [2_000_000 * t.params["x"] for t in _by_number(result)]
    assert Path(result.record_path).stat().st_size < 20_000


def slow_python(trial: Trial) -> float:
    deadline = time.time() + 30
    while time.time() < deadline:  # a Python loop: the timeout exception is delivered here
        time.sleep(0.01)
    return 0.0


def test_trial_timeout_fails_the_trial(ray_runtime, tmp_path):
    t0 = time.time()
    result = _study(tmp_path, slow_python, SPACE, optimizer="random", n_trials=1, seed=0,
                    trial_timeout=1.0).optimize()
    assert time.time() - t0 < 25
    (trial,) = result.trials
    assert trial.state is TrialState.FAILED and "exceeded trial_timeout=1.0s" in (trial.error or "")


def test_results_name_the_ray_experiment_and_show_works(ray_runtime, tmp_path, capsys):
    from hposdk.cli import main

    result = _study(tmp_path, objectives.quadratic, SPACE, optimizer="random", n_trials=2, seed=0,
                    name="named").optimize()
    for t in result.trials:
        exp = Path(t.info["ray_experiment_dir"])
        assert exp.is_dir() and exp.parent == tmp_path / "studies" / "named" / "ray"
        assert t.info["ray_trial_dir"].startswith(str(exp)) and t.info["ray_trial_id"]
    assert result.to_dataframe()["params_x"].tolist() == [t.params["x"] for t in result.trials]
    assert main(["show", result.record_path]) == 0
    assert "Best trial" in capsys.readouterr().out


@pytest.mark.parametrize("tensorboard", [False, True])
def test_ray_result_files_and_tensorboard_only_when_asked(ray_runtime, tmp_path, tensorboard):
    # Ray's TensorBoard logger imports torch into the driver (~1.4 s a study), so it is opt-in;
    # the CSV and JSON result files Ray's own tools read are written either way.
    result = _study(tmp_path, objectives.quadratic, SPACE, optimizer="random", n_trials=1, seed=0,
                    name=f"tb-{tensorboard}", backend_options={"tensorboard": tensorboard}).optimize()
    trial_dir = Path(result.trials[0].info["ray_trial_dir"])
    assert (trial_dir / "result.json").is_file() and (trial_dir / "progress.csv").is_file()
    assert bool(list(trial_dir.glob("events.out.tfevents.*"))) is tensorboard


def test_tensorboard_without_tensorboardx_is_refused_before_compute(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tensorboard=True .* pip install tensorboardX"):
        _study(tmp_path, objectives.quadratic, SPACE, optimizer="random", n_trials=1,
               backend_options={"tensorboard": True})


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_itwinai"


@pytest.mark.slow
def test_itwinai_example_runs_with_asha(ray_runtime, tmp_path, monkeypatch):
    from hposdk.exceptions import BindingError

    monkeypatch.syspath_prepend(str(EXAMPLE))
    import hpo

    ray.cloudpickle.register_pickle_by_value(hpo)  # Ray workers started before sys.path changed
    try:
        result = hpo.main(n_trials=6, storage=str(tmp_path), progress=False)
        assert len(result.trials) == 6
        assert not result.by_state(TrialState.FAILED), [t.error for t in result.trials]
        pruned = result.by_state(TrialState.PRUNED)
        assert pruned and all(len(t.reports) < 6 for t in pruned)
        assert all([r.step for r in t.reports] == list(range(6)) for t in result.completed)
        assert all("val_loss" in r.metrics for t in result.trials for r in t.reports)
        # The tutorial's bug class: a key the trainer does not read is refused before training.
        with pytest.raises(BindingError, match="'learning_rate' is not a parameter"):
            Study.from_yaml(EXAMPLE / "study.yaml", storage=str(tmp_path),
                            space={"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}})
    finally:
        ray.cloudpickle.unregister_pickle_by_value(hpo)
        sys.modules.pop("hpo", None)


SLOW_OBJECTIVE = '''
import time

def objective(trial):
    with open(trial.params["log_path"], "a") as fh:
        fh.write(f"{trial.number}\\n")
    for step in range(3):
        time.sleep(0.3)
        trial.report(step, loss=trial.params["x"])
    return trial.params["x"]
'''


@pytest.mark.slow
def test_interrupted_study_resumes_without_repeating_a_trial(tmp_path):
    import os

    (tmp_path / "slowobj.py").write_text(SLOW_OBJECTIVE)
    log = tmp_path / "calls.txt"
    study_file = tmp_path / "study.yaml"
    study_file.write_text(json.dumps({
        "name": "interrupted", "objective": "slowobj:objective", "metric": "loss", "backend": "ray",
        "optimizer": "random", "n_trials": 5, "seed": 2, "storage": str(tmp_path / "studies"),
        "fixed": {"log_path": str(log)}, "space": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
    }))
    ray_tmp = tempfile.mkdtemp(prefix="hposdk-ray-")  # short (socket paths), removed at the end
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).parent / "hposdk"), "run", str(study_file), "--no-progress"]
    record = tmp_path / "studies" / "interrupted" / "study.jsonl"
    try:
        _interrupt_and_resume(cmd, env, tmp_path, record, log)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _interrupt_and_resume(cmd: list[str], env: dict[str, str], tmp_path: Path, record: Path, log: Path) -> None:
    import signal

    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (record.exists() and '"finish"' in record.read_text()):
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl-C while the next trial runs
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out[-3000:]
    from hposdk._record import read_record

    done_before = set(read_record(record).finished)
    assert 1 <= len(done_before) < 5
    second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    from hposdk.study import load_study

    result = load_study(record)
    assert sorted(t.number for t in result.trials) == list(range(5))
    assert all(t.state is TrialState.COMPLETE for t in result.trials)
    calls = Counter(int(n) for n in log.read_text().split())
    # Completed trials never ran again; only the interrupted one ran twice (it never finished).
    assert sorted(calls) == list(range(5)) and all(calls[n] == 1 for n in done_before), calls
    assert sum(1 for c in calls.values() if c > 1) <= 1, calls


def test_the_portable_median_options_mean_the_same_on_ray(tmp_path: Path) -> None:
    """The MNIST study file (Optuna-named median options) runs unchanged with --backend ray."""
    from hposdk import Study
    from hposdk.backends.ray import _scheduler

    root = Path(__file__).resolve().parents[2]
    study = Study.from_yaml(root / "examples" / "mnist" / "study.yaml", backend="ray", storage=str(tmp_path),
                            progress=False)
    scheduler = _scheduler(study.spec)
    # n_startup_trials=2 -> at least 2 finished trials; n_warmup_steps=1 -> step 0 (report 1) is never pruned
    assert scheduler._min_samples_required == 2
    assert scheduler._grace_period == 2
