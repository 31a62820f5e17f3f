"""The command line: run, show, backends; errors point at the YAML line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hposdk.cli import main

STUDY = """\
name: cli-demo
objective: hposdk.testing.objectives:quadratic
metric: loss
mode: min
optimizer: grid
space:
  x: {type: uniform, low: 0.0, high: 1.0, step: 0.1}
  z: {type: discrete, choices: [1, 2]}
"""


@pytest.fixture(autouse=True)
def _restore_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # `hposdk run` puts the study file's directory on sys.path and PYTHONPATH; undo it per test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", __import__("os").environ.get("PYTHONPATH", ""))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_run_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, STUDY)
    storage = str(tmp_path / "st")
    assert main(["run", str(path), "--storage", storage, "--no-progress", "-o", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "Best trial #" in out and "x=0.3" in out and "22 trials: 22 complete" in out
    assert json.loads((tmp_path / "r.json").read_text())["name"] == "cli-demo"
    assert main(["show", "cli-demo", "--storage", storage, "--limit", "3"]) == 0
    shown = capsys.readouterr().out
    assert "0.3" in shown.splitlines()[2] and "Best trial" in shown
    assert main(["show", "cli-demo", "--storage", storage, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("number,state,value,params_x,params_z")


def test_overrides_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, STUDY)
    code = main(["run", str(path), "--storage", str(tmp_path), "--optimizer", "random", "--n-trials", "3",
                 "--seed", "4", "--name", "other", "--no-progress"])
    assert code == 0
    assert "3 trials: 3 complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (STUDY.replace("high: 1.0, step: 0.1", "high: abc"), r"line 7: space\.x\.high"),
        (STUDY.replace("mode: min", "mode: minimise"), r"line 4: mode: Input should be 'min' or 'max'"),
        (STUDY.replace("optimizer: grid", "optimiser: grid"), r"line 5: optimiser: unknown field"),
        (STUDY.replace("low: 0.0", "low: 2.0"), r"line 7: space\.x.*`low < high`"),
        (STUDY + "  y: [1, 2\n", r"line 10: not valid YAML.*started on line 9"),
        (STUDY.replace("hposdk.testing.objectives:quadratic", "os.system"), r"not an import path"),
        (STUDY.replace("hposdk.testing.objectives:quadratic", "nope.mod:fn"), r"cannot import module 'nope.mod'"),
        (STUDY.replace("optimizer: grid", "optimizer: grid\nbackend: rya"), r"Did you mean 'ray'"),
    ],
)
def test_bad_study_files_give_a_line_numbered_field_named_error(tmp_path: Path, text: str, pattern: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, text)
    assert main(["run", str(path), "--storage", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(pattern, err), err


def test_unsafe_yaml_tags_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, STUDY.replace("name: cli-demo", "name: !!python/object/apply:os.system ['echo hi']"))
    assert main(["run", str(path), "--storage", str(tmp_path), "--no-progress"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_show_unknown_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "missing", "--storage", str(tmp_path)]) == 2
    assert "no study named 'missing'" in capsys.readouterr().err


def test_backends_lists_capabilities_as_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["local"]["installed"] and "tpe" in rows["local"]["optimizers"]
    assert "median" in rows["local"]["pruners"]


def test_console_script_entry_point(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "hposdk", "--help"], capture_output=True, text=True, check=True)
    assert "run" in out.stdout and "show" in out.stdout


def test_an_objective_beside_the_study_file_is_importable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = "def objective(trial):\n    return (trial.params['x'] - 0.5) ** 2 + trial.params['z']\n"
    (tmp_path / "my_train.py").write_text(code)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.replace("hposdk.testing.objectives:quadratic", "my_train:objective")
                     .replace("optimizer: grid", "optimizer: grid\nmax_concurrent: 2"))
    assert main(["run", str(study), "--storage", str(tmp_path / "st"), "--no-progress"]) == 0
    assert "x=0.5" in capsys.readouterr().out
