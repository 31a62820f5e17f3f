"""A smoke run of the benchmark harness (``python -m benchmarks --quick``): every section runs and the
report has its tables. No timing is asserted: the figures of a quick run mean nothing."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    backends = ["local", "clearml"] + (["ray"] if importlib.util.find_spec("ray") else [])
    env = {**os.environ, "MPLBACKEND": "Agg", "CLEARML_OFFLINE_MODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out),
                           "--backends", ",".join(backends)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_the_report_plot_and_data(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    md = (out / "quick.md").read_text()
    assert (out / "quick.png").stat().st_size > 1000
    data = json.loads((out / "quick.json").read_text())
    assert md in stdout  # the report is printed too
    for heading in ("### Goals", "### Import and start-up", "### Local backend vs Optuna",
                    "### Local BOHB vs raw hpbandster", "### Parallel efficiency", "### Simple regret"):
        assert heading in md
    assert data["meta"]["versions"]["optuna"]
    assert data["import"]["engines_loaded"] == "[]"
    assert data["import"]["source_compiled"] is bool(sys.flags.dont_write_bytecode)


def test_the_import_figure_reads_hposdk_from_cached_bytecode_and_leaves_the_checkout_alone(tmp_path: Path) -> None:
    from benchmarks import overhead

    before = sorted(p.relative_to(ROOT) for p in (ROOT / "hposdk").rglob("__pycache__"))
    env = {**os.environ, **overhead._bytecode_env(tmp_path)}
    code = "import hposdk.study as s, pathlib; print(pathlib.Path(s.__spec__.cached).is_file())"
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (first.stdout.strip(), again.stdout.strip()) == ("True", "True")  # written, then read
    written = [p.name for p in tmp_path.rglob("study*.pyc") if "hposdk" in p.parts]
    assert written == [f"study.{sys.implementation.cache_tag}.pyc"]
    assert sorted(p.relative_to(ROOT) for p in (ROOT / "hposdk").rglob("__pycache__")) == before


def test_quick_run_tables_have_the_expected_rows_and_columns(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    md = (out / "quick.md").read_text()
    data = json.loads((out / "quick.json").read_text())
    assert "| sampler | trials | runs | hposdk local | Optuna in-memory |" in md
    assert [(r["what"], r["trials"]) for r in data["local"]] == [("random", 30), ("tpe", 30)]
    assert {p["backend"] for p in data["parallel"]} >= {"local"}
    for p in data["parallel"]:
        # The steady state comes from the objective's own clock: every call is timed, and the span
        # (first call's start to last call's end) covers the sleeps and fits inside the whole run.
        assert p["trials"] * p["sleep_s"] / p["max_concurrent"] <= p["span_s"] <= p["wall_s"], p
    regret = data["regret"]
    assert set(regret["table"]) == {"branin", "hartmann6", "mixed", "hartmann6_mf"}
    header = next(line for line in md.splitlines() if line.startswith("| optimizer | branin"))
    assert header == "| optimizer | branin | hartmann6 | mixed | hartmann6_mf |"
    for label in ("local/auto", "local/tpe", "local/gp", "local/random", "clearml/random", "raw-optuna/tpe"):
        assert any(line.startswith(f"| {label} |") for line in md.splitlines()), label
    assert "local/tpe+hyperband" in regret["table"]["hartmann6_mf"]
    assert not regret["errors"], regret["errors"]
    assert "#### optimizer='auto' against the peers" in md
    assert set(regret["goals"]["per_problem"]) == set(regret["table"])


def _band(n_reports: list[int], start: int = 0) -> object:
    from hposdk.result import ReportRecord, StudyResult, TrialResult, TrialState

    trials = [TrialResult(number=start + i, params={f"x{d}": 0.5 for d in range(6)},
                          state=TrialState.COMPLETE if r == 27 else TrialState.PRUNED, value=1.0 / r,
                          reports=tuple(ReportRecord(step=s, metrics={"loss": 1.0 / (s + 1)}) for s in range(r)),
                          budget=float(r))
              for i, r in enumerate(n_reports)]
    return StudyResult(name="band", trials=tuple(trials), metric="loss", mode="min")


def test_ray_bohb_accounting_matches_hpbandsters_schedule() -> None:
    # One Hyperband iteration of budgets 1..27, eta 3 as Ray runs it (hpbandster's brackets: 27, 9,
    # 6, 4 configurations): continued trials cost their reports, 342 epochs; counted as
    # hpbandster's fresh evaluations, the same decisions cost 405 epochs in 65 evaluations, which
    # is what benchmarks.multifidelity.schedule gives hpbandster for 15 units.
    from benchmarks.multifidelity import as_evaluations, ray_bohb_trials, schedule

    reports = [1] * 18 + [3] * 6 + [9] * 2 + [27] + [3] * 6 + [9] * 2 + [27] + [9] * 4 + [27] * 2 + [27] * 4
    assert len(reports) == 46
    evaluations = as_evaluations(_band(reports))  # type: ignore[arg-type]
    assert len(evaluations) == 65 and sum(c for c, *_ in evaluations) == 405
    assert schedule(405 / 27) == (65, 4)
    assert sum(reports) == 342 and ray_bohb_trials(342 / 27) == 46
    # successive-halving order: every rung-1 evaluation of the first bracket comes before its rung 3
    assert [b for *_, b in evaluations[:28]] == [1.0] * 27 + [3.0]
    # a second iteration's trials fall into the same brackets
    assert len(as_evaluations(_band(reports + reports))) == 130  # type: ignore[arg-type]


def test_ray_slots_grow_as_the_other_units_leave_workers_idle() -> None:
    from benchmarks.regret import RAY_DRIVERS, ray_slots

    assert ray_slots(other_running=2, other_queued=5, workers=2) == 1
    assert ray_slots(other_running=1, other_queued=3, workers=2) == 1  # more are waiting to start
    assert ray_slots(other_running=1, other_queued=0, workers=2) == 2
    assert ray_slots(other_running=0, other_queued=0, workers=2) == min(3, RAY_DRIVERS)
    assert ray_slots(other_running=0, other_queued=0, workers=8) == RAY_DRIVERS


def test_run_units_shares_one_ray_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from benchmarks.regret import Arm, Unit, run_units

    # Ray's workers import the benchmark problems by name, as under `python -m benchmarks`.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    pruned = Arm("local", "tpe", pruner="hyperband", multi_fidelity_only=True)
    units = [Unit("branin", Arm("ray", "random"), seed, n_trials=4) for seed in range(2)]
    units += [Unit("hartmann6_mf", pruned, seed, units=2.0) for seed in range(2)]
    outcomes = run_units(units, workers=1, progress=False)

    assert sorted((o.unit.problem, o.unit.arm.label, o.unit.seed) for o in outcomes) == sorted(
        (u.problem, u.arm.label, u.seed) for u in units)
    assert not [o.error for o in outcomes if o.error]
    assert all(o.evaluations == 4 for o in outcomes if o.unit.arm.backend == "ray")
    assert all(o.evaluations >= 2 for o in outcomes if o.unit.problem == "hartmann6_mf")


@pytest.mark.parametrize("backend,pruner", [("local", "hyperband"), ("ray", "asha")])
def test_a_pruned_multi_fidelity_run_stops_once_its_budget_is_spent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, pruner: str) -> None:
    from benchmarks.problems import MF_MAX, PROBLEMS
    from benchmarks.regret import MF_TRIAL_CAP, Arm, _run_multi_fidelity
    from hposdk import load_study

    if backend == "ray":
        pytest.importorskip("ray")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    problem = dataclasses.replace(PROBLEMS["hartmann6_mf"], units=10.0)
    arm = Arm(backend, "tpe", pruner=pruner, multi_fidelity_only=True)
    _, n, *_ = _run_multi_fidelity(problem, arm, 0, tmp_path)
    (record,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    trials = sorted(load_study(record.name, storage=tmp_path).trials, key=lambda t: t.number)
    epochs = [len(t.reports) for t in trials]
    assert len(trials) == n < MF_TRIAL_CAP * 10
    assert n > 10 and any(e < MF_MAX for e in epochs)  # pruned trials: the budget bought more than 10
    # The study stopped at the trial that spent the budget: not one trial before, not one after.
    assert sum(epochs[:-1]) < 10 * MF_MAX <= sum(epochs)
