"""Without a pruner, the local backend never prunes (Optuna's own default would be a MedianPruner)."""

from __future__ import annotations

from hposdk import SearchSpace, Study, TrialState, Uniform


def reporting(trial):
    for step in range(1, 6):
        # The later a trial, the worse its curve: a median rule would stop most of them.
        trial.report(step, loss=trial.number + step)
        if trial.should_prune():
            return {"loss": float("nan")}
    return {"loss": float(trial.number)}


def test_samplers_without_a_pruner_run_every_trial_to_the_end(tmp_path) -> None:
    for optimizer in ("tpe", "random"):
        result = Study(reporting, SearchSpace({"x": Uniform(0.0, 1.0)}), metric="loss", optimizer=optimizer,
                       n_trials=15, seed=0, storage=tmp_path, name=optimizer, progress=False).optimize()
        assert {t.state for t in result.trials} == {TrialState.COMPLETE}
        assert all(len(t.reports) == 5 for t in result.trials)
