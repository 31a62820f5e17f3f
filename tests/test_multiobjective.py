"""Several objectives, composite metrics, constraints and the pruning metric (hposdk/_goals.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hposdk import (
    Composite,
    ConfigError,
    NoCompletedTrialsError,
    NoSingleBestError,
    StudyRecordError,
    StudyResult,
    Term,
    TrialResult,
    UnsupportedError,
)
from hposdk import Study as _Study
from hposdk._goals import Constraint, Goals, dominates, hypervolume_2d, pareto_front
from hposdk.spaces import Discrete, Uniform

# --- the front, by definition -------------------------------------------------------------------


def brute_front(points: list[tuple[float, ...]], modes: list[Any]) -> list[int]:
    return [i for i, p in enumerate(points) if not any(dominates(q, p, modes) for q in points)]


def test_front_small_examples() -> None:
    pts = [(1, 5), (2, 2), (3, 3), (5, 1), (2, 2), (6, 6)]
    assert pareto_front(pts, ["min", "min"]) == [0, 1, 3, 4]  # duplicates both kept, (3,3) and (6,6) dominated
    assert pareto_front(pts, ["max", "max"]) == [5]
    assert pareto_front(pts, ["min", "max"]) == [0, 5]
    assert pareto_front([(3,), (1,), (1,)], ["min"]) == [1, 2]
    assert pareto_front([], ["min", "min"]) == []


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), max_size=25),
    st.lists(st.sampled_from(["min", "max"]), min_size=3, max_size=3),
)
def test_front_matches_the_definition(points: list[tuple[int, int, int]], modes: list[Any]) -> None:
    # Small integer grids make ties and duplicates common, where a sort-based shortcut would slip.
    assert pareto_front(points, modes) == brute_front(points, modes)  # type: ignore[arg-type]


def test_dominates_needs_a_strict_improvement() -> None:
    assert dominates((1, 1), (1, 2), ["min", "min"])
    assert not dominates((1, 2), (1, 2), ["min", "min"])
    assert not dominates((0, 3), (1, 2), ["min", "min"])
    assert dominates((2, 1), (1, 1), ["max", "min"])


def test_hypervolume_2d() -> None:
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], (4, 4)) == 6.0
    # Dominated points and points outside the reference add nothing.
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == 6.0
    # Maximisation is the mirror image.
    assert hypervolume_2d([(3, 1), (2, 2), (1, 3)], (0, 0), ["max", "max"]) == 6.0
    assert hypervolume_2d([], (1, 1)) == 0.0


# --- composites and constraints -------------------------------------------------------------------


def test_composite_is_a_weighted_average_of_normalised_terms() -> None:
    c = Composite(terms={"a": 1, "b": {"weight": 3}, "size": Term(mode="min", low=0, high=100)})
    # (1*0.5 + 3*0.9 + 1*(1 - 20/100)) / 5
    assert c.value({"a": 0.5, "b": 0.9, "size": 20}) == pytest.approx((0.5 + 2.7 + 0.8) / 5)
    assert c.value({"a": 0.5, "b": 0.9}) is None  # a term missing
    assert c.value({"a": 0.5, "b": math.nan, "size": 1}) is None
    assert Composite(terms={"loss": Term(mode="min")}).value({"loss": 2.0}) == -2.0


@pytest.mark.parametrize("terms, needle", [
    ({}, "at least 1"),
    ({"a": {"weight": 0}}, "greater than 0"),
    ({"a": {"low": 0}}, "give low and high together"),
    ({"a": {"low": 1, "high": 1}}, "low < high"),
    ({"a": {"mode": "up"}}, "'min' or 'max'"),
])
def test_composite_refuses_bad_terms(terms: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        _Study(lambda t: 0, {"x": Uniform(0, 1)}, metric="avg", mode="max", composites={"avg": {"terms": terms}},
               n_trials=1, progress=False)
    assert "composites" in str(err.value)


def test_constraint_text() -> None:
    c = Constraint.parse("size_mb <= 700")
    assert (c.metric, c.op, c.bound, c.text) == ("size_mb", "<=", 700.0, "size_mb <= 700")
    assert c.violation({"size_mb": 650}) == -50 and c.violation({"size_mb": 720}) == 20
    assert Constraint.parse("acc >= 0.5").violation({"acc": 0.4}) == pytest.approx(0.1)
    assert Constraint.parse("acc>=1e-3").bound == 1e-3
    assert c.violation({}) == math.inf
    for bad in ("size_mb < 700", "700 >= size_mb", "size_mb <= big", "import os"):
        with pytest.raises(ConfigError, match="<metric> <= <number>"):
            Constraint.parse(bad)


def test_goals_name_what_is_missing() -> None:
    g = Goals(objectives={"avg": "max", "size": "min"}, composites={"avg": Composite(terms={"a": 1, "b": 1})},
              constraints=(Constraint.parse("lat <= 3"),))
    assert "composite 'avg' needs ['b']" in (g.missing(g.derive({"a": 1, "size": 2})) or "")
    assert "'lat', which the constraint 'lat <= 3' needs" in (g.missing(g.derive({"a": 1, "b": 2, "size": 2})) or "")
    assert g.missing(g.derive({"a": 1, "b": 2, "size": 2, "lat": 1})) is None


# --- StudyResult ----------------------------------------------------------------------------------


def _t(n: int, state: str = "COMPLETE", budget: float | None = None, viol: tuple[float, ...] = (),
       **metrics: float) -> TrialResult:
    return TrialResult(number=n, params={"x": n}, state=state, value=metrics.get("acc"), metrics=metrics,
                       budget=budget, constraint_violations=viol)


def mo_result(*trials: TrialResult, constraints: tuple[str, ...] = ()) -> StudyResult:
    return StudyResult(name="mo", metric="acc", mode="max", objectives={"acc": "max", "size": "min"},
                       trials=trials, constraints=constraints)


def test_best_refuses_with_several_objectives_and_best_by_works() -> None:
    r = mo_result(_t(0, acc=0.8, size=500), _t(1, acc=0.9, size=900), _t(2, acc=0.7, size=600),
                  _t(3, "FAILED"), _t(4, acc=0.95, size=400, viol=(1.0,)), constraints=("size >= 450",))
    with pytest.raises(NoSingleBestError, match=r"2 objectives \(acc, size\).*pareto_front.*best_by\('acc'\)"):
        _ = r.best
    assert [t.number for t in r.pareto_front] == [0, 1]  # 2 is dominated by 0; 4 is infeasible
    assert r.best_by("acc").number == 1
    assert r.best_by("size").number == 0  # the objective's own mode (min); 4 would win but is infeasible
    assert r.best_by("size", mode="max").number == 1
    with pytest.raises(ValueError, match=r"not an objective.*pass mode="):
        r.best_by("latency")
    with pytest.raises(ValueError, match="no completed trial reported 'latency'"):
        r.best_by("latency", mode="min")


def test_front_is_taken_at_the_highest_budget() -> None:
    r = mo_result(_t(0, budget=1, acc=0.99, size=1), _t(1, budget=9, acc=0.8, size=500),
                  _t(2, budget=9, acc=0.7, size=600))
    assert [t.number for t in r.pareto_front] == [1]


def test_infeasible_trials_are_never_best_with_one_objective() -> None:
    r = StudyResult(name="c", metric="acc", mode="max", constraints=("size <= 700",), trials=(
        _t(0, acc=0.9, size=800, viol=(100.0,)), _t(1, acc=0.8, size=600, viol=(-100.0,))))
    assert r.best.number == 1
    only_bad = StudyResult(name="c", metric="acc", mode="max", constraints=("size <= 700",),
                           trials=(_t(0, acc=0.9, size=800, viol=(100.0,)),))
    with pytest.raises(NoCompletedTrialsError,
                       match=r"no completed trial that satisfies its constraints.*1 completed but violate"):
        _ = only_bad.best


def test_exports_mark_the_front_and_feasibility(tmp_path: Path) -> None:
    r = mo_result(_t(0, acc=0.8, size=500, viol=(-1.0,)), _t(1, acc=0.7, size=600, viol=(-1.0,)),
                  _t(2, acc=0.99, size=10, viol=(5.0,)), constraints=("size >= 100",))
    rows = r.rows()
    assert [(row["pareto"], row["feasible"]) for row in rows] == [(True, True), (False, True), (False, False)]
    text = r.to_csv(tmp_path / "front.csv", pareto_only=True).read_text().splitlines()
    assert len(text) == 2 and text[1].startswith("0,")
    back = StudyResult.from_json(r.to_json())
    assert back.objectives == {"acc": "max", "size": "min"} and back.trials[2].constraint_violations == (5.0,)
    assert [t.number for t in back.pareto_front] == [0]
    assert "Pareto front over acc (max), size (min): 1 trial(s)" in r.summary()
    assert r.table().splitlines()[2].startswith("0*")


# --- studies on the local backend ---------------------------------------------------------------


def biquad(trial: Any) -> dict[str, float]:
    x, y = trial.params["x"], trial.params["y"]
    return {"f1": x**2 + y**2, "f2": (x - 1) ** 2 + (y - 1) ** 2}


SPACE = {"x": Uniform(-0.5, 1.5), "y": Uniform(-0.5, 1.5)}


def Study(*args: Any, **kwargs: Any) -> _Study:  # the real class, with test defaults
    kwargs.setdefault("progress", False)
    kwargs.setdefault("seed", 0)
    return _Study(*args, **kwargs)


@pytest.mark.parametrize("optimizer", ["random", "tpe", "nsga2", "grid"])
def test_two_objectives_on_the_local_backend(tmp_path: Path, optimizer: str) -> None:
    space = {"x": Uniform(0, 1, step=0.25), "y": Uniform(0, 1, step=0.25)} if optimizer == "grid" else SPACE
    r = Study(biquad, space, objectives={"f1": "min", "f2": "min"}, optimizer=optimizer, n_trials=25,
              storage=tmp_path).optimize()
    assert len(r.completed) == 25 and all({"f1", "f2"} <= set(t.metrics) for t in r.trials)
    front = r.pareto_front
    points = [(t.metrics["f1"], t.metrics["f2"]) for t in r.completed]
    assert sorted(t.number for t in front) == sorted(r.completed[i].number for i in brute_front(points, ["min"] * 2))
    assert r.is_multi_objective and r.objectives == {"f1": "min", "f2": "min"}
    with pytest.raises(NoSingleBestError):
        _ = r.best
    assert r.best_by("f1").metrics["f1"] == min(p[0] for p in points)


def test_multi_objective_samplers_beat_random_on_hypervolume(tmp_path: Path) -> None:
    # A smoke-sized version of benchmarks/multiobjective.py (which runs more seeds and budgets).
    def hv(optimizer: str, seed: int) -> float:
        r = Study(biquad, SPACE, objectives={"f1": "min", "f2": "min"}, optimizer=optimizer, n_trials=60,
                  seed=seed, name=f"{optimizer}{seed}", storage=tmp_path).optimize()
        return hypervolume_2d([(t.metrics["f1"], t.metrics["f2"]) for t in r.pareto_front], (3.0, 3.0))

    wins = sum(hv("tpe", s) > hv("random", s) for s in range(3))
    assert wins >= 2


@pytest.mark.parametrize("optimizer", ["gp", "bohb"])
def test_single_objective_optimizers_are_refused_listing_what_works(tmp_path: Path, optimizer: str) -> None:
    with pytest.raises(UnsupportedError, match=r"optimises a single objective.*2 \(f1, f2\).*grid, random, tpe, nsga2"):
        Study(biquad, SPACE, objectives={"f1": "min", "f2": "min"}, optimizer=optimizer, n_trials=3,
              budget={"min_budget": 1, "max_budget": 9}, storage=tmp_path)


def test_objectives_and_metric_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"either metric/mode .* or objectives"):
        Study(biquad, SPACE, metric="f1", objectives={"f1": "min", "f2": "min"}, n_trials=3, storage=tmp_path)
    with pytest.raises(ConfigError, match="metric: required"):
        Study(biquad, SPACE, n_trials=3, storage=tmp_path)


def test_a_bare_number_cannot_score_several_objectives(tmp_path: Path) -> None:
    r = Study(lambda t: 1.0, SPACE, objectives={"f1": "min", "f2": "min"}, optimizer="random", n_trials=5,
              storage=tmp_path)
    with pytest.raises(Exception, match=r"bare number .* needs the metrics \['f1', 'f2'\]"):
        r.optimize()


def test_missing_objective_stops_the_study(tmp_path: Path) -> None:
    study = Study(lambda t: {"f1": 1.0}, SPACE, objectives={"f1": "min", "f2": "min"}, optimizer="random",
                  n_trials=5, storage=tmp_path)
    with pytest.raises(Exception, match="not the study metric 'f2'"):
        study.optimize()
    assert len(study.result().trials) == 1


def test_resume_keeps_the_objectives(tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(objectives={"f1": "min", "f2": "min"}, optimizer="tpe", name="mo", storage=tmp_path)
    Study(biquad, SPACE, n_trials=6, **kw).optimize()
    r = Study(biquad, SPACE, n_trials=10, **kw).optimize()
    assert [t.number for t in r.trials] == list(range(10))
    with pytest.raises(StudyRecordError, match="different objectives"):
        Study(biquad, SPACE, n_trials=12, **{**kw, "objectives": {"f1": "min", "f2": "max"}})


# --- pruning with several objectives -----------------------------------------------------------


def curve(trial: Any) -> dict[str, float]:
    x = trial.params["x"]
    acc = 0.0
    for step in range(6):
        acc = (1 - abs(x - 0.2)) * (step + 1) / 6
        trial.report(step, acc=acc)
        if trial.should_prune():
            break
    return {"acc": acc, "cost": x}


def test_pruner_needs_a_pruning_metric_with_several_objectives(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optuna/optuna#3450.*pruning_metric to one of \['acc', 'cost'\]"):
        Study(curve, {"x": Uniform(0, 1)}, objectives={"acc": "max", "cost": "min"}, pruner="median", n_trials=3,
              storage=tmp_path)
    with pytest.raises(ConfigError, match=r"pruning_metric: 'acc_' is neither.*Did you mean 'acc'"):
        Study(curve, {"x": Uniform(0, 1)}, objectives={"acc": "max", "cost": "min"}, pruner="median",
              pruning_metric="acc_", n_trials=3, storage=tmp_path)


def test_several_objectives_prune_on_the_pruning_metric(tmp_path: Path) -> None:
    r = Study(curve, {"x": Uniform(0, 1)}, objectives={"acc": "max", "cost": "min"}, pruner="median",
              pruning_metric="acc", pruner_options={"n_startup_trials": 4}, optimizer="random", n_trials=30,
              storage=tmp_path).optimize()
    pruned = r.by_state("PRUNED")
    assert pruned, "the median pruner on acc never pruned"
    # Median pruning on acc stops trials whose acc curve is below the median: far from x=0.2.
    kept = [abs(t.params["x"] - 0.2) for t in r.completed[4:]]
    assert sum(abs(t.params["x"] - 0.2) for t in pruned) / len(pruned) > sum(kept) / max(len(kept), 1)
    assert all(len(t.reports) < 6 for t in pruned)


# --- composites and constraints in studies -------------------------------------------------------


def suites(trial: Any) -> dict[str, float]:
    x = trial.params["x"]
    for step in range(3):
        trial.report(step, arc=x * (step + 1) / 3, mmlu=(1 - x) * (step + 1) / 3)
    return {"arc": x, "mmlu": 1 - x, "size_mb": 1000 * x}


def test_a_composite_is_the_study_metric(tmp_path: Path) -> None:
    r = Study(suites, {"x": Discrete([0.1, 0.5, 0.9])}, metric="score", mode="max", optimizer="grid",
              composites={"score": {"terms": {"arc": 3, "mmlu": 1}}}, storage=tmp_path).optimize()
    for t in r.trials:
        x = t.params["x"]
        assert t.value == pytest.approx((3 * x + (1 - x)) / 4)
        assert t.reports[-1].metrics["score"] == pytest.approx((3 * x + (1 - x)) / 4)  # reports carry it too
    assert r.best.params == {"x": 0.9}
    with pytest.raises(ConfigError, match="composite 'score' is higher-is-better"):
        Study(suites, {"x": Uniform(0, 1)}, objectives={"score": "min"}, n_trials=2,
              composites={"score": {"terms": {"arc": 1}}}, storage=tmp_path)


def test_constraints_keep_infeasible_trials_from_best(tmp_path: Path) -> None:
    r = Study(suites, {"x": Discrete([0.1, 0.5, 0.9])}, metric="arc", mode="max", optimizer="grid",
              constraints=["size_mb <= 700"], storage=tmp_path).optimize()
    assert [t.feasible for t in sorted(r.trials, key=lambda t: t.params["x"])] == [True, True, False]
    assert r.best.params == {"x": 0.5}
    assert r.constraints == ("size_mb <= 700",)


def test_callable_constraints(tmp_path: Path) -> None:
    r = Study(suites, {"x": Discrete([0.1, 0.5, 0.9])}, metric="arc", mode="max", optimizer="grid",
              constraints=[lambda m: 0.3 - m["mmlu"]], storage=tmp_path).optimize()  # mmlu >= 0.3
    assert r.best.params == {"x": 0.5}


def test_a_missing_constrained_metric_stops_the_study(tmp_path: Path) -> None:
    study = Study(biquad, SPACE, metric="f1", constraints=["latency <= 3"], optimizer="random", n_trials=4,
                  storage=tmp_path)
    with pytest.raises(Exception, match="'latency', which the constraint 'latency <= 3' needs"):
        study.optimize()


def feasible_left(trial: Any) -> dict[str, float]:
    x = trial.params["x"]
    return {"loss": (x - 0.9) ** 2, "x": x}


def test_the_sampler_is_told_about_constraints(tmp_path: Path) -> None:
    # The optimum of the loss (x=0.9) is infeasible (x <= 0.4): a constraint-aware TPE keeps
    # proposing near the feasible boundary instead of chasing the infeasible optimum.
    def late_feasible(constraints: list[str]) -> int:
        r = Study(feasible_left, {"x": Uniform(0, 1)}, metric="loss", optimizer="tpe", n_trials=40,
                  constraints=constraints, name=f"c{len(constraints)}", storage=tmp_path).optimize()
        return sum(t.params["x"] <= 0.4 for t in r.trials[20:])

    assert late_feasible(["x <= 0.4"]) >= late_feasible([]) + 8


# --- Ray ------------------------------------------------------------------------------------------


def test_ray_refuses_bohb_with_several_objectives(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune")
    with pytest.raises(UnsupportedError, match=r"backend 'ray'.*grid, random, tpe"):
        Study(biquad, SPACE, objectives={"f1": "min", "f2": "min"}, backend="ray", optimizer="bohb", n_trials=3,
              budget={"min_budget": 1, "max_budget": 9}, storage=tmp_path)


MO_YAML = """\
name: gptq-like
objective: hposdk.testing.objectives:two_quadratics
objectives: {f1: min, score: max}
composites:
  score:
    terms:
      f1: {mode: min, low: 0, high: 5}
      f2: {weight: 2, mode: min, low: 0, high: 5}
