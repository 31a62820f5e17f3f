"""Plots and the HTML report: files are produced, are real images, and carry the study's data."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from hposdk import Integer, LogUniform, SearchSpace, Study, StudyResult, TrialResult, Uniform
from hposdk.cli import main
from hposdk.exceptions import ConfigError, NoCompletedTrialsError

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

PNG = b"\x89PNG\r\n\x1a\n"


def objective(trial):
    # x matters a lot, y a little, z not at all: the importance estimate must see that
    x, y, z = trial.params["x"], trial.params["y"], trial.params["z"]
    loss = 0.0
    for step in range(4):
        loss = (x - 0.3) ** 2 * 10 + 0.1 * math.log10(y) ** 2 + 0.0 * z + 1.0 / (step + 1)
        trial.report(step, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> StudyResult:
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": LogUniform(1e-3, 1.0), "z": Integer(1, 4)})
    storage = tmp_path_factory.mktemp("studies")
    return Study(objective, space, metric="loss", optimizer="random", n_trials=24, seed=0, name="plots",
                 pruner="median", pruner_options={"n_startup_trials": 4}, storage=str(storage),
                 progress=False).optimize()


def is_png(path: Path, min_bytes: int = 5_000) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > min_bytes


@pytest.mark.parametrize("method", ["plot_history", "plot_parallel_coordinates", "plot_importance",
                                    "plot_learning_curves"])
def test_each_plot_writes_a_png(result: StudyResult, tmp_path: Path, method: str) -> None:
    path = getattr(result, method)(tmp_path / "sub" / f"{method}.png")
    assert path == tmp_path / "sub" / f"{method}.png"
    assert is_png(path)


def test_svg_suffix_picks_the_format(result: StudyResult, tmp_path: Path) -> None:
    text = result.plot_parallel_coordinates(tmp_path / "p.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_importances_rank_the_parameter_that_matters_first(result: StudyResult) -> None:
    imp = result.param_importances()
    assert set(imp) == {"x", "y", "z"}
    assert math.isclose(sum(imp.values()), 1.0, rel_tol=1e-6)
    assert next(iter(imp)) == "x" and imp["x"] > imp["z"]


def test_report_is_self_contained_and_holds_the_trials(result: StudyResult, tmp_path: Path) -> None:
    text = result.write_report(tmp_path / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    # four embedded PNGs, nothing fetched from the network
    assert len(re.findall(r'src="data:image/png;base64,iVBORw0KGgo', text)) == 4
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert text.count("<tr class=") == len(result.trials)
    best = result.best
    assert f"<td>{best.number}</td>" in text and f"{best.value:.6g}" in text
    assert "params_x" in text and result.summary_line() in text


def test_report_explains_plots_that_do_not_apply(tmp_path: Path) -> None:
    lone = StudyResult(name="lone", metric="loss", mode="min", trials=(
        TrialResult(number=0, params={"x": 1}, state="COMPLETE", value=0.5),
        TrialResult(number=1, params={"x": 2}, state="FAILED", error="Traceback...\nValueError: boom")))
    text = lone.write_report(tmp_path / "r.html").read_text()
    assert text.count("data:image/png;base64,") == 2  # history and parallel coordinates
    assert "Not drawn: learning curves need intermediate reports of &#x27;loss&#x27;" in text
    assert "Not drawn: parameter importances need the study&#x27;s search space" in text
    assert "ValueError: boom" in text


def test_learning_curves_without_reports_say_what_to_do(tmp_path: Path) -> None:
    r = StudyResult(name="s", metric="loss", mode="min",
                    trials=(TrialResult(number=0, params={"x": 1}, state="COMPLETE", value=0.5),))
    with pytest.raises(ConfigError, match=r"call trial.report\(step"):
        r.plot_learning_curves(tmp_path / "c.png")
    with pytest.raises(NoCompletedTrialsError, match="at least 2 completed trials"):
        StudyResult(name="s", metric="loss", mode="min", space=SearchSpace({"x": Integer(1, 3)}),
                    trials=r.trials).param_importances()


def test_cli_plot_each_kind_and_report(result: StudyResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = str(Path(result.record_path).parent.parent)  # type: ignore[arg-type]
    for kind in ("history", "parallel", "importance", "curves"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", "plots", "--storage", storage, "--kind", kind, "-o", str(out)]) == 0
        assert is_png(out)
    report = tmp_path / "report.html"
    assert main(["plot", "plots", "--storage", storage, "-o", str(report)]) == 0
    assert "data:image/png;base64," in report.read_text()
    assert f"wrote {report}" in capsys.readouterr().err
    assert main(["plot", "plots", "--storage", storage, "--kind", "all", "-o", str(tmp_path / "x.png")]) == 2
    assert "--kind all writes an HTML report" in capsys.readouterr().err
