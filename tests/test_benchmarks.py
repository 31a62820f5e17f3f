"""A smoke run of the benchmark harness (``python -m benchmarks --quick``): every section runs and the
report has its tables. No timing is asserted: the figures of a quick run mean nothing."""

from __future__ import annotations

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


def test_quick_run_tables_have_the_expected_rows_and_columns(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    md = (out / "quick.md").read_text()
    data = json.loads((out / "quick.json").read_text())
    assert "| sampler | trials | runs | hposdk local | Optuna in-memory |" in md
    assert [(r["what"], r["trials"]) for r in data["local"]] == [("random", 30), ("tpe", 30)]
    assert {p["backend"] for p in data["parallel"]} >= {"local"}
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
