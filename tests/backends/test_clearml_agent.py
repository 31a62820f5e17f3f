"""The agent-side trial runner, run for real in ClearML offline mode in a subprocess.

ClearML writes an offline session (``<cache>/offline/<task id>/``: ``task.json`` with the task's
hyperparameters and configuration objects, ``metrics.jsonl`` with the reported scalars); the tests
read those records back to check what a ClearML server would have received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("clearml")

from hposdk import Study
from hposdk.spaces import Discrete, SearchSpace, Uniform
from hposdk.testing import objectives


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
    env.update(CLEARML_OFFLINE_MODE="1", CLEARML_CACHE_DIR=str(tmp_path / "cache"), HOME=str(home))
    return env


def _sessions(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache" / "offline").glob("*") if p.is_dir())


def _scalars(session: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    path = session / "metrics.jsonl"
    if not path.exists():  # nothing was reported
        return events
    for line in path.read_text().splitlines():
        if line.strip():
            events.extend(json.loads(line))
    return [e for e in events if e.get("type") == "training_stats_scalar"]


def _task(session: Path) -> dict[str, Any]:
    return json.loads((session / "task.json").read_text())  # type: ignore[no-any-return]


def _run_agent(tmp_path: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return subprocess.run([sys.executable, "-m", "hposdk.backends.clearml._agent", "--spec", str(path)],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=120)


SPACE = {"x": {"type": "uniform", "low": 0.0, "high": 1.0, "step": 0.25},
         "z": {"type": "discrete", "choices": [True, "a", None]}}


def _spec(**kw: Any) -> dict[str, Any]:
    spec = {"name": "agent-test", "objective": "hposdk.testing.objectives:quadratic", "metric": "loss",
            "mode": "min", "space": SPACE, "fixed": {"target": 0.25}, "section": "Args", "title": "val",
            "series": "loss", "params": {"x": 0.5, "z": "a"}}
    spec.update(kw)
    return spec


def test_agent_reads_params_runs_objective_and_reports_scalars(tmp_path: Path) -> None:
    proc = _run_agent(tmp_path, _spec())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (session,) = _sessions(tmp_path)
    task = _task(session)
    # the trial's values, as ClearML stores them: strings under Args/
    assert {k: v["value"] for k, v in task["hyperparams"]["Args"].items()} == {"x": "0.5", "z": "a"}
    # (0.5 - 0.25)**2 = 0.0625, reported at steps 0..2 as loss + 0.1*(2-step), then the final value
    objective = [(e["iter"], e["value"]) for e in _scalars(session) if (e["metric"], e["variant"]) == ("val", "loss")]
    assert [i for i, _ in objective] == [0, 1, 2, 2]
    assert [v for _, v in objective] == pytest.approx([0.2625, 0.1625, 0.0625, 0.0625])
    others = {(e["metric"], e["variant"]) for e in _scalars(session)} - {("val", "loss")}
    assert others == {("neg_loss", "neg_loss")}
    outcome = json.loads(task["configuration"]["hposdk_outcome"]["value"])
    assert outcome["state"] == "COMPLETE" and outcome["value"] == pytest.approx(0.0625)
    assert outcome["params"] == {"x": 0.5, "z": "a"}
    study = json.loads(task["configuration"]["hposdk_study"]["value"])
    assert study["objective"] == "hposdk.testing.objectives:quadratic"


def test_agent_decodes_bool_and_none_from_task_strings(tmp_path: Path) -> None:
    proc = _run_agent(tmp_path, _spec(objective="hposdk.testing.objectives:echo_types", params={"x": 1.0, "z": None}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (session,) = _sessions(tmp_path)
    outcome = json.loads(_task(session)["configuration"]["hposdk_outcome"]["value"])
    assert outcome["params"] == {"x": 1.0, "z": None}
    (tmp_path / "second").mkdir()
    proc = _run_agent(tmp_path / "second", _spec(objective="hposdk.testing.objectives:echo_types",
                                                  params={"x": 1.0, "z": True}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (session,) = _sessions(tmp_path / "second")
    outcome = json.loads(_task(session)["configuration"]["hposdk_outcome"]["value"])
    assert outcome["params"]["z"] is True


def test_agent_failed_trial_exits_nonzero_and_records_the_error(tmp_path: Path) -> None:
    proc = _run_agent(tmp_path, _spec(fixed={"fail_above": 0.2}))
    assert proc.returncode == 1
    assert "deliberate failure" in proc.stderr
    (session,) = _sessions(tmp_path)
    outcome = json.loads(_task(session)["configuration"]["hposdk_outcome"]["value"])
    assert outcome["state"] == "FAILED" and "deliberate failure at x=0.5" in outcome["error"]
    assert not [e for e in _scalars(session) if e["metric"] == "val"]  # no objective value for ClearML


def test_agent_refuses_a_value_outside_the_space(tmp_path: Path) -> None:
    proc = _run_agent(tmp_path, _spec(params={"x": 0.3, "z": "a"}))  # 0.3 is not on the 0.25 grid
    assert proc.returncode != 0
    assert "Args/x" in proc.stderr and "not a value of" in proc.stderr


def test_local_executor_records_offline_sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    space = SearchSpace({"x": Uniform(0.0, 1.0, step=0.5), "z": Discrete(["a", "b"])})
    study = Study(objectives.quadratic, space, metric="loss", backend="clearml", optimizer="grid",
                  backend_options={"executor": "local", "record_offline": True, "objective_title": "val"},
                  storage=str(tmp_path / "studies"), progress=False, name="rec")
    result = study.optimize()
    sessions = _sessions(tmp_path)
    assert len(sessions) == len(result.trials) == 6
    seen = {}
    for session in sessions:
        task = _task(session)
        args = {k: v["value"] for k, v in task["hyperparams"]["Args"].items()}
        last = [e["value"] for e in _scalars(session) if (e["metric"], e["variant"]) == ("val", "loss")][-1]
        seen[(args["x"], args["z"])] = last
    expected = {(repr(t.params["x"]), t.params["z"]): t.value for t in result.trials}
    assert seen == pytest.approx(expected)
    notes = [json.loads(line) for line in study.record_path.read_text().splitlines()
             if '"clearml_offline_sessions"' in line]
    assert len(notes[0]["sessions"]) == 6
