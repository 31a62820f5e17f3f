"""The MNIST objective as a study, end to end on every backend that exists here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hposdk import Discrete, LogUniform, SearchSpace, Study, TrialState, Uniform
from hposdk.backends import available_backends, get_backend
from hposdk.exceptions import HposdkError
from hposdk.objectives.mnist import objective

# backend -> (early-stopping pruner or scheduler, its options, backend options)
# The median pruner's portable options mean the same on every backend (Ray maps them to its own).
MEDIAN = ("median", {"n_startup_trials": 2, "n_warmup_steps": 1})
BACKENDS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "local": (*MEDIAN, {"start_method": "forkserver"}),
    "ray": (*MEDIAN, {}),
    "clearml": (*MEDIAN, {}),
}


def installed(name: str) -> bool:
    try:
        get_backend(name)
    except HposdkError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b in available_backends()])
def test_a_small_mnist_study_prunes_and_beats_a_bad_configuration(backend: str, tmp_path: Path) -> None:
    if not installed(backend):
        pytest.skip(f"backend {backend!r} is not available in this version")
    pruner, pruner_options, backend_options = BACKENDS[backend]
    if pruner not in get_backend(backend).capabilities.pruners:
        pytest.skip(f"backend {backend!r} has no pruner {pruner!r}")
    space = SearchSpace({
        "lr": LogUniform(1e-4, 3e-2),
        "optimizer": Discrete(["sgd", "adam"]),
        "dropout": Uniform(0.0, 0.4, step=0.2),
    })
    fixed = {"epochs": 4, "num_threads": 1, "batch_size": 64, "hidden": 32, "max_train_samples": 600,
             "max_val_samples": 300}
    result = Study(objective, space, metric="val_loss", mode="min", backend=backend, optimizer="random",
                   n_trials=10, max_concurrent=2, seed=0, pruner=pruner, pruner_options=pruner_options,
                   fixed=fixed, backend_options=backend_options, storage=tmp_path, progress=False).optimize()
    assert len(result.trials) == 10
    assert not result.by_state(TrialState.FAILED), [t.error for t in result.by_state(TrialState.FAILED)]
    pruned = result.by_state(TrialState.PRUNED)
    # A trial may be pruned at its last report; at least one must have been stopped before the end.
    assert any(len(t.reports) < 4 for t in pruned), [len(t.reports) for t in pruned]
    # A bad configuration: the smallest step size with plain SGD barely moves from chance level.
    from hposdk import FixedTrial

    bad = objective(FixedTrial({**fixed, "lr": 1e-4, "optimizer": "sgd", "dropout": 0.4}))
    assert result.best.value is not None and result.best.value < bad["val_loss"] - 0.5
    assert result.best.metrics["val_acc"] > bad["val_acc"] + 0.3