constraints: ["f2 <= 2"]
optimizer: tpe
n_trials: 12
seed: 4
space:
  x: {type: uniform, low: -0.5, high: 1.5}
  y: {type: uniform, low: -0.5, high: 1.5}
"""


def test_a_study_file_declares_objectives_composites_and_constraints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hposdk import load_study
    from hposdk.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(MO_YAML)
    assert main(["run", str(path), "--storage", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front over f1 (min), score (max):" in out and "Constraints f2 <= 2:" in out
    r = load_study("gptq-like", storage=tmp_path)
    for t in r.trials:
        f1, f2 = t.metrics["f1"], t.metrics["f2"]
        assert t.metrics["score"] == pytest.approx(((1 - f1 / 5) + 2 * (1 - f2 / 5)) / 3)
        assert t.feasible == (f2 <= 2)
    assert all(t.feasible for t in r.pareto_front)
    assert main(["show", "gptq-like", "--storage", str(tmp_path), "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert {"pareto", "feasible", "violation_0", "metrics_score"} <= set(header)


@pytest.mark.slow
def test_two_objectives_and_a_composite_on_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune")
    r = Study("hposdk.testing.objectives:two_quadratics", SPACE, objectives={"f1": "min", "f2": "min"},
              backend="ray", optimizer="tpe", optimizer_options={"n_startup_trials": 4}, n_trials=10,
              max_concurrent=2, storage=tmp_path, name="ray-mo").optimize()
    assert len(r.completed) == 10 and all({"f1", "f2"} <= set(t.metrics) for t in r.trials)
    points = [(t.metrics["f1"], t.metrics["f2"]) for t in r.completed]
    assert len(r.pareto_front) == len(brute_front(points, ["min", "min"]))
    # Resume: the sampler hears the old trials through Optuna's own create_trial (both values).
    r = Study("hposdk.testing.objectives:two_quadratics", SPACE, objectives={"f1": "min", "f2": "min"},
              backend="ray", optimizer="tpe", n_trials=12, storage=tmp_path, name="ray-mo").optimize()
    assert [t.number for t in r.trials] == list(range(12))
    # A composite as the single metric, watched by ASHA in every report (computed inside the Ray trial).
    r = Study("hposdk.testing.objectives:learning_curve", {"x": Uniform(0, 1)}, metric="score", mode="max",
              composites={"score": {"terms": {"loss": {"mode": "min"}}}}, backend="ray", optimizer="random",
              pruner="asha", pruning_metric="score", budget={"min_budget": 1, "max_budget": 9, "eta": 3},
              n_trials=8, max_concurrent=2, storage=tmp_path, name="ray-composite").optimize()
    assert all(rep.metrics["score"] == pytest.approx(-rep.metrics["loss"]) for t in r.trials for rep in t.reports)
    assert r.best.value == pytest.approx(-r.best.metrics["loss"])
    assert r.by_state("PRUNED"), "ASHA on the composite never stopped a trial"


def test_pareto_front_of_a_grid_is_exact(tmp_path: Path) -> None:
    # On a grid the whole objective space is known, so the front can be checked point by point.
    r = Study(biquad, {"x": Uniform(0, 1, step=0.5), "y": Uniform(0, 1, step=0.5)},
              objectives={"f1": "min", "f2": "min"}, optimizer="grid", storage=tmp_path).optimize()
    grid = [dict(zip("xy", v)) for v in itertools.product([0.0, 0.5, 1.0], repeat=2)]
    values = [((p["x"] ** 2 + p["y"] ** 2), (p["x"] - 1) ** 2 + (p["y"] - 1) ** 2) for p in grid]
    expected = sorted(tuple(sorted(grid[i].items())) for i in brute_front(values, ["min", "min"]))
    assert sorted(tuple(sorted(t.params.items())) for t in r.pareto_front) == expected


def test_pareto_plot_and_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = Study(biquad, SPACE, objectives={"f1": "min", "f2": "min"}, optimizer="random", n_trials=12,
              constraints=["f1 <= 1.5"], storage=tmp_path).optimize()
    png = r.plot_pareto_front(tmp_path / "front.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    html = r.write_report(tmp_path / "report.html").read_text()
    assert '<section id="pareto"><h2>Pareto front</h2><img' in html
    assert '<section id="curves"><h2>Learning curves</h2><p class="na">' in html  # no reports: says why
    one = Study(biquad, SPACE, metric="f1", optimizer="random", n_trials=3, name="one", storage=tmp_path).optimize()
    with pytest.raises(ConfigError, match="needs two objectives"):
        one.plot_pareto_front(tmp_path / "x.png")
