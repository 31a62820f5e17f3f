"""Trial and FixedTrial: what objectives see, tested without any backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from hposdk import FixedTrial, TrialPruned
from hposdk.backends import run_objective
from hposdk.result import TrialState


def objective(trial: FixedTrial) -> dict[str, float]:
    loss = 1.0
    for epoch in range(5):
        loss = trial.params["lr"] / (epoch + 1)
        trial.report(epoch, loss=loss)
        if trial.should_prune():
            break
    return {"loss": loss}


def test_fixed_trial_runs_an_objective_and_records_reports() -> None:
    trial = FixedTrial({"lr": 1.0})
    assert objective(trial) == {"loss": 0.2}
    assert [r.step for r in trial.reports] == [0, 1, 2, 3, 4]
    assert trial.reports[1].metrics == {"loss": 0.5}
    assert trial.accessed_params == {"lr"}


def test_prune_at_step_exercises_the_pruning_path() -> None:
    trial = FixedTrial({"lr": 1.0}, prune_at_step=1)
    assert objective(trial) == {"loss": 0.5}
    assert len(trial.reports) == 2 and trial.pruned


def test_budget_and_number_are_visible() -> None:
    trial = FixedTrial({"lr": 1.0}, budget=9, number=4)
    assert trial.budget == 9 and trial.number == 4


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda t: t.report(1.5, loss=1.0), TypeError, "`step` must be an int"),
        (lambda t: t.report(-1, loss=1.0), ValueError, "`step >= 0`"),
        (lambda t: t.report(0), TypeError, "at least one metric"),
        (lambda t: t.report(0, loss="high"), TypeError, "metric 'loss' must be a number"),
    ],
)
def test_report_refuses_bad_input(call, error: type, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=pattern):
        call(FixedTrial({}))


def test_report_steps_must_increase() -> None:
    trial = FixedTrial({})
    trial.report(3, loss=1.0)
    with pytest.raises(ValueError, match="steps must increase, but step=3 follows step=3"):
        trial.report(3, loss=0.5)


def test_checkpoint_round_trip_in_the_trial_directory(tmp_path: Path) -> None:
    trial = FixedTrial({}, workdir=tmp_path / "t0")
    assert trial.load_checkpoint() is None
    trial.save_checkpoint({"epoch": 2, "weights": [1.0, 2.0]})
    assert (tmp_path / "t0" / "checkpoint" / "state.pkl").exists()
    again = FixedTrial({}, workdir=tmp_path / "t0")  # e.g. the same trial resumed later
    assert again.load_checkpoint() == {"epoch": 2, "weights": [1.0, 2.0]}


def test_params_are_read_only() -> None:
    trial = FixedTrial({"lr": 0.1})
    with pytest.raises(TypeError):
        trial.params["lr"] = 0.2  # type: ignore[index]


# --- one interpretation of objective output for every backend ---------------------------------


def _run(fn, params=None, prune_at_step=None):  # type: ignore[no-untyped-def]
    return run_objective(fn, FixedTrial(params or {"x": 1.0}, prune_at_step=prune_at_step), "loss")


def test_float_and_dict_returns_complete() -> None:
    assert _run(lambda t: 0.5).value == 0.5
    out = _run(lambda t: {"loss": 0.25, "acc": 0.9, "note": "ok"})
    assert out.state is TrialState.COMPLETE and out.value == 0.25 and out.metrics["note"] == "ok"


@pytest.mark.parametrize(
    ("ret", "pattern"),
    [
        (float("nan"), "NaN and infinities count as failures"),
        (float("inf"), "NaN and infinities"),
        (None, "returned None .*forget to `return`"),
        ("0.5", "returned a str"),
        ({"loss": "high"}, "metric 'loss' must be a number"),
    ],
)
def test_unusable_returns_fail_with_a_reason(ret: object, pattern: str) -> None:
    out = _run(lambda t: ret)
    assert out.state is TrialState.FAILED
    assert out.error is not None and __import__("re").search(pattern, out.error)


def test_exceptions_fail_with_the_traceback_kept() -> None:
    def boom(trial):  # type: ignore[no-untyped-def]
        raise ValueError("bad batch")

    out = _run(boom)
    assert out.state is TrialState.FAILED
    assert "Traceback" in (out.error or "") and "ValueError: bad batch" in (out.error or "")


def test_missing_metric_is_a_configuration_error() -> None:
    out = _run(lambda t: {"acc": 0.9})
    assert out.state is TrialState.FAILED and out.config_error
    assert "not the study metric 'loss'" in (out.error or "")


def test_pruned_by_exception_or_by_returning_after_should_prune() -> None:
    def raises(trial):  # type: ignore[no-untyped-def]
        trial.report(0, loss=3.0)
        raise TrialPruned()

    out = _run(raises)
    assert out.state is TrialState.PRUNED and out.value == 3.0
    out = _run(objective, {"lr": 1.0}, prune_at_step=2)
    assert out.state is TrialState.PRUNED and len(out.reports) == 3
    assert out.value == pytest.approx(1 / 3)
